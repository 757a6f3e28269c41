"""Exporter selection, per-process wrappers and OTLP end to end into the real receiver."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable

import pytest
from opentelemetry.sdk.metrics import Counter, Histogram, UpDownCounter
from opentelemetry.sdk.metrics.export import AggregationTemporality, MetricExportResult
from opentelemetry.sdk.trace.export import SpanExportResult

import appvitals
from appvitals import Config
from appvitals._config import resolve
from appvitals._exporters import (
    SafeLogExporter,
    SafeMetricExporter,
    SafeSpanExporter,
    _PerProcess,
    build_exporter,
    destination,
    temporality_preference,
)
from appvitals.testing import OTLPReceiver


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_otlp_end_to_end(otlp_receiver: OTLPReceiver, protocol: str) -> None:
    """configure(exporter="otlp") delivers spans, metrics and logs to a real receiver."""
    endpoint = otlp_receiver.grpc_endpoint if protocol == "grpc" else otlp_receiver.http_endpoint
    appvitals.configure(
        service_name="e2e",
        exporter="otlp",
        otlp_endpoint=endpoint,
        otlp_protocol=protocol,
        otlp_headers={"x-tenant": "t1"},
        sampler_ratio=1.0,
    )
    with appvitals.bind(correlation_id="cid-e2e"), appvitals.span("e2e.work") as span:
        appvitals.counter("e2e.items").add(4)
        logging.getLogger("e2e").warning("inside the span")
        trace_id = format(span.get_span_context().trace_id, "032x")
    assert appvitals.shutdown(timeout=10)
    (received,) = otlp_receiver.wait_for_spans(lambda s: s.name == "e2e.work")
    assert received.trace_id == trace_id
    assert received.resource["service.name"] == "e2e"
    (point,) = otlp_receiver.wait_for_metrics(lambda p: p.name == "e2e.items")
    assert point.value == 4
    (log,) = otlp_receiver.wait_for_logs(lambda r: r.body == "inside the span")
    assert log.trace_id == trace_id
    assert log.severity_text == "WARN"
    assert log.attributes["correlation_id"] == "cid-e2e"


@pytest.mark.parametrize("exporter", ["otlp", "console", "jsonl"])
def test_build_exporter_kinds(exporter: str, tmp_path: os.PathLike[str]) -> None:
    """Each exporter name yields the per-process wrappers; none yields nothing."""
    config = resolve({"exporter": exporter, "jsonl_dir": str(tmp_path)}, environ={})
    assert isinstance(build_exporter(config, "traces"), SafeSpanExporter)
    assert isinstance(build_exporter(config, "metrics"), SafeMetricExporter)
    assert isinstance(build_exporter(config, "logs"), SafeLogExporter)
    assert build_exporter(resolve({"exporter": "none"}, environ={}), "traces") is None


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_otlp_http_spans_use_appvitals_encoder(protocol: str) -> None:
    """OTLP/HTTP span exports go through appvitals' encoder (gRPC through the SDK's).

    It fails when an OpenTelemetry release moves the exporter's HTTP client, which would
    otherwise quietly put the slower encoder back (``appvitals._otlp_spans``).
    """
    from appvitals._otlp_spans import EncodingSpanExporter

    config = resolve({"exporter": "otlp", "otlp_protocol": protocol}, environ={})
    exporter = build_exporter(config, "traces")
    assert isinstance(exporter, SafeSpanExporter)
    inner = exporter._inner.get()
    if protocol == "grpc":
        assert not isinstance(inner, EncodingSpanExporter)
    else:
        assert isinstance(inner, EncodingSpanExporter)
        assert inner.encodes
    exporter.shutdown()


def test_console_exporter_prints_spans(capfd: pytest.CaptureFixture[str]) -> None:
    """exporter="console" prints finished spans to stdout."""
    appvitals.configure(exporter="console", sampler_ratio=1.0, metrics=False, logs=False)
    with appvitals.span("printed.span"):
        pass
    appvitals.shutdown()
    assert '"name": "printed.span"' in capfd.readouterr().out


def test_destinations_in_words() -> None:
    """destination() says where each signal goes."""
    jsonl = resolve({"exporter": "jsonl", "jsonl_dir": "/data"}, environ={})
    assert destination(jsonl, "traces") == "/data/traces.jsonl"
    otlp = resolve({"exporter": "otlp", "otlp_endpoint": "http://c:4318"}, environ={})
    assert destination(otlp, "logs") == "OTLP http/protobuf http://c:4318/v1/logs"
    grpc = resolve({"exporter": "otlp", "otlp_protocol": "grpc"}, environ={})
    assert destination(grpc, "metrics") == "OTLP grpc localhost:4317"
    assert destination(resolve({"exporter": "none"}, environ={}), "traces").startswith("nowhere")
    assert destination(resolve({"metrics": False}, environ={}), "metrics") == "disabled"


def test_temporality_preference() -> None:
    """The OTLP temporality preference variable maps instruments like the SDK exporters."""
    cumulative, delta = AggregationTemporality.CUMULATIVE, AggregationTemporality.DELTA
    assert temporality_preference({})[Counter] == cumulative
    prefs = temporality_preference({"OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "delta"})
    assert (prefs[Counter], prefs[UpDownCounter], prefs[Histogram]) == (delta, cumulative, delta)
    low = temporality_preference({"OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "lowmemory"})
    assert low[Histogram] == delta


def test_per_process_rebuilds_after_pid_change(monkeypatch: pytest.MonkeyPatch) -> None:
    """The wrapped exporter is built once per process id."""
    built: list[int] = []
    holder = _PerProcess(lambda: built.append(1) or len(built))
    assert holder.built() is None
    assert holder.get() == 1
    assert holder.get() == 1
    monkeypatch.setattr(os, "getpid", lambda: -42)
    assert holder.built() is None, "a child does not see the parent's exporter"
    assert holder.get() == 2


def test_wrappers_contain_every_failure(caplog: pytest.LogCaptureFixture) -> None:
    """Failures in building, exporting, flushing or shutting down never raise."""
    caplog.set_level(logging.CRITICAL)

    def cannot_build() -> object:
        raise OSError("no exporter here")

    spans = SafeSpanExporter(cannot_build)  # type: ignore[arg-type]
    metrics = SafeMetricExporter(cannot_build)  # type: ignore[arg-type]
    logs = SafeLogExporter(cannot_build)
    assert spans.export([]) == SpanExportResult.FAILURE
    assert metrics.export(None) == MetricExportResult.FAILURE  # type: ignore[arg-type]
    assert logs.export([]).name == "FAILURE"
    for exporter in (spans, metrics, logs):
        assert exporter.force_flush() is True  # nothing was built in this process
        exporter.shutdown()

    class Broken:
        def force_flush(self, *_: object) -> bool:
            raise RuntimeError("flush")

        def shutdown(self, *_: object, **__: object) -> None:
            raise RuntimeError("shutdown")

        def export(self, *_: object, **__: object) -> object:
            raise RuntimeError("export")

    for wrapper in (
        SafeSpanExporter(Broken),  # type: ignore[arg-type]
        SafeMetricExporter(Broken),  # type: ignore[arg-type]
        SafeLogExporter(Broken),
    ):
        wrapper._inner.get()
        assert wrapper.force_flush() is False
        wrapper.shutdown()


def test_full_queue_drops_are_counted(capture: object) -> None:
    """A full span queue drops instead of blocking, and every drop is counted."""
    import threading

    from opentelemetry.sdk.trace import TracerProvider

    from appvitals._exporters import CountingBatchSpanProcessor

    release = threading.Event()

    class StuckExporter(SafeSpanExporter):
        def export(self, spans: object) -> SpanExportResult:  # type: ignore[override]
            release.wait(10)
            return SpanExportResult.SUCCESS

    processor = CountingBatchSpanProcessor(
        StuckExporter(lambda: None),  # type: ignore[arg-type,return-value]
        max_queue_size=4,
        max_export_batch_size=1,
        schedule_delay_millis=10,
    )
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("drops")
    try:
        for _ in range(50):
            tracer.start_span("s").end()
        points = capture.metric("appvitals.telemetry.dropped")  # type: ignore[attr-defined]
        (point,) = points
        assert point.attributes == {"signal": "traces"}
        assert 40 <= point.value <= 46
    finally:
        release.set()
        provider.shutdown()


@pytest.mark.parametrize(("preference", "shared"), [("cumulative", True), ("delta", False)])
def test_otlp_metrics_share_the_prometheus_reader_when_cumulative(
    otlp_receiver: OTLPReceiver,
    configure_otlp: Callable[..., Config],
    monkeypatch: pytest.MonkeyPatch,
    preference: str,
    shared: bool,
) -> None:
    """Cumulative OTLP export reads the Prometheus reader's collections: one aggregation.

    Issue 9: two readers on a provider aggregate every measurement twice. With delta
    temporality the export needs its own reader; either way both outputs stay right.
    """
    from appvitals import _setup, prometheus

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", preference)
    configure_otlp("shared")
    state = _setup._state
    assert state is not None
    readers = state.meter_provider._metric_readers
    assert len(readers) == (1 if shared else 2)
    assert (state.shared_export is not None) is shared
    counter = appvitals.counter("shared.items")
    with appvitals.span("shared.work"):
        counter.add(4)
    assert appvitals.force_flush(timeout=10)
    counter.add(3)
    assert "shared_items_total 7" in prometheus.metrics_text()[0].decode()
    assert appvitals.shutdown(timeout=10)
    points = otlp_receiver.wait_for_metrics(lambda p: p.name == "shared.items", count=2)
    assert [p.value for p in points] == ([4, 7] if shared else [4, 3])
    expected = 2 if shared else 1  # OTLP AggregationTemporality: 1 delta, 2 cumulative
    assert {p.aggregation_temporality for p in points} == {expected}


IMPORTS_AT_CONFIGURE = """
import sys
from appvitals._config import resolve
from appvitals._exporters import build_exporter

