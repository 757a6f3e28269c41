"""traced / span / timed / counted on functions, coroutines and generators."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Iterator

import pytest
from opentelemetry import trace

import appvitals
from appvitals.testing._capture import Capture

ERROR = 2  # OTLP StatusCode.STATUS_CODE_ERROR


def test_traced_plain_function_keeps_signature(capture: Capture) -> None:
    """@traced returns the result, names the span and preserves the signature."""

    @appvitals.traced
    def add(a: int, b: int = 2) -> int:
        """Add."""
        return a + b

    assert add(1) == 3
    assert add.__name__ == "add"
    assert add.__doc__ == "Add."
    assert inspect.signature(add) == inspect.signature(add.__wrapped__)
    assert list(inspect.signature(add).parameters) == ["a", "b"]
    span = capture.span("test_traced_plain_function_keeps_signature.<locals>.add")
    assert span.attributes["code.function.name"].endswith(".add")


def test_traced_with_options_and_exception(capture: Capture) -> None:
    """An exception is recorded (error.type, status, event) and re-raised unchanged."""
    boom = ValueError("bad input")

    @appvitals.traced(name="heartbeat.process", attributes={"heartbeat.source": "api"})
    def process() -> None:
        raise boom

    with pytest.raises(ValueError, match="bad input") as raised:
        process()
    assert raised.value is boom
    span = capture.span("heartbeat.process")
    assert span.attributes["heartbeat.source"] == "api"
    assert span.attributes["error.type"] == "ValueError"
    assert span.status_code == ERROR
    (event,) = span.events
    assert event["name"] == "exception"
    assert "bad input" in event["attributes"]["exception.message"]
    assert "Traceback" in event["attributes"]["exception.stacktrace"]


def test_traced_without_recording_exceptions(capture: Capture) -> None:
    """record_exceptions=False keeps the status but adds no exception event."""

    @appvitals.traced(name="quiet", record_exceptions=False)
    def fail() -> None:
        raise KeyError("k")

    with pytest.raises(KeyError):
        fail()
    span = capture.span("quiet")
    assert span.status_code == ERROR
    assert span.events == []


def test_traced_method_and_nesting(capture: Capture) -> None:
    """Methods work, and nested calls form a parent/child pair."""

    class Service:
        @appvitals.traced(name="outer")
        def outer(self) -> int:
            return self.inner()

        @appvitals.traced(name="inner")
        def inner(self) -> int:
            return 5

    assert Service().outer() == 5
    outer, inner = capture.span("outer"), capture.span("inner")
    assert inner.parent_span_id == outer.span_id
    assert inner.trace_id == outer.trace_id


def test_traced_coroutine(capture: Capture) -> None:
    """Coroutine functions stay coroutine functions and are traced across awaits."""

    @appvitals.traced(name="fetch")
    async def fetch(x: int) -> int:
        await asyncio.sleep(0)
        with appvitals.span("inside"):
            return x

    assert inspect.iscoroutinefunction(fetch)
    assert asyncio.run(fetch(7)) == 7
    assert capture.span("inside").parent_span_id == capture.span("fetch").span_id


def test_traced_generator_spans_whole_iteration(capture: Capture) -> None:
    """A generator's span covers the iteration; consumer spans are not its children."""

    @appvitals.traced(name="rows")
    def rows() -> Iterator[int]:
        for i in range(3):
            with appvitals.span("produce"):
                pass
            yield i

    with appvitals.span("consumer"):
        for _ in rows():
            with appvitals.span("consume"):
                pass
    rows_span, consumer = capture.span("rows"), capture.span("consumer")
    assert rows_span.parent_span_id == consumer.span_id
    spans = capture.spans()
    assert {s.parent_span_id for s in spans if s.name == "produce"} == {rows_span.span_id}
    assert {s.parent_span_id for s in spans if s.name == "consume"} == {consumer.span_id}
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_traced_generator_send_throw_close(capture: Capture) -> None:
    """send(), throw() and close() reach the wrapped generator."""
    seen: list[object] = []

    @appvitals.traced(name="echo")
    def echo() -> Iterator[object]:
        try:
            while True:
                try:
                    value = yield "ready"
                    seen.append(value)
                except ValueError as error:
                    seen.append(f"caught {error}")
        finally:
            seen.append("closed")

    gen = echo()
    assert next(gen) == "ready"
    assert gen.send(1) == "ready"
    assert gen.throw(ValueError("x")) == "ready"
    gen.close()
    assert seen == [1, "caught x", "closed"]
    assert capture.span("echo").status_code != ERROR


