"""The OTLP test receiver, fed by the real OpenTelemetry SDK and OTLP exporters."""

from __future__ import annotations

import gzip
import json
import math
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any
from urllib.error import HTTPError

import pytest
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GRPCLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
    OTLPMetricExporter as GRPCMetricExporter,
)
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GRPCSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HTTPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
    OTLPMetricExporter as HTTPMetricExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HTTPSpanExporter,
)
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord as LogRecordProto
from opentelemetry.proto.logs.v1.logs_pb2 import ResourceLogs, ScopeLogs
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import LogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from appvitals.testing import OTLPReceiver, spans_from

TRANSPORTS = ["grpc", "http"]
RESOURCE = Resource.create({"service.name": "checkout", "deployment.environment": "test"})


def span_exporter(receiver: OTLPReceiver, transport: str, **options: Any) -> SpanExporter:
    """Return a real OTLP span exporter aimed at the receiver."""
    if transport == "grpc":
        return GRPCSpanExporter(endpoint=receiver.grpc_endpoint, insecure=True, **options)
    return HTTPSpanExporter(endpoint=receiver.http_endpoint + "/v1/traces", **options)


def metric_exporter(receiver: OTLPReceiver, transport: str) -> MetricExporter:
    """Return a real OTLP metric exporter aimed at the receiver."""
    if transport == "grpc":
        return GRPCMetricExporter(endpoint=receiver.grpc_endpoint, insecure=True)
    return HTTPMetricExporter(endpoint=receiver.http_endpoint + "/v1/metrics")


def log_exporter(receiver: OTLPReceiver, transport: str) -> LogRecordExporter:
    """Return a real OTLP log exporter aimed at the receiver."""
    if transport == "grpc":
        return GRPCLogExporter(endpoint=receiver.grpc_endpoint, insecure=True)
    return HTTPLogExporter(endpoint=receiver.http_endpoint + "/v1/logs")


