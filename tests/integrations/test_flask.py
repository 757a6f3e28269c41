"""Flask in-process: spans, RED metrics, correlation ids and errors (test client)."""

from __future__ import annotations

import logging
import os
import signal

import pytest
from flask import Flask

import appvitals
from appvitals.integrations.flask import FlaskVitals, uninstrument_flask
from appvitals.testing import Capture

SERVER = 2  # OTLP SpanKind SERVER
ERROR = 2


def make_app(**options: object) -> Flask:
    app = Flask("shop")

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> dict[str, object]:
        logging.getLogger("shop").info("item %s", item_id)
        return {"id": item_id, "cid": appvitals.correlation_id()}

    @app.post("/teapot")
    def teapot() -> tuple[str, int]:
        return "short and stout", 418

    @app.get("/boom")
    def boom() -> str:
        raise ValueError("kaboom")

    @app.get("/unavailable")
    def unavailable() -> tuple[str, int]:
        return "down", 503

    appvitals.instrument_flask(app, **options)  # type: ignore[arg-type]
    return app


def test_route_template_span_and_metrics(capture: Capture) -> None:
    """A request yields a SERVER span named by route template and a duration point."""
    client = make_app().test_client()
    response = client.get("/items/7", headers={"User-Agent": "pytest-ua"})
    assert response.status_code == 200
    span = capture.span("GET /items/<int:item_id>")
    assert span.kind == SERVER
    assert span.attributes["http.route"] == "/items/<int:item_id>"
    assert span.attributes["http.request.method"] == "GET"
    assert span.attributes["http.response.status_code"] == 200
    assert span.attributes["url.scheme"] == "http"
    assert span.attributes["url.path"] == "/items/7"
    assert span.attributes["user_agent.original"] == "pytest-ua"
    assert span.attributes["server.address"] == "localhost"
    assert "error.type" not in span.attributes
    (point,) = capture.metric("http.server.request.duration")
    assert point.unit == "s"
    assert point.value == 1
    assert point.attributes == {
        "http.request.method": "GET",
        "url.scheme": "http",
        "http.response.status_code": 200,
        "http.route": "/items/<int:item_id>",
    }
    (active,) = capture.metric("http.server.active_requests")
    assert active.value == 0


def test_correlation_id_read_echoed_and_logged(
    capture: Capture, caplog: pytest.LogCaptureFixture
) -> None:
    """The client's X-Correlation-ID is used, echoed, on the span and in log records."""
    caplog.set_level(logging.INFO)  # pytest's handlers make the root logger "configured"
    client = make_app().test_client()
    response = client.get("/items/1", headers={"X-Correlation-ID": "client-id-123"})
    assert response.headers["X-Correlation-ID"] == "client-id-123"
    assert response.json == {"id": 1, "cid": "client-id-123"}
    span = capture.span("GET /items/<int:item_id>")
    assert span.attributes["correlation_id"] == "client-id-123"
    (log,) = [r for r in capture.logs() if r.body == "item 1"]
    assert log.attributes["correlation_id"] == "client-id-123"
    assert (log.trace_id, log.span_id) == (span.trace_id, span.span_id)


def test_request_id_fallback_and_generation(capture: Capture) -> None:
    """X-Request-ID is the fallback header; with neither, an id is generated."""
    client = make_app().test_client()
    assert (
        client.get("/items/1", headers={"X-Request-ID": "req-9"}).headers["X-Correlation-ID"]
        == "req-9"
    )
    generated = client.get("/items/1").headers["X-Correlation-ID"]
    assert len(generated) == 32


@pytest.mark.parametrize("bad", ["line\nbreak", "x" * 1000, "semi;colon", "spa ce"])
def test_invalid_correlation_id_is_replaced_and_counted(capture: Capture, bad: str) -> None:
    """A header with a newline, 1,000 characters or odd characters is replaced, not echoed."""
    client = make_app().test_client()
    environ = {"HTTP_X_CORRELATION_ID": bad}  # bypasses the client's own header validation
    response = client.get("/items/1", environ_base=environ)
    echoed = response.headers["X-Correlation-ID"]
    assert echoed != bad
    assert len(echoed) == 32
    (replaced,) = capture.metric("appvitals.http.server.correlation_id.replaced")
    assert replaced.value == 1


