"""httpx instrumentation: a transport wrapper that emits CLIENT spans, metrics and captures.

``instrument_client(client)`` wraps the client's transport (and its mounts) in
:class:`InstrumentedTransport`; ``instrument_httpx()`` does it for every client created
afterwards by wrapping ``Client.__init__``/``AsyncClient.__init__``. Wrapping the client's
outermost transport — above a :class:`~appvitals.http.RetryTransport` — makes one span per
logical call whose retries are events on it, and one capture per failed call with the whole
attempt history.

opentelemetry-instrumentation-httpx is not used: like the contrib Flask/ASGI
instrumentations (measured at about eight times appvitals' overhead budget) it brings a
dependency and work appvitals does not need, and it cannot see phases, captures or retries.
The span and metric follow the same stable HTTP semantic conventions.

The span ends when the response body is closed (httpx closes it after reading it, or when a
streamed response's ``with`` block ends), so that ``download`` and ``total`` are real.
"""

from __future__ import annotations

import dataclasses
import functools
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any, Optional

import httpx
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from appvitals import metrics
from appvitals._context import CORRELATION_ID_HEADER, correlation_id, inject_headers
from appvitals._peers import peer_service
from appvitals._safety import internal_errors, report_internal_error
from appvitals.decorators import _tracer
from appvitals.http._capture import (
    DEFAULT_BODY_BYTES,
    BodySummary,
    Capture,
    deliver,
    mask_headers,
    mask_url,
    summarise_body,
)
from appvitals.http._policy import Attempt, iso_timestamp
from appvitals.http._retry import ATTEMPTS_KEY, PHASES_KEY
from appvitals.http._taxonomy import ErrorClass, classify, error_message
from appvitals.http._timing import PhaseRecorder, activate, deactivate, install_backend
from appvitals.http._timing import restore_backends as _restore_backends

CALL_KEY = "appvitals.call"
# Semantic-convention buckets of http.client.request.duration (seconds).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
PHASE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY"}
)


def _at_least_400(status: int) -> bool:
    return status >= 400


@dataclasses.dataclass(frozen=True)
class ClientOptions:
    """Options of ``instrument_httpx()`` and ``instrument_client()`` (keyword arguments).

    Attributes:
        on_capture: Called with each :class:`Capture` (exceptions in it are contained).
        failure_status: Which statuses make a call failed (span status ERROR, error counter,
            capture): a function of the status, or a collection of statuses. Default: 400
            and above.
        capture_body_bytes: Bytes of request and response bodies kept in a capture.
        capture_log: Log each capture as an ERROR on the ``appvitals.http`` logger.
        split_dns: Resolve host names in appvitals' network backend so that ``dns`` and
            ``connect`` are measured apart (otherwise ``connect`` includes the lookup).
    """

    on_capture: Optional[Callable[[Capture], Any]] = None
    failure_status: Callable[[int], bool] = _at_least_400
    capture_body_bytes: int = DEFAULT_BODY_BYTES
    capture_log: bool = True
    split_dns: bool = True

    @classmethod
    def from_kwargs(cls, options: Mapping[str, Any]) -> ClientOptions:
        """Build from keyword arguments; an unknown name is a TypeError naming it."""
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(options) - names)
        if unknown:
            msg = f"unknown option(s) {', '.join(unknown)}; expected some of {sorted(names)}"
            raise TypeError(msg)
        values = dict(options)
        statuses = values.get("failure_status")
        if statuses is not None and not callable(statuses):
            values["failure_status"] = frozenset(int(status) for status in statuses).__contains__
        return cls(**values)


class _Trace:
    """httpcore's sync ``trace`` callback: the recorder, then the caller's own callback."""

    __slots__ = ("recorder", "user")

    def __init__(self, recorder: PhaseRecorder, user: Any) -> None:
        self.recorder = recorder
        self.user = user

    def __call__(self, name: str, info: Mapping[str, Any]) -> None:
        self.recorder.trace(name, info)
        if self.user is not None:
            self.user(name, info)


class _AsyncTrace(_Trace):
    """httpcore's async ``trace`` callback."""

    __slots__ = ()

    async def __call__(self, name: str, info: Mapping[str, Any]) -> None:  # type: ignore[override]
        self.recorder.trace(name, info)
        if self.user is not None:
            await self.user(name, info)


