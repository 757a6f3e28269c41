"""The two monitoring endpoints of seed 004, framework-agnostic (opt-in).

``GET /api/monitoring/dashboard``
    :func:`dashboard_payload`: health status and checks (``/health/detailed``), request
    rate, error rate and p95 latency over the last minute — computed from the service's own
    ``http.server.request.duration`` as ``/metrics`` exposes it (so summed over gunicorn
    workers in multi-process mode) — active jobs (``appvitals.job.active``, when jobs report
    it) and this process's CPU and memory.

``POST /api/monitoring/trace``
    :func:`ingest_trace_event`: a custom front-end event, validated, size-limited and
    rate-limited per client, recorded as a span ``frontend.{name}`` (or as an event on the
    current span). The body is JSON::

        {"name": "checkout.click", "attributes": {"step": 2, "cart.items": 3},
         "timestamp": 1700000000123, "duration_ms": 41.5,
         "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7"}

    ``name`` (``[A-Za-z][A-Za-z0-9_.:-]{0,63}``) is required; ``attributes`` (at most 32
    keys of ``[A-Za-z0-9_.-]``, values string ≤ 256 characters, number or boolean),
    ``timestamp`` (milliseconds since the epoch, as JavaScript's ``Date.now()``, or ISO
    8601; within the last 24 hours), ``duration_ms`` (0 to 3 600 000) and the W3C ids of
    the front-end's span (both or neither; the event's span becomes their child) are
    optional. Answers: 202 accepted, 400 invalid, 413 too large, 415 not JSON, 429 rate
    limited (with ``Retry-After``).

:func:`dashboard_response` and :func:`trace_response` return ``(status, headers, body)``
like the middleware's other endpoints, so mounting them is a few lines.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from typing import Any, Optional

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from appvitals._safety import report_internal_error
from appvitals._version import __version__

__all__ = [
    "MAX_BYTES",
    "TokenBucket",
    "dashboard_payload",
    "dashboard_response",
    "ingest_trace_event",
    "trace_response",
]

MAX_BYTES = 16384
"""Largest accepted trace-event body; read at most ``MAX_BYTES + 1`` bytes of a request."""

Response = tuple[int, list[tuple[str, str]], bytes]

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]{0,63}")
_KEY = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_TRACE_ID = re.compile(r"[0-9a-f]{32}")
_SPAN_ID = re.compile(r"[0-9a-f]{16}")
_FIELDS = frozenset({"name", "attributes", "timestamp", "duration_ms", "trace_id", "span_id"})
_MAX_ATTRIBUTES = 32
_MAX_VALUE = 256
_MAX_AGE_S = 24 * 3600.0
_MAX_FUTURE_S = 300.0
_MAX_DURATION_MS = 3_600_000.0
_JSON_HEADERS = [("Content-Type", "application/json"), ("Cache-Control", "no-store")]


# --- rate limiting ----------------------------------------------------------------------------


class TokenBucket:
    """A token bucket per client: ``burst`` requests at once, then ``rate`` per second.

    Thread-safe; at most ``max_clients`` buckets are kept (the least recently seen client
    is forgotten first, which only ever gives it a full bucket back).

    Args:
        rate: Tokens added per second.
        burst: Bucket size.
        max_clients: Clients remembered.
        clock: Monotonic seconds (injectable for tests).

    Examples:
        >>> now = [0.0]
        >>> bucket = TokenBucket(rate=1.0, burst=2, clock=lambda: now[0])
        >>> bucket.take("10.0.0.1"), bucket.take("10.0.0.1"), bucket.take("10.0.0.1")
        (0.0, 0.0, 1.0)
        >>> now[0] = 1.0
        >>> bucket.take("10.0.0.1")
        0.0
    """

    def __init__(
        self,
        rate: float = 5.0,
        burst: int = 20,
        *,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1 or max_clients < 1:
            msg = "rate must be > 0, burst and max_clients >= 1"
            raise ValueError(msg)
        self.rate, self.burst, self.max_clients = float(rate), float(burst), max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, client: str) -> float:
        """Take one token for ``client``: ``0.0`` when allowed, else seconds until one is."""
        now = self._clock()
        with self._lock:
            tokens, then = self._buckets.pop(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - then) * self.rate)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            self._buckets[client] = (tokens, now)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        return 0.0 if allowed else (1.0 - tokens) / self.rate


_default_limiter: Optional[tuple[int, TokenBucket]] = None


def _limiter() -> TokenBucket:
    global _default_limiter  # noqa: PLW0603 - one limiter per process, made on first use
    current = _default_limiter
    if current is None or current[0] != os.getpid():  # a forked child gets its own (and lock)
        current = _default_limiter = (os.getpid(), TokenBucket())
    return current[1]


# --- POST /api/monitoring/trace ---------------------------------------------------------------


class _InvalidEventError(ValueError):
    """The event breaks a rule; the message says which (answered with 400)."""


def _scalar(key: str, value: Any) -> Any:
    if isinstance(value, str):
        if len(value) > _MAX_VALUE:
            raise _InvalidEventError(f"attribute {key!r} is longer than {_MAX_VALUE} characters")
        return value
    if isinstance(value, bool) or (isinstance(value, int) and abs(value) < 2**63):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    raise _InvalidEventError(f"attribute {key!r} must be a string, a number or a boolean")


def _attributes(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _InvalidEventError("attributes must be an object")
    if len(raw) > _MAX_ATTRIBUTES:
        raise _InvalidEventError(f"at most {_MAX_ATTRIBUTES} attributes")
    for key in raw:
        if not _KEY.fullmatch(key):
            raise _InvalidEventError(
                f"attribute key {key[:64]!r} must match [A-Za-z0-9_.-]{{1,64}}"
            )
    return {key: _scalar(key, value) for key, value in raw.items()}


def _timestamp_ns(raw: Any, now: float) -> int:
    if raw is None:
        return int(now * 1e9)
    if isinstance(raw, int) and not isinstance(raw, bool):
        nanos = raw * 1_000_000  # exact for JavaScript's integer milliseconds
    elif isinstance(raw, float) and math.isfinite(raw):
        nanos = round(raw * 1e6)
    elif isinstance(raw, str):
        try:
            parsed = datetime.datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise _InvalidEventError(
                "timestamp must be ISO 8601 or milliseconds since the epoch"
            ) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=datetime.timezone.utc)
        nanos = round(parsed.timestamp() * 1e6) * 1000
    else:
        raise _InvalidEventError("timestamp must be ISO 8601 or milliseconds since the epoch")
    if not now - _MAX_AGE_S <= nanos / 1e9 <= now + _MAX_FUTURE_S:
        raise _InvalidEventError("timestamp is not within the last 24 hours")
    return nanos


def _parent(event: Mapping[str, Any]) -> Optional[Any]:
    trace_id, span_id = event.get("trace_id"), event.get("span_id")
    if trace_id is None and span_id is None:
        return None
    if not (isinstance(trace_id, str) and isinstance(span_id, str)):
        raise _InvalidEventError("trace_id and span_id go together, as hex strings")
    trace_id, span_id = trace_id.lower(), span_id.lower()
    valid = _TRACE_ID.fullmatch(trace_id) and _SPAN_ID.fullmatch(span_id)
    if not valid or not int(trace_id, 16) or not int(span_id, 16):
        raise _InvalidEventError("trace_id must be 32 and span_id 16 hex digits, not all zero")
    # The front-end sampled the span it reports (it sent it): the event joins its trace.
    context = SpanContext(
        int(trace_id, 16),
        int(span_id, 16),
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    return trace.set_span_in_context(NonRecordingSpan(context))


def _parse(body: bytes, now: float) -> dict[str, Any]:
    try:
        event = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise _InvalidEventError("the body is not valid JSON") from None
    if not isinstance(event, dict):
        raise _InvalidEventError("the body must be a JSON object")
    unknown = sorted(set(event) - _FIELDS)
    if unknown:
        raise _InvalidEventError(f"unknown field(s): {', '.join(map(str, unknown))[:200]}")
    name = event.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise _InvalidEventError("name must match [A-Za-z][A-Za-z0-9_.:-]{0,63}")
    duration = event.get("duration_ms")
    if duration is not None and (
        isinstance(duration, bool)
        or not isinstance(duration, (int, float))
        or not 0 <= duration <= _MAX_DURATION_MS
    ):
        raise _InvalidEventError("duration_ms must be a number from 0 to 3600000")
    return {
        "name": name,
        "attributes": _attributes(event.get("attributes")),
        "start": _timestamp_ns(event.get("timestamp"), now),
        "duration_ms": duration,
        "parent": _parent(event),
    }


def _record(event: dict[str, Any], client: Optional[str]) -> dict[str, Any]:
    name = f"frontend.{event['name']}"
    attributes = dict(event["attributes"])
    attributes["frontend.event.name"] = event["name"]
    if client:
        attributes["client.address"] = client
    current = trace.get_current_span()
    standalone = event["parent"] is not None or event["duration_ms"] is not None
    if not standalone and current.is_recording():
        current.add_event(name, attributes, timestamp=event["start"])
        context = current.get_span_context()
        recorded_as = "event"
    else:
        tracer = trace.get_tracer("appvitals.monitoring", __version__)
        start = event["start"]
        span = tracer.start_span(
            name, event["parent"], kind=SpanKind.INTERNAL, attributes=attributes, start_time=start
        )
        span.end(end_time=start + int((event["duration_ms"] or 0.0) * 1e6))
        context = span.get_span_context()
        recorded_as = "span"
    return {
        "status": "accepted",
        "recorded_as": recorded_as,
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
    }


def _count(outcome: str) -> None:
    from appvitals import metrics

    metrics.counter(
        "appvitals.monitoring.trace_events",
        unit="{event}",
        description="Front-end trace events received, by outcome.",
    ).add(1, {"outcome": outcome})


def ingest_trace_event(
    body: bytes,
    content_type: Optional[str],
    *,
    client: Optional[str] = None,
    max_bytes: int = MAX_BYTES,
    rate_limiter: Optional[TokenBucket] = None,
    clock: Callable[[], float] = time.time,
) -> tuple[int, dict[str, Any]]:
    """Validate and record one front-end event (``POST /api/monitoring/trace``).

    Never raises; outcomes are counted in ``appvitals.monitoring.trace_events``.

    Args:
        body: The request body (read at most ``max_bytes + 1`` bytes of it).
        content_type: The request's ``Content-Type``; must be ``application/json``.
        client: The caller's address, the rate limiter's key (``None`` shares one bucket).
        max_bytes: Largest accepted body.
        rate_limiter: Per-client limiter; default 20 events at once, then 5 per second.
        clock: Wall-clock seconds, to check ``timestamp`` (tests).

    Returns:
        ``(status, payload)``: 202 with ``recorded_as``, ``trace_id`` and ``span_id``; 400,
        413, 415 or 429 (with ``retry_after`` seconds) with ``error``.

    Examples:
        >>> status, payload = ingest_trace_event(b'{"name": "page.view"}', "application/json")
        >>> status, payload["status"], payload["recorded_as"]
        (202, 'accepted', 'span')
        >>> ingest_trace_event(b"{}", "text/plain")[0]
        415
    """
    outcome, status = "accepted", 202
    try:
        wait = (rate_limiter or _limiter()).take(client or "")
        if wait > 0:
            outcome, status = "rate_limited", 429
            retry = math.ceil(wait)
            return status, {"status": "error", "error": "rate limited", "retry_after": retry}
        if len(body) > max_bytes:
            outcome, status = "too_large", 413
            return status, {"status": "error", "error": f"body larger than {max_bytes} bytes"}
        media_type = (content_type or "").split(";")[0].strip().lower()
        if media_type != "application/json":
            outcome, status = "unsupported_media_type", 415
            return status, {"status": "error", "error": "Content-Type must be application/json"}
        try:
            event = _parse(body, clock())
        except _InvalidEventError as invalid:
            outcome, status = "invalid", 400
            return status, {"status": "error", "error": str(invalid)}
        return status, _record(event, client)
    except Exception as error:
        report_internal_error("monitoring trace endpoint", error)
        outcome, status = "error", 500
        return status, {"status": "error", "error": "internal error"}
    finally:
        try:
            _count(outcome)
        except Exception as error:
            report_internal_error("monitoring trace endpoint", error)


def trace_response(body: bytes, content_type: Optional[str], client: Optional[str]) -> Response:
    """:func:`ingest_trace_event` as ``(status, headers, body)`` for the middleware."""
    status, payload = ingest_trace_event(body, content_type, client=client)
    headers = list(_JSON_HEADERS)
    if status == 429:
        headers.append(("Retry-After", str(payload.get("retry_after", 1))))
    return status, headers, json.dumps(payload, separators=(",", ":")).encode()


# --- GET /api/monitoring/dashboard ------------------------------------------------------------

# (monotonic time, request count, error count, cumulative count by bucket bound)
_Reading = tuple[float, float, float, dict[float, float]]
_history: deque[_Reading] = deque(maxlen=64)
_history_lock = threading.Lock()
# The reader the history was read from: a new one (configure() after shutdown()) restarts it.
_history_source: list[int] = [0]


def _requests_reading(families: Mapping[str, Any]) -> Optional[_Reading]:
    from appvitals.prometheus import metric_name

    family = families.get(metric_name("http.server.request.duration", "s", "histogram"))
    if family is None:
        return None
    total = errors = 0.0
    buckets: dict[float, float] = {}
    for (suffix, labels), value in family.samples.items():
        if suffix == "_count":
            total += value
            if any(key == "error_type" for key, _ in labels):
                errors += value
        elif suffix == "_bucket":
            bound = float(labels[-1][1])
            buckets[bound] = buckets.get(bound, 0.0) + value
    return time.monotonic(), total, errors, buckets


def _quantile(quantile: float, buckets: Mapping[float, float]) -> Optional[float]:
    """``histogram_quantile`` of Prometheus over cumulative bucket counts."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = quantile * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):  # in the overflow bucket: the highest finite bound
                return lower
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, count
    return lower


