"""Unsampled root server spans made without the SDK (``appvitals._spans``).

The fast path must decide, and label, every span exactly as the SDK would: the tests draw
the same trace ids (seeded ``random``) and compare with the SDK's sampler and tracer.
"""

from __future__ import annotations

import random

import flask
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, TraceIdRatioBased

import appvitals
from appvitals import _spans
from appvitals.testing import Capture


def _configure(**options: object) -> _spans.RootSampling:
    appvitals.configure(service_name="roots", exporter="none", **options)  # type: ignore[arg-type]
    assert _spans.current is not None
    return _spans.current


@pytest.mark.parametrize("ratio", [0.0, 0.3, 1.0])
def test_fast_root_spans_decide_like_the_sdk_sampler(ratio: float) -> None:
    sampling = _configure(sampler_ratio=ratio)
    tracer = trace.get_tracer("test")
    sdk_sampler = TraceIdRatioBased(ratio)
    outcomes = set()
    for seed in range(300):
        random.seed(seed)
        span = sampling.start(tracer, "GET")
        random.seed(seed)
        drawn = random.getrandbits(128)
        expected = sdk_sampler.should_sample(None, drawn, "GET").decision.is_sampled()
        context = span.get_span_context()
        assert context.trace_id == drawn  # the sampled ones too: the SDK took the preset id
        assert span.is_recording() is expected
        assert context.trace_flags.sampled is expected
        assert context.is_valid
        assert not context.is_remote
        outcomes.add(expected)
        span.end()
    assert outcomes == ({False, True} if ratio == 0.3 else {ratio == 1.0})


def test_dropped_spans_carry_the_sdks_flags_and_state() -> None:
    sampling = _configure(sampler_ratio=0.0)
    sdk_span = TracerProvider(sampler=ALWAYS_OFF).get_tracer("sdk").start_span("GET")

    fast_span = sampling.start(trace.get_tracer("test"), "GET")

    assert type(fast_span) is type(sdk_span)
    fast, sdk = fast_span.get_span_context(), sdk_span.get_span_context()
    assert fast.trace_flags == sdk.trace_flags
    assert fast.trace_state == sdk.trace_state


def test_a_preset_trace_id_serves_one_span_only() -> None:
    sampling = _configure(sampler_ratio=1.0)
    tracer = trace.get_tracer("test")
    first = sampling.start(tracer, "GET")
    second = tracer.start_span("child-less root")

    assert first.get_span_context().trace_id != second.get_span_context().trace_id