class _Call:
    """One outgoing call: its span, phases, the body seen so far, and how it ended."""

    __slots__ = (
        "attempts",
        "body_done",
        "body_error",
        "body_read",
        "context",
        "correlation_id",
        "finished",
        "host",
        "keep_preview",
        "metric_attributes",
        "options",
        "phases",
        "preview",
        "received",
        "recorder",
        "request",
        "response",
        "span",
        "started",
        "url",
    )

    def __init__(self, request: httpx.Request, options: ClientOptions, trace_class: type) -> None:
        self.request = request
        self.options = options
        self.recorder = recorder = PhaseRecorder()
        self.started = time.time()
        url = request.url
        self.host = url.host
        port = url.port or (443 if url.scheme == "https" else 80)
        method = request.method if request.method in _KNOWN_METHODS else "_OTHER"
        self.url = mask_url(str(url))
        attributes: dict[str, Any] = {
            "http.request.method": method,
            "server.address": self.host,
            "server.port": port,
            "url.full": self.url,
        }
        if method == "_OTHER":
            attributes["http.request.method_original"] = request.method
        peer = peer_service(self.host, port)  # APPVITALS_PEER_SERVICES: the service-map edge
        if peer is not None:
            attributes["peer.service"] = peer
        self.metric_attributes = {
            "http.request.method": method,
            "server.address": self.host,
            "server.port": port,
            "url.scheme": url.scheme,
        }
        self.span = _tracer().start_span(
            "HTTP" if method == "_OTHER" else method,
            kind=SpanKind.CLIENT,
            attributes=attributes,
            start_time=recorder.origin_ns,
        )
        self.context = trace.set_span_in_context(self.span)
        self.correlation_id = correlation_id()
        self.response: Optional[httpx.Response] = None
        self.received = 0
        self.preview = bytearray()
        self.keep_preview = self.body_read = self.body_done = self.finished = False
        self.body_error: Optional[BaseException] = None
        self.phases: dict[str, float] = {}
        self.attempts: tuple[Attempt, ...] = ()
        token = otel_context.attach(self.context)
        try:
            carrier = inject_headers({})
        finally:
            otel_context.detach(token)
        for name, value in carrier.items():
            # A correlation id the caller set explicitly wins over the bound one.
            if name != CORRELATION_ID_HEADER or name not in request.headers:
                request.headers[name] = value
        extensions = request.extensions
        # httpx reuses the extensions dict for redirects: keep the caller's callback only.
        user = extensions.get("trace")
        extensions["trace"] = trace_class(recorder, user.user if isinstance(user, _Trace) else user)
        extensions[PHASES_KEY] = recorder

    # -- the response body ------------------------------------------------------------

    def received_response(self, response: httpx.Response, stream_class: type) -> httpx.Response:
        """Watch the body of ``response`` (or finish now when it was read already)."""
        try:
            self.response = response
            self.keep_preview = self.options.failure_status(response.status_code)
            response.extensions[CALL_KEY] = self
            content = getattr(response, "_content", None)
            if content is not None:  # read already (httpx.MockTransport, a cache)
                self.body_read = True
                self.chunk(content)
                self.body_done = True
                self.finish(None)
            else:
                response.stream = stream_class(response.stream, self)
        except Exception as error:
            report_internal_error("http client response", error)
            self.finish(None)
        return response

    def chunk(self, data: bytes) -> None:
        """Count a chunk of the body and keep the start of a failed response's body."""
        self.received += len(data)
        if self.keep_preview:
            room = self.options.capture_body_bytes - len(self.preview)
            if room > 0:
                self.preview += data[:room]

    # -- the end ------------------------------------------------------------------------

    def finish(self, error: Optional[BaseException]) -> None:
        """End the span and record metrics (and a capture when the call failed); once."""
        if self.finished:
            return
        self.finished = True
        try:
            self._finish(error)
        except Exception as internal:
            report_internal_error("http client span end", internal)
            with internal_errors("http client span end"):
                self.span.end()

    def _finish(self, error: Optional[BaseException]) -> None:
        end = time.perf_counter()
        recorder, span, response = self.recorder, self.span, self.response
        intervals = recorder.intervals()
        phases = {
            name: round((stop - start) * 1000.0, 3) for name, (start, stop) in intervals.items()
        }
        total = end - recorder.origin
        phases["total"] = round(total * 1000.0, 3)
        self.phases = phases
        self.attempts = tuple(self.request.extensions.get(ATTEMPTS_KEY) or ())
        status = None if response is None else response.status_code
        cancelled = error is not None and not isinstance(error, Exception)
        failed = not cancelled and (
            error is not None or (status is not None and self.options.failure_status(status))
        )
        found: Optional[ErrorClass] = None
        if failed:
            body = bytes(self.preview) or None
            found = classify(error, response, body=body) if error is not None else None
            found = (
                found or classify(response=response, body=body) or ErrorClass("Unknown", "Unknown")
            )
        error_type = (
            type(error).__qualname__ if cancelled else None if found is None else found.type
        )

        attributes: dict[str, Any] = dict(self.metric_attributes)
        if status is not None:
            attributes["http.response.status_code"] = status
        if response is not None:
            attributes["network.protocol.version"] = response.http_version.removeprefix("HTTP/")
        if error_type is not None:
            attributes["error.type"] = error_type
        _duration().record(total, attributes)
        phase_histogram = _phase_duration()
        for phase, milliseconds in phases.items():
            phase_histogram.record(
                milliseconds / 1000.0, {"phase": phase, "server.address": self.host}
            )
        if found is not None:
            _errors().add(
                1, {"category": found.category, "type": found.type, "server.address": self.host}
            )
        if len(self.attempts) > 1:  # the retry transport's attempts beyond the first
            _retries().add(len(self.attempts) - 1, {"server.address": self.host})

        if span.is_recording():
            self._annotate(span, attributes, intervals, phases, error, found)
        if failed and found is not None:
            capture = self.capture(error, found, status)
            token = otel_context.attach(self.context)  # the log line joins the call's trace
            try:
                deliver(capture, span, self.options.on_capture, self.options.capture_log)
            finally:
                otel_context.detach(token)
        span.end(end_time=recorder.wall_ns(end))

    def _annotate(
        self,
        span: Any,
        attributes: Mapping[str, Any],
        intervals: Mapping[str, tuple[float, float]],
        phases: Mapping[str, float],
        error: Optional[BaseException],
        found: Optional[ErrorClass],
    ) -> None:
        for key in ("http.response.status_code", "network.protocol.version", "error.type"):
            if key in attributes:
                span.set_attribute(key, attributes[key])
        for phase, milliseconds in phases.items():
            span.set_attribute(f"appvitals.http.phase.{phase}_ms", milliseconds)
        for phase, (_start, stop) in intervals.items():
            span.add_event(
                f"appvitals.http.phase.{phase}",
                {"duration_ms": phases[phase]},
                timestamp=self.recorder.wall_ns(stop),
            )
        if self.body_done:
            span.set_attribute("http.response.body.size", self.received)
        if len(self.attempts) > 1:
            span.set_attribute("http.request.resend_count", len(self.attempts) - 1)
        if error is not None:
            span.record_exception(error, escaped=True)
        if found is not None:
            span.set_attribute("appvitals.http.error.category", found.category)
            description = _mask_text(
                error_message(error, attributes.get("http.response.status_code"))
            )
            span.set_status(Status(StatusCode.ERROR, f"{found}: {description}"))
        elif error is not None:
            span.set_status(Status(StatusCode.ERROR, type(error).__qualname__))

    def capture(
        self, error: Optional[BaseException], found: ErrorClass, status: Optional[int]
    ) -> Capture:
        """The capture of this call (masked), from what it has seen."""
        request, response = self.request, self.response
        limit = self.options.capture_body_bytes
        response_headers: tuple[tuple[str, str], ...] = ()
        response_body: Optional[BodySummary] = None
        if response is not None:
            headers = response.headers
            if self.body_read and self.keep_preview:
                size = self.received if self.body_done else _int(headers.get("content-length"))
                data: Optional[bytes] = bytes(self.preview)
            else:
                size, data = _int(headers.get("content-length")), None
            response_body = summarise_body(
                data,
                size=size,
                content_type=headers.get("content-type"),
                content_encoding=headers.get("content-encoding"),
                limit=limit,
                marker="<not read>" if not self.body_read else "<not kept>",
            )
            response_headers = mask_headers(headers.multi_items())
        context = self.span.get_span_context()
        return Capture(
            timestamp=iso_timestamp(self.started),
            method=request.method,
            url=self.url,
            status=status,
            error_category=found.category,
            error_type=found.type,
            error_message=_mask_text(error_message(error, status)),
            duration_ms=self.phases.get("total", 0.0),
            request_headers=mask_headers(request.headers.multi_items()),
            request_body=request_summary(request, limit),
            response_headers=response_headers,
            response_body=response_body,
            phases=dict(self.phases),
            attempts=self.attempts,
            correlation_id=self.correlation_id,
            trace_id=format(context.trace_id, "032x") if context.is_valid else None,
            span_id=format(context.span_id, "016x") if context.is_valid else None,
        )


