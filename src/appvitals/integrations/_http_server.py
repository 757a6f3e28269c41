"""What every HTTP server integration shares: options, instruments and the request lifecycle.

The WSGI (Flask) and ASGI (FastAPI, Starlette) adapters only translate their protocol to
the calls here. The lifecycle is written for the hot path — the overhead budget is about
80 µs per request (``docs/benchmarks.md``), so attribute dicts are built once, span
attributes only for sampled spans, and W3C extraction only when a ``traceparent`` arrived.
It emits the stable HTTP semantic conventions whatever ``OTEL_SEMCONV_STABILITY_OPT_IN``
says: ``http.server.request.duration`` (s), ``http.server.active_requests``, spans named
``{method} {route}`` with ``http.request.method``, ``http.route``,
``http.response.status_code``, ``url.scheme``, ``url.path``, ``server.address``,
``user_agent.original`` and ``error.type``.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import SpanKind, Status, StatusCode

from appvitals import _durations, _spans
from appvitals._context import _fields, is_valid_correlation_id, new_correlation_id
from appvitals._inline import tick
from appvitals._safety import report_internal_error
from appvitals._version import __version__

# Semantic-convention buckets for http.server.request.duration.
DURATION_BUCKETS = _durations.BUCKETS
_KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY"}
)
_logger = logging.getLogger("appvitals.http")


@dataclasses.dataclass(frozen=True)
class ServerOptions:
    """Options of ``instrument_flask()`` / ``instrument_fastapi()`` (all keyword arguments).

    Attributes:
        health: serve the health endpoints.
        health_live_path, health_ready_path, health_detailed_path: their paths.
        metrics_endpoint: serve the Prometheus endpoint.
        metrics_path: its path.
        excluded_paths: paths neither traced nor measured (the endpoints above always are).
        correlation_headers: request headers read for a correlation id, in order.
        correlation_response_header: the response header that echoes it.
        record_body_sizes: also record ``http.server.request.body.size`` and
            ``http.server.response.body.size`` (from ``Content-Length``).
        monitoring_api: serve seed 004's ``GET /api/monitoring/dashboard`` and
            ``POST /api/monitoring/trace`` (:mod:`appvitals.monitoring_api`).
        monitoring_path: the prefix of those two paths.
    """

    health: bool = True
    health_live_path: str = "/health/live"
    health_ready_path: str = "/health/ready"
    health_detailed_path: str = "/health/detailed"
    metrics_endpoint: bool = True
    metrics_path: str = "/metrics"
    excluded_paths: frozenset[str] = frozenset()
    correlation_headers: tuple[str, ...] = ("X-Correlation-ID", "X-Request-ID")
    correlation_response_header: str = "X-Correlation-ID"
    record_body_sizes: bool = False
    monitoring_api: bool = False
    monitoring_path: str = "/api/monitoring"

    @classmethod
    def from_kwargs(cls, options: Mapping[str, Any]) -> ServerOptions:
        """Build from keyword arguments; an unknown name is a TypeError naming it."""
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(options) - names)
        if unknown:
            msg = f"unknown option(s) {', '.join(unknown)}; expected some of {sorted(names)}"
            raise TypeError(msg)
        values = dict(options)
        if "excluded_paths" in values:
            values["excluded_paths"] = frozenset(values["excluded_paths"])
        if "correlation_headers" in values:
            values["correlation_headers"] = tuple(values["correlation_headers"])
        return cls(**values)

    def endpoint_paths(self) -> dict[str, str]:
        """Path → endpoint name of the endpoints appvitals serves itself."""
        paths: dict[str, str] = {}
        if self.health:
            paths[self.health_live_path] = "live"
            paths[self.health_ready_path] = "ready"
            paths[self.health_detailed_path] = "detailed"
        if self.metrics_endpoint:
            paths[self.metrics_path] = "metrics"
        if self.monitoring_api:
            prefix = self.monitoring_path.rstrip("/")
            paths[f"{prefix}/dashboard"] = "dashboard"
            paths[f"{prefix}/trace"] = "trace"
        return paths


# The methods each endpoint answers; other methods go to the application.
_READ = ("GET", "HEAD")
ENDPOINT_METHODS = {"trace": ("POST",)}


def serves(endpoint: str | None, method: str | None) -> bool:
    """Whether appvitals answers ``method`` on ``endpoint`` (else the application does)."""
    return endpoint is not None and method in ENDPOINT_METHODS.get(endpoint, _READ)


@dataclasses.dataclass(frozen=True)
class EndpointRequest:
    """What an endpoint may need of the request: ``Accept``, the body and the client."""

    accept: str | None = None
    content_type: str | None = None
    body: bytes = b""
    client: str | None = None


_NO_REQUEST = EndpointRequest()


def endpoint_response(
    endpoint: str, request: EndpointRequest | None = None
) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and body of one of appvitals' own endpoints (never raises)."""
    request = request or _NO_REQUEST
    try:
        if endpoint == "metrics":
            from appvitals import prometheus

            body, content_type = prometheus.metrics_text(accept=request.accept)
            return 200, [("Content-Type", content_type), ("Cache-Control", "no-store")], body
        if endpoint in ("dashboard", "trace"):
            from appvitals import monitoring_api

            if endpoint == "dashboard":
                return monitoring_api.dashboard_response()
            return monitoring_api.trace_response(request.body, request.content_type, request.client)
        from appvitals import health

        status = 200
        if endpoint == "live":
            payload: Any = health.live_payload()
        elif endpoint == "ready":
            status, payload = health.ready_payload()
        else:
            status, payload = health.detailed_payload()
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = [("Content-Type", "application/json"), ("Cache-Control", "no-store")]
    except Exception as error:
        report_internal_error(f"{endpoint} endpoint", error)
        return 500, [("Content-Type", "application/json")], b'{"status":"error"}'
    return status, headers, body


