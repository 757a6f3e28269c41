"""Captures: one masked, bounded record of each failed outgoing call, and where it goes.

A :class:`Capture` is built once per failed call (after retries) from what the call already
had in hand: the request, the response headers and the first bytes of a body that was read
anyway. Nothing is read for the capture's sake, so a streamed response that the caller did
not read shows ``<not read>`` and is left untouched. Every URL, header and body preview
passes through :mod:`appvitals.masking` before it is stored.

It is delivered three ways: an ERROR line on the ``appvitals.http`` logger (the capture as a
dict in ``extra={"capture": ...}``), a span event ``appvitals.http.capture`` with the
capture's fields flattened into attributes, and the ``on_capture`` callback, whose
exceptions are contained by the fail-open boundary.
"""

from __future__ import annotations

import codecs
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from appvitals._safety import report_internal_error
from appvitals.http._policy import Attempt

_logger = logging.getLogger("appvitals.http")

#: The phases of a call, in the order they happen (``total`` spans the whole call).
PHASES = ("dns", "connect", "tls", "send", "first_byte", "download", "total")
#: Bytes of a body kept in a capture unless configured otherwise.
DEFAULT_BODY_BYTES = 1024

_TEXT_TYPES = ("json", "xml", "x-www-form-urlencoded", "javascript", "yaml", "csv", "graphql")
_BINARY_TYPES = ("image/", "audio/", "video/", "font/", "application/octet-stream")
_BINARY_SUBTYPES = ("pdf", "zip", "gzip", "protobuf", "grpc", "msgpack", "cbor", "avro")

Scalar = Union[str, int, float, bool]