def _request_figures(families: Mapping[str, Any], window: float, source: int) -> dict[str, Any]:
    current = _requests_reading(families)
    if current is None:
        return {"rate_per_second": None, "error_rate": None, "p95_latency_ms": None}
    now = current[0]
    with _history_lock:
        if _history_source[0] != source or (_history and current[1] < _history[-1][1]):
            _history.clear()  # another provider, or its counters were reset
            _history_source[0] = source
        reference = next((r for r in reversed(_history) if now - r[0] >= window), None)
        if reference is None and _history:
            reference = _history[0]
        if not _history or now - _history[-1][0] >= 1.0:
            _history.append(current)
    if reference is None or reference[0] >= now:
        # The first call: everything so far, over the time the process has run.
        from appvitals.resources import _process_baseline

        try:
            reference = (_process_baseline()[0], 0.0, 0.0, {})
        except Exception:
            reference = (now - 1.0, 0.0, 0.0, {})
    elapsed = max(now - reference[0], 1e-3)
    requests = max(current[1] - reference[1], 0.0)
    errors = max(current[2] - reference[2], 0.0)
    deltas = {bound: count - reference[3].get(bound, 0.0) for bound, count in current[3].items()}
    p95 = _quantile(0.95, deltas)
    return {
        "window_seconds": round(elapsed, 1),
        "requests": int(requests),
        "errors": int(errors),
        "rate_per_second": round(requests / elapsed, 3),
        "error_rate": round(errors / requests, 4) if requests else 0.0,
        "p95_latency_ms": None if p95 is None else round(p95 * 1000.0, 1),
    }