def test_traced_generator_error(capture: Capture) -> None:
    """An exception raised inside a generator marks its span and propagates."""

    @appvitals.traced(name="broken")
    def broken() -> Iterator[int]:
        yield 1
        raise RuntimeError("halfway")

    with pytest.raises(RuntimeError, match="halfway"):
        list(broken())
    assert capture.span("broken").attributes["error.type"] == "RuntimeError"


def test_traced_async_generator(capture: Capture) -> None:
    """Async generators are traced over the whole iteration."""

    @appvitals.traced(name="stream")
    async def stream() -> AsyncIterator[int]:
        for i in range(3):
            await asyncio.sleep(0)
            yield i

    async def consume() -> list[int]:
        return [i async for i in stream()]

    assert inspect.isasyncgenfunction(stream)
    assert asyncio.run(consume()) == [0, 1, 2]
    assert capture.span("stream").status_code != ERROR


def test_span_context_manager_sync_and_async(capture: Capture) -> None:
    """span() works with `with` and `async with`, and records errors."""
    with appvitals.span("database.query", **{"db.system.name": "sqlite"}) as current:
        current.set_attribute("db.rows", 3)

    async def main() -> None:
        async with appvitals.span("async.block"):
            await asyncio.sleep(0)

    asyncio.run(main())
    with pytest.raises(ZeroDivisionError), appvitals.span("failing"):
        _ = 1 / 0
    assert capture.span("database.query").attributes == {"db.system.name": "sqlite", "db.rows": 3}
    assert capture.span("async.block").status_code != ERROR
    assert capture.span("failing").attributes["error.type"] == "ZeroDivisionError"


def test_timed_and_counted(capture: Capture) -> None:
    """timed records seconds in a histogram; counted counts calls, failures by error.type."""

    @appvitals.timed("report.duration", attributes={"report": "daily"})
    @appvitals.counted("report.calls")
    def report(fail: bool = False) -> str:
        if fail:
            raise TimeoutError
        return "ok"

    @appvitals.timed("async.duration")
    @appvitals.counted("async.calls")
    async def async_report() -> str:
        return "ok"

    assert report() == "ok"
    with pytest.raises(TimeoutError):
        report(fail=True)
    assert asyncio.run(async_report()) == "ok"
    durations = {tuple(sorted(p.attributes.items())): p for p in capture.metric("report.duration")}
    assert durations[(("report", "daily"),)].value == 1
    assert durations[(("error.type", "TimeoutError"), ("report", "daily"))].value == 1
    (ok_point,) = [p for p in capture.metric("report.duration") if "error.type" not in p.attributes]
    assert ok_point.unit == "s"
    calls = {p.attributes.get("error.type"): p.value for p in capture.metric("report.calls")}
    assert calls == {None: 1, "TimeoutError": 1}
    assert capture.metric("async.calls")[0].value == 1
    assert capture.metric("async.duration")[0].value == 1


def test_unsampled_spans_are_not_exported() -> None:
    """With sampler_ratio=0 nothing is exported but the code still runs."""
    with Capture(sampler_ratio=0.0) as capture:

        @appvitals.traced
        def work() -> int:
            return 1

        assert work() == 1
        with appvitals.span("x") as current:
            assert not current.is_recording()
        assert capture.spans() == []


def test_decorators_work_before_configure() -> None:
    """Decorated code runs unconfigured (no-op spans) and is traced once configured."""

    @appvitals.traced(name="early")
    def early() -> int:
        return 1

    assert early() == 1
    with Capture() as capture:
        assert early() == 1
        assert capture.span("early").name == "early"