class DeferredDurations:
    """``http.server.request.duration`` of unsampled requests, recorded in batches.

    The fallback of :mod:`appvitals._durations`, used when a reader other than appvitals'
    Prometheus reader collects the provider. One ``Histogram.record`` through the SDK costs
    about 6 µs in a tight loop and more inside a request, where the request's own code has
    pushed the SDK's out of the CPU caches (``docs/benchmarks.md``). A request only appends
    its duration and attributes here; every :attr:`BATCH` requests, and before every reader
    collects (:meth:`ActiveRequests.observe` calls :meth:`flush`), the batch goes through
    the SDK in one warm loop. A scrape or an export therefore always sees every finished
    request. Sampled requests record at once, with their span current, so that their
    exemplars carry the trace.
    """

    BATCH = 64

    def __init__(self, histogram: metrics.Histogram) -> None:
        self.histogram = histogram
        # deque: append and popleft are atomic, so threads may add while another flushes.
        self._pending: collections.deque[tuple[float, dict[str, Any]]] = collections.deque()

    def record(self, value: float, attributes: dict[str, Any]) -> None:
        """Keep one duration; flush when a batch is full."""
        pending = self._pending
        pending.append((value, attributes))
        if len(pending) >= self.BATCH:
            self.flush()

    def flush(self) -> None:
        """Record every kept duration, outside any request's context (so with no exemplar)."""
        record, pending = self.histogram.record, self._pending
        try:
            while pending:
                value, attributes = pending.popleft()
                record(value, attributes, _NO_SPAN)
        except IndexError:  # another thread took the last one between the test and popleft
            pass
        except Exception as error:
            report_internal_error("http server duration", error)

    def clear(self) -> None:
        """Forget the kept durations (a forked child: they are its parent's to record)."""
        self._pending.clear()


_NO_SPAN = otel_context.Context()


class ActiveRequests:
    """``http.server.active_requests``: requests in flight, counted here, observed on collection.

    Recording an up-down counter through the SDK costs two measurements per request, about
    14 µs with the OTLP and Prometheus readers (``docs/benchmarks.md``), a sixth of the
    budget. Here a request costs two dictionary updates under a lock, and an observable
    up-down counter — the same non-monotonic sum on export — reports the counts when a
    reader collects. Every application instrumented through one meter shares one instance
    (:func:`active_requests`), because the SDK keeps the first callback of an instrument
    name. Its callback is also the moment the :class:`DeferredDurations` are flushed: the
    SDK calls it at the start of every collection, before it reads the histograms.
    """

    MAX_SERIES = 64  # (method, scheme) pairs; a method outside the known ones is "_OTHER"

    def __init__(self, meter: metrics.Meter) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = {}
        self.durations = DeferredDurations(
            meter.create_histogram(
                _durations.NAME,
                unit=_durations.UNIT,
                description=_durations.DESCRIPTION,
                explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
            )
        )
        meter.create_observable_up_down_counter(
            "http.server.active_requests",
            callbacks=[self.observe],
            unit="{request}",
            description="Number of active HTTP server requests.",
        )

    def add(self, key: tuple[str, str], delta: int) -> None:
        """Count ``delta`` requests of ``key`` = (method, scheme)."""
        with self._lock:
            counts = self._counts
            if key not in counts and len(counts) >= self.MAX_SERIES:
                key = (key[0], "_OTHER")
            counts[key] = counts.get(key, 0) + delta

    def observe(self, _options: CallbackOptions) -> list[Observation]:
        """The counts, one observation per (method, scheme) seen (zeros included)."""
        self.durations.flush()
        with self._lock:
            items = list(self._counts.items())
        return [
            Observation(count, {"http.request.method": method, "url.scheme": scheme})
            for (method, scheme), count in items
        ]


