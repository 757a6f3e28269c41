"""FastAPI/Starlette/plain ASGI in-process: the same telemetry as Flask.

By default appvitals switches FastAPI's native OpenTelemetry instrumentation off and emits the
spans and RED metrics itself, as for Starlette; with ``native_telemetry=True`` FastAPI emits
them and appvitals adds the correlation id.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import appvitals
from appvitals.integrations.asgi import AppvitalsMiddleware
from appvitals.testing import Capture

SERVER = 2
ERROR = 2


def make_app(native: bool = False, **options: Any) -> FastAPI:
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, Any]:
        logging.getLogger("shop").warning("item %s", item_id)
        return {"id": item_id, "cid": appvitals.correlation_id()}

    @app.get("/boom")
    async def boom() -> None:
        raise ValueError("kaboom")

    @app.get("/unavailable", status_code=503)
    async def unavailable() -> str:
        return "down"

    appvitals.instrument_fastapi(app, native_telemetry=native, **options)
    return app


@pytest.mark.parametrize("native", [True, False], ids=["fastapi-native", "appvitals"])
def test_route_template_span_and_metrics(capture: Capture, native: bool) -> None:
    """A request yields one SERVER span named by route template and a duration point."""
    with TestClient(make_app(native)) as client:
        response = client.get("/items/7", headers={"X-Correlation-ID": "fa-1"})
    assert response.status_code == 200
    assert response.headers["X-Correlation-ID"] == "fa-1"
    assert response.json() == {"id": 7, "cid": "fa-1"}
    span = capture.span("GET /items/{item_id}")
    assert span.kind == SERVER
    assert span.attributes["http.route"] == "/items/{item_id}"
    assert span.attributes["http.response.status_code"] == 200
    assert span.attributes["correlation_id"] == "fa-1"
    assert span.attributes["server.address"] == "testserver"
    assert span.scope == ("fastapi" if native else "appvitals.http.server")
    (log,) = [r for r in capture.logs() if r.body == "item 7"]
    assert log.attributes["correlation_id"] == "fa-1"
    assert log.trace_id == span.trace_id
    (point,) = capture.metric("http.server.request.duration")
    assert point.attributes["http.route"] == "/items/{item_id}"
    # One server span, and no per-message internal spans.
    assert len([s for s in capture.spans() if s.kind == SERVER]) == 1
    assert not [s for s in capture.spans() if "http send" in s.name or "http receive" in s.name]


def test_fastapi_native_telemetry_is_switched_off_by_default(capture: Capture) -> None:
    """One server span and one duration series, both appvitals': FastAPI's own stay silent."""
    app = make_app()
    assert not app._native_telemetry.enabled()
    with TestClient(app) as client:
        client.get("/items/1")
    assert {s.scope for s in capture.spans()} == {"appvitals.http.server"}
    assert not [s for s in capture.spans() if s.name.startswith("fastapi.")]
    (point,) = capture.metric("http.server.request.duration")
    assert point.value == 1
    kept = make_app(native=True)
    assert kept._native_telemetry.enabled()


@pytest.mark.parametrize("native", [True, False], ids=["fastapi-native", "appvitals"])
def test_unhandled_exception(capture: Capture, native: bool) -> None:
    """An exception: recorded on the span, counted by error.type, logged once with the id."""
    with TestClient(make_app(native), raise_server_exceptions=False) as client:
        response = client.get("/boom", headers={"X-Correlation-ID": "fa-err"})
    assert response.status_code == 500
    span = capture.span("GET /boom")
    assert span.status_code == ERROR
    assert span.attributes["error.type"] == "ValueError"
    # The stack trace: on the server span (appvitals) or in the exception log (FastAPI).
    stacks = [
        e["attributes"]["exception.stacktrace"] for e in span.events if e["name"] == "exception"
    ]
    stacks += [r.attributes.get("exception.stacktrace", "") for r in capture.logs()]
    assert any("kaboom" in stack for stack in stacks)
    errors = [r for r in capture.logs() if r.severity_text == "ERROR"]
    assert len(errors) == 1
    assert errors[0].attributes["correlation_id"] == "fa-err"
    (point,) = capture.metric("http.server.request.duration")
    assert point.attributes["error.type"] == "ValueError"


def test_starlette_app(capture: Capture) -> None:
    """A plain Starlette app gets appvitals' own spans with the route template."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def user(request: Any) -> PlainTextResponse:
        return PlainTextResponse(request.path_params["name"])

    app = appvitals.instrument_fastapi(Starlette(routes=[Route("/users/{name}", user)]))
    with TestClient(app) as client:
        response = client.get("/users/ada")
    assert response.text == "ada"
    span = capture.span("GET /users/{name}")
    assert span.scope == "appvitals.http.server"
    assert span.attributes["correlation_id"] == response.headers["X-Correlation-ID"]


def test_5xx_status_and_invalid_correlation_id(capture: Capture) -> None:
    """503 is an error; a 1,000-character correlation id is replaced."""
    with TestClient(make_app()) as client:
        response = client.get("/unavailable", headers={"X-Correlation-ID": "y" * 1000})
    assert response.status_code == 503
    assert len(response.headers["X-Correlation-ID"]) == 32
    span = capture.span("GET /unavailable")
    assert span.attributes["error.type"] == "503"
    assert span.status_code == ERROR
    assert capture.metric("appvitals.http.server.correlation_id.replaced")[0].value == 1


def test_unmatched_route_and_w3c(capture: Capture) -> None:
    """Unknown paths carry no http.route; a traceparent is continued."""
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with TestClient(make_app(native=False)) as client:
        client.get("/nope/1", headers={"traceparent": parent})
        client.get("/nope/2")
    spans = [s for s in capture.spans() if s.attributes["http.response.status_code"] == 404]
    assert {s.name for s in spans} == {"GET"}
    assert spans[0].trace_id == "0af7651916cd43dd8448eb211c80319c"
    (point,) = [
        p
        for p in capture.metric("http.server.request.duration")
        if p.attributes["http.response.status_code"] == 404
    ]
    assert point.value == 2


def test_plain_asgi_app_wrapped(capture: Capture) -> None:
    """Any ASGI callable can be wrapped; non-http scopes pass through."""
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    wrapped = appvitals.instrument_fastapi(app, health=False, metrics_endpoint=False)
    assert isinstance(wrapped, AppvitalsMiddleware)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "method": "DELETE", "path": "/x", "headers": [], "scheme": "https"}
    asyncio.run(wrapped(scope, receive, send))
    asyncio.run(wrapped({"type": "websocket", "path": "/ws"}, receive, send))
    assert sent[0]["status"] == 204
    assert any(name == b"x-correlation-id" for name, _ in sent[0]["headers"])
    span = capture.span("DELETE")
    assert span.attributes["url.scheme"] == "https"
    assert len(capture.spans()) == 1


def test_unknown_option_fails_early() -> None:
    """A typo in an option raises at instrumentation time."""
    with pytest.raises(TypeError, match="metric_path"):
        appvitals.instrument_fastapi(FastAPI(), metric_path="/m")