def _active_jobs(families: Mapping[str, Any]) -> Optional[int]:
    found = [
        family
        for name, family in families.items()
        if name == "appvitals_job_active" or name.startswith("appvitals_job_active_")
    ]
    if not found:
        return None
    return int(sum(value for family in found for value in family.samples.values()))


def dashboard_payload(*, window: float = 60.0) -> dict[str, Any]:
    """The dashboard's data (``GET /api/monitoring/dashboard``); never raises.

    Request figures cover the last ``window`` seconds — from the newest earlier call at
    least that old; the first call covers the process's lifetime — and are ``None`` when
    ``/metrics`` is turned off (``APPVITALS_PROMETHEUS=false``), whose reader they read.

    Args:
        window: Seconds the rates and the p95 latency cover.

    Returns:
        ``status`` (healthy, degraded, unhealthy), ``health`` (check → status),
        ``uptime_seconds``, ``requests`` (``rate_per_second``, ``error_rate``,
        ``p95_latency_ms``, counts, ``window_seconds``), ``active_jobs`` (``None`` without
        job metrics), ``resources`` (``cpu_percent``, ``memory_rss_mb``, ``threads`` …)
        and ``generated_at``.

    Examples:
        >>> payload = dashboard_payload()  # before configure(): no request figures yet
        >>> sorted(payload)  # doctest: +NORMALIZE_WHITESPACE
        ['active_jobs', 'generated_at', 'health', 'requests', 'resources', 'status',
         'uptime_seconds']
        >>> payload["requests"]["p95_latency_ms"] is None
        True
    """
    from appvitals import health, prometheus, resources

    payload: dict[str, Any] = {
        "generated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="milliseconds"
        ),
    }
    try:
        _, detailed = health.detailed_payload()
        payload["status"] = detailed["status"]
        payload["uptime_seconds"] = detailed["uptime_seconds"]
        payload["health"] = {name: check["status"] for name, check in detailed["checks"].items()}
        current = prometheus.reader()
        families = current._gather()[0] if current.attached else {}
        payload["requests"] = _request_figures(families, window, id(current))
        payload["active_jobs"] = _active_jobs(families)
        payload["resources"] = resources.process_summary()
    except Exception as error:
        report_internal_error("monitoring dashboard", error)
        payload.setdefault("status", "unknown")
    return payload


def dashboard_response() -> Response:
    """:func:`dashboard_payload` as ``(status, headers, body)`` for the middleware."""
    payload = dashboard_payload()
    body = json.dumps(payload, separators=(",", ":"), default=str).encode()
    return 200, list(_JSON_HEADERS), body