_active_by_meter: weakref.WeakKeyDictionary[Any, ActiveRequests] = weakref.WeakKeyDictionary()
_active_lock = threading.Lock()


def _at_fork_reinit() -> None:
    """In a forked child: new locks (a parent thread may have held one) and no requests."""
    global _active_lock  # noqa: PLW0603 - the parent's lock may be held forever in the child
    _active_lock = threading.Lock()
    for active in list(_active_by_meter.values()):
        active._lock = threading.Lock()
        active._counts = dict.fromkeys(active._counts, 0)
        active.durations.clear()


def active_requests(meter: metrics.Meter) -> ActiveRequests:
    """The :class:`ActiveRequests` of ``meter`` (created, and its instrument registered, once)."""
    with _active_lock:
        active = _active_by_meter.get(meter)
        if active is None:
            active = _active_by_meter[meter] = ActiveRequests(meter)
        return active


class ServerTelemetry:
    """The instruments and the request lifecycle of one instrumented application."""

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.endpoints = options.endpoint_paths()
        self.excluded = frozenset(options.excluded_paths) | frozenset(self.endpoints)
        # Header names as WSGI environ keys and as lowercase ASGI header names.
        self.correlation_environ_keys = tuple(
            "HTTP_" + name.upper().replace("-", "_") for name in options.correlation_headers
        )
        self.correlation_header_names = tuple(
            name.lower().encode("latin-1") for name in options.correlation_headers
        )
        self.tracer = trace.get_tracer(_durations.SCOPE, __version__)
        self.current_context, self.attach, self.detach = _spans.context_functions()
        meter = metrics.get_meter(_durations.SCOPE, __version__)
        self.active = active_requests(meter)
        self.durations = self.active.durations
        self.replaced = meter.create_counter(
            "appvitals.http.server.correlation_id.replaced",
            unit="{request}",
            description="Incoming correlation ids rejected as invalid and replaced.",
        )
        self.request_size = self.response_size = None
        if options.record_body_sizes:
            self.request_size = meter.create_histogram(
                "http.server.request.body.size", unit="By", description="Request body size."
            )
            self.response_size = meter.create_histogram(
                "http.server.response.body.size", unit="By", description="Response body size."
            )

    def correlation_id(self, incoming: str | None) -> str:
        """The incoming id when valid, else a new one (counting the rejected ones)."""
        if incoming is not None:
            if is_valid_correlation_id(incoming):
                return incoming
            self.replaced.add(1)
        return new_correlation_id()

    def start(
        self,
        method: str,
        scheme: str,
        path: str,
        correlation_id: str,
        carrier: Mapping[str, str] | None,
        describe: Callable[[], dict[str, Any]],
        keep_fields: bool = False,
    ) -> Request:
        """Begin a request: span, context, correlation id and the active-requests count.

        ``carrier`` holds W3C headers when a ``traceparent`` arrived; ``describe`` returns
        the span's descriptive attributes and is called only for sampled spans.
        ``keep_fields`` leaves the correlation id bound after :meth:`Request.finish`, for a
        framework that logs after the middleware returned (in the request's own task).
        """
        if method not in _KNOWN_METHODS:
            method = "_OTHER"
        key = (method, scheme)
        parent = propagate.extract(carrier) if carrier else None
        root_sampling = _spans.current
        if root_sampling is not None and parent is None and not self.current_context():
            span = root_sampling.start(self.tracer, method)  # no parent anywhere: a root span
        else:
            span = self.tracer.start_span(method, parent, kind=SpanKind.SERVER)
        if span.is_recording():
            attributes = describe()
            attributes["http.request.method"] = method
            attributes["url.scheme"] = scheme
            attributes["url.path"] = path
            attributes["correlation_id"] = correlation_id
            span.set_attributes(attributes)
        token = self.attach(span, parent)
        fields_token = _fields.set(MappingProxyType({"correlation_id": correlation_id}))
        self.active.add(key, 1)
        return Request(
            self,
            span,
            token,
            None if keep_fields else fields_token,
            key,
            method,
            correlation_id,
            time.perf_counter(),
        )