@dataclass(frozen=True)
class BodySummary:
    """A bounded, masked view of a request or response body.

    Attributes:
        size: Bytes in the body (``None`` when unknown: streamed and not fully read).
        content_type: The ``Content-Type``, if any.
        preview: The first bytes as masked text; ``"<N bytes binary>"`` for binary data,
            ``"<not read>"`` when the body was not read, ``"<streamed>"`` for a request
            body sent from a stream.
        truncated: Whether the preview stops before the end of the body.

    Examples:
        >>> summarise_body(b"\\x89PNG\\r\\n\\x1a\\n\\x00", content_type="image/png").preview
        '<9 bytes binary>'
    """

    size: Optional[int]
    content_type: Optional[str] = None
    preview: Optional[str] = None
    truncated: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The summary as a JSON-compatible dict."""
        return {
            "size": self.size,
            "content_type": self.content_type,
            "preview": self.preview,
            "truncated": self.truncated,
        }


def summarise_body(
    data: Optional[bytes],
    *,
    size: Optional[int] = None,
    content_type: Optional[str] = None,
    content_encoding: Optional[str] = None,
    limit: int = DEFAULT_BODY_BYTES,
    marker: str = "<not read>",
) -> BodySummary:
    """Summarise a body of which ``data`` (at most ``limit`` bytes are used) was seen.

    Args:
        data: The bytes seen (the start of the body), or ``None`` when it was not read.
        size: The full size when known (default: ``len(data)``).
        content_type: The ``Content-Type`` header.
        content_encoding: The ``Content-Encoding`` header (compressed bytes are not shown).
        limit: At most this many bytes are decoded into the preview.
        marker: The preview when ``data`` is ``None``.

    Returns:
        The summary; text is decoded (its charset, else UTF-8, invalid bytes replaced) and
        masked with :func:`appvitals.masking.mask_text`.

    Examples:
        >>> summary = summarise_body(b'{"error": "rate limited"}', content_type="application/json")
        >>> summary.size, summary.preview, summary.truncated
        (25, '{"error": "rate limited"}', False)
        >>> summarise_body(None, size=2048).preview
        '<not read>'
    """
    if data is None:
        return BodySummary(size, content_type, marker)
    total = len(data) if size is None else size
    head = data[: max(0, limit)]
    truncated = total > len(head)
    if not data:
        return BodySummary(total, content_type, "", truncated)
    encoding = (content_encoding or "").strip().lower()
    if encoding and encoding != "identity":
        return BodySummary(total, content_type, f"<{total} bytes {encoding}-encoded>", truncated)
    text = _decode(head, content_type, final=not truncated)
    if text is None:
        return BodySummary(total, content_type, f"<{total} bytes binary>", truncated)
    return BodySummary(total, content_type, _mask_text(text), truncated)


def _decode(data: bytes, content_type: Optional[str], final: bool) -> Optional[str]:
    """Text of ``data``, or ``None`` when it is binary."""
    media, charset = _media_type(content_type)
    if media.startswith(_BINARY_TYPES) or any(sub in media for sub in _BINARY_SUBTYPES):
        return None
    declared_text = media.startswith("text/") or any(kind in media for kind in _TEXT_TYPES)
    if charset is not None:
        try:
            decoder = codecs.getincrementaldecoder(charset)(errors="replace")
        except LookupError:
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        return decoder.decode(data, final)
    if not declared_text and b"\x00" in data:
        return None
    try:
        # final=False: a preview cut in the middle of a multi-byte character is still text.
        return codecs.getincrementaldecoder("utf-8")().decode(data, final)
    except UnicodeDecodeError:
        if not declared_text:
            return None
        return data.decode("utf-8", errors="replace")


def _media_type(content_type: Optional[str]) -> tuple[str, Optional[str]]:
    if not content_type:
        return "", None
    media, _, parameters = content_type.partition(";")
    charset = None
    for parameter in parameters.split(";"):
        name, _, value = parameter.strip().partition("=")
        if name.lower() == "charset" and value:
            charset = value.strip().strip('"')
    return media.strip().lower(), charset


def _mask_text(text: str) -> str:
    from appvitals.masking import mask_text

    return str(mask_text(text))


def mask_url(url: str) -> str:
    """The URL with its userinfo and sensitive query parameters masked."""
    from appvitals.masking import mask_url as mask

    return str(mask(url))


def mask_headers(headers: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """Header pairs with the values of sensitive headers masked (``Bearer ***``)."""
    from appvitals.masking import mask_headers as mask

    return tuple((str(name), str(value)) for name, value in mask(list(headers)))


@dataclass(frozen=True)
class Capture:
    """Everything known about one failed outgoing call, masked (see ``to_dict()``).

    Attributes:
        timestamp: When the call started (ISO 8601 UTC, milliseconds).
        method: The HTTP method.
        url: The URL, userinfo and sensitive query parameters masked.
        status: The final response status, or ``None`` when no response came.
        error_category: The taxonomy category (``Service``).
        error_type: The taxonomy type (``ServiceUnavailable``).
        error_message: What went wrong, in one masked line.
        duration_ms: How long the whole call took, retries included.
        request_headers: Request header pairs, masked (trace headers included).
        request_body: Summary of the request body.
        response_headers: Response header pairs, masked (empty without a response).
        response_body: Summary of the response body (``None`` without a response).
        phases: Phase timings of the last attempt in milliseconds (``total``: the call).
        attempts: Every attempt, when the call went through a retry transport.
        correlation_id: The correlation id bound when the call was made.
        trace_id: The trace of the call's span (32 hex digits), if any.
        span_id: The call's span (16 hex digits), if any.
    """

    timestamp: str
    method: str
    url: str
    status: Optional[int]
    error_category: str
    error_type: str
    error_message: str
    duration_ms: float
    request_headers: tuple[tuple[str, str], ...] = ()
    request_body: Optional[BodySummary] = None
    response_headers: tuple[tuple[str, str], ...] = ()
    response_body: Optional[BodySummary] = None
    phases: Mapping[str, float] = field(default_factory=dict)
    attempts: tuple[Attempt, ...] = ()
    correlation_id: Optional[str] = None
    trace_id: Optional[str] = None
    span_id: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        """The capture as a JSON-compatible dict (headers as ``{name: value}``).

        Examples:
            >>> capture = Capture("2024-05-01T12:00:00.000Z", "GET", "http://api/x", 503,
            ...                   "Service", "ServiceUnavailable", "HTTP 503", 12.5)
            >>> capture.to_dict()["error"]
            {'category': 'Service', 'type': 'ServiceUnavailable', 'message': 'HTTP 503'}
        """
        return {
            "timestamp": self.timestamp,
            "method": self.method,
            "url": self.url,
            "status": self.status,
            "error": {
                "category": self.error_category,
                "type": self.error_type,
                "message": self.error_message,
            },
            "duration_ms": self.duration_ms,
            "request": {
                "headers": _header_dict(self.request_headers),
                "body": None if self.request_body is None else self.request_body.to_dict(),
            },
            "response": {
                "headers": _header_dict(self.response_headers),
                "body": None if self.response_body is None else self.response_body.to_dict(),
            },
            "phases": dict(self.phases),
            "attempts": [attempt.to_dict() for attempt in self.attempts],
            "correlation_id": self.correlation_id,
            "trace_id": self.trace_id,
            "span_id": self.span_id,
        }

    def message(self) -> str:
        """The readable log line: what failed, how, after how many attempts and how long.

        Examples:
            >>> Capture("2024-05-01T12:00:00.000Z", "GET", "http://api/x", 503, "Service",
            ...         "ServiceUnavailable", "HTTP 503", 12.5).message()
            'GET http://api/x failed: Service/ServiceUnavailable (HTTP 503) in 12.5 ms'
        """
        parts = [
            f"{self.method} {self.url} failed: {self.error_category}/{self.error_type}",
            f"({self.error_message})" if self.error_message else "",
            f"after {len(self.attempts)} attempts" if len(self.attempts) > 1 else "",
            f"in {self.duration_ms:.1f} ms",
        ]
        if self.correlation_id:
            parts.append(f"[correlation_id={self.correlation_id}]")
        return " ".join(part for part in parts if part)


def _header_dict(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for name, value in pairs:
        merged[name] = f"{merged[name]}, {value}" if name in merged else value
    return merged


def flatten(value: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts and lists as dotted span-event attributes (``None`` left out).

    Examples:
        >>> flatten({"a": {"b": 1, "c": None}, "d": [{"e": "x"}], "f": [1, 2]})
        {'a.b': 1, 'd.0.e': 'x', 'f': [1, 2]}
    """
    flat: dict[str, Any] = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if item is None:
            continue
        if isinstance(item, Mapping):
            flat.update(flatten(item, f"{name}."))
        elif isinstance(item, (list, tuple)):
            if all(isinstance(element, Mapping) for element in item):
                for index, element in enumerate(item):
                    flat.update(flatten(element, f"{name}.{index}."))
            elif item and len({type(element) for element in item}) == 1:
                flat[name] = list(item)
            elif item:
                flat[name] = [str(element) for element in item]
        elif isinstance(item, (str, bool, int, float)):
            flat[name] = item
        else:
            flat[name] = str(item)
    return flat


def deliver(
    capture: Capture,
    span: Any,
    on_capture: Optional[Callable[[Capture], Any]],
    log: bool = True,
) -> None:
    """Send ``capture`` to the log, the span (when recording) and the callback."""
    try:
        data = capture.to_dict()
        if log:
            _logger.error("%s", capture.message(), extra={"capture": data})
        if span is not None and span.is_recording():
            span.add_event("appvitals.http.capture", flatten(data))
    except Exception as error:
        report_internal_error("http capture", error)
    if on_capture is not None:
        try:
            on_capture(capture)
        except Exception as error:
            report_internal_error("http on_capture callback", error)