def request_summary(request: httpx.Request, limit: int) -> BodySummary:
    """The request body's summary; a streamed body is not read for it."""
    content_type = request.headers.get("content-type")
    content = getattr(request, "_content", None)  # httpx reads bytes, JSON and form bodies
    if isinstance(content, bytes):
        return summarise_body(content, content_type=content_type, limit=limit)
    size = _int(request.headers.get("content-length"))
    return summarise_body(None, size=size, content_type=content_type, marker="<streamed>")


def _int(value: Optional[str]) -> Optional[int]:
    try:
        return int(value) if value else None
    except ValueError:
        return None


def _mask_text(text: str) -> str:
    from appvitals.masking import mask_text

    return str(mask_text(text))


def _duration() -> metrics.Histogram:
    return metrics.histogram(
        "http.client.request.duration",
        unit="s",
        description="Duration of HTTP client requests.",
        buckets=DURATION_BUCKETS,
    )


def _phase_duration() -> metrics.Histogram:
    return metrics.histogram(
        "appvitals.http.client.phase.duration",
        unit="s",
        description="Duration of each phase of HTTP client requests (dns, connect, tls, ...).",
        buckets=PHASE_BUCKETS,
    )


def _errors() -> metrics.Counter:
    return metrics.counter(
        "appvitals.http.client.errors",
        unit="{error}",
        description="Failed HTTP client calls by error category and type.",
    )


