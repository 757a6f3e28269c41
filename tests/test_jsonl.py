"""Tests for the embedded OTLP/JSON-lines exporters, against the real OpenTelemetry SDK."""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from google.protobuf.json_format import ParseDict
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    InMemoryMetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult

from appvitals._jsonl import (
    LOGS_FILE,
    METRICS_FILE,
    TRACES_FILE,
    JsonlFile,
    JsonlLogExporter,
    JsonlMetricExporter,
    JsonlSpanExporter,
    jsonl_exporters,
)

if TYPE_CHECKING:
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter as InMemoryLogExporter
else:
    try:
        from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter as InMemoryLogExporter
    except ImportError:  # SDKs before the LogRecord* renames
        from opentelemetry.sdk._logs.export import InMemoryLogExporter

_HEX_ID_FIELDS = frozenset({"traceId", "spanId", "parentSpanId"})


def _read_lines(path: Path) -> list[dict[str, Any]]:
    raw = path.read_bytes()
    assert raw.endswith(b"\n")
    return [json.loads(line) for line in raw.decode("utf-8").splitlines()]


def _attributes(node: dict[str, Any]) -> dict[str, Any]:
    return {item["key"]: item["value"] for item in node.get("attributes", [])}


def _tracer_provider(service: str = "jsonl-test") -> TracerProvider:
    return TracerProvider(
        resource=Resource.create({"service.name": service}), shutdown_on_exit=False
    )


def _finished_spans(count: int = 1) -> list[ReadableSpan]:
    provider = _tracer_provider()
    tracer = provider.get_tracer("tests.jsonl")
    spans: list[ReadableSpan] = []
    for index in range(count):
        span = tracer.start_span("work", attributes={"index": index})
        span.end()
        assert isinstance(span, ReadableSpan)
        spans.append(span)
    provider.shutdown()
    return spans