class Request:
    """One request in flight; :meth:`finish` ends it exactly once."""

    __slots__ = (
        "_active_key",
        "_fields_token",
        "_start",
        "_telemetry",
        "_token",
        "correlation_id",
        "method",
        "span",
    )

    def __init__(
        self,
        telemetry: ServerTelemetry,
        span: trace.Span,
        token: Any,
        fields_token: Any,
        active_key: tuple[str, str],
        method: str,
        correlation_id: str,
        start: float,
    ) -> None:
        self._telemetry = telemetry
        self.correlation_id = correlation_id
        self.span = span
        self._token = token
        self._fields_token = fields_token
        self._active_key = active_key
        self.method = method
        self._start = start

    def finish(
        self,
        status: int,
        route: str | None,
        error: BaseException | None = None,
        request_size: int | None = None,
        response_size: int | None = None,
    ) -> None:
        """End the span, record the RED metrics and restore the caller's context."""
        elapsed = time.perf_counter() - self._start
        telemetry, span = self._telemetry, self.span
        try:
            attributes: dict[str, Any] = {
                "http.request.method": self.method,
                "url.scheme": self._active_key[1],
                "http.response.status_code": status,
            }
            if route:
                attributes["http.route"] = route
            error_type = _error_type(status, error)
            if error_type is not None:
                attributes["error.type"] = error_type
            sampled = span.is_recording()
            direct = _durations.current
            if direct is not None:  # aggregated by appvitals, merged on collection
                direct.record(elapsed, attributes, span.get_span_context() if sampled else None)
            elif sampled:  # now, while the span is current: its exemplar carries the trace
                telemetry.durations.histogram.record(elapsed, attributes)
            else:
                telemetry.durations.record(elapsed, attributes)
            telemetry.active.add(self._active_key, -1)
            if telemetry.request_size is not None and request_size is not None:
                telemetry.request_size.record(request_size, attributes)
            if telemetry.response_size is not None and response_size is not None:
                telemetry.response_size.record(response_size, attributes)
            if sampled:
                span.update_name(f"{self.method} {route}" if route else self.method)
                _describe_outcome(span, attributes, error, error_type)
            span.end()
        except Exception as internal:
            report_internal_error("http server request", internal)
        finally:
            try:
                if self._fields_token is not None:
                    _fields.reset(self._fields_token)
                telemetry.detach(self._token)
            except Exception as internal:
                report_internal_error("http server context", internal)
        tick()  # export_mode auto/inline: the exports that are due, after the request's context


def _describe_outcome(
    span: trace.Span,
    attributes: dict[str, Any],
    error: BaseException | None,
    error_type: str | None,
) -> None:
    """A sampled span's response attributes, exception event and error status."""
    span.set_attributes(attributes)
    if error is not None:
        span.record_exception(error, escaped=True)
    if error_type is not None:
        span.set_status(Status(StatusCode.ERROR, error_type))


def _error_type(status: int, error: BaseException | None) -> str | None:
    """``error.type``: the exception's class, else the status code of a 5xx response."""
    if error is not None:
        return type(error).__qualname__
    return str(status) if status >= 500 else None


def describe_headers(
    user_agent: str | None,
    host: str | None,
    client: str | None,
    protocol: str | None,
) -> dict[str, Any]:
    """Span attributes from the request's descriptive headers (sampled spans only)."""
    attributes: dict[str, Any] = {}
    if user_agent:
        attributes["user_agent.original"] = user_agent[:512]
    if host:
        address, _, port = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
        attributes["server.address"] = address or host
        if port.isdigit():
            attributes["server.port"] = int(port)
    if client:
        attributes["client.address"] = client
    if protocol:
        attributes["network.protocol.version"] = protocol.rpartition("/")[2]
    return attributes
