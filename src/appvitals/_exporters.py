"""Exporters as appvitals uses them: built per process, never raising, chosen by name.

The wrappers here solve two problems the OpenTelemetry SDK leaves to the application:

* **fork**: an exporter holding a gRPC channel or an HTTP session must not be shared
  between a gunicorn master and its workers (gRPC in particular breaks when its core was
  started before ``fork``). The wrappers build the real exporter lazily, on the first export
  *in the current process*, and build a new one when the process id changes.
* **fail-open**: an exporter that raises is counted and logged once by the
  :mod:`appvitals._safety` boundary and reported as a failed export, never propagated.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, Optional, TypeVar, cast

from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk._logs.export import LogRecordExporter as _LogExporterBase
from opentelemetry.sdk._logs.export import LogRecordExportResult as _LogResult
from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import DefaultAggregation
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from appvitals._config import Config
from appvitals._otlp_spans import EncodingSpanExporter
from appvitals._safety import report_internal_error

E = TypeVar("E")
_TEMPORALITY_PREFERENCE = "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"


class _PerProcess(Generic[E]):
    """Holds one exporter per process, built on first use."""

    def __init__(self, factory: Callable[[], E]) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._pid = -1
        self._exporter: Optional[E] = None

    def get(self) -> E:
        pid = os.getpid()
        if self._pid != pid:
            # A lock inherited from the parent may be held by a thread that no longer exists.
            self._lock = threading.Lock()
            with self._lock:
                self._exporter = self._factory()
                self._pid = pid
        assert self._exporter is not None
        return self._exporter

    def built(self) -> Optional[E]:
        """The exporter of this process, if one was built."""
        return self._exporter if self._pid == os.getpid() else None


class SafeSpanExporter(SpanExporter):
    """A span exporter built per process whose errors never escape."""

    def __init__(self, factory: Callable[[], SpanExporter]) -> None:
        self._inner = _PerProcess(factory)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            return self._inner.get().export(spans)
        except Exception as error:
            report_internal_error("span exporter", error)
            return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        inner = self._inner.built()
        if inner is not None:
            try:
                inner.shutdown()
            except Exception as error:
                report_internal_error("span exporter shutdown", error)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        inner = self._inner.built()
        try:
            return True if inner is None else inner.force_flush(timeout_millis)
        except Exception as error:
            report_internal_error("span exporter flush", error)
            return False


class SafeLogExporter(_LogExporterBase):
    """A log exporter built per process whose errors never escape."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._inner: _PerProcess[Any] = _PerProcess(factory)

    def export(self, batch: Sequence[Any]) -> Any:
        try:
            return self._inner.get().export(batch)
        except Exception as error:
            report_internal_error("log exporter", error)
            return _LogResult.FAILURE

    def shutdown(self) -> None:
        inner = self._inner.built()
        if inner is not None:
            try:
                inner.shutdown()
            except Exception as error:
                report_internal_error("log exporter shutdown", error)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        inner = self._inner.built()
        try:
            return True if inner is None else bool(inner.force_flush(timeout_millis))
        except Exception as error:
            report_internal_error("log exporter flush", error)
            return False


class SafeMetricExporter(MetricExporter):
    """A metric exporter built per process whose errors never escape."""

    def __init__(
        self,
        factory: Callable[[], MetricExporter],
        preferred_temporality: Optional[dict[type, AggregationTemporality]] = None,
    ) -> None:
        super().__init__(preferred_temporality=preferred_temporality)
        self._inner = _PerProcess(factory)

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        try:
            return self._inner.get().export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        except Exception as error:
            report_internal_error("metric exporter", error)
            return MetricExportResult.FAILURE

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        inner = self._inner.built()
        if inner is not None:
            try:
                inner.shutdown(timeout_millis=timeout_millis, **kwargs)
            except Exception as error:
                report_internal_error("metric exporter shutdown", error)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        inner = self._inner.built()
        try:
            return True if inner is None else inner.force_flush(timeout_millis)
        except Exception as error:
            report_internal_error("metric exporter flush", error)
            return False


