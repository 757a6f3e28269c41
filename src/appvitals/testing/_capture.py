"""In-memory capture of everything appvitals emits, for the application's unit tests.

:class:`Capture` configures appvitals exactly as ``configure()`` does, with in-memory
exporters beside (or instead of) the configured ones, and returns what was emitted in the
same record types the OTLP receiver and the ``jsonl`` readers return — encoded through the
real OTLP encoders, so a test sees what would leave the process.
"""

from __future__ import annotations

import sys
from typing import Any, Optional

from appvitals._otlp_json import to_otlp_json
from appvitals.testing._records import (
    LogRecord,
    MetricPoint,
    SpanRecord,
    logs_from,
    metrics_from,
    spans_from,
)


class Capture:
    """appvitals configured with in-memory exporters; use as a context manager.

    Keyword arguments are passed to :func:`appvitals.configure` (``exporter`` defaults to
    ``"none"`` and ``sampler_ratio`` to ``1.0``, so every span is captured).

    Examples:
        >>> import appvitals
        >>> from appvitals.testing import Capture
        >>> with Capture(service_name="test") as capture:
        ...     with appvitals.span("work"):
        ...         pass
        ...     capture.span("work").resource["service.name"]
        'test'
    """

    def __init__(self, **configure_arguments: Any) -> None:
        from opentelemetry.sdk._logs.export import (
            InMemoryLogRecordExporter,
            SimpleLogRecordProcessor,
        )
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        configure_arguments.setdefault("exporter", "none")
        configure_arguments.setdefault("sampler_ratio", 1.0)
        self._arguments = configure_arguments
        self._span_exporter = InMemorySpanExporter()
        self._log_exporter = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
        self._reader = InMemoryMetricReader()
        self._span_processor = SimpleSpanProcessor(self._span_exporter)
        self._log_processor = SimpleLogRecordProcessor(self._log_exporter)

    def start(self) -> Capture:
        """Reset appvitals and OpenTelemetry globals, then configure with capture."""
        from appvitals._setup import Extras, _configure

        reset()
        _configure(
            dict(self._arguments),
            Extras(
                span_processors=(self._span_processor,),
                metric_readers=(self._reader,),
                log_processors=(self._log_processor,),
            ),
        )
        return self

    def stop(self) -> None:
        """Shut appvitals down and reset the globals again."""
        reset()

    def __enter__(self) -> Capture:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def spans(self) -> list[SpanRecord]:
        """Every finished span so far, in the order they ended."""
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

        finished = self._span_exporter.get_finished_spans()
        if not finished:
            return []
        return spans_from([to_otlp_json(encode_spans(finished))])

    def span(self, name: str) -> SpanRecord:
        """The one finished span called ``name`` (AssertionError if none or several)."""
        matching = [record for record in self.spans() if record.name == name]
        assert len(matching) == 1, f"expected one span {name!r}, found {len(matching)}"
        return matching[0]

    def metrics(self) -> list[MetricPoint]:
        """Every metric data point collected now (cumulative)."""
        from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics

        data = self._reader.get_metrics_data()
        if data is None:
            return []
        return metrics_from([to_otlp_json(encode_metrics(data))])

    def metric(self, name: str) -> list[MetricPoint]:
        """The data points of the metric ``name``."""
        return [point for point in self.metrics() if point.name == name]

    def logs(self) -> list[LogRecord]:
        """Every log record emitted so far."""
        from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs

        finished = self._log_exporter.get_finished_logs()
        if not finished:
            return []
        return logs_from([to_otlp_json(encode_logs(finished))])

    def clear(self) -> None:
        """Forget captured spans and logs (metrics are cumulative and stay)."""
        self._span_exporter.clear()
        self._log_exporter.clear()


def reset(timeout: Optional[float] = 5.0) -> None:
    """Shut appvitals down and reset OpenTelemetry's global providers (tests only).

    OpenTelemetry allows setting each global provider once per process; tests that
    configure appvitals repeatedly need the globals back in their initial state.
    """
    from opentelemetry import trace
    from opentelemetry._logs import _internal as logs_internal
    from opentelemetry.metrics import _internal as metrics_internal
    from opentelemetry.util._once import Once

    from appvitals import _exporters, _safety, _setup, decorators, metrics

    _setup.shutdown(timeout)
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
    metrics_internal._METER_PROVIDER_SET_ONCE = Once()
    metrics_internal._METER_PROVIDER = None
    metrics_internal._PROXY_METER_PROVIDER = metrics_internal._ProxyMeterProvider()
    logs_internal._LOGGER_PROVIDER_SET_ONCE = Once()
    logs_internal._LOGGER_PROVIDER = None
    logs_internal._PROXY_LOGGER_PROVIDER = logs_internal.ProxyLoggerProvider()
    decorators._reset()
    metrics._reset()
    _exporters._dropped_counter = None
    jobs_registry = sys.modules.get("appvitals._jobs_registry")
    if jobs_registry is not None:
        jobs_registry.reset()
    masking = sys.modules.get("appvitals.masking")
    if masking is not None:  # a test's custom masking rules must not leak into the next
        masking.configure_masking()
    _safety.reset_internal_errors()
