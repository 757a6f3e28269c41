"""Prometheus recording and alerting rules for an appvitals-instrumented service.

RED recording rules, multi-window multi-burn-rate SLO alerts (the Google SRE workbook's
recipe: 14.4x over 1 h and 5 m, 6x over 6 h and 30 m for paging; 3x over 1 d and 2 h, 1x
over 3 d and 6 h for tickets), and alerts on 5xx rate, p95 latency, failing health checks,
memory, job failures and staleness, outgoing-call errors and appvitals' own health. Every
alert has ``summary``, ``description`` and ``runbook_url`` annotations.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from appvitals.artifacts import _catalog as m

RUNBOOK_BASE = "https://appvitals.readthedocs.io/en/latest/runbooks/"
SLO_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
# (severity, factor, long window, short window) — SRE workbook, table 5-8.
BURN_RATES = (
    ("page", 14.4, "1h", "5m"),
    ("page", 6.0, "6h", "30m"),
    ("ticket", 3.0, "1d", "2h"),
    ("ticket", 1.0, "3d", "6h"),
)


def prometheus_rules(
    service: str | None = None,
    *,
    availability_slo: float = 0.999,
    latency_slo: float = 0.99,
    latency_threshold: float = 0.5,
    p95_threshold: float = 1.0,
    error_rate_threshold: float = 0.05,
    job_failures: int = 5,
    job_max_age: Mapping[str, float] | None = None,
    default_job_max_age: float = 86400.0,
    runbook_base: str = RUNBOOK_BASE,
) -> dict[str, Any]:
    """The rule file (as a mapping: render it with :func:`appvitals.artifacts.to_yaml`).

    Args:
        service: the Prometheus ``job`` label to restrict every rule to (``None``: all
            services; quotes and backslashes in it are escaped).
        availability_slo: share of requests that must not fail with 5xx.
        latency_slo: share of requests that must be faster than ``latency_threshold``.
        latency_threshold: seconds; must be a bucket bound of
            ``http.server.request.duration`` (0.005 … 10, semconv buckets).
        p95_threshold: seconds above which the p95 latency alert fires.
        error_rate_threshold: 5xx share above which the error-rate alert fires.
        job_failures: failed runs per job type in 10 minutes that fire an alert (seed 002).
        job_max_age: seconds since the last success, per job type, before alerting.
        default_job_max_age: the same for job types not in ``job_max_age``.
        runbook_base: URL prefix of the runbook links.

    Examples:
        >>> rules = prometheus_rules("checkout")
        >>> [group["name"] for group in rules["groups"]]
        ['appvitals-recording', 'appvitals-slo', 'appvitals-alerts']
    """
    sel = f"job={_string(service)}" if service else ""
    ctx = _Context(sel, runbook_base)
    groups = [
        {"name": "appvitals-recording", "rules": _recording(ctx)},
        {"name": "appvitals-slo", "rules": _slo_recording(ctx, latency_threshold)},
        {
            "name": "appvitals-alerts",
            "rules": [
                *_red_alerts(ctx, error_rate_threshold, p95_threshold),
                *_slo_alerts(ctx, availability_slo, latency_slo, latency_threshold),
                *_health_alerts(ctx),
                *_job_alerts(ctx, job_failures, job_max_age or {}, default_job_max_age),
                *_dependency_alerts(ctx),
                *_self_alerts(ctx),
            ],
        },
    ]
    return {"groups": groups}


def _string(value: str) -> str:
    """``value`` as a PromQL string literal (a JSON string is one: same quotes and escapes)."""
    return json.dumps(value, ensure_ascii=False)


class _Context:
    def __init__(self, selector: str, runbook_base: str) -> None:
        self.selector = selector
        self.runbook_base = runbook_base

    def sel(self, *extra: str) -> str:
        parts = [part for part in (self.selector, *extra) if part]
        return "{" + ",".join(parts) + "}" if parts else ""

    def alert(
        self,
        name: str,
        expr: str,
        duration: str,
        severity: str,
        summary: str,
        description: str,
        labels: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        rule: dict[str, Any] = {"alert": name, "expr": expr}
        if duration != "0m":
            rule["for"] = duration
        rule["labels"] = {"severity": severity, **(labels or {})}
        rule["annotations"] = {
            "summary": summary,
            "description": description,
            "runbook_url": self.runbook_base + "#" + name.lower(),
        }
        return rule


def _recording(ctx: _Context) -> list[dict[str, Any]]:
    count = m.HTTP_SERVER_DURATION.series("_count")
    bucket = m.HTTP_SERVER_DURATION.series("_bucket")
    return [
        {
            "record": "appvitals:http_server_requests:rate5m",
            "expr": f"sum by (job, http_route) (rate({count}{ctx.sel()}[5m]))",
        },
        {
            "record": "appvitals:http_server_errors:rate5m",
            "expr": (f"sum by (job, http_route) (rate({count}{ctx.sel(_FIVE_XX)}[5m]))"),
        },
        {
            "record": "appvitals:http_server_latency_seconds:p95_5m",
            "expr": (
                "histogram_quantile(0.95, sum by (job, http_route, le) "
                f"(rate({bucket}{ctx.sel()}[5m])))"
            ),
        },
    ]


_FIVE_XX = 'http_response_status_code=~"5.."'


def _slo_recording(ctx: _Context, latency_threshold: float) -> list[dict[str, Any]]:
    count = m.HTTP_SERVER_DURATION.series("_count")
    bucket = m.HTTP_SERVER_DURATION.series("_bucket")
    le = f'le="{_bound(latency_threshold)}"'
    rules = []
    for window in SLO_WINDOWS:
        total = f"sum by (job) (rate({count}{ctx.sel()}[{window}]))"
        rules.append(
            {
                "record": f"appvitals:http_server_error_ratio:rate{window}",
                "expr": f"sum by (job) (rate({count}{ctx.sel(_FIVE_XX)}[{window}])) / {total}",
            }
        )
        rules.append(
            {
                "record": f"appvitals:http_server_slow_ratio:rate{window}",
                "expr": f"1 - (sum by (job) (rate({bucket}{ctx.sel(le)}[{window}])) / {total})",
            }
        )
    return rules


def _bound(seconds: float) -> str:
    # Bucket bounds are rendered like /metrics does: 0.5, 1, 2.5 (no trailing ".0").
    return str(int(seconds)) if float(seconds).is_integer() else repr(float(seconds))


def _red_alerts(ctx: _Context, error_rate: float, p95: float) -> list[dict[str, Any]]:
    count = m.HTTP_SERVER_DURATION.series("_count")
    bucket = m.HTTP_SERVER_DURATION.series("_bucket")
    return [
        ctx.alert(
            "AppvitalsHighErrorRate",
            f"sum by (job) (rate({count}{ctx.sel(_FIVE_XX)}[5m])) "
            f"/ sum by (job) (rate({count}{ctx.sel()}[5m])) > {error_rate}",
            "5m",
            "page",
            "{{ $labels.job }}: more than " + f"{error_rate:.0%}" + " of requests fail with 5xx",
            "{{ $value | humanizePercentage }} of the requests of {{ $labels.job }} answered "
            "5xx over the last 5 minutes. Look at errors by error_type and route.",
        ),
        ctx.alert(
            "AppvitalsHighLatencyP95",
            f"histogram_quantile(0.95, sum by (job, le) (rate({bucket}{ctx.sel()}[5m]))) > {p95}",
            "10m",
            "warning",
            "{{ $labels.job }}: p95 latency above " + f"{p95:g} s",
            "The 95th percentile of http.server.request.duration of {{ $labels.job }} is "
            "{{ $value | humanizeDuration }}.",
        ),
    ]


def _slo_alerts(
    ctx: _Context, availability: float, latency: float, threshold: float
) -> list[dict[str, Any]]:
    alerts = []
    for kind, slo, record, what in (
        ("Availability", availability, "error", "5xx"),
        ("Latency", latency, "slow", f"slower than {threshold:g} s"),
    ):
        budget = round(1 - slo, 10)
        for severity in ("page", "ticket"):
            ratio = f"appvitals:http_server_{record}_ratio:rate"
            clauses = [
                f"({ratio}{long}{ctx.sel()} > {factor * budget:.6g}"
                f" and {ratio}{short}{ctx.sel()} > {factor * budget:.6g})"
                for level, factor, long, short in BURN_RATES
                if level == severity
            ]
            alerts.append(
                ctx.alert(
                    f"Appvitals{kind}BudgetBurn{severity.capitalize()}",
                    " or ".join(clauses),
                    "2m" if severity == "page" else "15m",
                    severity,
                    "{{ $labels.job }}: " + f"{kind.lower()} error budget burning fast",
                    f"Requests {what} consume the {slo:.3%} {kind.lower()} SLO's error budget "
                    f"at a rate that exhausts it early ({severity} level, multi-window burn rate).",
                )
            )
    return alerts


def _health_alerts(ctx: _Context) -> list[dict[str, Any]]:
    status = m.HEALTH_STATUS.name
    alerts = [
        ctx.alert(
            "AppvitalsHealthCheckFailing",
            f"max by (job, check_name) ({status}{ctx.sel(_CRITICAL)}) == 0",
            "2m",
            "page",
            "{{ $labels.job }}: critical health check {{ $labels.check_name }} failing",
            "The critical check {{ $labels.check_name }} reports unhealthy: /health/ready "
            "answers 503. /health/detailed shows its error.",
        ),
        ctx.alert(
            "AppvitalsHealthCheckDegraded",
            f"max by (job, check_name) ({status}{ctx.sel(_NOT_CRITICAL)}) == 0",
            "10m",
            "warning",
            "{{ $labels.job }}: non-critical health check {{ $labels.check_name }} failing",
            "The service is degraded; /health/detailed shows the check's error.",
        ),
    ]
    memory = m.SYSTEM_MEMORY_UTILIZATION.name
    alerts.append(
        ctx.alert(
            "AppvitalsMemoryHigh",
            f"max by (job, instance) ({memory}{ctx.sel(_USED)}) > 0.9",
            "5m",
            "warning",
            "{{ $labels.instance }}: memory over 90 %",
            "System memory of {{ $labels.instance }} is {{ $value | humanizePercentage }} used "
            "(needs APPVITALS_RESOURCE_METRICS=process,system).",
        )
    )
    return alerts


_CRITICAL = 'check_critical="true"'
_NOT_CRITICAL = 'check_critical="false"'
_USED = 'system_memory_state="used"'


def _job_alerts(
    ctx: _Context, failures: int, max_age: Mapping[str, float], default_age: float
) -> list[dict[str, Any]]:
    runs = m.JOB_RUNS.name
    last = m.JOB_LAST_SUCCESS.name
    alerts = [
        ctx.alert(
            "AppvitalsJobFailures",
            f"sum by (job, job_type) (increase({runs}{ctx.sel(_FAILED)}[10m])) > {failures}",
            "0m",
            "page",
            "{{ $labels.job_type }}: more than " + f"{failures} failed runs in 10 minutes",
            "{{ $value }} runs of {{ $labels.job_type }} failed in the last 10 minutes.",
        )
    ]
    excluded = ",".join(sorted(max_age))
    for job_type, age in sorted(max_age.items()):
        alerts.append(_stale_job(ctx, last, f'job_type="{job_type}"', age, job_type))
    default_sel = f'job_type!~"{excluded.replace(",", "|")}"' if excluded else ""
    alerts.append(_stale_job(ctx, last, default_sel, default_age, "default"))
    return alerts


_FAILED = 'outcome="failed"'


def _stale_job(
    ctx: _Context, last: str, selector: str, age: float, threshold: str
) -> dict[str, Any]:
    return ctx.alert(
        "AppvitalsJobNotSucceeded",
        f"time() - max by (job, job_type) ({last}{ctx.sel(selector)}) > {age:g}",
        "5m",
        "warning",
        "{{ $labels.job_type }}: no successful run for " + f"{age:g} s",
        "The last successful run of {{ $labels.job_type }} was "
        "{{ $value | humanizeDuration }} ago.",
        {"threshold": threshold},
    )


def _dependency_alerts(ctx: _Context) -> list[dict[str, Any]]:
    errors = m.HTTP_CLIENT_ERRORS.name
    count = m.HTTP_CLIENT_DURATION.series("_count")
    return [
        ctx.alert(
            "AppvitalsOutgoingCallErrors",
            f"sum by (job, server_address, category) (rate({errors}{ctx.sel()}[5m])) "
            f"/ ignoring (category) group_left "
            f"sum by (job, server_address) (rate({count}{ctx.sel()}[5m])) > 0.1",
            "10m",
            "warning",
            "{{ $labels.job }} → {{ $labels.server_address }}: {{ $labels.category }} errors",
            "{{ $value | humanizePercentage }} of the calls from {{ $labels.job }} to "
            "{{ $labels.server_address }} fail with {{ $labels.category }} errors. The "
            "appvitals.http ERROR logs hold one capture per failed call.",
        )
    ]


def _self_alerts(ctx: _Context) -> list[dict[str, Any]]:
    dropped = m.TELEMETRY_DROPPED.name
    internal = m.INTERNAL_ERRORS.name
    overflow = m.CARDINALITY_OVERFLOW.name
    return [
        ctx.alert(
            "AppvitalsTelemetryDropped",
            f"sum by (job, signal) (increase({dropped}{ctx.sel()}[10m])) > 0",
            "0m",
            "warning",
            "{{ $labels.job }}: {{ $labels.signal }} dropped by a full export queue",
            "The exporter cannot keep up or the collector is down: {{ $value }} items dropped "
            "in 10 minutes.",
        ),
        ctx.alert(
            "AppvitalsInternalErrors",
            f"sum by (job, where) (increase({internal}{ctx.sel()}[10m])) > 0",
            "0m",
            "warning",
            "{{ $labels.job }}: appvitals caught internal errors in {{ $labels.where }}",
            "The application is not affected; its telemetry may be incomplete. The appvitals "
            "logger has the first traceback.",
        ),
        ctx.alert(
            "AppvitalsCardinalityOverflow",
            f"sum by (job, instrument) (increase({overflow}{ctx.sel()}[10m])) > 0",
            "0m",
            "warning",
            "{{ $labels.job }}: {{ $labels.instrument }} exceeds its attribute-set limit",
            "An attribute with unbounded values (a user id?) is recorded on "
            "{{ $labels.instrument }}; measurements go to otel_metric_overflow.",
        ),
    ]