class SharedExportReader(PeriodicExportingMetricReader):
    """The periodic OTLP export, fed by the Prometheus reader's collections.

    Every reader registered on a ``MeterProvider`` keeps its own copy of every instrument's
    state, so with both ``/metrics`` and OTLP on, each ``counter.add`` or
    ``histogram.record`` was aggregated twice: about 3.5 µs of its 8 µs
    (``docs/benchmarks.md``). When the exporter wants cumulative temporality and the default
    aggregations — what the Prometheus reader keeps anyway — this reader is not registered
    on the provider: it exports, on the SDK's periodic schedule, what ``source`` collects.
    appvitals' ``force_flush()`` and ``shutdown()`` call it before the provider's (a last
    export needs the provider still attached).
    """

    def __init__(
        self,
        exporter: MetricExporter,
        source: Any,
        export_interval_millis: float,
        export_timeout_millis: float,
    ) -> None:
        super().__init__(exporter, export_interval_millis, export_timeout_millis)
        self._source = source
        # The callback a provider would set on registration (the SDK calls it with the
        # reader and a timeout); the first tick is an export interval away.
        self._set_collect_callback(self._collect_from_source)  # type: ignore[arg-type]

    def _collect_from_source(
        self, _reader: Any, timeout_millis: float = 10_000
    ) -> Optional[MetricsData]:
        del timeout_millis  # the source collects with its own (local, in-memory) timeout
        return cast(Optional[MetricsData], self._source.collect_metrics_data())

    @staticmethod
    def can_share(exporter: MetricExporter) -> bool:
        """Whether ``exporter`` takes what a cumulative reader with default aggregations sees."""
        temporality = getattr(exporter, "_preferred_temporality", None) or {}
        aggregation = getattr(exporter, "_preferred_aggregation", None) or {}
        cumulative = AggregationTemporality.CUMULATIVE
        return all(value == cumulative for value in temporality.values()) and all(
            isinstance(value, DefaultAggregation) for value in aggregation.values()
        )


def temporality_preference(
    environ: Mapping[str, str] = os.environ,
) -> dict[type, AggregationTemporality]:
    """The OTLP metrics temporality preference (``cumulative``, ``delta`` or ``lowmemory``)."""
    preference = environ.get(_TEMPORALITY_PREFERENCE, "cumulative").strip().lower()
    cumulative = AggregationTemporality.CUMULATIVE
    delta = AggregationTemporality.DELTA
    result: dict[type, AggregationTemporality] = dict.fromkeys(
        (Counter, UpDownCounter, Histogram, ObservableCounter, ObservableUpDownCounter),
        cumulative,
    )
    result[ObservableGauge] = cumulative
    if preference == "delta":
        result.update(dict.fromkeys((Counter, Histogram, ObservableCounter), delta))
    elif preference == "lowmemory":
        result.update(dict.fromkeys((Counter, Histogram), delta))
    return result


def _otlp_factory(config: Config, signal: str) -> Callable[[], Any]:
    protocol = config.otlp_protocols.get(signal, "http/protobuf")
    endpoint = config.otlp_endpoints.get(signal)
    headers = dict(config.otlp_headers) or None
    timeout = config.otlp_timeout
    module = "grpc" if protocol == "grpc" else "http"
    names = {
        "traces": "OTLPSpanExporter",
        "metrics": "OTLPMetricExporter",
        "logs": "OTLPLogExporter",
    }
    modules = {"traces": "trace_exporter", "metrics": "metric_exporter", "logs": "_log_exporter"}
    module_name = f"opentelemetry.exporter.otlp.proto.{module}.{modules[signal]}"
    # Import now, in configure(): the exporter is built per process at its first export,
    # and its imports (protobuf, ``requests`` and urllib3 for HTTP: ~50 ms of CPU) would
    # otherwise hold up whichever request runs that export. A failed import is left to
    # build(), which fails the same way at each export, reported there.
    with contextlib.suppress(Exception):
        importlib.import_module(module_name)
        if module == "http":  # the HTTP exporter imports requests when it is built
            importlib.import_module("requests")

    def build() -> Any:
        cls = getattr(importlib.import_module(module_name), names[signal])
        kwargs: dict[str, Any] = {"endpoint": endpoint, "headers": headers, "timeout": timeout}
        if signal == "metrics":
            kwargs["preferred_temporality"] = temporality_preference()
        exporter = cls(**kwargs)
        if signal == "traces" and module == "http":  # appvitals' encoder, 4x the SDK's speed
            return EncodingSpanExporter(exporter)
        return exporter

    return build


