"""The metrics the shipped rules and dashboards use, as the library emits them.

Each entry is the OpenTelemetry instrument (name, unit, kind); the Prometheus name is
derived with :func:`appvitals.prometheus.metric_name`, the function that renders
``/metrics``, so a renamed unit or suffix rule changes rules, dashboards and the endpoint
together. ``tests/artifacts`` checks every entry against a live run of the library.
"""

from __future__ import annotations

from dataclasses import dataclass

from appvitals.prometheus import Kind, metric_name


@dataclass(frozen=True)
class Metric:
    """One instrument: its OpenTelemetry name, unit and Prometheus kind."""

    otel_name: str
    unit: str
    kind: Kind

    @property
    def name(self) -> str:
        """The Prometheus family name (``_total`` included for counters)."""
        return metric_name(self.otel_name, self.unit, self.kind)

    def series(self, suffix: str = "") -> str:
        """A series name: ``_bucket``/``_sum``/``_count`` for histograms."""
        return self.name + suffix


HTTP_SERVER_DURATION = Metric("http.server.request.duration", "s", "histogram")
HTTP_SERVER_ACTIVE = Metric("http.server.active_requests", "{request}", "gauge")
HEALTH_STATUS = Metric("appvitals.health.check.status", "1", "gauge")
HEALTH_DURATION = Metric("appvitals.health.check.duration", "s", "histogram")
INTERNAL_ERRORS = Metric("appvitals.internal.errors", "{error}", "counter")
TELEMETRY_DROPPED = Metric("appvitals.telemetry.dropped", "{item}", "counter")
CARDINALITY_OVERFLOW = Metric("appvitals.metrics.cardinality_overflow", "{measurement}", "counter")
HTTP_CLIENT_DURATION = Metric("http.client.request.duration", "s", "histogram")
HTTP_CLIENT_ERRORS = Metric("appvitals.http.client.errors", "{error}", "counter")
HTTP_CLIENT_PHASE = Metric("appvitals.http.client.phase.duration", "s", "histogram")
HTTP_CLIENT_RETRIES = Metric("appvitals.http.client.retries", "{retry}", "counter")
JOB_RUNS = Metric("appvitals.job.runs", "{run}", "counter")
JOB_DURATION = Metric("appvitals.job.duration", "s", "histogram")
JOB_ACTIVE = Metric("appvitals.job.active", "{run}", "gauge")
JOB_PROGRESS = Metric("appvitals.job.progress", "1", "gauge")
JOB_ITEMS = Metric("appvitals.job.items", "{item}", "counter")
JOB_LAST_SUCCESS = Metric("appvitals.job.last_success", "s", "gauge")
PROCESS_CPU_UTILIZATION = Metric("process.cpu.utilization", "1", "gauge")
PROCESS_MEMORY = Metric("process.memory.usage", "By", "gauge")
SYSTEM_MEMORY_UTILIZATION = Metric("system.memory.utilization", "1", "gauge")

ALL = (
    HTTP_SERVER_DURATION,
    HTTP_SERVER_ACTIVE,
    HEALTH_STATUS,
    HEALTH_DURATION,
    INTERNAL_ERRORS,
    TELEMETRY_DROPPED,
    CARDINALITY_OVERFLOW,
    HTTP_CLIENT_DURATION,
    HTTP_CLIENT_ERRORS,
    HTTP_CLIENT_PHASE,
    HTTP_CLIENT_RETRIES,
    JOB_RUNS,
    JOB_DURATION,
    JOB_ACTIVE,
    JOB_PROGRESS,
    JOB_ITEMS,
    JOB_LAST_SUCCESS,
    PROCESS_CPU_UTILIZATION,
    PROCESS_MEMORY,
    SYSTEM_MEMORY_UTILIZATION,
)