def _hex_ids_to_base64(node: Any) -> Any:
    # The inverse of the one place OTLP/JSON departs from the protobuf JSON mapping.
    if isinstance(node, dict):
        return {
            key: base64.b64encode(bytes.fromhex(value)).decode("ascii")
            if key in _HEX_ID_FIELDS
            else _hex_ids_to_base64(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_hex_ids_to_base64(item) for item in node]
    return node


@pytest.fixture
def std_logger() -> Iterator[logging.Logger]:
    """A uniquely named stdlib logger, detached from the root and cleaned up afterwards."""
    logger = logging.getLogger(f"tests.jsonl.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    yield logger
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


def _logging_handler(provider: LoggerProvider) -> LoggingHandler:
    # SDK 1.45 deprecates its LoggingHandler in favour of a contrib package this project does
    # not depend on; the handler still works, and pytest turns the warning into an error.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*LoggingHandler")
        return LoggingHandler(logger_provider=provider)


def test_construction_does_no_io(tmp_path: Path) -> None:
    """Creating the exporters touches nothing on disk until the first export."""
    directory = tmp_path / "not" / "yet"
    spans, metrics, logs = jsonl_exporters(directory)
    assert (spans.path, metrics.path, logs.path) == (
        directory / TRACES_FILE,
        directory / METRICS_FILE,
        directory / LOGS_FILE,
    )
    assert not (tmp_path / "not").exists()
    assert spans.export(_finished_spans()) is SpanExportResult.SUCCESS
    assert (directory / TRACES_FILE).is_file()
    for exporter in (spans, metrics, logs):
        exporter.shutdown()


def test_spans_are_written_as_otlp_json(tmp_path: Path) -> None:
    """Parent and child spans land one per line with hex ids, AnyValue attributes and resource."""
    exporter = JsonlSpanExporter(tmp_path)
    provider = _tracer_provider("checkout")
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tests.jsonl")
    try:
        with tracer.start_as_current_span("parent", attributes={"k": 3}) as parent:
            with tracer.start_as_current_span("child", attributes={"ok": True}) as child:
                child.add_event("cache.miss", {"key": "user:1"})
    finally:
        provider.shutdown()

    lines = _read_lines(tmp_path / TRACES_FILE)
    assert len(lines) == 2
    by_name = {}
    for line in lines:
        resource_spans = line["resourceSpans"][0]
        assert _attributes(resource_spans["resource"])["service.name"] == {
            "stringValue": "checkout"
        }
        for span in resource_spans["scopeSpans"][0]["spans"]:
            by_name[span["name"]] = span

    parent_json, child_json = by_name["parent"], by_name["child"]
    trace_id = format(parent.get_span_context().trace_id, "032x")
    assert parent_json["traceId"] == trace_id
    assert child_json["traceId"] == trace_id
    assert len(trace_id) == 32
    assert trace_id == trace_id.lower()
    assert parent_json["spanId"] == format(parent.get_span_context().span_id, "016x")
    assert child_json["parentSpanId"] == parent_json["spanId"]
    assert {"key": "k", "value": {"intValue": "3"}} in parent_json["attributes"]
    assert _attributes(child_json) == {"ok": {"boolValue": True}}
    (event,) = child_json["events"]
    assert event["name"] == "cache.miss"
    assert _attributes(event) == {"key": {"stringValue": "user:1"}}


def test_metrics_are_written_as_otlp_json(tmp_path: Path) -> None:
    """A counter and a histogram land with int64-as-string sums and bucket counts."""
    reader = PeriodicExportingMetricReader(
        JsonlMetricExporter(tmp_path), export_interval_millis=60_000
    )
    provider = MeterProvider(
        metric_readers=[reader],
        resource=Resource.create({"service.name": "checkout"}),
        shutdown_on_exit=False,
    )
    try:
        meter = provider.get_meter("tests.jsonl")
        counter = meter.create_counter("orders")
        counter.add(2, {"region": "eu"})
        counter.add(3, {"region": "eu"})
        histogram = meter.create_histogram("latency", unit="ms")
        for value in (1.0, 7.0, 300.0):
            histogram.record(value)
        assert provider.force_flush()
    finally:
        provider.shutdown()

    lines = _read_lines(tmp_path / METRICS_FILE)
    # force_flush exports once; shutdown exports the cumulative state once more.
    assert len(lines) == 2
    resource_metrics = lines[0]["resourceMetrics"][0]
    assert _attributes(resource_metrics["resource"])["service.name"] == {"stringValue": "checkout"}
    metrics = {m["name"]: m for m in resource_metrics["scopeMetrics"][0]["metrics"]}
    assert set(metrics) == {"orders", "latency"}
    orders = metrics["orders"]["sum"]["dataPoints"][0]
    assert orders["asInt"] == "5"
    assert _attributes(orders) == {"region": {"stringValue": "eu"}}
    latency = metrics["latency"]["histogram"]["dataPoints"][0]
    assert latency["count"] == "3"
    assert sum(int(count) for count in latency["bucketCounts"]) == 3
    assert metrics["latency"]["unit"] == "ms"


def test_idle_metrics_write_no_line(tmp_path: Path) -> None:
    """A provider without recorded data points leaves no metrics file behind."""
    exporter = JsonlMetricExporter(tmp_path)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=60_000)
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    try:
        provider.get_meter("tests.jsonl").create_counter("never.recorded")
        provider.force_flush()
    finally:
        provider.shutdown()
    assert not (tmp_path / METRICS_FILE).exists()

    direct = JsonlMetricExporter(tmp_path)
    assert direct.export(MetricsData(resource_metrics=[])).name == "SUCCESS"
    direct.shutdown()
    assert not (tmp_path / METRICS_FILE).exists()


def test_logs_carry_trace_context(tmp_path: Path, std_logger: logging.Logger) -> None:
    """A stdlib log emitted inside a span lands with its trace id, span id, severity and body."""
    logger_provider = LoggerProvider(
        resource=Resource.create({"service.name": "checkout"}), shutdown_on_exit=False
    )
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(JsonlLogExporter(tmp_path)))
    tracer_provider = _tracer_provider()
    std_logger.addHandler(_logging_handler(logger_provider))
    try:
        with tracer_provider.get_tracer("tests.jsonl").start_as_current_span("op") as span:
            std_logger.warning("hello %s", "world")
    finally:
        logger_provider.shutdown()
        tracer_provider.shutdown()

    (line,) = _read_lines(tmp_path / LOGS_FILE)
    resource_logs = line["resourceLogs"][0]
    assert _attributes(resource_logs["resource"])["service.name"] == {"stringValue": "checkout"}
    (record,) = resource_logs["scopeLogs"][0]["logRecords"]
    assert record["traceId"] == format(span.get_span_context().trace_id, "032x")
    assert record["spanId"] == format(span.get_span_context().span_id, "016x")
    assert record["severityNumber"] == 13  # SeverityNumber.WARN
    assert record["body"] == {"stringValue": "hello world"}


