"""ASGI (FastAPI, Starlette, any ASGI app): the same telemetry as the Flask integration.

``appvitals.instrument_fastapi(app)`` adds :class:`AppvitalsMiddleware` to a FastAPI or
Starlette application; any other ASGI application is wrapped directly:
``app = AppvitalsMiddleware(app)``. Only the ``http`` scope is instrumented; there are no
internal spans for ``http.response.start``/``body`` messages (the contrib ASGI
instrumentation's per-message spans cost time and add noise: contrib issues #831, #3992).
The route template comes from Starlette's ``scope["route"]``, set by its router.

FastAPI ≥ 0.160 instruments itself with OpenTelemetry (``FastAPI(telemetry=...)``): server
spans, operation spans, ``http.server.request.duration``, ``http.server.active_requests`` and
exception logs, with the same stable conventions. Measured in process on ``/fast``, that
costs about 115 µs of CPU per request against about 30 µs for this middleware
(``docs/benchmarks.md``), so :func:`instrument_fastapi` switches FastAPI's own telemetry off
and emits the same conventions itself. ``instrument_fastapi(app, native_telemetry=True)``
keeps FastAPI's instead: the middleware then runs as its companion, adding the correlation
id (context, response header, ``correlation_id`` on FastAPI's server span and on every log
record), the health endpoints and ``/metrics``, while FastAPI emits the spans and RED
metrics through the providers appvitals configured.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable, MutableMapping
from types import MappingProxyType
from typing import Any

from opentelemetry import trace

from appvitals import _inline
from appvitals._context import _fields
from appvitals._inline import tick
from appvitals._safety import report_internal_error
from appvitals.integrations._http_server import (
    EndpointRequest,
    Request,
    ServerOptions,
    ServerTelemetry,
    describe_headers,
    endpoint_response,
    serves,
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_logger = logging.getLogger("appvitals.http")
_W3C = (b"traceparent", b"tracestate", b"baggage")


class AppvitalsMiddleware:
    """ASGI middleware: request spans, RED metrics, correlation ids, health and /metrics.

    Examples:
        >>> import asyncio
        >>> import appvitals
        >>> from appvitals.integrations.asgi import AppvitalsMiddleware
        >>> async def hello(scope, receive, send):
        ...     await send({"type": "http.response.start", "status": 200, "headers": []})
        ...     await send({"type": "http.response.body", "body": b"hi"})
        >>> app = AppvitalsMiddleware(hello)
        >>> appvitals.shutdown()
        True
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        framework_telemetry: bool = False,
        framework_logs: bool = False,
        **options: Any,
    ) -> None:
        from appvitals._setup import configure, is_configured

        if not is_configured():
            configure()
        self.app = app
        # True when the framework (FastAPI's native telemetry) emits spans and metrics itself.
        self.framework_telemetry = framework_telemetry
        # True when the framework logs unhandled exceptions itself (FastAPI's native logs).
        self.framework_logs = framework_logs
        self.telemetry = ServerTelemetry(ServerOptions.from_kwargs(options))
        self._response_header = self.telemetry.options.correlation_response_header.lower().encode(
            "latin-1"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope_type = scope["type"]
        if scope_type != "http":
            if scope_type == "lifespan":
                _start_health_runner()
                _export_while_idle()
            await self.app(scope, receive, send)
            return
        telemetry = self.telemetry
        path = scope.get("path", "")
        if path in telemetry.excluded:
            tick()  # probes and scrapes run inline exports too, when an idle app gets no other
            endpoint = telemetry.endpoints.get(path)
            if endpoint is None or not serves(endpoint, scope.get("method")):
                await self.app(scope, receive, send)
            else:
                await _respond(endpoint, scope, receive, send)
            return
        if self.framework_telemetry:
            await self._companion(scope, receive, send)
            return
        request = self._start(scope)
        if request is None:
            await self.app(scope, receive, send)
            return
        status = 500
        response_size: int | None = None
        record_sizes = telemetry.response_size is not None
        cid_header = (self._response_header, request.correlation_id.encode("latin-1"))

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_size
            if message["type"] == "http.response.start":
                try:
                    status = int(message["status"])
                    headers = list(message.get("headers", ()))
                    if record_sizes:
                        response_size = _length(headers)
                    headers.append(cid_header)
                    message["headers"] = headers
                except Exception as error:
                    report_internal_error("asgi send", error)
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except BaseException as error:
            route = _route(scope)
            if not self.framework_logs:
                _logger.error(
                    "unhandled %s in %s %s",
                    type(error).__qualname__,
                    request.method,
                    route or path,
                    exc_info=error,
                )
            request.finish(500, route, error, _content_length(scope))
            raise
        request.finish(status, _route(scope), None, _content_length(scope), response_size)

    async def _companion(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Correlation id only; the framework's own telemetry records span and metrics."""
        cid = None
        try:
            telemetry = self.telemetry
            incoming = None
            for name, value in scope.get("headers", ()):
                if name in telemetry.correlation_header_names:
                    incoming = value.decode("latin-1")
                    break
            cid = telemetry.correlation_id(incoming)
            span = trace.get_current_span()
            if span.is_recording():
                span.set_attribute("correlation_id", cid)
            # Not reset on the way out: the server runs each request in its own task, and the
            # framework logs an unhandled exception after this middleware has returned.
            _fields.set(MappingProxyType({"correlation_id": cid}))
        except Exception as error:
            report_internal_error("asgi correlation id", error)
        if cid is None:
            await self.app(scope, receive, send)
            return
        cid_header = (self._response_header, cid.encode("latin-1"))

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), cid_header]
            await send(message)

        await self.app(scope, receive, send_wrapper)

    def _start(self, scope: Scope) -> Request | None:
        telemetry = self.telemetry
        try:
            incoming = None
            carrier: dict[str, str] | None = None
            names = telemetry.correlation_header_names
            for name, value in scope.get("headers", ()):
                if incoming is None and name in names:
                    incoming = value.decode("latin-1")
                elif name in _W3C:
                    if carrier is None:
                        carrier = {}
                    carrier[name.decode()] = value.decode("latin-1")
            if carrier is not None and "traceparent" not in carrier:
                carrier = None
            return telemetry.start(
                scope.get("method", "GET"),
                scope.get("scheme", "http"),
                scope.get("path", ""),
                telemetry.correlation_id(incoming),
                carrier,
                lambda: _describe(scope),
                keep_fields=self.framework_logs,
            )
        except Exception as error:
            report_internal_error("asgi request start", error)
            return None