protocol = sys.argv[1]
config = resolve({"exporter": "otlp", "otlp_protocol": protocol}, environ={})
before = {name for name in sys.modules if name.startswith(("requests", "grpc"))}
exporters = [build_exporter(config, signal) for signal in ("traces", "metrics", "logs")]
after = {name for name in sys.modules if name.startswith(("requests", "grpc"))}
print(sorted(before), "requests" in after, "grpc" in after,
      [exporter._inner.built() is None for exporter in exporters])
"""


@pytest.mark.parametrize(("protocol", "transport"), [("http/protobuf", 1), ("grpc", 2)])
def test_otlp_exporter_imports_happen_at_configure(protocol: str, transport: int) -> None:
    """The OTLP exporters' imports run in configure(), not in the request of the first export.

    They cost ~50 ms of CPU (protobuf, requests and urllib3 for HTTP), which a request that
    runs the first inline export would otherwise wait for. The exporters themselves are still
    built per process, at their first export.
    """
    completed = subprocess.run(
        [sys.executable, "-c", IMPORTS_AT_CONFIGURE, protocol],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    before, requests_loaded, grpc_loaded, unbuilt = completed.stdout.strip().split(" ", 3)
    assert before == "[]", "the test needs a process that has not imported them yet"
    assert (requests_loaded, grpc_loaded)[transport - 1] == "True"
    assert unbuilt == "[True, True, True]"


def test_a_missing_exporter_package_fails_at_export_not_at_configure(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An exporter that cannot be imported leaves configure() alone and fails each export."""
    # None in sys.modules makes the import raise ImportError, as a missing package does.
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.grpc.trace_exporter", None)
    config = resolve({"exporter": "otlp", "otlp_protocol": "grpc"}, environ={})
    exporter = build_exporter(config, "traces")
    caplog.set_level(logging.CRITICAL)
    assert exporter.export([]) == SpanExportResult.FAILURE


CLIENT_IMPORT = """
import sys
{before}
import appvitals
assert "appvitals.http._instrument" not in sys.modules
appvitals.configure(service_name="imports", exporter="none")
print("appvitals.http._instrument" in sys.modules)
"""


@pytest.mark.parametrize(("before", "expected"), [("import httpx", "True"), ("", "False")])
def test_client_instrumentation_is_imported_at_configure_when_httpx_is(
    before: str, expected: str
) -> None:
    """configure() imports appvitals.http._instrument early, but only for an httpx user.

    instrument_client() imported it on its first call, typically after the application had
    built its database; its objects then sat among the application's buffers and cost a
    SQLite request 80-115 µs (docs/benchmarks.md).
    """
    completed = subprocess.run(
        [sys.executable, "-c", CLIENT_IMPORT.format(before=before)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == expected