def _console_factory(signal: str) -> Callable[[], Any]:
    def build() -> Any:
        if signal == "traces":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            return ConsoleSpanExporter()
        if signal == "metrics":
            from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

            return ConsoleMetricExporter()
        from opentelemetry.sdk._logs.export import ConsoleLogRecordExporter

        return ConsoleLogRecordExporter()

    return build


def _jsonl_factory(config: Config, signal: str) -> Callable[[], Any]:
    def build() -> Any:
        from appvitals import _jsonl

        classes = {
            "traces": _jsonl.JsonlSpanExporter,
            "metrics": _jsonl.JsonlMetricExporter,
            "logs": _jsonl.JsonlLogExporter,
        }
        return classes[signal](config.jsonl_dir)

    return build


def build_exporter(config: Config, signal: str) -> Any:
    """The exporter for one signal (``traces``, ``metrics``, ``logs``), or ``None``."""
    if config.exporter == "none":
        return None
    if config.exporter == "otlp":
        factory = _otlp_factory(config, signal)
    elif config.exporter == "console":
        factory = _console_factory(signal)
    else:
        factory = _jsonl_factory(config, signal)
    if signal == "traces":
        return SafeSpanExporter(factory)
    if signal == "metrics":
        return SafeMetricExporter(factory, temporality_preference())
    return SafeLogExporter(factory)


def destination(config: Config, signal: str) -> str:
    """Where one signal goes, in words (for ``appvitals doctor``)."""
    if config.disabled or signal not in config.enabled_signals():
        return "disabled"
    if config.exporter == "none":
        return "nowhere (exporter none)"
    if config.exporter == "console":
        return "console (stdout)"
    if config.exporter == "jsonl":
        return os.path.join(config.jsonl_dir, f"{signal}.jsonl")  # noqa: PTH118
    protocol = config.otlp_protocols.get(signal, "http/protobuf")
    default = "http://localhost:4318/v1/" + signal if protocol != "grpc" else "localhost:4317"
    return f"OTLP {protocol} {config.otlp_endpoints.get(signal) or default}"


_dropped_counter: Any = None


def _count_dropped(signal: str) -> None:
    global _dropped_counter  # noqa: PLW0603 - one process-wide self-metric
    if _dropped_counter is None:
        from opentelemetry import metrics

        _dropped_counter = metrics.get_meter("appvitals").create_counter(
            "appvitals.telemetry.dropped",
            unit="{item}",
            description="Spans and log records dropped because the export queue was full",
        )
    _dropped_counter.add(1, {"signal": signal})


def _queue_full(processor: Any) -> bool:
    # The SDK's batch queue is a bounded deque that silently evicts the oldest item when
    # full; its own drop metric is opt-in (OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED).
    queue = processor._batch_processor._queue
    return queue.maxlen is not None and len(queue) >= queue.maxlen


class CountingBatchSpanProcessor(BatchSpanProcessor):
    """The SDK's batch span processor, counting what a full queue drops."""

    def on_end(self, span: ReadableSpan) -> None:
        try:
            if _queue_full(self):
                _count_dropped("traces")
        except Exception as error:
            report_internal_error("span queue", error)
        super().on_end(span)


class CountingBatchLogRecordProcessor(BatchLogRecordProcessor):
    """The SDK's batch log record processor, counting what a full queue drops."""

    def on_emit(self, log_record: Any) -> None:
        try:
            if _queue_full(self):
                _count_dropped("logs")
        except Exception as error:
            report_internal_error("log queue", error)
        super().on_emit(log_record)