@pytest.mark.parametrize(
    ("options", "environment"),
    [
        ({}, {"OTEL_TRACES_SAMPLER": "always_on"}),
        ({}, {"OTEL_TRACES_SAMPLER": "parentbased_always_on"}),
        ({}, {"OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED": "true"}),
    ],
)
def test_set_ups_that_keep_the_sdk_path(
    monkeypatch: pytest.MonkeyPatch, options: dict[str, object], environment: dict[str, str]
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    appvitals.configure(service_name="roots", exporter="none", **options)  # type: ignore[arg-type]
    assert _spans.current is None


def test_always_off_drops_every_root_span(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_always_off")
    sampling = _configure()
    assert sampling.bound == 0
    assert not any(sampling.start(trace.get_tracer("t"), "GET").is_recording() for _ in range(50))


def test_an_applications_tracer_provider_keeps_the_sdk_path() -> None:
    trace.set_tracer_provider(TracerProvider())
    appvitals.configure(service_name="roots", exporter="none")
    assert _spans.current is None
    appvitals.shutdown()


def test_shutdown_clears_the_fast_path() -> None:
    _configure()
    appvitals.shutdown()
    assert _spans.current is None


def _app() -> flask.Flask:
    app = flask.Flask("roots")

    @app.get("/ids")
    def ids() -> dict[str, object]:
        context = trace.get_current_span().get_span_context()
        return {"trace_id": f"{context.trace_id:032x}", "sampled": context.trace_flags.sampled}

    appvitals.instrument_flask(app)
    return app


def test_unsampled_requests_still_have_a_trace_context() -> None:
    _configure(sampler_ratio=0.0)
    client = _app().test_client()

    first, second = client.get("/ids").get_json(), client.get("/ids").get_json()

    assert first["sampled"] is False
    assert int(first["trace_id"], 16) != 0
    assert first["trace_id"] != second["trace_id"]


def test_an_incoming_traceparent_is_still_the_parent() -> None:
    with Capture(service_name="roots") as capture:
        assert _spans.current is not None
        client = _app().test_client()
        parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

        assert client.get("/ids", headers={"traceparent": parent}).get_json()["trace_id"] == (
            "0af7651916cd43dd8448eb211c80319c"
        )
        (span,) = capture.spans()
        assert span.parent_span_id == "b7ad6b7169203331"


@pytest.mark.parametrize("ratio", [0.0, 1.0])
def test_an_outer_span_is_still_the_parent(ratio: float) -> None:
    _configure(sampler_ratio=ratio)
    client = _app().test_client()
    with trace.get_tracer("outer").start_as_current_span("outer") as outer:
        body = client.get("/ids").get_json()

    assert body["trace_id"] == f"{outer.get_span_context().trace_id:032x}"
    assert body["sampled"] is (ratio == 1.0)


def test_dropped_span_contexts_equal_the_public_constructors() -> None:
    """The tuple built without SpanContext's checks is the one its constructor builds."""
    sampling = _configure(sampler_ratio=0.0)
    span = sampling.start(trace.get_tracer("test"), "GET")
    context = span.get_span_context()
    public = trace.SpanContext(context.trace_id, context.span_id, False, context.trace_flags)
    assert context == public
    assert (context.is_valid, context.is_remote, context.trace_state) == (
        True,
        False,
        public.trace_state,
    )


def test_context_functions_take_the_direct_path() -> None:
    """With the default runtime context, the request's context goes straight to its variable.

    Fails when an OpenTelemetry release moves what the direct path reads; the public
    functions would then run, correct but slower.
    """
    from opentelemetry.context import get_current

    current, attach, _detach = _spans.context_functions()
    assert current is not get_current
    assert current() is get_current()
    assert attach.__name__ == "attach"


@pytest.mark.parametrize("direct", [True, False])
def test_context_functions_do_what_the_public_ones_do(
    direct: bool, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """attach makes the span current over the caller's (or the parent's) context values;
    detach restores the caller's context object; a foreign token is logged, not raised."""
    from opentelemetry import baggage
    from opentelemetry import context as otel_context
    from opentelemetry.trace import NonRecordingSpan, SpanContext

    if not direct:
        monkeypatch.setattr(otel_context, "_RUNTIME_CONTEXT", otel_context._RUNTIME_CONTEXT)
        monkeypatch.setattr(_spans, "_context_variable", lambda: None)
    current, attach, detach = _spans.context_functions()
    assert (current is otel_context.get_current) is not direct
    span = NonRecordingSpan(SpanContext(1, 2, False))
    outer = otel_context.attach(baggage.set_baggage("tenant", "t-1"))
    try:
        before = current()
        token = attach(span, None)
        assert trace.get_current_span() is span
        assert baggage.get_baggage("tenant") == "t-1"  # the caller's values stay
        detach(token)
        assert current() is before
        parent = baggage.set_baggage("tenant", "from-parent", otel_context.Context())
        token = attach(span, parent)
        assert trace.get_current_span() is span
        assert baggage.get_baggage("tenant") == "from-parent"  # the parent's, not the caller's
        detach(token)
        assert current() is before
        with caplog.at_level("ERROR"):
            detach(token)  # used twice: the public detach logs it
        assert "Failed to detach context" in caplog.text
    finally:
        otel_context.detach(outer)
