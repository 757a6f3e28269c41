"""Context: bound fields, correlation ids, propagation, threads and asyncio tasks."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import appvitals
from appvitals._context import is_valid_correlation_id
from appvitals.testing._capture import Capture


def test_bind_and_unbind() -> None:
    """bind() adds fields for the block; None removes one; leaving restores the previous set."""
    assert appvitals.correlation_id() is None
    with appvitals.bind(correlation_id="c-1", user_id="u-1"):
        assert appvitals.correlation_id() == "c-1"
        with appvitals.bind(user_id=None, tenant_id="t-1"):
            assert dict(appvitals.bound_fields()) == {"correlation_id": "c-1", "tenant_id": "t-1"}
        assert appvitals.bound_fields()["user_id"] == "u-1"
    assert dict(appvitals.bound_fields()) == {}


def test_correlation_id_validation() -> None:
    """Only ≤128 characters of [A-Za-z0-9._:-] are accepted as incoming ids."""
    assert is_valid_correlation_id("req-1.2:3_x")
    assert is_valid_correlation_id("a" * 128)
    assert not is_valid_correlation_id("a" * 129)
    assert not is_valid_correlation_id("bad\nid")
    assert not is_valid_correlation_id("")
    assert len(appvitals.new_correlation_id()) == 32


def test_new_correlation_ids_are_zero_padded_lowercase_hex(monkeypatch: Any) -> None:
    """32 hex characters whatever the random number, leading zeros included."""
    import random

    monkeypatch.setattr(random, "getrandbits", lambda bits: 0xABC if bits == 128 else 1)
    assert appvitals.new_correlation_id() == "0" * 29 + "abc"
    monkeypatch.undo()
    ids = {appvitals.new_correlation_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(len(each) == 32 and each == each.lower() and int(each, 16) for each in ids)


def test_log_trace_ids_are_zero_padded_lowercase_hex() -> None:
    """The log processor writes the W3C form of small ids (leading zeros) too."""
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    from appvitals._logs_fields import add_trace_context

    context = SpanContext(0xABC, 0x1F, False, TraceFlags(TraceFlags.SAMPLED))
    with trace.use_span(NonRecordingSpan(context)):
        fields = add_trace_context(None, "info", {})
    assert fields == {"trace_id": "0" * 29 + "abc", "span_id": "0" * 14 + "1f"}
    assert add_trace_context(None, "info", {}) == {}


def test_propagation_round_trip(capture: Capture) -> None:
    """inject_headers() → extracted_context() continues the trace and the correlation id."""
    with appvitals.bind(correlation_id="corr-9"), appvitals.span("client") as client:
        headers = appvitals.inject_headers({})
    assert headers["X-Correlation-ID"] == "corr-9"
    assert headers["traceparent"].split("-")[1] == format(
        client.get_span_context().trace_id, "032x"
    )
    lowercase = {k.lower(): v for k, v in headers.items()}
    with appvitals.extracted_context(lowercase) as cid, appvitals.span("server"):
        assert cid == "corr-9"
    assert capture.span("server").parent_span_id == capture.span("client").span_id


def test_invalid_incoming_correlation_id_is_replaced() -> None:
    """A header with a newline is not reused: a fresh id is generated."""
    with appvitals.extracted_context({"X-Correlation-ID": "evil\r\nSet-Cookie: x"}) as cid:
        assert cid is not None
        assert is_valid_correlation_id(cid)
        assert "evil" not in cid


def test_context_executor_and_wrap_context(capture: Capture) -> None:
    """Thread pools and plain threads see the submitting code's span and fields."""
    seen: dict[str, object] = {}

    def job(label: str) -> None:
        with appvitals.span(label):
            seen[label] = appvitals.bound_fields().get("job_id")

    with appvitals.bind(job_id="j-5"), appvitals.span("parent"):
        with appvitals.ContextExecutor(max_workers=2) as pool:
            pool.submit(job, "pooled").result()
        thread = threading.Thread(target=appvitals.wrap_context(job), args=("threaded",))
        thread.start()
        thread.join()
    parent = capture.span("parent")
    assert seen == {"pooled": "j-5", "threaded": "j-5"}
    assert capture.span("pooled").parent_span_id == parent.span_id
    assert capture.span("threaded").parent_span_id == parent.span_id


def test_asyncio_tasks_inherit_context(capture: Capture) -> None:
    """asyncio tasks copy the context: spans and fields follow into them."""

    async def child() -> object:
        with appvitals.span("task"):
            return appvitals.correlation_id()

    async def main() -> object:
        with appvitals.bind(correlation_id="async-1"), appvitals.span("main"):
            return await asyncio.create_task(child())

    assert asyncio.run(main()) == "async-1"
    assert capture.span("task").parent_span_id == capture.span("main").span_id
