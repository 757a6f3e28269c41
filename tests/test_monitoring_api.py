"""appvitals.monitoring_api: seed 004's dashboard payload and front-end trace events."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

import appvitals
from appvitals import health, monitoring_api
from appvitals.monitoring_api import TokenBucket, dashboard_payload, ingest_trace_event
from appvitals.testing import Capture

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"
JSON = "application/json; charset=utf-8"


@pytest.fixture(autouse=True)
def _fresh_state() -> Iterator[None]:
    """No dashboard history, default limiter or health check is shared between tests."""
    monitoring_api._history.clear()
    monitoring_api._default_limiter = None
    health.reset()
    yield
    monitoring_api._history.clear()
    monitoring_api._default_limiter = None
    health.reset()


def post(event: Any, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    """Send ``event`` as JSON with a fresh, generous rate limiter."""
    kwargs.setdefault("rate_limiter", TokenBucket(rate=100, burst=100))
    return ingest_trace_event(json.dumps(event).encode(), JSON, **kwargs)


def outcomes(capture: Capture) -> dict[str, int]:
    """appvitals.monitoring.trace_events by outcome."""
    return {
        p.attributes["outcome"]: int(p.value)
        for p in capture.metric("appvitals.monitoring.trace_events")
    }


def test_event_with_the_frontend_ids_becomes_a_child_span(capture: Capture) -> None:
    """trace_id/span_id: the span frontend.{name} joins the front-end's trace, timed as sent."""
    sent_at_ms = int(time.time() * 1000) - 5000
    status, payload = post(
        {
            "name": "checkout.click",
            "attributes": {"step": 2, "cart.total": 19.5, "express": True, "page": "/cart"},
            "timestamp": sent_at_ms,
            "duration_ms": 41.5,
            "trace_id": TRACE_ID.upper(),
            "span_id": SPAN_ID,
        },
        client="203.0.113.7",
    )
    assert status == 202
    assert payload["recorded_as"] == "span"
    span = capture.span("frontend.checkout.click")
    assert (span.trace_id, span.parent_span_id) == (TRACE_ID, SPAN_ID)
    assert payload["trace_id"] == TRACE_ID
    assert payload["span_id"] == span.span_id
    assert span.attributes == {
        "step": 2,
        "cart.total": 19.5,
        "express": True,
        "page": "/cart",
        "frontend.event.name": "checkout.click",
        "client.address": "203.0.113.7",
    }
    assert span.start_time_unix_nano == sent_at_ms * 1_000_000
    assert span.duration_s == pytest.approx(0.0415)
    assert outcomes(capture) == {"accepted": 1}


def test_event_without_ids_is_an_event_on_the_current_span(capture: Capture) -> None:
    """Inside a recording span, a bare event is added to it rather than starting a span."""
    with appvitals.span("POST /api/monitoring/trace"):
        status, payload = post({"name": "page.view", "attributes": {"path": "/"}})
    assert (status, payload["recorded_as"]) == (202, "event")
    span = capture.span("POST /api/monitoring/trace")
    assert span.events == [
        {
            "name": "frontend.page.view",
            "attributes": {"path": "/", "frontend.event.name": "page.view"},
        }
    ]