def test_spans_round_trip_through_protobuf(tmp_path: Path) -> None:
    """A traces line parses back into the exact ExportTraceServiceRequest that was encoded."""
    spans = _finished_spans(3)
    exporter = JsonlSpanExporter(tmp_path)
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    exporter.shutdown()

    (line,) = _read_lines(tmp_path / TRACES_FILE)
    parsed = ParseDict(_hex_ids_to_base64(line), ExportTraceServiceRequest())
    assert parsed == encode_spans(spans)


def test_metrics_round_trip_through_protobuf(tmp_path: Path) -> None:
    """A metrics line parses back into the exact ExportMetricsServiceRequest that was encoded."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    try:
        provider.get_meter("tests.jsonl").create_counter("orders").add(5)
        data = reader.get_metrics_data()
    finally:
        provider.shutdown()
    assert data is not None
    exporter = JsonlMetricExporter(tmp_path)
    assert exporter.export(data).name == "SUCCESS"
    exporter.shutdown()

    (line,) = _read_lines(tmp_path / METRICS_FILE)
    parsed = ParseDict(_hex_ids_to_base64(line), ExportMetricsServiceRequest())
    assert parsed == encode_metrics(data)


def test_logs_round_trip_through_protobuf(tmp_path: Path, std_logger: logging.Logger) -> None:
    """A logs line parses back into the exact ExportLogsServiceRequest that was encoded."""
    memory = InMemoryLogExporter()  # type: ignore[no-untyped-call]
    logger_provider = LoggerProvider(shutdown_on_exit=False)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    tracer_provider = _tracer_provider()
    std_logger.addHandler(_logging_handler(logger_provider))
    try:
        with tracer_provider.get_tracer("tests.jsonl").start_as_current_span("op"):
            std_logger.info("one")
            std_logger.error("two: %d", 2)
    finally:
        logger_provider.shutdown()
        tracer_provider.shutdown()
    records = memory.get_finished_logs()
    exporter = JsonlLogExporter(tmp_path)
    assert exporter.export(records).name == "SUCCESS"
    exporter.shutdown()

    (line,) = _read_lines(tmp_path / LOGS_FILE)
    parsed = ParseDict(_hex_ids_to_base64(line), ExportLogsServiceRequest())
    assert parsed == encode_logs(records)


def test_unwritable_directory_fails_and_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A directory that cannot be created gives FAILURE, never raises, and warns only once."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    exporter = JsonlSpanExporter(blocker / "telemetry")
    with caplog.at_level(logging.WARNING, logger="appvitals"):
        assert exporter.export(_finished_spans()) is SpanExportResult.FAILURE
        assert exporter.export(_finished_spans()) is SpanExportResult.FAILURE
    exporter.shutdown()

    warnings_logged = [r for r in caplog.records if r.name == "appvitals"]
    assert len(warnings_logged) == 1
    assert warnings_logged[0].levelno == logging.WARNING
    assert str(blocker / "telemetry" / TRACES_FILE) in warnings_logged[0].getMessage()


def test_unencodable_batch_fails_without_raising(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A batch the encoder chokes on gives FAILURE and a warning, and writes nothing."""
    exporter = JsonlSpanExporter(tmp_path)
    with caplog.at_level(logging.WARNING, logger="appvitals"):
        result = exporter.export([object()])  # type: ignore[list-item]
    exporter.shutdown()
    assert result is SpanExportResult.FAILURE
    assert not (tmp_path / TRACES_FILE).exists()
    assert len([r for r in caplog.records if r.name == "appvitals"]) == 1


