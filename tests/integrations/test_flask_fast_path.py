"""Flask's fast path for dropped root requests: the same telemetry as the general path.

A request without a trace context whose root span the sampler drops runs in one function
(``_WSGIMiddleware.__call__``); every other request goes through ``ServerTelemetry`` and
``Request``. The tests run the same requests through both and compare what each leaves
behind: response headers, the request-duration series, the context during and after.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from flask import Flask, abort
from opentelemetry import trace
from opentelemetry.context import get_current
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

import appvitals
from appvitals import _durations
from appvitals.integrations import flask as flask_integration

VALID_CID = "order-42-abc"


def make_app() -> Flask:
    app = Flask("fast")

    @app.route("/items/<int:item_id>", methods=["GET", "POST", "FOO"])
    def item(item_id: int) -> dict[str, Any]:
        context = trace.get_current_span().get_span_context()
        return {
            "id": item_id,
            "cid": appvitals.correlation_id(),
            "trace_id": f"{context.trace_id:032x}",
            "valid": context.is_valid,
            "sampled": context.trace_flags.sampled,
        }

    @app.get("/gone")
    def gone() -> str:
        abort(410)

    @app.get("/boom")
    def boom() -> str:
        raise ValueError("kaboom")

    appvitals.instrument_flask(app)
    return app


def configure(ratio: float) -> None:
    appvitals.configure(service_name="fast", exporter="none", sampler_ratio=ratio)
    assert _durations.current is not None


def series() -> dict[tuple[Any, ...], int]:
    assert _durations.current is not None
    return {
        tuple(sorted(point.attributes.items())): point.count  # type: ignore[union-attr]
        for point in _durations.current.points(0)
    }


def run_mix(app: Flask) -> list[tuple[int, str | None]]:
    client = app.test_client()
    answers = []
    for request in (
        client.get("/items/1"),
        client.get("/items/2", headers={"X-Correlation-ID": VALID_CID}),
        client.get("/items/3", headers={"X-Request-ID": "bad id with spaces\x01"}),
        client.post("/items/4"),
        client.open("/items/5", method="FOO"),
        client.get("/missing"),
        client.get("/gone"),
        client.get("/boom"),
    ):
        answers.append((request.status_code, request.headers.get("X-Correlation-ID")))
    return answers


def count_general_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    general = flask_integration._WSGIMiddleware._call

    def counting(self: Any, environ: Any, start_response: Any, trace_id: int) -> Any:
        calls.append(trace_id)
        return general(self, environ, start_response, trace_id)

    monkeypatch.setattr(flask_integration._WSGIMiddleware, "_call", counting)
    return calls


def test_dropped_requests_take_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    configure(0.0)
    calls = count_general_calls(monkeypatch)
    app = make_app()
    before = get_current()

    body = app.test_client().get("/items/7").json
    assert calls == []
    assert body["valid"] is True
    assert body["sampled"] is False
    assert len(body["cid"]) == 32
    assert get_current() is before  # the request's context is gone
    assert appvitals.correlation_id() is None

    traced = app.test_client().get(
        "/items/8", headers={"traceparent": f"00-{'ab' * 16}-{'cd' * 8}-00"}
    )
    assert traced.json["trace_id"] == "ab" * 16  # the parent's trace: the general path
    assert len(calls) == 1


@pytest.mark.parametrize("ratio", [0.0, 0.3])
def test_fast_and_general_paths_leave_the_same_telemetry(ratio: float) -> None:
    configure(ratio)
    fast_app = make_app()
    fast_answers = run_mix(fast_app)
    fast_series = series()

    general_app = make_app()
    general_app.wsgi_app._variable = None  # type: ignore[attr-defined]
    general_answers = run_mix(general_app)

    # The counts doubled: the general path recorded the same series, as often.
    assert series() == {key: 2 * count for key, count in fast_series.items()}
    assert [status for status, _ in fast_answers] == [200, 200, 200, 200, 200, 404, 410, 500]
    assert [status for status, _ in general_answers] == [status for status, _ in fast_answers]
    for (_, fast_cid), (_, general_cid) in zip(fast_answers, general_answers, strict=True):
        assert (fast_cid == VALID_CID) is (general_cid == VALID_CID)
        assert fast_cid is not None
    assert fast_answers[1][1] == VALID_CID
    attributes = {dict(key).get("http.request.method") for key in fast_series}
    assert attributes == {"GET", "POST", "_OTHER"}
    assert any(dict(key).get("error.type") == "ValueError" for key in fast_series)
    assert any(dict(key).get("http.route") == "/items/<int:item_id>" for key in fast_series)


def test_sampled_requests_keep_the_drawn_trace_id_and_the_ratio() -> None:
    """The fast path draws the trace id; a sampled one is handed on, not drawn again."""
    configure(0.3)
    app = make_app()
    client = app.test_client()
    sampler = TraceIdRatioBased(0.3)
    outcomes = set()
    for seed in range(200):
        random.seed(seed)
        body = client.get("/items/1").json
        random.seed(seed)
        drawn = random.getrandbits(128)
        assert body["trace_id"] == f"{drawn:032x}"
        expected = sampler.should_sample(None, drawn, "GET").decision.is_sampled()
        assert body["sampled"] is expected
        outcomes.add(expected)
    assert outcomes == {True, False}


def test_a_failing_fast_path_serves_the_request_untraced(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    configure(0.0)
    app = make_app()

    def broken(_value: Any) -> Any:
        raise RuntimeError("context store broken")

    monkeypatch.setattr(flask_integration, "MappingProxyType", broken)
    response = app.test_client().get("/items/9")
    assert response.status_code == 200
    assert response.json["id"] == 9
    assert get_current() == {}