def _describe(scope: Scope) -> dict[str, Any]:
    user_agent = host = None
    for name, value in scope.get("headers", ()):
        if name == b"user-agent":
            user_agent = value.decode("latin-1")
        elif name == b"host":
            host = value.decode("latin-1")
    client = scope.get("client")
    return describe_headers(
        user_agent,
        host,
        client[0] if client else None,
        "HTTP/" + str(scope.get("http_version", "1.1")),
    )


def _route(scope: Scope) -> str | None:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else None


def _content_length(scope: Scope) -> int | None:
    return _length(scope.get("headers", ()))


def _length(headers: Any) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _respond(endpoint: str, scope: Scope, receive: Receive, send: Send) -> None:
    status, headers, body = endpoint_response(endpoint, await _endpoint_request(scope, receive))
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _endpoint_request(scope: Scope, receive: Receive) -> EndpointRequest:
    """The parts of an ASGI request appvitals' own endpoints read (a body only for POST)."""
    headers = dict(scope.get("headers", ()))
    body = b""
    if scope.get("method") == "POST":
        from appvitals.monitoring_api import MAX_BYTES

        chunks: list[bytes] = []
        size = 0
        more = True
        try:
            # Stop one byte over the limit: enough to answer 413 without reading it all.
            while more and size <= MAX_BYTES:
                message = await receive()
                if message.get("type") != "http.request":
                    break
                chunk = message.get("body", b"")
                chunks.append(chunk)
                size += len(chunk)
                more = message.get("more_body", False)
        except Exception as error:  # a broken receive channel: what arrived is the body
            report_internal_error("monitoring request body", error)
        body = b"".join(chunks)
    client = scope.get("client")
    return EndpointRequest(
        accept=_header(headers, b"accept"),
        content_type=_header(headers, b"content-type"),
        body=body,
        client=client[0] if client else None,
    )