def tracer_provider(exporter: SpanExporter | None = None) -> TracerProvider:
    """Return a local (never global) tracer provider exporting synchronously."""
    provider = TracerProvider(resource=RESOURCE)
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, str]:
    """POST to the receiver with urllib; return status, body and Content-Type."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read(), response.headers["Content-Type"]
    except HTTPError as error:
        # An HTTPError holds the open response; closing it avoids a ResourceWarning.
        with error:
            return error.code, error.read(), error.headers["Content-Type"]


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    """A receiver started and stopped without the plugin fixture."""
    with OTLPReceiver() as started:
        yield started


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_spans_arrive_flattened_with_sdk_ids(otlp_receiver: OTLPReceiver, transport: str) -> None:
    """Parent and child spans arrive with names, attributes and the SDK's ids in hex."""
    provider = tracer_provider(span_exporter(otlp_receiver, transport))
    tracer = provider.get_tracer("tests.receiver", "1.2.3")
    try:
        with tracer.start_as_current_span(
            "GET /cart",
            kind=SpanKind.SERVER,
            attributes={
                "http.route": "/cart",
                "retries": 3,
                "ratio": 0.5,
                "cached": False,
                "tags": ["a", "b"],
            },
        ) as parent:
            with tracer.start_as_current_span("load cart") as child:
                child.add_event("cache.miss", {"key": "user:1"})
                child.set_status(Status(StatusCode.ERROR, "db down"))
    finally:
        provider.shutdown()

    spans = otlp_receiver.wait_for_spans(count=2)
    by_name = {span.name: span for span in spans}
    assert set(by_name) == {"GET /cart", "load cart"}
    server, inner = by_name["GET /cart"], by_name["load cart"]
    parent_context, child_context = parent.get_span_context(), child.get_span_context()
    assert server.trace_id == inner.trace_id == f"{parent_context.trace_id:032x}"
    assert server.span_id == f"{parent_context.span_id:016x}"
    assert inner.span_id == f"{child_context.span_id:016x}"
    assert inner.parent_span_id == server.span_id
    assert server.parent_span_id is None
    assert server.kind == SpanKind.SERVER.value + 1  # OTLP numbers kinds from 1, the SDK from 0
    assert server.attributes == {
        "http.route": "/cart",
        "retries": 3,
        "ratio": 0.5,
        "cached": False,
        "tags": ["a", "b"],
    }
    assert inner.status_code == 2
    assert inner.status_message == "db down"
    assert inner.events == [{"name": "cache.miss", "attributes": {"key": "user:1"}}]
    assert server.resource["service.name"] == "checkout"
    assert server.resource["deployment.environment"] == "test"
    assert server.scope == "tests.receiver"
    assert 0 <= inner.duration_s <= server.duration_s
    assert len(otlp_receiver.requests("traces")) == 2


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_metrics_arrive_as_points(otlp_receiver: OTLPReceiver, transport: str) -> None:
    """A counter, a gauge and a histogram arrive with values and bucket counts."""
    # An infinite interval starts no export thread: data leaves only on force_flush.
    reader = PeriodicExportingMetricReader(
        metric_exporter(otlp_receiver, transport), export_interval_millis=math.inf
    )
    provider = MeterProvider(metric_readers=[reader], resource=RESOURCE)
    meter = provider.get_meter("tests.metrics")
    try:
        orders = meter.create_counter("orders", unit="{order}", description="Orders placed")
        orders.add(2, {"region": "eu"})
        orders.add(3, {"region": "eu"})
        meter.create_gauge("temperature", unit="Cel").set(21.5)
        latency = meter.create_histogram(
            "latency", unit="ms", explicit_bucket_boundaries_advisory=[10.0, 100.0]
        )
        for value in (5, 7, 50, 500):
            latency.record(value, {"route": "/cart"})
        assert provider.force_flush()
    finally:
        provider.shutdown()

    points = {point.name: point for point in otlp_receiver.wait_for_metrics(count=3)}
    assert set(points) == {"orders", "temperature", "latency"}
    counter = points["orders"]
    assert (counter.kind, counter.value, counter.attributes) == ("sum", 5, {"region": "eu"})
    assert counter.is_monotonic is True
    assert counter.aggregation_temporality == 2
    assert (counter.unit, counter.description) == ("{order}", "Orders placed")
    gauge = points["temperature"]
    assert (gauge.kind, gauge.value, gauge.unit) == ("gauge", 21.5, "Cel")
    histogram = points["latency"]
    assert histogram.kind == "histogram"
    assert histogram.value == 4
    assert histogram.sum == 562
    assert histogram.explicit_bounds == [10.0, 100.0]
    assert histogram.bucket_counts == [2, 1, 1]
    assert (histogram.min, histogram.max) == (5, 500)
    assert histogram.attributes == {"route": "/cart"}
    assert histogram.resource["service.name"] == "checkout"
    assert histogram.scope == "tests.metrics"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_log_carries_trace_context(otlp_receiver: OTLPReceiver, transport: str) -> None:
    """A log emitted inside a span arrives with its body, severity and the span's ids."""
    logger_provider = LoggerProvider(resource=RESOURCE)
    logger_provider.add_log_record_processor(
        SimpleLogRecordProcessor(log_exporter(otlp_receiver, transport))
    )
    # Logger.emit, not the SDK's logging.LoggingHandler: 1.45 deprecates that handler and a
    # DeprecationWarning is an error here.
    logger = logger_provider.get_logger("tests.logs")
    tracer = tracer_provider().get_tracer("tests.logs")
    try:
        with tracer.start_as_current_span("pay") as span:
            logger.emit(
                body="payment declined",
                severity_number=SeverityNumber.WARN,
                severity_text="WARN",
                attributes={"order.id": 42},
            )
        logger.emit(body={"event": "shutdown", "clean": True}, severity_number=SeverityNumber.INFO)
    finally:
        logger_provider.shutdown()

    declined, shutdown = otlp_receiver.wait_for_logs(count=2)
    context = span.get_span_context()
    assert declined.body == "payment declined"
    assert (declined.severity_number, declined.severity_text) == (13, "WARN")
    assert declined.attributes == {"order.id": 42}
    assert declined.trace_id == f"{context.trace_id:032x}"
    assert declined.span_id == f"{context.span_id:016x}"
    assert declined.resource["service.name"] == "checkout"
    assert declined.scope == "tests.logs"
    assert shutdown.body == {"event": "shutdown", "clean": True}
    assert (shutdown.trace_id, shutdown.span_id) == (None, None)


def test_gzip_http_export(receiver: OTLPReceiver) -> None:
    """The HTTP exporter's gzip-compressed requests are decompressed and decoded."""
    provider = tracer_provider(span_exporter(receiver, "http", compression=Compression.Gzip))
    try:
        with provider.get_tracer("tests.gzip").start_as_current_span("compressed"):
            pass
    finally:
        provider.shutdown()

    (span,) = receiver.wait_for_spans()
    assert span.name == "compressed"


