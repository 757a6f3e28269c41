"""appvitals' OTLP span encoder against the OpenTelemetry exporter's own, span shape by shape."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from appvitals._otlp_spans import EncodingSpanExporter, SpanEncoder
from appvitals.testing import OTLPReceiver


class _Keep(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


def _provider(keep: _Keep, **attributes: Any) -> TracerProvider:
    provider = TracerProvider(
        resource=Resource.create({"service.name": "shop", **attributes}),
        span_limits=SpanLimits(max_attributes=12, max_events=2, max_links=2),
    )
    provider.add_span_processor(SimpleSpanProcessor(keep))
    return provider


def _assert_same(spans: Sequence[ReadableSpan], encoder: SpanEncoder | None = None) -> bytes:
    """appvitals' bytes parse to the SDK's message and serialise to its very bytes."""
    ours = (encoder or SpanEncoder()).encode(spans)
    theirs = encode_spans(spans)
    assert ExportTraceServiceRequest.FromString(ours) == theirs
    assert ours == theirs.SerializePartialToString()
    return ours


@pytest.fixture
def spans() -> Iterator[list[ReadableSpan]]:
    """Spans of every shape the SDK makes: kinds, parents, events, links, statuses, limits."""
    keep = _Keep()
    provider = _provider(keep, **{"service.version": "1.2.3", "host.cores": 2})
    tracer = provider.get_tracer("appvitals.http.server", "0.1.0")
    other = provider.get_tracer(
        "shop.orders",
        schema_url="https://opentelemetry.io/schemas/1.26.0",
        attributes={"scope.flag": True},
    )
    unversioned = provider.get_tracer("shop.bare")
    remote = SpanContext(
        0x0AF7651916CD43DD8448EB211C80319C,
        0x00F067AA0BA902B7,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("vendor", "v1"), ("other", "x-2")]),
    )
    with tracer.start_as_current_span(
        "GET /orders/{id}",
        context=set_span_in_context(NonRecordingSpan(remote)),
        kind=SpanKind.SERVER,
        attributes={
            "http.request.method": "GET",
            "http.response.status_code": 500,
            "url.path": "/orders/7",
            "ratio": 0.25,
            "negative": -3,
            "zero": 0,
            "minus.zero": -0.0,
            "flag": False,
            "empty": "",
            "unicode": "Grüße, 世界 ✓",
            "tags": ("a", "b"),
            "numbers": [1, -2, 3],
        },
    ) as server:
        server.set_attribute("over.limit", "dropped")  # 13th: counted as dropped
        server.add_event("retry", {"attempt": 2, "delay.s": 0.5})
        server.add_event("no attributes")
        server.add_event("third: dropped")
        server.record_exception(ValueError("bad order"))
        server.set_status(Status(StatusCode.ERROR, "order lookup failed"))
        with other.start_as_current_span(
            "orders.lookup",
            kind=SpanKind.CLIENT,
            links=[
                Link(remote, {"link.kind": "follows"}),
                Link(server.get_span_context()),
                Link(remote),  # third: dropped
            ],
        ) as client:
            client.set_status(Status(StatusCode.OK))
        for kind in (SpanKind.PRODUCER, SpanKind.CONSUMER, SpanKind.INTERNAL):
            with unversioned.start_as_current_span(f"step {kind.name}", kind=kind):
                pass
    with tracer.start_as_current_span(""):  # no name, no parent
        pass
    yield keep.spans
    provider.shutdown()


def test_every_span_shape_encodes_as_the_sdk_encodes_it(spans: list[ReadableSpan]) -> None:
    """Field for field and byte for byte, in one batch and span by span."""
    assert len(spans) == 6
    assert any(span.dropped_attributes and span.dropped_events for span in spans)
    assert any(span.dropped_links for span in spans)
    _assert_same(spans)
    for span in spans:
        _assert_same([span])


def test_repeated_batches_reuse_their_encoded_parts(spans: list[ReadableSpan]) -> None:
    """A second encoding from the cache gives the same bytes; True and 1 stay apart."""
    encoder = SpanEncoder()
    first = _assert_same(spans, encoder)
    assert encoder.encode(spans) == first
    keep = _Keep()
    provider = _provider(keep)
    tracer = provider.get_tracer("t")
    for value in (1, True, 1.0, "1", 0, False, 0.0, -0.0):
        with tracer.start_as_current_span("s", attributes={"value": value}):
            pass
    _assert_same(keep.spans, encoder)
    assert encoder.encode(keep.spans) == encode_spans(keep.spans).SerializePartialToString()


def test_values_the_sdk_cannot_encode_are_skipped_as_it_skips_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """ReadableSpan takes any attribute value: what OTLP cannot carry is left out, and logged."""
    scope = InstrumentationScope("raw", "1", None, {"scope.list": ("x",)})
    context = SpanContext(1, 2, False, TraceFlags(TraceFlags.SAMPLED))
    span = ReadableSpan(
        name="raw",
        context=context,
        parent=SpanContext(1, 3, False),
        resource=Resource({"service.name": "raw"}, "https://example.com/schema"),
        attributes={
            "none": None,
            "bytes": b"\x00\xffbinary",
            "mapping": {"inner": 1, "deeper": {"x": "y"}, 3: "int key"},
            "too.big": 2**63,
            "smallest": -(2**63),
            "object": object(),
            "mixed": [1, "two", 3.0, None, b"4"],
            "": "empty key",
            "long": "x" * 5000,
        },
        events=(Event("e", {"too.big": 2**64}, timestamp=5),),
        kind=SpanKind.SERVER,
        status=Status(StatusCode.UNSET),
        start_time=1,
        end_time=2,
        instrumentation_scope=scope,
    )
    with caplog.at_level("ERROR"):
        _assert_same([span, span])
    assert sum("too.big" in record.getMessage() for record in caplog.records) >= 2


def test_spans_of_two_providers_keep_their_resources() -> None:
    """Spans under different resources, interleaved, group per resource as the SDK's do."""
    keep = _Keep()
    first, second = _provider(keep, region="eu"), _provider(keep, region="us")
    for index in range(4):
        provider = first if index % 2 else second
        with provider.get_tracer("t").start_as_current_span(f"span {index}"):
            pass
    _assert_same(keep.spans)