def _header(headers: dict[bytes, bytes], name: bytes) -> str | None:
    value = headers.get(name)
    return value.decode("latin-1") if value is not None else None


# How often the event loop runs the due exports while no request comes (auto/inline mode).
IDLE_TICK_SECONDS = 1.0


def _export_while_idle() -> None:
    """On the server's event loop, run the due exports every second (auto and inline mode).

    Without an export thread, the exports otherwise run only at the end of requests; the
    loop's timer sends an idle application's last spans and metrics too. It is a timer
    handle, not a task, and stops with the loop; each firing costs a comparison until an
    export is due.
    """
    if _inline.current is None:
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    if loop in _idle_loops:  # one timer per loop, however many apps or lifespans
        return
    _idle_loops.add(loop)

    def fire() -> None:
        if _inline.current is None or loop.is_closed():
            _idle_loops.discard(loop)
            return
        tick()
        loop.call_later(IDLE_TICK_SECONDS, fire)

    loop.call_later(IDLE_TICK_SECONDS, fire)


_idle_loops: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


def _start_health_runner() -> None:
    try:
        from appvitals import health

        health.ensure_running()
    except Exception as error:
        report_internal_error("health runner", error)


def instrument_fastapi(app: Any, *, native_telemetry: bool = False, **options: Any) -> Any:
    """Instrument a FastAPI or Starlette application (or wrap any ASGI app).

    For FastAPI/Starlette the middleware is added to the application (call before it starts
    serving) and the application is returned; for any other ASGI callable the wrapped
    callable is returned: ``app = appvitals.instrument_fastapi(app)`` works in both cases.
    Options are those of ``instrument_flask()``.

    FastAPI's own OpenTelemetry telemetry (FastAPI ≥ 0.160) is switched off, and appvitals
    emits the server spans, RED metrics and exception logs itself, at about a quarter of
    the CPU cost. ``native_telemetry=True`` keeps FastAPI's (with its operation spans) and
    adds only the correlation id, the health endpoints and ``/metrics``.

    Examples:
        >>> from fastapi import FastAPI
        >>> import appvitals
        >>> app = appvitals.instrument_fastapi(FastAPI())
        >>> appvitals.shutdown()
        True
    """
    add_middleware = getattr(app, "add_middleware", None)
    if add_middleware is None:
        return AppvitalsMiddleware(app, **options)
    ServerOptions.from_kwargs(options)  # fail now on a typo, not at the first request
    from appvitals._setup import configure, is_configured

    if not is_configured():
        configure()  # first: FastAPI's telemetry is active only once providers exist
    if not native_telemetry:
        _switch_off_native_telemetry(app)
    traces_and_metrics, logs = _native_telemetry(app)
    add_middleware(
        AppvitalsMiddleware,
        framework_telemetry=traces_and_metrics,
        framework_logs=logs,
        **options,
    )
    return app


def _switch_off_native_telemetry(app: Any) -> None:
    """Turn FastAPI's own spans, metrics and logs off (it reads its config on every request).

    Should a FastAPI release keep that config elsewhere, nothing changes here and
    :func:`_native_telemetry` still sees the native telemetry on: appvitals then runs as its
    companion, as with ``native_telemetry=True``.
    """
    config = getattr(app, "_telemetry", None)
    if isinstance(config, dict) and "tracing" in config:
        config.update(tracing=False, metrics=False, logs=False)


def _native_telemetry(app: Any) -> tuple[bool, bool]:
    """What FastAPI's own OpenTelemetry instrumentation records: (spans and metrics, logs)."""
    native = getattr(app, "_native_telemetry", None)
    config = getattr(app, "_telemetry", None)
    try:
        if native is None or not isinstance(config, dict) or not native.enabled():
            return False, False
        both = bool(config.get("tracing", True) and config.get("metrics", True))
        return both, bool(config.get("logs", True))
    except Exception as error:
        report_internal_error("fastapi telemetry detection", error)
        return False, False
