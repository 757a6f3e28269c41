"""Root server spans that the sampler drops, made without the SDK's span machinery.

Nine requests in ten are not sampled, yet ``Tracer.start_span`` runs the whole SDK path for
each: parent lookup, sampler objects, ``SamplingResult``, trace state, tracer metrics. That
costs about 3 µs in a tight loop, and several times more inside a ``/work`` request, whose
own code has pushed the SDK's out of the CPU caches (``docs/benchmarks.md``). For a request
that arrives without a trace context, :meth:`RootSampling.start` draws the trace id itself
and applies the configured root sampler's rule — a ratio sampler keeps a trace when the
trace id's low 64 bits fall under its bound, exactly as ``TraceIdRatioBased`` decides. A
dropped request gets a ``NonRecordingSpan`` with the same ids and flags the SDK would give
it; a kept one is started by the SDK as before, with the trace id already drawn
(:class:`PresetIdGenerator`), so the SDK's sampler reaches the same decision.

``configure()`` sets :data:`current` only when appvitals built and installed the tracer
provider, with a ratio or always-off root sampler (:func:`root_bound`); any other set-up
keeps the SDK path for every span.
"""

from __future__ import annotations

import logging
import os
import random
import threading
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import Any, Optional

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context.context import Context
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, Sampler, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace import propagation as trace_propagation

_LIMIT = TraceIdRatioBased.TRACE_ID_LIMIT
_INTERNAL_METRICS = "OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED"
_NO_STATE = trace.DEFAULT_TRACE_STATE
_new_tuple = tuple.__new__
# The logger of ``opentelemetry.context.detach``, so that both detach paths report alike.
_context_logger = logging.getLogger(otel_context.__name__)


class PresetIdGenerator(RandomIdGenerator):
    """The SDK's random ids, except for a trace id drawn (and sampled) by :class:`RootSampling`.

    The preset is per thread and used once, by the ``start_span`` call that follows it.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def preset(self, trace_id: int) -> None:
        """Make ``trace_id`` the next trace id this thread's ``start_span`` gets."""
        self._local.trace_id = trace_id

    def generate_trace_id(self) -> int:
        local = self._local
        trace_id: int = getattr(local, "trace_id", 0)
        if trace_id:
            local.trace_id = 0
            return trace_id
        return super().generate_trace_id()


class RootSampling:
    """Start server spans of requests without a parent, deciding like the root sampler.

    Args:
        ids: the id generator of the tracer provider the spans belong to.
        bound: the root sampler's bound: a trace is kept when ``trace_id & 2**64-1 < bound``
            (0 for an always-off sampler).
    """

    def __init__(self, ids: PresetIdGenerator, bound: int) -> None:
        self.ids = ids
        self.bound = bound
        flags = TraceFlags.DEFAULT
        if ids.is_trace_id_random():
            flags |= TraceFlags.RANDOM_TRACE_ID
        self._dropped_flags = TraceFlags(flags)

    def start(self, tracer: trace.Tracer, name: str) -> trace.Span:
        """A root ``SERVER`` span: the SDK's when sampled, else a non-recording one."""
        getrandbits = random.getrandbits
        trace_id = getrandbits(128)
        while not trace_id:  # trace.INVALID_TRACE_ID
            trace_id = getrandbits(128)
        if trace_id & _LIMIT < self.bound:
            self.ids.preset(trace_id)
            return tracer.start_span(name, None, kind=SpanKind.SERVER)
        span_id = getrandbits(64)
        while not span_id:  # trace.INVALID_SPAN_ID
            span_id = getrandbits(64)
        # SpanContext(trace_id, span_id, False, flags) without its checks: both ids are
        # non-zero and in range by construction, so the context is valid.
        context = _new_tuple(
            SpanContext, (trace_id, span_id, False, self._dropped_flags, _NO_STATE, True)
        )
        return NonRecordingSpan(context)


def root_bound(root: Sampler) -> Optional[int]:
    """The bound of the root sampler ``root``, or ``None`` when spans must take the SDK path.

    ``TraceIdRatioBased`` keeps a trace under its bound; the always-off sampler keeps none.
    An always-on sampler gains nothing here (every span is the SDK's), and the SDK's opt-in
    internal metrics count every span the SDK starts, so both give ``None``.
    """
    if os.environ.get(_INTERNAL_METRICS, "").strip().lower() == "true":
        return None
    if isinstance(root, TraceIdRatioBased):
        return int(root.bound)
    if root is ALWAYS_OFF:
        return 0
    return None


# The root sampling of the tracer provider appvitals installed, or None (SDK path only).
current: Optional[RootSampling] = None


GetCurrent = Callable[[], Context]
Attach = Callable[[trace.Span, Optional[Context]], Any]
Detach = Callable[[Any], None]


def _context_variable() -> Optional[ContextVar[Context]]:
    """The context variable behind OpenTelemetry's default runtime context, else ``None``.

    ``None`` when ``OTEL_PYTHON_CONTEXT`` chose another runtime context, or when an
    OpenTelemetry release no longer keeps the variable where this reads it.
    """
    runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    if type(runtime) is not ContextVarsRuntimeContext:
        return None
    variable = getattr(runtime, "_current_context", None)
    return variable if isinstance(variable, ContextVar) else None


def context_functions() -> tuple[GetCurrent, Attach, Detach]:
    """``get_current``, ``attach(span, parent)`` and ``detach(token)`` for the request path.

    They do what ``context.get_current()``, ``context.attach(trace.set_span_in_context(span,
    parent))`` and ``context.detach(token)`` do. With the default runtime context they go
    straight to its context variable, four Python calls fewer per request; with any other
    they are the public functions.
    """
    variable = _context_variable()
    span_key = getattr(trace_propagation, "_SPAN_KEY", None)
    if variable is None or not isinstance(span_key, str):

        def attach_public(span: trace.Span, parent: Optional[Context]) -> Any:
            return otel_context.attach(trace.set_span_in_context(span, parent))

        return otel_context.get_current, attach_public, otel_context.detach

    get, set_, reset = variable.get, variable.set, variable.reset

    def attach(span: trace.Span, parent: Optional[Context]) -> Token[Context]:
        values = (get() if parent is None else parent).copy()
        values[span_key] = span
        return set_(Context(values))

    def detach(token: Token[Context]) -> None:
        try:
            reset(token)
        except Exception:
            _context_logger.exception("Failed to detach context")

    return get, attach, detach