def test_event_without_a_current_span_is_a_root_span(capture: Capture) -> None:
    """Outside any span (the middleware does not trace its own endpoints) a span is started."""
    status, payload = post({"name": "page.view"})
    assert (status, payload["recorded_as"]) == (202, "span")
    span = capture.span("frontend.page.view")
    assert span.parent_span_id is None
    assert span.trace_id == payload["trace_id"]


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ([1, 2], "JSON object"),
        ({"attributes": {}}, "name must match"),
        ({"name": "has space"}, "name must match"),
        ({"name": "x" * 65}, "name must match"),
        ({"name": "ok", "user": "ada"}, "unknown field"),
        ({"name": "ok", "attributes": []}, "attributes must be an object"),
        ({"name": "ok", "attributes": {"nested": {"a": 1}}}, "string, a number or a boolean"),
        ({"name": "ok", "attributes": {"n": None}}, "string, a number or a boolean"),
        ({"name": "ok", "attributes": {"long": "x" * 257}}, "longer than 256"),
        ({"name": "ok", "attributes": {"bad key": 1}}, "attribute key"),
        ({"name": "ok", "attributes": {f"k{i}": i for i in range(33)}}, "at most 32"),
        ({"name": "ok", "trace_id": TRACE_ID}, "go together"),
        ({"name": "ok", "trace_id": "0" * 32, "span_id": SPAN_ID}, "not all zero"),
        ({"name": "ok", "trace_id": "xyz", "span_id": SPAN_ID}, "32 and span_id 16 hex"),
        ({"name": "ok", "timestamp": 1000}, "last 24 hours"),
        ({"name": "ok", "timestamp": "yesterday"}, "ISO 8601"),
        ({"name": "ok", "timestamp": True}, "ISO 8601"),
        ({"name": "ok", "duration_ms": -1}, "duration_ms"),
        ({"name": "ok", "duration_ms": "10"}, "duration_ms"),
    ],
)
def test_invalid_events_are_rejected_with_400(capture: Capture, event: Any, message: str) -> None:
    """Each rule violation answers 400 with a message saying which rule, and records nothing."""
    status, payload = post(event)
    assert status == 400
    assert payload["status"] == "error"
    assert message in payload["error"]
    assert capture.spans() == []
    assert outcomes(capture) == {"invalid": 1}