def test_shutdown_is_idempotent_and_final(tmp_path: Path) -> None:
    """Closing twice is harmless and exports after shutdown fail instead of reopening."""
    exporter = JsonlSpanExporter(tmp_path)
    assert exporter.export(_finished_spans()) is SpanExportResult.SUCCESS
    exporter.shutdown()
    exporter.shutdown()
    assert exporter.force_flush()
    assert exporter.export(_finished_spans()) is SpanExportResult.FAILURE
    assert len(_read_lines(tmp_path / TRACES_FILE)) == 1


def test_jsonl_file_appends_to_existing_content(tmp_path: Path) -> None:
    """Writers append after what is already in the file and never truncate it."""
    path = tmp_path / "out.jsonl"
    path.write_bytes(b'{"old":1}\n')
    for value in (2, 3):
        writer = JsonlFile(path)
        assert writer.write(json.dumps({"new": value}).encode())
        writer.close()
    assert _read_lines(path) == [{"old": 1}, {"new": 2}, {"new": 3}]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_forked_child_writes_through_the_same_exporter(tmp_path: Path) -> None:
    """A forked child reopens the file and its line lands whole next to the parent's."""
    exporter = JsonlSpanExporter(tmp_path)
    # Write before forking so the child inherits an open handle and a used lock.
    assert exporter.export(_finished_spans()) is SpanExportResult.SUCCESS

    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            provider = TracerProvider(
                resource=Resource.create({"service.name": "child"}), shutdown_on_exit=False
            )
            span = provider.get_tracer("tests.jsonl").start_span("in-child")
            span.end()
            assert isinstance(span, ReadableSpan)
            if exporter.export([span]) is SpanExportResult.SUCCESS:
                code = 0
            exporter.shutdown()
        finally:
            os._exit(code)

    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert exporter.export(_finished_spans()) is SpanExportResult.SUCCESS
    exporter.shutdown()

    lines = _read_lines(tmp_path / TRACES_FILE)
    assert len(lines) == 3
    services = [
        _attributes(line["resourceSpans"][0]["resource"])["service.name"]["stringValue"]
        for line in lines
    ]
    assert services == ["jsonl-test", "child", "jsonl-test"]
    assert lines[1]["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["name"] == "in-child"


@pytest.mark.parametrize("shared", [True, False], ids=["one-exporter", "exporter-per-thread"])
def test_concurrent_exports_never_interleave(tmp_path: Path, shared: bool) -> None:
    """Four threads exporting fifty times each leave two hundred whole, valid lines."""
    threads_count, per_thread = 4, 50
    spans = _finished_spans(5)
    exporters = (
        [JsonlSpanExporter(tmp_path)] * threads_count
        if shared
        else [JsonlSpanExporter(tmp_path) for _ in range(threads_count)]
    )
    results: list[SpanExportResult] = []
    results_lock = threading.Lock()
    start = threading.Barrier(threads_count)

    def run(exporter: JsonlSpanExporter) -> None:
        start.wait()
        for _ in range(per_thread):
            result = exporter.export(spans)
            with results_lock:
                results.append(result)

    threads = [threading.Thread(target=run, args=(exporter,)) for exporter in exporters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for exporter in set(exporters):
        exporter.shutdown()

    assert results == [SpanExportResult.SUCCESS] * (threads_count * per_thread)
    lines = _read_lines(tmp_path / TRACES_FILE)
    assert len(lines) == threads_count * per_thread
    for line in lines:
        assert len(line["resourceSpans"][0]["scopeSpans"][0]["spans"]) == 5