def test_unhandled_exception_recorded_once(
    capture: Capture, caplog: pytest.LogCaptureFixture
) -> None:
    """A view's exception: 500, error span with stack trace, error.type, one ERROR log."""
    client = make_app().test_client()
    with caplog.at_level(logging.ERROR):
        response = client.get("/boom", headers={"X-Correlation-ID": "err-1"})
    assert response.status_code == 500
    span = capture.span("GET /boom")
    assert span.status_code == ERROR
    assert span.attributes["error.type"] == "ValueError"
    (event,) = span.events
    assert "kaboom" in event["attributes"]["exception.stacktrace"]
    errors = [r for r in capture.logs() if r.severity_text == "ERROR"]
    assert len(errors) == 1
    assert errors[0].attributes["correlation_id"] == "err-1"
    (point,) = capture.metric("http.server.request.duration")
    assert point.attributes["error.type"] == "ValueError"


def test_5xx_is_error_4xx_is_not(capture: Capture) -> None:
    """503 marks the span as error with error.type '503'; 418 and 404 do not."""
    client = make_app().test_client()
    client.get("/unavailable")
    client.post("/teapot")
    client.get("/nowhere/at/all")
    unavailable = capture.span("GET /unavailable")
    assert (unavailable.status_code, unavailable.attributes["error.type"]) == (ERROR, "503")
    teapot = capture.span("POST /teapot")
    assert teapot.status_code != ERROR
    assert "error.type" not in teapot.attributes
    (missing,) = [
        s for s in capture.spans() if s.attributes.get("http.response.status_code") == 404
    ]
    assert missing.name == "GET", "unmatched routes carry no http.route"
    assert "http.route" not in missing.attributes


def test_unmatched_routes_share_one_series(capture: Capture) -> None:
    """Many unknown paths produce one metric series, never the raw path."""
    client = make_app().test_client()
    for i in range(20):
        client.get(f"/random/{i}")
    (point,) = [
        p
        for p in capture.metric("http.server.request.duration")
        if p.attributes["http.response.status_code"] == 404
    ]
    assert point.value == 20
    assert "http.route" not in point.attributes


def test_w3c_parent_is_continued(capture: Capture) -> None:
    """An incoming traceparent makes the server span its child."""
    client = make_app().test_client()
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    client.get("/items/2", headers={"traceparent": parent})
    span = capture.span("GET /items/<int:item_id>")
    assert span.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert span.parent_span_id == "b7ad6b7169203331"


def test_excluded_paths_and_options(capture: Capture) -> None:
    """Excluded paths are not traced; unknown options fail at instrumentation time."""
    client = make_app(
        excluded_paths=["/teapot"], health=False, metrics_endpoint=False
    ).test_client()
    client.post("/teapot")
    assert capture.spans() == []
    assert client.get("/health/live").status_code == 404
    with pytest.raises(TypeError, match="helth"):
        FlaskVitals(helth=True)


def test_extension_form_and_uninstrument(capture: Capture) -> None:
    """init_app() instruments once; uninstrument_flask() restores the app."""
    app = Flask("ext")

    @app.get("/")
    def index() -> str:
        return "hi"

    vitals = FlaskVitals()
    vitals.init_app(app)
    vitals.init_app(app)  # idempotent
    app.test_client().get("/")
    assert len(capture.spans()) == 1
    uninstrument_flask(app)
    response = app.test_client().get("/")
    assert "X-Correlation-ID" not in response.headers
    assert len(capture.spans()) == 1


def test_unsampled_requests_still_measured() -> None:
    """At 0 % sampling there are no spans but metrics and correlation ids still work."""
    with Capture(sampler_ratio=0.0) as capture:
        client = make_app().test_client()
        response = client.get("/items/3")
        assert response.headers["X-Correlation-ID"]
        assert capture.spans() == []
        assert capture.metric("http.server.request.duration")[0].value == 1