def test_iso_timestamps_are_accepted(capture: Capture) -> None:
    """An ISO 8601 timestamp with Z (or without a zone, read as UTC) sets the span start."""
    status, _ = post(
        {"name": "ok", "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    )
    assert status == 202
    assert capture.span("frontend.ok")


def test_not_json_too_large_and_wrong_media_type(capture: Capture) -> None:
    """Broken JSON is 400, a body over max_bytes 413, another content type 415."""
    limiter = TokenBucket(rate=100, burst=100)
    assert ingest_trace_event(b"{", JSON, rate_limiter=limiter)[0] == 400
    big = json.dumps({"name": "x", "attributes": {"a": "y" * 200}}).encode()
    assert ingest_trace_event(big, JSON, max_bytes=100, rate_limiter=limiter)[0] == 413
    assert ingest_trace_event(b'{"name": "x"}', "text/plain", rate_limiter=limiter)[0] == 415
    assert ingest_trace_event(b'{"name": "x"}', None, rate_limiter=limiter)[0] == 415
    assert outcomes(capture) == {"invalid": 1, "too_large": 1, "unsupported_media_type": 2}


def test_rate_limit_per_client_answers_429_with_retry_after(capture: Capture) -> None:
    """A client over its bucket gets 429 and a Retry-After; other clients are unaffected."""
    now = [100.0]
    limiter = TokenBucket(rate=0.5, burst=2, clock=lambda: now[0])
    body = b'{"name": "page.view"}'
    assert [ingest_trace_event(body, JSON, client="a", rate_limiter=limiter)[0] for _ in "123"] == [
        202,
        202,
        429,
    ]
    status, payload = ingest_trace_event(body, JSON, client="a", rate_limiter=limiter)
    assert (status, payload["retry_after"]) == (429, 2)
    assert ingest_trace_event(body, JSON, client="b", rate_limiter=limiter)[0] == 202
    now[0] += 2.0
    assert ingest_trace_event(body, JSON, client="a", rate_limiter=limiter)[0] == 202
    assert outcomes(capture) == {"accepted": 4, "rate_limited": 2}


def test_trace_response_for_the_middleware(capture: Capture) -> None:
    """(status, headers, body) with JSON headers; 429 carries Retry-After (default limiter)."""
    body = b'{"name": "page.view"}'
    answers = [monitoring_api.trace_response(body, JSON, "198.51.100.1") for _ in range(21)]
    status, headers, payload = answers[0]
    assert status == 202
    assert ("Content-Type", "application/json") in headers
    assert json.loads(payload)["status"] == "accepted"
    status, headers, _ = answers[-1]
    assert status == 429, "the default bucket holds 20 events"
    assert ("Retry-After", "1") in headers


def test_token_bucket_forgets_the_least_recent_clients() -> None:
    """At most max_clients buckets are kept; a forgotten client starts with a full bucket."""
    limiter = TokenBucket(rate=1, burst=1, max_clients=2, clock=lambda: 0.0)
    assert limiter.take("a") == 0.0
    assert limiter.take("a") > 0
    limiter.take("b")
    limiter.take("c")  # evicts "a"
    assert limiter.take("a") == 0.0
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(rate=0)


def make_app() -> Flask:
    """A heartbeat service: /heartbeat answers 200, /fail 500."""
    app = Flask("heartbeat")

    @app.post("/heartbeat")
    def heartbeat() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/fail")
    def fail() -> tuple[str, int]:
        return "down", 500

    appvitals.instrument_flask(app)
    return app


def test_dashboard_payload_from_the_service_s_own_metrics(capture: Capture) -> None:
    """Health, request and error rates, p95 latency and process figures in one payload."""
    health.register("database", lambda: True)
    health.register("cache", lambda: False, critical=False)
    client = make_app().test_client()
    for _ in range(8):
        client.post("/heartbeat")
    client.get("/fail")
    client.get("/fail")
    payload = dashboard_payload()
    assert payload["status"] == "degraded"
    assert payload["health"] == {"database": "healthy", "cache": "unhealthy"}
    requests = payload["requests"]
    assert (requests["requests"], requests["errors"]) == (10, 2)
    assert requests["error_rate"] == 0.2
    assert requests["rate_per_second"] > 0
    # Within the duration buckets (the interpolation itself is tested below, without timing).
    assert 0 < requests["p95_latency_ms"] <= 10_000
    assert payload["active_jobs"] is None
    assert payload["resources"]["memory_rss_mb"] > 0
    assert payload["resources"]["pid"] > 0
    assert payload["generated_at"].endswith("+00:00")


def test_dashboard_rates_cover_the_window_since_an_earlier_call(capture: Capture) -> None:
    """A later call measures from the newest earlier reading at least ``window`` old."""
    client = make_app().test_client()
    client.post("/heartbeat")
    dashboard_payload()
    for _ in range(3):
        client.get("/fail")
    requests = dashboard_payload(window=0.0)["requests"]
    assert (requests["requests"], requests["errors"], requests["error_rate"]) == (3, 3, 1.0)


def test_dashboard_history_restarts_with_a_new_provider() -> None:
    """After shutdown() and configure() again, rates count the new provider's requests only."""
    with Capture(service_name="first"):
        client = make_app().test_client()
        for _ in range(3):
            client.post("/heartbeat")
        assert dashboard_payload()["requests"]["requests"] == 3
    with Capture(service_name="second"):
        make_app().test_client().post("/heartbeat")
        assert dashboard_payload(window=0.0)["requests"]["requests"] == 1


def test_dashboard_counts_active_jobs_when_jobs_report_them(capture: Capture) -> None:
    """appvitals.job.active (reported by job instrumentation) is summed into active_jobs."""
    active = appvitals.updown_counter("appvitals.job.active", unit="{job}")
    active.add(2, {"job.name": "sync"})
    active.add(1, {"job.name": "report"})
    assert dashboard_payload()["active_jobs"] == 3


def test_dashboard_without_metrics_still_answers() -> None:
    """Before configure() (no /metrics reader) the request figures are None, health still set."""
    payload = dashboard_payload()
    assert payload["status"] == "healthy"
    assert payload["requests"] == {
        "rate_per_second": None,
        "error_rate": None,
        "p95_latency_ms": None,
    }
    status, headers, body = monitoring_api.dashboard_response()
    assert status == 200
    assert ("Cache-Control", "no-store") in headers
    assert json.loads(body)["status"] == "healthy"


@pytest.mark.parametrize(
    ("buckets", "expected"),
    [
        ({0.1: 0, 1.0: 10, float("inf"): 10}, 0.955),
        ({0.1: 10, 1.0: 10, float("inf"): 10}, 0.095),
        ({0.1: 0, 1.0: 0, float("inf"): 4}, 1.0),
        ({0.1: 0, float("inf"): 0}, None),
    ],
)
def test_quantile_interpolates_like_prometheus(
    buckets: dict[float, float], expected: float | None
) -> None:
    """histogram_quantile: linear inside the bucket; the overflow bucket reads its lower bound."""
    result = monitoring_api._quantile(0.95, buckets)
    assert result == (None if expected is None else pytest.approx(expected))


def starlette_app(**options: Any) -> Any:
    """A Starlette app with one route, instrumented with ``options``."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def ping(request: Any) -> PlainTextResponse:
        return PlainTextResponse("pong")

    app = Starlette(routes=[Route("/ping", ping)])
    return appvitals.instrument_fastapi(app, **options)


def test_flask_mounts_the_endpoints_only_when_asked(capture: Capture) -> None:
    """monitoring_api=True serves both paths through the middleware; other methods reach the app."""
    plain = make_app().test_client()
    assert plain.get("/api/monitoring/dashboard").status_code == 404

    app = Flask("heartbeat")
    appvitals.instrument_flask(app, monitoring_api=True)
    client = app.test_client()
    dashboard = client.get("/api/monitoring/dashboard")
    assert dashboard.status_code == 200
    assert dashboard.headers["Content-Type"] == "application/json"
    assert set(dashboard.get_json()) >= {"status", "requests", "resources"}
    accepted = client.post(
        "/api/monitoring/trace",
        json={"name": "checkout.click", "attributes": {"step": 2}},
        environ_base={"REMOTE_ADDR": "10.1.2.3"},
    )
    assert accepted.status_code == 202, accepted.get_data(as_text=True)
    span = capture.span("frontend.checkout.click")
    assert span.attributes["client.address"] == "10.1.2.3"
    assert span.attributes["step"] == 2
    too_large = client.post(
        "/api/monitoring/trace",
        data=b"x" * (monitoring_api.MAX_BYTES + 10),
        content_type="application/json",
    )
    assert too_large.status_code == 413
    assert client.get("/api/monitoring/trace").status_code == 404  # GET is the app's
    assert client.post("/api/monitoring/dashboard").status_code == 404


def test_asgi_mounts_the_endpoints_under_a_chosen_prefix(capture: Capture) -> None:
    """The ASGI middleware reads the POST body itself and honours monitoring_path."""
    from starlette.testclient import TestClient

    client = TestClient(starlette_app(monitoring_api=True, monitoring_path="/ops/"))
    assert client.get("/ping").text == "pong"
    assert client.get("/ops/dashboard").json()["status"] in {"healthy", "degraded", "unhealthy"}
    accepted = client.post("/ops/trace", json={"name": "page.view", "duration_ms": 12})
    assert accepted.status_code == 202, accepted.text
    assert capture.span("frontend.page.view").attributes["client.address"] == "testclient"
    wrong_type = client.post("/ops/trace", content=b"{}", headers={"Content-Type": "text/plain"})
    assert wrong_type.status_code == 415
    assert client.get("/api/monitoring/dashboard").status_code == 404


@pytest.mark.parametrize("framework", ["flask", "asgi"])
def test_metrics_endpoint_negotiates_openmetrics(capture: Capture, framework: str) -> None:
    """An OpenMetrics Accept header (as Prometheus sends with exemplars on) gets OpenMetrics."""
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    if framework == "flask":
        client: Any = make_app().test_client()
    else:
        from starlette.testclient import TestClient

        client = TestClient(starlette_app())
    openmetrics = client.get("/metrics", headers={"Accept": accept})
    assert openmetrics.headers["Content-Type"].startswith("application/openmetrics-text")
    body = openmetrics.data if framework == "flask" else openmetrics.content
    assert body.endswith(b"# EOF\n")
    classic = client.get("/metrics")
    assert classic.headers["Content-Type"].startswith("text/plain")
    body = classic.data if framework == "flask" else classic.content
    assert b"# EOF" not in body


def test_a_broken_request_body_is_answered_not_raised(capture: Capture) -> None:
    """A WSGI input stream that fails while read gives a 400 and an internal-error count."""
    from appvitals._safety import internal_error_counts

    class Broken:
        def read(self, size: int = -1) -> bytes:
            raise OSError("client went away")

    app = Flask("heartbeat")
    appvitals.instrument_flask(app, monitoring_api=True)
    response = app.test_client().post(
        "/api/monitoring/trace",
        data=b"{}",
        content_type="application/json",
        environ_overrides={"wsgi.input": Broken()},
    )
    assert response.status_code == 400
    assert internal_error_counts().get("monitoring request body") == 1
