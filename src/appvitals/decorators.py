"""Spans, timings and counts for the application's own code.

``span()`` is one object for ``with`` and ``async with``; ``traced``, ``timed`` and
``counted`` decorate plain functions, coroutine functions, generators and async generators
(``traced``) through wrapt, so signatures, ``inspect`` answers and methods keep working.
Exceptions are recorded (``error.type``, status, an ``exception`` event with the stack
trace) and re-raised unchanged; a failure inside appvitals is swallowed by the fail-open
boundary and never changes what the decorated code returns.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from typing import Any, Optional, TypeVar, Union, cast, overload

import wrapt
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Status, StatusCode

from appvitals import metrics
from appvitals._safety import report_internal_error
from appvitals._version import __version__

__all__ = ["counted", "span", "timed", "traced"]

F = TypeVar("F", bound=Callable[..., Any])
_tracers: dict[str, trace.Tracer] = {}


def _tracer() -> trace.Tracer:
    tracer = _tracers.get("appvitals")
    if tracer is None:
        provider = trace.get_tracer_provider()
        tracer = provider.get_tracer("appvitals", __version__)
        # A proxy tracer (before configure()) is not cached: the real one replaces it later.
        if not isinstance(provider, trace.ProxyTracerProvider):
            _tracers["appvitals"] = tracer
    return tracer


def _reset() -> None:
    _tracers.clear()


def error_type(error: BaseException) -> str:
    """The ``error.type`` of an exception: its class name (as the contrib instrumentations)."""
    return type(error).__qualname__


def _record_error(current: Span, error: BaseException, record_exception: bool) -> None:
    current.set_attribute("error.type", error_type(error))
    current.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
    if record_exception:
        current.record_exception(error, escaped=True)


class span:  # noqa: N801 - used like a function: `with appvitals.span("db.query"):`
    """A span around a block: ``with span("name", **attributes) as s:``, or ``async with``.

    The span becomes the current span inside the block; an exception leaving the block is
    recorded on it (``error.type``, error status, ``exception`` event) and propagates
    unchanged. Create a new ``span(...)`` for each use.

    Examples:
        >>> import appvitals
        >>> with appvitals.span("database.query", **{"db.operation.name": "SELECT"}) as s:
        ...     s.set_attribute("db.rows", 3)
    """

    __slots__ = ("_attributes", "_kind", "_name", "_record_exception", "_span", "_token")

    def __init__(
        self,
        name: str,
        *,
        kind: SpanKind = SpanKind.INTERNAL,
        record_exception: bool = True,
        **attributes: Any,
    ) -> None:
        self._name = name
        self._kind = kind
        self._record_exception = record_exception
        self._attributes = attributes
        self._span: Span = INVALID_SPAN
        self._token: Any = None

    def __enter__(self) -> Span:
        try:
            self._span = _tracer().start_span(
                self._name, kind=self._kind, attributes=self._attributes or None
            )
            self._token = otel_context.attach(trace.set_span_in_context(self._span))
        except Exception as error:
            report_internal_error("span start", error)
        return self._span

    def __exit__(self, exc_type: Any, exc: Optional[BaseException], tb: Any) -> None:
        current, token = self._span, self._token
        try:
            if exc is not None and current.is_recording():
                _record_error(current, exc, self._record_exception)
            if token is not None:
                otel_context.detach(token)
            current.end()
        except Exception as error:
            report_internal_error("span end", error)

    async def __aenter__(self) -> Span:
        return self.__enter__()

    async def __aexit__(self, exc_type: Any, exc: Optional[BaseException], tb: Any) -> None:
        self.__exit__(exc_type, exc, tb)


def _code_attributes(fn: Callable[..., Any], extra: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    attributes: dict[str, Any] = {"code.function.name": f"{fn.__module__}.{fn.__qualname__}"}
    if extra:
        attributes.update(extra)
    return attributes


@overload
def traced(func: F, /) -> F: ...


@overload
def traced(
    *,
    name: Optional[str] = None,
    attributes: Optional[Mapping[str, Any]] = None,
    record_exceptions: bool = True,
    kind: SpanKind = SpanKind.INTERNAL,
) -> Callable[[F], F]: ...


def traced(
    func: Optional[F] = None,
    /,
    *,
    name: Optional[str] = None,
    attributes: Optional[Mapping[str, Any]] = None,
    record_exceptions: bool = True,
    kind: SpanKind = SpanKind.INTERNAL,
) -> Union[F, Callable[[F], F]]:
    """Trace every call of a function, coroutine function, generator or async generator.

    The span is named after the function's qualified name unless ``name`` is given and
    carries ``code.function.name`` plus ``attributes``. For generators the span covers the
    whole iteration and is current only while the generator body runs.

    Examples:
        >>> import appvitals
        >>> @appvitals.traced(name="heartbeat.process", attributes={"heartbeat.source": "api"})
        ... def process(payload: dict) -> int:
        ...     return len(payload)
        >>> process({"app": "billing"})
        1
    """

    def decorate(fn: F) -> F:
        span_name = name or fn.__qualname__
        attrs = _code_attributes(fn, attributes)
        if inspect.isasyncgenfunction(fn):
            wrapper = _traced_async_generator(span_name, attrs, kind, record_exceptions)
        elif inspect.iscoroutinefunction(fn):
            wrapper = _traced_coroutine(span_name, attrs, kind, record_exceptions)
        elif inspect.isgeneratorfunction(fn):
            wrapper = _traced_generator(span_name, attrs, kind, record_exceptions)
        else:
            wrapper = _traced_function(span_name, attrs, kind, record_exceptions)
        return cast(F, wrapper(fn))

    return decorate if func is None else decorate(func)


def _start(name: str, attrs: Mapping[str, Any], kind: SpanKind) -> Span:
    try:
        return _tracer().start_span(name, kind=kind, attributes=attrs)
    except Exception as error:
        report_internal_error("span start", error)
        return INVALID_SPAN


def _end(current: Span, error: Optional[BaseException], record_exceptions: bool) -> None:
    try:
        if error is not None and current.is_recording():
            _record_error(current, error, record_exceptions)
        current.end()
    except Exception as internal:
        report_internal_error("span end", internal)


def _traced_function(name: str, attrs: Mapping[str, Any], kind: SpanKind, record: bool) -> Any:
    @wrapt.decorator
    def wrapper(wrapped: Any, _instance: Any, args: Any, kwargs: Any) -> Any:
        current = _start(name, attrs, kind)
        token = otel_context.attach(trace.set_span_in_context(current))
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as error:
            otel_context.detach(token)
            _end(current, error, record)
            raise
        otel_context.detach(token)
        _end(current, None, record)
        return result

    return wrapper


def _traced_coroutine(name: str, attrs: Mapping[str, Any], kind: SpanKind, record: bool) -> Any:
    @wrapt.decorator
    async def wrapper(wrapped: Any, _instance: Any, args: Any, kwargs: Any) -> Any:
        current = _start(name, attrs, kind)
        token = otel_context.attach(trace.set_span_in_context(current))
        try:
            result = await wrapped(*args, **kwargs)
        except BaseException as error:
            otel_context.detach(token)
            _end(current, error, record)
            raise
        otel_context.detach(token)
        _end(current, None, record)
        return result

    return wrapper


def _traced_generator(name: str, attrs: Mapping[str, Any], kind: SpanKind, record: bool) -> Any:
    @wrapt.decorator
    def wrapper(wrapped: Any, _instance: Any, args: Any, kwargs: Any) -> Generator[Any, Any, Any]:
        current = _start(name, attrs, kind)
        span_context = trace.set_span_in_context(current)
        # The span is current only while the body runs: between items the consumer's own
        # context must be current, or its spans would become children of the generator's.
        token = otel_context.attach(span_context)
        try:
            generator = wrapped(*args, **kwargs)
        except BaseException as error:
            otel_context.detach(token)
            _end(current, error, record)
            raise
        otel_context.detach(token)
        to_send: Any = None
        to_throw: Optional[BaseException] = None
        while True:
            token = otel_context.attach(span_context)
            try:
                item = generator.send(to_send) if to_throw is None else generator.throw(to_throw)
            except StopIteration as stop:
                otel_context.detach(token)
                _end(current, None, record)
                return stop.value
            except BaseException as error:
                otel_context.detach(token)
                _end(current, error, record)
                raise
            otel_context.detach(token)
            to_send, to_throw = None, None
            try:
                to_send = yield item
            except GeneratorExit:
                generator.close()
                _end(current, None, record)
                raise
            except BaseException as error:
                to_throw = error

    return wrapper


def _traced_async_generator(
    name: str, attrs: Mapping[str, Any], kind: SpanKind, record: bool
) -> Any:
    @wrapt.decorator
    async def wrapper(
        wrapped: Any, _instance: Any, args: Any, kwargs: Any
    ) -> AsyncGenerator[Any, Any]:
        current = _start(name, attrs, kind)
        span_context = trace.set_span_in_context(current)
        generator = wrapped(*args, **kwargs)
        to_send: Any = None
        to_throw: Optional[BaseException] = None
        while True:
            token = otel_context.attach(span_context)
            try:
                if to_throw is None:
                    item = await generator.asend(to_send)
                else:
                    item = await generator.athrow(to_throw)
            except StopAsyncIteration:
                otel_context.detach(token)
                _end(current, None, record)
                return
            except BaseException as error:
                otel_context.detach(token)
                _end(current, error, record)
                raise
            otel_context.detach(token)
            to_send, to_throw = None, None
            try:
                to_send = yield item
            except GeneratorExit:
                await generator.aclose()
                _end(current, None, record)
                raise
            except BaseException as error:
                to_throw = error

    return wrapper


def timed(
    name: str,
    *,
    attributes: Optional[Mapping[str, Any]] = None,
    description: str = "",
) -> Callable[[F], F]:
    """Record each call's duration in seconds in the histogram ``name``.

    A call that raises is recorded with ``error.type``. Works on functions and coroutine
    functions (for a generator function it times the creation of the generator).

    Examples:
        >>> import appvitals
        >>> @appvitals.timed("report.render.duration")
        ... def render() -> str:
        ...     return "ok"
        >>> render()
        'ok'
    """
    instrument = metrics.histogram(name, unit="s", description=description)
    base = dict(attributes or {})

    def failed(error: BaseException) -> dict[str, Any]:
        return {**base, "error.type": error_type(error)}

    def decorate(fn: F) -> F:
        ok = base or None
        if inspect.iscoroutinefunction(fn):

            @wrapt.decorator
            async def async_wrapper(wrapped: Any, _i: Any, args: Any, kwargs: Any) -> Any:
                start = time.perf_counter()
                try:
                    result = await wrapped(*args, **kwargs)
                except BaseException as error:
                    instrument.record(time.perf_counter() - start, failed(error))
                    raise
                instrument.record(time.perf_counter() - start, ok)
                return result

            return cast(F, async_wrapper(fn))

        @wrapt.decorator
        def wrapper(wrapped: Any, _i: Any, args: Any, kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                result = wrapped(*args, **kwargs)
            except BaseException as error:
                instrument.record(time.perf_counter() - start, failed(error))
                raise
            instrument.record(time.perf_counter() - start, ok)
            return result

        return cast(F, wrapper(fn))

    return decorate


def counted(
    name: str,
    *,
    attributes: Optional[Mapping[str, Any]] = None,
    description: str = "",
) -> Callable[[F], F]:
    """Count each call in the counter ``name``; a call that raises adds ``error.type``.

    Examples:
        >>> import appvitals
        >>> @appvitals.counted("alert.sent", attributes={"alert.channel": "email"})
        ... def send_alert() -> bool:
        ...     return True
        >>> send_alert()
        True
    """
    instrument = metrics.counter(name, unit="{call}", description=description)
    base = dict(attributes or {})

    def decorate(fn: F) -> F:
        ok = base or None
        if inspect.iscoroutinefunction(fn):

            @wrapt.decorator
            async def async_wrapper(wrapped: Any, _i: Any, args: Any, kwargs: Any) -> Any:
                try:
                    result = await wrapped(*args, **kwargs)
                except BaseException as error:
                    instrument.add(1, {**base, "error.type": error_type(error)})
                    raise
                instrument.add(1, ok)
                return result

            return cast(F, async_wrapper(fn))

        @wrapt.decorator
        def wrapper(wrapped: Any, _i: Any, args: Any, kwargs: Any) -> Any:
            try:
                result = wrapped(*args, **kwargs)
            except BaseException as error:
                instrument.add(1, {**base, "error.type": error_type(error)})
                raise
            instrument.add(1, ok)
            return result

        return cast(F, wrapper(fn))

    return decorate