def _export_both(
    receiver: OTLPReceiver, spans: list[ReadableSpan], **options: Any
) -> tuple[EncodingSpanExporter, list[dict[str, Any]]]:
    endpoint = f"{receiver.http_endpoint}/v1/traces"
    plain = OTLPSpanExporter(endpoint=endpoint, **options)
    ours = EncodingSpanExporter(OTLPSpanExporter(endpoint=endpoint, **options))
    assert plain.export(spans) is SpanExportResult.SUCCESS
    assert ours.export(spans) is SpanExportResult.SUCCESS
    plain.shutdown()
    ours.shutdown()
    return ours, receiver.requests("traces")


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip])
def test_the_exporter_sends_what_the_sdk_exporter_sends(
    otlp_receiver: OTLPReceiver, spans: list[ReadableSpan], compression: Compression
) -> None:
    """Over real OTLP/HTTP, compressed or not, the receiver gets the same request twice."""
    exporter, requests = _export_both(otlp_receiver, spans, compression=compression)
    assert exporter.encodes
    assert len(requests) == 2
    assert requests[0] == requests[1]
    assert exporter.export(spans) is SpanExportResult.FAILURE  # shut down: the SDK refuses


def test_internal_metrics_keep_the_sdk_path(
    otlp_receiver: OTLPReceiver, spans: list[ReadableSpan], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SDK's opt-in exporter metrics are counted in its export(): that one runs."""
    monkeypatch.setenv("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "true")
    exporter, requests = _export_both(otlp_receiver, spans)
    assert not exporter.encodes
    assert requests[0] == requests[1]


def test_an_encoder_failure_falls_back_to_the_sdk(
    otlp_receiver: OTLPReceiver, spans: list[ReadableSpan], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug here costs speed, not spans: the batch goes out through the SDK's encoder."""

    def broken(_self: SpanEncoder, _spans: Any) -> bytes:
        raise RuntimeError("encoder bug")

    monkeypatch.setattr(SpanEncoder, "encode", broken)
    exporter, requests = _export_both(otlp_receiver, spans)
    assert exporter.encodes
    assert len(requests) == 2
    assert requests[0] == requests[1]


def test_a_refused_export_fails(spans: list[ReadableSpan]) -> None:
    """No server: the exporter's client reports the failure, and export says FAILURE."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    exporter = EncodingSpanExporter(
        OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces", timeout=0.5)
    )
    assert exporter.encodes
    assert exporter.export(spans) is SpanExportResult.FAILURE
    exporter.shutdown()