def _retries() -> metrics.Counter:
    return metrics.counter(
        "appvitals.http.client.retries",
        unit="{retry}",
        description="Retries of HTTP client calls (attempts after the first) by server.",
    )


class _SyncStream(httpx.SyncByteStream):
    """The response body as the caller reads it, counted; closing it ends the call."""

    def __init__(self, inner: Any, call: _Call) -> None:
        self._inner = inner
        self._call = call

    def __iter__(self) -> Iterator[bytes]:
        call = self._call
        call.body_read = True
        try:
            for chunk in self._inner:
                call.chunk(chunk)
                yield chunk
        except Exception as error:
            call.body_error = error
            raise
        call.body_done = True

    def close(self) -> None:
        try:
            close = getattr(self._inner, "close", None)
            if close is not None:
                close()
        finally:
            self._call.finish(self._call.body_error)


class _AsyncStream(httpx.AsyncByteStream):
    """The async response body, counted; closing it ends the call."""

    def __init__(self, inner: Any, call: _Call) -> None:
        self._inner = inner
        self._call = call

    async def __aiter__(self) -> AsyncIterator[bytes]:
        call = self._call
        call.body_read = True
        try:
            async for chunk in self._inner:
                call.chunk(chunk)
                yield chunk
        except Exception as error:
            call.body_error = error
            raise
        call.body_done = True

    async def aclose(self) -> None:
        try:
            aclose = getattr(self._inner, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            self._call.finish(self._call.body_error)


class InstrumentedTransport(httpx.BaseTransport):
    """Wraps a transport: a CLIENT span, metrics, phases and captures for every request."""

    def __init__(self, inner: httpx.BaseTransport, options: ClientOptions) -> None:
        self.inner = inner
        self.options = options

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through the wrapped transport, measured."""
        try:
            call = _Call(request, self.options, _Trace)
        except Exception as error:
            report_internal_error("http client request start", error)
            return self.inner.handle_request(request)
        timing = activate(call.recorder)
        token = otel_context.attach(call.context)
        try:
            response = self.inner.handle_request(request)
        except BaseException as error:
            call.finish(error)
            raise
        finally:
            otel_context.detach(token)
            deactivate(timing)
        return call.received_response(response, _SyncStream)

    def close(self) -> None:
        """Close the wrapped transport."""
        self.inner.close()

    def __enter__(self) -> InstrumentedTransport:
        self.inner.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.inner.__exit__(*exc_info)


class AsyncInstrumentedTransport(httpx.AsyncBaseTransport):
    """:class:`InstrumentedTransport` for ``httpx.AsyncClient``."""

    def __init__(self, inner: httpx.AsyncBaseTransport, options: ClientOptions) -> None:
        self.inner = inner
        self.options = options

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through the wrapped transport, measured."""
        try:
            call = _Call(request, self.options, _AsyncTrace)
        except Exception as error:
            report_internal_error("http client request start", error)
            return await self.inner.handle_async_request(request)
        timing = activate(call.recorder)
        token = otel_context.attach(call.context)
        try:
            response = await self.inner.handle_async_request(request)
        except BaseException as error:
            call.finish(error)
            raise
        finally:
            otel_context.detach(token)
            deactivate(timing)
        return call.received_response(response, _AsyncStream)

    async def aclose(self) -> None:
        """Close the wrapped transport."""
        await self.inner.aclose()

    async def __aenter__(self) -> AsyncInstrumentedTransport:
        await self.inner.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.inner.__aexit__(*exc_info)


# -- instrumenting clients ------------------------------------------------------------------

_clients: weakref.WeakKeyDictionary[Any, tuple[Any, dict[Any, Any], list[Any]]] = (
    weakref.WeakKeyDictionary()
)
_by_hook: weakref.WeakSet[Any] = weakref.WeakSet()
_originals: Optional[tuple[Any, Any]] = None


def instrument_client(client: Any, options: ClientOptions) -> None:
    """Wrap the transports of one ``httpx.Client`` or ``httpx.AsyncClient`` (idempotent)."""
    if client in _clients:
        return
    if isinstance(client, httpx.AsyncClient):
        wrapper: Callable[[Any, ClientOptions], Any] = AsyncInstrumentedTransport
    elif isinstance(client, httpx.Client):
        wrapper = InstrumentedTransport
    else:
        msg = f"expected an httpx.Client or httpx.AsyncClient, not {type(client).__name__}"
        raise TypeError(msg)
    transport, mounts = client._transport, dict(client._mounts)
    client._transport = wrapper(transport, options)
    client._mounts = {
        pattern: None if mounted is None else wrapper(mounted, options)
        for pattern, mounted in mounts.items()
    }
    replaced: list[Any] = []
    if options.split_dns:
        for inner in (transport, *mounts.values()):
            if inner is not None:
                replaced.extend(install_backend(inner))
    _clients[client] = (transport, mounts, replaced)


def uninstrument_client(client: Any) -> bool:
    """Give ``client`` its own transports back; ``False`` when it was not instrumented."""
    saved = _clients.pop(client, None)
    if saved is None:
        return False
    transport, mounts, replaced = saved
    client._transport = transport
    client._mounts = mounts
    _restore_backends(replaced)
    return True


def instrument_httpx(options: ClientOptions) -> None:
    """Instrument every ``httpx.Client``/``AsyncClient`` created from now on."""
    global _originals  # noqa: PLW0603 - the patch is process-wide by nature
    if _originals is not None:
        return
    originals = (httpx.Client.__init__, httpx.AsyncClient.__init__)

    def hook(original: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(original)
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:  # noqa: N807
            original(self, *args, **kwargs)
            with internal_errors("instrument httpx client"):
                instrument_client(self, options)
                _by_hook.add(self)

        return __init__

    httpx.Client.__init__ = hook(originals[0])  # type: ignore[method-assign]
    httpx.AsyncClient.__init__ = hook(originals[1])  # type: ignore[method-assign]
    _originals = originals


def uninstrument_httpx() -> None:
    """Undo :func:`instrument_httpx`, including on the clients it instrumented."""
    global _originals  # noqa: PLW0603
    if _originals is None:
        return
    httpx.Client.__init__, httpx.AsyncClient.__init__ = _originals  # type: ignore[method-assign]
    _originals = None
    for client in list(_by_hook):
        uninstrument_client(client)
    _by_hook.clear()


# -- decode errors ------------------------------------------------------------------------


def report_decode_error(response: httpx.Response, error: BaseException) -> ErrorClass:
    """Record that the caller could not decode ``response`` (a capture and the counter)."""
    found = classify(error)
    call = response.extensions.get(CALL_KEY)
    options = call.options if isinstance(call, _Call) else ClientOptions()
    span = trace.get_current_span()
    try:
        request = response.request
        host = request.url.host
        _errors().add(1, {"category": found.category, "type": found.type, "server.address": host})
        limit = options.capture_body_bytes
        content = response.content
        body = summarise_body(
            content, content_type=response.headers.get("content-type"), limit=limit
        )
        context = span.get_span_context()
        capture = Capture(
            timestamp=iso_timestamp(call.started if isinstance(call, _Call) else time.time()),
            method=request.method,
            url=mask_url(str(request.url)),
            status=response.status_code,
            error_category=found.category,
            error_type=found.type,
            error_message=_mask_text(error_message(error)),
            duration_ms=call.phases.get("total", 0.0) if isinstance(call, _Call) else 0.0,
            request_headers=mask_headers(request.headers.multi_items()),
            request_body=request_summary(request, limit),
            response_headers=mask_headers(response.headers.multi_items()),
            response_body=body,
            phases=dict(call.phases) if isinstance(call, _Call) else {},
            attempts=call.attempts if isinstance(call, _Call) else (),
            correlation_id=correlation_id(),
            trace_id=format(context.trace_id, "032x") if context.is_valid else None,
            span_id=format(context.span_id, "016x") if context.is_valid else None,
        )
    except Exception as internal:
        report_internal_error("http decode error capture", internal)
        return found
    deliver(capture, span, options.on_capture, options.capture_log)
    return found
