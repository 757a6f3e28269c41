"""OTLP/protobuf encoding of finished spans, written straight to the wire format.

Under ``/work`` load, the OpenTelemetry exporter's encoder cost about 57 µs per sampled span
in the process that exports (py-spy on the gunicorn worker, ``docs/benchmarks.md``): it
builds a protobuf object per span, attribute and value, groups the spans by hashing their
``Resource`` (a JSON dump of its attributes, per span), then serialises the tree. Here the
bytes are written directly, and the parts that repeat from span to span are encoded once:
the resource and scope headers, and every attribute whose key and value were seen before
(``http.request.method=GET``, ``url.scheme=http``, ``http.route=/orders/{id}`` …).

The output is the ``ExportTraceServiceRequest`` the exporter's own ``encode_spans`` builds,
field for field, including what that encoder leaves out (a link's trace state); the tests
compare both, parsed, over spans of every shape. One difference is deliberate: spans are
grouped by the identity of their ``Resource`` object, not its equality, so spans from two
equal resources of two tracer providers are sent under two ``ResourceSpans``.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional, cast

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Link, SpanKind

from appvitals._safety import report_internal_error

_logger = logging.getLogger(__name__)

# SpanKind → the OTLP enum (INTERNAL is 1: 0 is "unspecified").
_KINDS = {
    SpanKind.INTERNAL: 1,
    SpanKind.SERVER: 2,
    SpanKind.CLIENT: 3,
    SpanKind.PRODUCER: 4,
    SpanKind.CONSUMER: 5,
}
# SpanFlags: the "has is_remote" bit, and the "is_remote" bit for a remote parent.
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200
_INT64 = (-(2**63), 2**63 - 1)
_INTERNAL_METRICS = "OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED"
_CACHE_LIMIT = 4096  # attributes kept encoded; the cache starts afresh when full
_CACHED_LENGTH = 256  # the longest string value kept
_pack_double = struct.Struct("<d").pack
_pack_fixed64 = struct.Struct("<Q").pack
_pack_fixed32 = struct.Struct("<I").pack


def _varint(value: int) -> bytes:
    """Protobuf base-128 varint of a non-negative int (negatives as 64-bit two's complement)."""
    if 0 <= value < 0x80:
        return bytes((value,))
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field: tag byte(s), length, payload."""
    return _varint(tag) + _varint(len(payload)) + payload


def _count(tag: int, count: int) -> bytes:
    """A ``uint32`` count field, left out when zero."""
    return bytes((tag,)) + _varint(count) if count else b""


def _status(status: Any) -> bytes:
    """The body of a ``Status``: message (field 2) and code (field 3)."""
    body = _field(0x12, status.description.encode("utf-8")) if status.description else b""
    return body + _count(0x18, status.status_code.value)


def _any_value(value: Any) -> bytes:  # noqa: PLR0911 - one return per OTLP value type
    """The body of an ``AnyValue`` (raises ValueError/TypeError for what OTLP cannot carry)."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _field(0x0A, value.encode("utf-8"))
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            msg = f"{value} does not fit an int64"
            raise ValueError(msg)
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + _pack_double(value)
    if isinstance(value, bytes):
        return _field(0x3A, value)
    if isinstance(value, Sequence):
        return _field(0x2A, b"".join(_field(0x0A, _any_value(each)) for each in value))
    if isinstance(value, Mapping):
        return _field(0x32, b"".join(b"\x0a" + _key_value(str(k), v) for k, v in value.items()))
    msg = f"Invalid type {type(value)} of value {value}"
    raise TypeError(msg)


def _key_value(key: str, value: Any) -> bytes:
    """A ``KeyValue`` message, length-delimited, without the field tag of its container."""
    body = (_field(0x0A, key.encode("utf-8")) if key else b"") + _field(0x12, _any_value(value))
    return _varint(len(body)) + body


class SpanEncoder:
    """Encodes batches of finished spans; keeps what repeats between spans and batches.

    One instance per exporter. Its caches only ever hold complete entries, so two threads
    exporting at once (a flush beside the schedule) at worst encode something twice.
    """

    def __init__(self) -> None:
        # (key, value type, value) → encoded KeyValue, for scalar values.
        self._attributes: dict[tuple[str, type, Any], bytes] = {}
        # id(resource or scope) → (it, its encoded message): identity, not equality, since
        # equal scopes may differ in attributes.
        self._headers: dict[int, tuple[Any, bytes]] = {}

    def encode(self, spans: Sequence[ReadableSpan]) -> bytes:
        """The serialised ``ExportTraceServiceRequest`` of ``spans``."""
        groups: dict[int, tuple[Any, dict[Any, list[bytes]]]] = {}
        for span in spans:
            resource = span.resource
            group = groups.get(id(resource))
            if group is None:
                group = groups[id(resource)] = (resource, {})
            scope = span.instrumentation_scope or None
            encoded = self._span(span)
            scoped = group[1].get(scope)
            if scoped is None:
                group[1][scope] = [encoded]
            else:
                scoped.append(encoded)
        out = []
        for resource, scopes in groups.values():
            parts = [self._header(resource, self._resource)]
            for scope, encoded_spans in scopes.items():
                scope_parts = [self._header(scope, self._scope)]
                scope_parts.extend(encoded_spans)
                schema_url = scope.schema_url if scope is not None else None
                if schema_url:
                    scope_parts.append(_field(0x1A, schema_url.encode("utf-8")))
                parts.append(_field(0x12, b"".join(scope_parts)))
            if resource.schema_url:
                parts.append(_field(0x1A, resource.schema_url.encode("utf-8")))
            out.append(_field(0x0A, b"".join(parts)))
        return b"".join(out)

    def _header(self, owner: Any, build: Any) -> bytes:
        cached = self._headers.get(id(owner))
        if cached is None or cached[0] is not owner:
            if len(self._headers) >= 64:
                self._headers.clear()
            cached = self._headers[id(owner)] = (owner, build(owner))
        return cached[1]

    def _resource(self, resource: Any) -> bytes:
        """``ResourceSpans.resource`` (field 1)."""
        return _field(0x0A, self._attributes_of(0x0A, resource.attributes))

    def _scope(self, scope: Any) -> bytes:
        """``ScopeSpans.scope`` (field 1): name, version, attributes."""
        if scope is None:
            return b"\x0a\x00"
        body = b""
        if scope.name:
            body += _field(0x0A, scope.name.encode("utf-8"))
        if scope.version:
            body += _field(0x12, scope.version.encode("utf-8"))
        body += self._attributes_of(0x1A, scope.attributes)
        return _field(0x0A, body)

    def _attributes_of(self, tag: int, attributes: Optional[Mapping[str, Any]]) -> bytes:
        """The repeated ``KeyValue`` field ``tag`` of ``attributes``."""
        if not attributes:
            return b""
        prefix = bytes((tag,))
        cache = self._attributes
        parts = []
        for key, value in attributes.items():
            kind = value.__class__
            # Floats are not kept (0.0 and -0.0 are equal keys, but differ in bytes), nor long
            # strings (memory): both are rarely repeated anyway.
            if kind is int or kind is bool or (kind is str and len(value) <= _CACHED_LENGTH):
                cache_key = (key, kind, value)
                encoded = cache.get(cache_key)
                if encoded is None:
                    try:
                        encoded = _key_value(key, value)
                    except Exception as error:  # the SDK's encoder logs and skips it too
                        _logger.exception("Failed to encode key %s: %s", key, error)
                        continue
                    if len(cache) >= _CACHE_LIMIT:
                        cache.clear()
                    cache[cache_key] = encoded
            else:
                try:
                    encoded = _key_value(key, value)
                except Exception as error:
                    _logger.exception("Failed to encode key %s: %s", key, error)
                    continue
            parts.append(prefix)
            parts.append(encoded)
        return b"".join(parts)

    def _span(self, span: ReadableSpan) -> bytes:
        """``ScopeSpans.spans`` (field 2): one span."""
        context: Any = span.get_span_context()  # a finished SDK span always has one
        parent = span.parent
        parts = [
            b"\x0a\x10",
            context.trace_id.to_bytes(16, "big"),
            b"\x12\x08",
            context.span_id.to_bytes(8, "big"),
        ]
        trace_state = context.trace_state
        if trace_state:
            text = ",".join(f"{key}={value}" for key, value in trace_state.items())
            parts.append(_field(0x1A, text.encode("utf-8")))
        if parent:
            parts.append(b"\x22\x08")
            parts.append(parent.span_id.to_bytes(8, "big"))
        if span.name:
            parts.append(_field(0x2A, span.name.encode("utf-8")))
        parts.append(bytes((0x30, _KINDS[span.kind])))
        if span.start_time:
            parts.append(b"\x39" + _pack_fixed64(span.start_time))
        if span.end_time:
            parts.append(b"\x41" + _pack_fixed64(span.end_time))
        parts.append(self._attributes_of(0x4A, span.attributes))
        parts.append(_count(0x50, span.dropped_attributes))
        parts.extend(_field(0x5A, self._event(event)) for event in span.events)
        parts.append(_count(0x60, span.dropped_events))
        parts.extend(_field(0x6A, self._link(link)) for link in span.links)
        parts.append(_count(0x70, span.dropped_links))
        if span.status is not None:
            parts.append(_field(0x7A, _status(span.status)))
        flags = _HAS_IS_REMOTE | (_IS_REMOTE if parent and parent.is_remote else 0)
        parts.append(b"\x85\x01" + _pack_fixed32(flags))
        return _field(0x12, b"".join(parts))

    def _event(self, event: Event) -> bytes:
        """``Span.Event``: time, name, attributes, dropped attributes."""
        body = b""
        if event.timestamp:
            body += b"\x09" + _pack_fixed64(event.timestamp)
        if event.name:
            body += _field(0x12, event.name.encode("utf-8"))
        body += self._attributes_of(0x1A, event.attributes)
        return body + _count(0x20, event.dropped_attributes)

    def _link(self, link: Link) -> bytes:
        """``Span.Link``: ids, attributes, dropped attributes and flags (no trace state,
        as the SDK's encoder)."""
        context = link.context
        body = (
            b"\x0a\x10"
            + context.trace_id.to_bytes(16, "big")
            + b"\x12\x08"
            + context.span_id.to_bytes(8, "big")
            + self._attributes_of(0x22, link.attributes)
            + _count(0x28, link.dropped_attributes)
        )
        flags = _HAS_IS_REMOTE | (_IS_REMOTE if context.is_remote else 0)
        return body + b"\x35" + _pack_fixed32(flags)


class EncodingSpanExporter(SpanExporter):
    """The OpenTelemetry OTLP/HTTP span exporter, sending what :class:`SpanEncoder` wrote.

    It hands the bytes to the exporter's HTTP client (its compression, headers, timeout and
    retries). Where that client is not there — another exporter version, a gRPC exporter —
    or the SDK's internal exporter metrics are on (they are counted in ``export``), the
    exporter's own ``export`` runs instead, as it does for a batch this encoder fails on.
    """

    def __init__(self, inner: SpanExporter) -> None:
        self._inner = inner
        self._encoder = SpanEncoder()
        self._send = _sender(inner)

    @property
    def encodes(self) -> bool:
        """Whether batches are encoded here (else the inner exporter's ``export`` runs)."""
        return self._send is not None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        inner, send = self._inner, self._send
        if send is None or getattr(inner, "_shutdown", True):
            return inner.export(spans)
        try:
            data = self._encoder.encode(spans)
        except Exception as error:
            report_internal_error("OTLP span encoding", error)
            return inner.export(spans)
        if len(data) > getattr(inner, "_max_request_size", len(data)):
            return inner.export(spans)  # which drops the batch, logging why
        return SpanExportResult.SUCCESS if send(data).success else SpanExportResult.FAILURE

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


def _sender(inner: SpanExporter) -> Optional[Callable[[bytes], Any]]:
    """The ``export(bytes)`` of the OTLP/HTTP exporter's client, or ``None``."""
    if os.environ.get(_INTERNAL_METRICS, "").strip().lower() == "true":
        return None
    send = getattr(getattr(inner, "_client", None), "export", None)
    if not callable(send) or not hasattr(inner, "_max_request_size"):
        return None
    return cast("Callable[[bytes], Any]", send)