def test_active_requests_counts_requests_in_flight(capture: Capture) -> None:
    """http.server.active_requests is 1 while a request runs, for every instrumented app.

    It is an observable up-down counter fed by the middleware (issue 9: two SDK
    measurements per request were a sixth of the overhead budget); two apps instrumented
    under one provider share it.
    """
    seen: list[float] = []

    def in_flight() -> float:
        points = capture.metric("http.server.active_requests")
        return sum(point.value for point in points if point.attributes["url.scheme"] == "http")

    first, second = Flask("first"), Flask("second")

    @first.get("/inside")
    def inside() -> str:
        seen.append(in_flight())
        return "ok"

    @second.get("/nested")
    def nested() -> str:
        seen.append(in_flight())
        first.test_client().get("/inside")  # a second request while this one runs
        return "ok"

    appvitals.instrument_flask(first)
    appvitals.instrument_flask(second)
    assert second.test_client().get("/nested").status_code == 200
    assert seen == [1, 2]
    (point,) = capture.metric("http.server.active_requests")
    assert point.attributes == {"http.request.method": "GET", "url.scheme": "http"}
    assert point.value == 0
    assert (point.kind, point.is_monotonic) == ("sum", False)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_active_requests_survive_a_fork_while_their_lock_is_held(capture: Capture) -> None:
    """A child forked while a parent thread holds the count's lock still serves requests."""
    app = Flask("forked")

    @app.get("/")
    def index() -> str:
        return "ok"

    appvitals.instrument_flask(app)
    app.test_client().get("/")
    active = app.wsgi_app.telemetry.active  # type: ignore[attr-defined]
    with active._lock:  # as a metric reader thread collecting at the moment of fork
        pid = os.fork()
        if pid == 0:  # the child: a deadlock would be ended by the alarm (status != 0)
            signal.alarm(10)
            served = app.test_client().get("/").status_code == 200
            (observation,) = active.observe(None)
            os._exit(0 if served and observation.value == 0 else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_unsampled_durations_are_batched_and_every_collection_sees_them() -> None:
    """Unsampled requests' durations reach the SDK in batches, and all of them by a collection.

    Issue 9: a histogram record inside a request costs twice what it costs in a warm loop,
    so the middleware keeps unsampled durations and records a batch at a time. Memory stays
    bounded (a batch is recorded as soon as it is full) and a reader never misses one.
    """
    from appvitals.integrations._http_server import DeferredDurations

    with Capture(service_name="batched", sampler_ratio=0.0) as capture:
        app = make_app()
        client = app.test_client()
        durations = app.wsgi_app.telemetry.durations  # type: ignore[attr-defined]
        for _ in range(DeferredDurations.BATCH + 3):
            assert client.get("/items/1").status_code == 200
        assert len(durations._pending) == 3, "the full batch was recorded at once"
        (point,) = capture.metric("http.server.request.duration")
        assert point.value == DeferredDurations.BATCH + 3
        assert point.attributes["http.route"] == "/items/<int:item_id>"
        assert not durations._pending


def test_route_of_requests_answered_early_or_propagating_an_exception(capture: Capture) -> None:
    """The route comes from Flask's matching, whoever answers and however the request ends.

    A ``before_request`` hook that answers, and an exception that Flask propagates (testing
    mode) instead of turning into a 500 response, both keep ``http.route``; appvitals adds no
    hook of its own.
    """
    app = Flask("early")

    @app.get("/orders/<int:order_id>")
    def order(order_id: int) -> str:
        raise LookupError(order_id)

    @app.get("/closed/<name>")
    def closed(name: str) -> str:
        return name  # never reached: the hook below answers first

    @app.before_request
    def maintenance() -> tuple[str, int] | None:
        from flask import request

        return ("closed", 503) if request.path.startswith("/closed/") else None

    appvitals.instrument_flask(app)
    assert app.before_request_funcs == {None: [maintenance]}
    client = app.test_client()
    assert client.get("/closed/shop").status_code == 503
    app.testing = True  # PROPAGATE_EXCEPTIONS: the exception leaves the WSGI app
    with pytest.raises(LookupError):
        client.get("/orders/7")
    answered = capture.span("GET /closed/<name>")
    assert answered.attributes["http.route"] == "/closed/<name>"
    propagated = capture.span("GET /orders/<int:order_id>")
    assert propagated.attributes["http.route"] == "/orders/<int:order_id>"
    assert propagated.attributes["error.type"] == "LookupError"


def test_route_through_the_request_proxy_and_outside_a_request(
    capture: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The public ``flask.request`` proxy is the fallback reader; no request, no route."""
    from flask import request

    from appvitals.integrations import flask as integration

    monkeypatch.setattr(integration, "_current_rule", lambda: request.url_rule)
    make_app().test_client().get("/items/3")
    assert capture.span("GET /items/<int:item_id>").attributes["http.route"] == (
        "/items/<int:item_id>"
    )
    environ: dict[str, object] = {}
    integration._remember_route(environ)  # outside a request context: nothing, no error
    monkeypatch.undo()
    integration._remember_route(environ)
    assert environ == {}