def test_gzip_protobuf_body_over_raw_http(receiver: OTLPReceiver) -> None:
    """A hand-made gzip protobuf POST is accepted and answered with an empty protobuf."""
    log = LogRecordProto(body=AnyValue(string_value="hi"))
    body = ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=[log])])]
    ).SerializeToString()
    status, reply, content_type = post(
        receiver.http_endpoint + "/v1/logs",
        gzip.compress(body),
        {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
    )
    assert (status, reply, content_type) == (200, b"", "application/x-protobuf")
    assert [log.body for log in receiver.logs()] == ["hi"]


def test_json_body_is_stored_as_is(receiver: OTLPReceiver) -> None:
    """An OTLP/JSON body is stored unchanged and answered with ``{}``."""
    payload = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "js"}}]
                },
                "scopeSpans": [
                    {
                        "scope": {"name": "browser"},
                        "spans": [
                            {
                                "traceId": "5b8efff798038103d269b633813fc60c",
                                "spanId": "eee19b7ec3c1b174",
                                "name": "click",
                                "kind": 1,
                                "startTimeUnixNano": "1544712660000000000",
                                "endTimeUnixNano": "1544712661000000000",
                                "attributes": [{"key": "n", "value": {"intValue": "7"}}],
                            }
                        ],
                    }
                ],
            }
        ]
    }
    status, reply, content_type = post(
        receiver.http_endpoint + "/v1/traces",
        json.dumps(payload).encode(),
        {"Content-Type": "application/json"},
    )
    assert (status, reply, content_type) == (200, b"{}", "application/json")
    assert receiver.requests("traces") == [payload]
    (span,) = spans_from(receiver.requests("traces"))
    assert (span.name, span.attributes, span.resource) == (
        "click",
        {"n": 7},
        {"service.name": "js"},
    )
    assert span.duration_s == 1.0


def test_unknown_path_is_404(receiver: OTLPReceiver) -> None:
    """A POST to a path that is not an OTLP signal gets 404 and is not stored."""
    status, _, _ = post(
        receiver.http_endpoint + "/v1/profiles", b"{}", {"Content-Type": "application/json"}
    )
    assert status == 404
    assert all(not receiver.requests(signal) for signal in ("traces", "metrics", "logs"))


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        ({"Content-Type": "application/x-protobuf"}, b"\xff\xff\xff", 400),
        ({"Content-Type": "application/json"}, b"[1, 2]", 400),
        ({"Content-Type": "application/json"}, b"{not json", 400),
        ({"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}, b"plain", 400),
        ({"Content-Type": "application/x-protobuf", "Content-Encoding": "br"}, b"", 415),
        ({"Content-Type": "text/plain"}, b"hello", 415),
    ],
)
def test_bad_requests_are_refused(
    receiver: OTLPReceiver, headers: dict[str, str], body: bytes, expected: int
) -> None:
    """Undecodable bodies and unsupported encodings get a 4xx and are not stored."""
    status, _, _ = post(receiver.http_endpoint + "/v1/traces", body, headers)
    assert status == expected
    assert receiver.requests("traces") == []


def test_wait_for_wakes_on_arrival(receiver: OTLPReceiver) -> None:
    """wait_for_spans returns as soon as a span sent from another thread arrives."""
    provider = tracer_provider(span_exporter(receiver, "grpc"))

    def send() -> None:
        with provider.get_tracer("tests.wait").start_as_current_span("late"):
            pass

    sender = threading.Timer(0.1, send)
    sender.start()
    try:
        spans = receiver.wait_for_spans(lambda span: span.name == "late", timeout=5)
    finally:
        sender.join()
        provider.shutdown()
    assert [span.name for span in spans] == ["late"]


def test_wait_for_times_out_with_what_matched(receiver: OTLPReceiver) -> None:
    """On timeout the wait helpers return the (too few) matches instead of raising."""
    started = time.monotonic()
    assert receiver.wait_for_spans(timeout=0.05) == []
    assert receiver.wait_for_metrics(lambda point: point.name == "x", timeout=0.05) == []
    assert receiver.wait_for_logs(count=2, timeout=0.05) == []
    assert receiver.wait_for(lambda: False, timeout=0.05) is False
    assert time.monotonic() - started < 2


def test_clear_forgets_requests(receiver: OTLPReceiver) -> None:
    """clear() empties every signal's list."""
    post(receiver.http_endpoint + "/v1/logs", b"{}", {"Content-Type": "application/json"})
    assert receiver.requests("logs") == [{}]
    receiver.clear()
    assert receiver.requests("logs") == []


def test_requests_rejects_unknown_signal(receiver: OTLPReceiver) -> None:
    """requests() names the valid signals when given another."""
    with pytest.raises(ValueError, match="traces, metrics, logs"):
        receiver.requests("profiles")  # type: ignore[arg-type]


def test_lifecycle() -> None:
    """Endpoints need a running receiver; stop is prompt, idempotent and keeps the data."""
    receiver = OTLPReceiver()
    with pytest.raises(RuntimeError, match="not running"):
        _ = receiver.grpc_endpoint
    receiver.start()
    try:
        with pytest.raises(RuntimeError, match="already running"):
            receiver.start()
        assert receiver.grpc_endpoint.startswith("http://127.0.0.1:")
        assert receiver.http_endpoint.startswith("http://127.0.0.1:")
        assert receiver.grpc_endpoint != receiver.http_endpoint
        post(receiver.http_endpoint + "/v1/metrics", b"{}", {"Content-Type": "application/json"})
    finally:
        started = time.monotonic()
        receiver.stop()
        assert time.monotonic() - started < 1
    receiver.stop()
    with pytest.raises(RuntimeError, match="not running"):
        _ = receiver.http_endpoint
    assert receiver.requests("metrics") == [{}]
