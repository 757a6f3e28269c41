"""httpx instrumentation against real servers: spans, metrics, phases, propagation, captures."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from http_servers import SECRET, Upstream

import appvitals
from appvitals import http
from appvitals._safety import internal_error_counts
from appvitals.http import Capture
from appvitals.testing import Capture as Telemetry

CLIENT = 3  # OTLP SpanKind CLIENT
ERROR = 2  # OTLP StatusCode ERROR
AUTH = {"Authorization": f"Bearer {SECRET}"}


@pytest.fixture
def captures() -> list[Capture]:
    """The captures delivered to ``on_capture``."""
    return []


@pytest.fixture
def client(captures: list[Capture]) -> Iterator[httpx.Client]:
    """An instrumented client (captures also logged)."""
    with http.instrument_client(httpx.Client(timeout=5), on_capture=captures.append) as c:
        yield c


def _dump(value: Any) -> str:
    return json.dumps(value, default=str)


def _no_secret_anywhere(
    telemetry: Telemetry, captures: list[Capture], caplog: pytest.LogCaptureFixture
) -> None:
    assert SECRET not in _dump([capture.to_dict() for capture in captures])
    assert SECRET not in _dump([capture.message() for capture in captures])
    assert SECRET not in _dump(
        [(s.attributes, s.events, s.status_message) for s in telemetry.spans()]
    )
    ours = [record for record in caplog.records if record.name == "appvitals.http"]
    assert SECRET not in _dump([(r.getMessage(), getattr(r, "capture", None)) for r in ours])
    exported = [log for log in telemetry.logs() if log.scope == "appvitals.http"]
    assert SECRET not in _dump([(log.body, log.attributes) for log in exported])


def test_success_span_and_metrics(
    capture: Telemetry, client: httpx.Client, upstream: Upstream, captures: list[Capture]
) -> None:
    """A successful GET: one CLIENT span with stable semconv, phases, the duration metric."""
    response = client.get(upstream.url("/ok"))
    assert response.json() == {"ok": True}
    span = capture.span("GET")
    assert span.kind == CLIENT
    attributes = span.attributes
    assert attributes["http.request.method"] == "GET"
    assert attributes["url.full"] == upstream.url("/ok")
    assert attributes["server.address"] == "127.0.0.1"
    assert attributes["server.port"] == upstream.port
    assert attributes["http.response.status_code"] == 200
    assert attributes["network.protocol.version"] == "1.1"
    assert attributes["http.response.body.size"] == len(b'{"ok": true}')
    assert "error.type" not in attributes
    for phase in ("dns", "connect", "send", "first_byte", "download", "total"):
        assert attributes[f"appvitals.http.phase.{phase}_ms"] >= 0
    assert "appvitals.http.phase.tls_ms" not in attributes  # plain HTTP
    events = [event["name"] for event in span.events]
    assert events[:2] == ["appvitals.http.phase.dns", "appvitals.http.phase.connect"]
    assert span.status_code != ERROR
    assert not captures
    (point,) = capture.metric("http.client.request.duration")
    assert point.unit == "s"
    assert point.attributes == {
        "http.request.method": "GET",
        "server.address": "127.0.0.1",
        "server.port": upstream.port,
        "url.scheme": "http",
        "http.response.status_code": 200,
        "network.protocol.version": "1.1",
    }
    phases = {p.attributes["phase"] for p in capture.metric("appvitals.http.client.phase.duration")}
    assert phases == {"dns", "connect", "send", "first_byte", "download", "total"}
    assert not capture.metric("appvitals.http.client.errors")


def test_reused_connection_has_no_connection_phases(
    capture: Telemetry, client: httpx.Client, upstream: Upstream
) -> None:
    """A keep-alive connection reused by the second call reports no dns/connect phase."""
    client.get(upstream.url("/ok"))
    client.get(upstream.url("/ok"))
    first, second = capture.spans()
    assert "appvitals.http.phase.dns_ms" in first.attributes
    assert "appvitals.http.phase.dns_ms" not in second.attributes
    assert "appvitals.http.phase.connect_ms" not in second.attributes
    assert second.attributes["appvitals.http.phase.first_byte_ms"] >= 0


def test_tls_phase_and_https(capture: Telemetry, client_tls: Any, tls_upstream: Upstream) -> None:
    """HTTPS adds a tls phase between connect and send."""
    with http.instrument_client(httpx.Client(verify=client_tls)) as client:
        assert client.get(tls_upstream.url("/ok", host="localhost")).status_code == 200
    span = capture.span("GET")
    assert span.attributes["appvitals.http.phase.tls_ms"] > 0
    assert span.attributes["server.address"] == "localhost"
    names = [event["name"] for event in span.events]
    assert names.index("appvitals.http.phase.connect") < names.index("appvitals.http.phase.tls")


def test_trace_context_and_correlation_id_propagate(
    capture: Telemetry, client: httpx.Client, upstream: Upstream
) -> None:
    """traceparent (the CLIENT span's) and X-Correlation-ID reach the server."""
    with appvitals.bind(correlation_id="order-42"), appvitals.span("checkout"):
        received = client.get(upstream.url("/echo")).json()
    span = capture.span("GET")
    parent = capture.span("checkout")
    assert span.parent_span_id == parent.span_id
    assert received["X-Correlation-ID"] == "order-42"
    assert received["traceparent"].split("-")[1:3] == [span.trace_id, span.span_id]


def test_explicit_correlation_header_wins(
    capture: Telemetry, client: httpx.Client, upstream: Upstream
) -> None:
    """A correlation id the caller sets on the request is not replaced by the bound one."""
    with appvitals.bind(correlation_id="bound"):
        received = client.get(upstream.url("/echo"), headers={"X-Correlation-ID": "mine"}).json()
    assert received["X-Correlation-ID"] == "mine"


def test_failed_call_is_captured_and_masked(
    capture: Telemetry,
    client: httpx.Client,
    upstream: Upstream,
    captures: list[Capture],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A 503: error span, error counter, and one masked capture in callback, log and event."""
    caplog.set_level(logging.ERROR, logger="appvitals.http")
    with appvitals.bind(correlation_id="cid-503"):
        response = client.post(
            upstream.url(f"/status/503?api_key={SECRET}&page=2"),
            headers=AUTH,
            json={"user": "ada", "password": SECRET},
        )
    assert response.status_code == 503
    span = capture.span("POST")
    assert span.status_code == ERROR
    assert span.attributes["error.type"] == "ServiceUnavailable"
    assert span.attributes["appvitals.http.error.category"] == "Service"
    assert span.attributes["url.full"].endswith("/status/503?api_key=***&page=2")

    (found,) = captures
    assert (found.method, found.status) == ("POST", 503)
    assert (found.error_category, found.error_type) == ("Service", "ServiceUnavailable")
    assert found.error_message == "HTTP 503 Service Unavailable"
    assert found.url == upstream.url("/status/503?api_key=***&page=2")
    assert dict(found.request_headers)["authorization"] == "Bearer ***"
    assert found.request_body is not None
    assert found.request_body.content_type == "application/json"
    assert '"user":"ada"' in (found.request_body.preview or "")
    assert found.response_body is not None
    assert found.response_body.preview == '{"error": "status 503"}'
    assert dict(found.response_headers)["content-type"] == "application/json"
    assert found.correlation_id == "cid-503"
    assert (found.trace_id, found.span_id) == (span.trace_id, span.span_id)
    assert {"dns", "connect", "send", "first_byte", "download", "total"} <= set(found.phases)
    assert found.timestamp.endswith("Z")

    (event,) = [event for event in span.events if event["name"] == "appvitals.http.capture"]
    assert event["attributes"]["error.type"] == "ServiceUnavailable"
    assert event["attributes"]["request.headers.authorization"] == "Bearer ***"
    (record,) = [r for r in caplog.records if r.name == "appvitals.http"]
    assert record.levelno == logging.ERROR
    assert record.capture == found.to_dict()  # type: ignore[attr-defined]
    assert "ServiceUnavailable" in record.getMessage()
    assert "cid-503" in record.getMessage()
    (point,) = capture.metric("appvitals.http.client.errors")
    assert point.attributes == {
        "category": "Service",
        "type": "ServiceUnavailable",
        "server.address": "127.0.0.1",
    }
    (exported,) = [log for log in capture.logs() if log.scope == "appvitals.http"]
    assert exported.trace_id == span.trace_id  # the log line joins the call's trace
    assert "ServiceUnavailable" in str(exported.body)
    _no_secret_anywhere(capture, captures, caplog)


def test_network_failure_is_captured(
    capture: Telemetry,
    client: httpx.Client,
    refused_url: str,
    captures: list[Capture],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A refused connection: error span with the exception event, capture, nothing leaked."""
    with pytest.raises(httpx.ConnectError):
        client.get(f"{refused_url}?api_key={SECRET}", headers=AUTH)
    span = capture.span("GET")
    assert span.status_code == ERROR
    assert span.attributes["error.type"] == "ConnectionRefused"
    assert "exception" in [event["name"] for event in span.events]
    assert "http.response.status_code" not in span.attributes
    (found,) = captures
    assert found.error_type == "ConnectionRefused"
    assert found.response_body is None
    _no_secret_anywhere(capture, captures, caplog)


def test_body_summaries(
    capture: Telemetry, client: httpx.Client, upstream: Upstream, captures: list[Capture]
) -> None:
    """Binary, non-UTF-8 and huge bodies are summarised safely and bounded."""
    client.get(upstream.url("/binary"))
    client.get(upstream.url("/latin1"))
    client.get(upstream.url("/big"))
    client.post(upstream.url("/status/500"), content=bytes(range(256)))
    binary, latin1, big, _ = (c.response_body for c in captures)
    assert binary is not None
    assert binary.preview == "<2048 bytes binary>"
    assert latin1 is not None
    assert latin1.preview is not None
    assert latin1.preview.startswith("caf\ufffd")  # no charset: UTF-8 with replacements
    assert big is not None
    assert (big.size, big.truncated) == (200_000, True)
    assert big.preview == "x" * 1024
    assert captures[3].request_body is not None
    assert captures[3].request_body.preview == "<256 bytes binary>"


def test_streamed_response_is_not_consumed(
    capture: Telemetry, client: httpx.Client, upstream: Upstream, captures: list[Capture]
) -> None:
    """A streamed failure that the caller does not read is captured without reading it."""
    with client.stream("GET", upstream.url("/big")) as response:
        assert response.status_code == 500
    assert not response.is_stream_consumed
    (found,) = captures
    assert found.response_body is not None
    assert found.response_body.preview == "<not read>"
    assert found.response_body.size == 200_000  # from Content-Length
    assert "download" not in found.phases
    assert capture.span("GET").attributes["error.type"] == "ServerError"


def test_capture_size_is_configurable(upstream: Upstream) -> None:
    """capture_body_bytes bounds what is kept of a body."""
    captures: list[Capture] = []
    options = {"on_capture": captures.append, "capture_log": False, "capture_body_bytes": 10}
    with http.instrument_client(httpx.Client(), **options) as client:
        client.get(upstream.url("/big"))
    (found,) = captures
    assert found.response_body is not None
    assert found.response_body.preview == "x" * 10


def test_failure_status_is_configurable(capture: Telemetry, upstream: Upstream) -> None:
    """With failure_status={500}, a 404 is not a failure; a 500 still is."""
    captures: list[Capture] = []
    with http.instrument_client(
        httpx.Client(), on_capture=captures.append, failure_status={500}, capture_log=False
    ) as client:
        client.get(upstream.url("/status/404"))
        client.get(upstream.url("/status/500"))
    not_found, server_error = capture.spans()
    assert not_found.status_code != ERROR
    assert "error.type" not in not_found.attributes
    assert server_error.attributes["error.type"] == "ServerError"
    assert [c.status for c in captures] == [500]


def test_failing_callback_is_contained(capture: Telemetry, upstream: Upstream) -> None:
    """An exception in on_capture never reaches the caller; it is counted."""

    def broken(found: Capture) -> None:
        raise RuntimeError("callback bug")

    with http.instrument_client(httpx.Client(), on_capture=broken, capture_log=False) as client:
        assert client.get(upstream.url("/status/503")).status_code == 503
    assert internal_error_counts()["http on_capture callback"] == 1


def test_redirects_get_a_span_each(
    capture: Telemetry, client: httpx.Client, upstream: Upstream
) -> None:
    """Each hop of a redirect is its own span with its own phases (the callback is not stacked)."""
    response = client.get(upstream.url("/redirect"), follow_redirects=True)
    assert response.json() == {"ok": True}
    first, second = capture.spans()
    assert first.attributes["http.response.status_code"] == 302
    assert second.attributes["http.response.status_code"] == 200
    assert second.attributes["url.full"] == upstream.url("/ok")
    assert response.request.extensions["trace"].user is None


def test_user_trace_callback_still_called(
    capture: Telemetry, client: httpx.Client, upstream: Upstream
) -> None:
    """A trace extension the caller set keeps receiving httpcore's events."""
    seen: list[str] = []
    client.get(upstream.url("/ok"), extensions={"trace": lambda name, info: seen.append(name)})
    assert "connection.connect_tcp.started" in seen
    assert capture.span("GET").attributes["appvitals.http.phase.connect_ms"] >= 0


def test_uninstrument_client(capture: Telemetry, upstream: Upstream) -> None:
    """uninstrument_client() restores the client's own transport."""
    client = httpx.Client()
    original = client._transport
    http.instrument_client(client)
    http.instrument_client(client)  # idempotent
    assert http.uninstrument_client(client) is True
    assert client._transport is original
    assert http.uninstrument_client(client) is False
    with client:
        client.get(upstream.url("/ok"))
    assert capture.spans() == []


def test_global_instrumentation(capture: Telemetry, upstream: Upstream) -> None:
    """instrument_httpx() instruments clients created afterwards, until uninstrumented."""
    http.instrument_httpx(capture_log=False)
    try:
        with httpx.Client() as client:
            client.get(upstream.url("/ok"))
    finally:
        http.uninstrument_httpx()
    with httpx.Client() as client:
        client.get(upstream.url("/ok"))
    assert len(capture.spans()) == 1


def test_mock_transport_responses(capture: Telemetry) -> None:
    """A response that a transport returns already read ends the span at once."""
    upstream = httpx.MockTransport(lambda request: httpx.Response(429, json={"slow": "down"}))
    captures: list[Capture] = []
    with http.instrument_client(
        httpx.Client(transport=upstream), on_capture=captures.append, capture_log=False
    ) as client:
        client.get("https://api.test/x")
    assert capture.span("GET").attributes["error.type"] == "RateLimited"
    assert captures[0].response_body is not None
    assert captures[0].response_body.preview == '{"slow":"down"}'


def test_async_client(
    capture: Telemetry, upstream: Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    """AsyncClient: same span, phases (dns split through anyio), capture and masking."""
    captures: list[Capture] = []

    async def main() -> tuple[int, int]:
        async with http.instrument_client(
            httpx.AsyncClient(), on_capture=captures.append
        ) as client:
            ok = await client.get(upstream.url("/ok"))
            failed = await client.get(upstream.url(f"/status/403?api_key={SECRET}"), headers=AUTH)
            return ok.status_code, failed.status_code

    assert asyncio.run(main()) == (200, 403)
    ok, failed = capture.spans()
    assert ok.attributes["appvitals.http.phase.dns_ms"] >= 0
    assert ok.attributes["appvitals.http.phase.download_ms"] >= 0
    assert failed.attributes["error.type"] == "PermissionDenied"
    (found,) = captures
    assert found.error_category == "Auth"
    assert dict(found.request_headers)["authorization"] == "Bearer ***"
    _no_secret_anywhere(capture, captures, caplog)


def test_async_network_failure(capture: Telemetry, refused_url: str) -> None:
    """An async refused connection ends the span with ConnectionRefused."""
    captures: list[Capture] = []

    async def main() -> None:
        async with http.instrument_client(
            httpx.AsyncClient(), on_capture=captures.append, capture_log=False
        ) as client:
            with pytest.raises(httpx.ConnectError):
                await client.get(refused_url)

    asyncio.run(main())
    assert capture.span("GET").attributes["error.type"] == "ConnectionRefused"
    assert set(captures[0].phases) == {"dns", "connect", "total"}


def test_without_configure_nothing_breaks(upstream: Upstream) -> None:
    """Before configure(), calls work and captures are still delivered."""
    captures: list[Capture] = []
    with http.instrument_client(
        httpx.Client(), on_capture=captures.append, capture_log=False
    ) as client:
        assert client.get(upstream.url("/status/429")).status_code == 429
    assert captures[0].error_type == "RateLimited"
    assert captures[0].trace_id is None


def test_unknown_option_is_rejected() -> None:
    """A misspelt option is a TypeError naming it, not silently ignored."""
    from appvitals.http._instrument import ClientOptions

    with pytest.raises(TypeError, match="on_captur"):
        ClientOptions.from_kwargs({"on_captur": print})
    with pytest.raises(TypeError, match=r"httpx\.Client"):
        http.instrument_client(object())
