"""The error taxonomy: real failures on 127.0.0.1 land in their class, with their phases."""

from __future__ import annotations

import errno
import json
import socket
import ssl
from collections.abc import Iterator

import httpx
import pytest
from http_servers import RawServer, Upstream

from appvitals.http import TAXONOMY, Capture, ErrorClass, classify, instrument_client, parse_json
from appvitals.http._taxonomy import error_message
from appvitals.testing import Capture as Telemetry


@pytest.fixture
def captures() -> list[Capture]:
    """The captures delivered to ``on_capture``."""
    return []


@pytest.fixture
def client(captures: list[Capture]) -> Iterator[httpx.Client]:
    """An instrumented client without retries and with a short timeout."""
    with instrument_client(
        httpx.Client(timeout=0.5), on_capture=captures.append, capture_log=False
    ) as instrumented:
        yield instrumented


def _fail(client: httpx.Client, url: str) -> httpx.HTTPError:
    with pytest.raises(httpx.HTTPError) as raised:
        client.get(url)
    return raised.value


def _only(captures: list[Capture]) -> Capture:
    assert len(captures) == 1, captures
    return captures[0]


def test_refused_port(client: httpx.Client, captures: list[Capture], refused_url: str) -> None:
    """A port where nothing listens is Network/ConnectionRefused, after dns and connect."""
    error = _fail(client, refused_url)
    assert classify(error) == ErrorClass("Network", "ConnectionRefused")
    capture = _only(captures)
    assert (capture.error_category, capture.error_type) == ("Network", "ConnectionRefused")
    assert capture.status is None
    assert capture.response_body is None
    assert {"dns", "connect", "total"} == set(capture.phases)
    assert "Connection refused" in capture.error_message


def test_unresolvable_name(client: httpx.Client, captures: list[Capture]) -> None:
    """name.invalid is Network/DnsResolutionFailed: a dns phase and no connect."""
    error = _fail(client, "http://name.invalid/")
    assert classify(error).type == "DnsResolutionFailed"
    capture = _only(captures)
    assert capture.error_type == "DnsResolutionFailed"
    assert set(capture.phases) == {"dns", "total"}


def test_silent_server_read_timeout(
    client: httpx.Client, captures: list[Capture], silent: RawServer
) -> None:
    """A listener that never answers is Timeout/ReadTimeout; first_byte waited the timeout."""
    error = _fail(client, silent.url())
    assert isinstance(error, httpx.ReadTimeout)
    capture = _only(captures)
    assert (capture.error_category, capture.error_type) == ("Timeout", "ReadTimeout")
    assert {"dns", "connect", "send", "first_byte"} <= set(capture.phases)
    assert capture.phases["first_byte"] >= 400  # the 0.5 s read timeout


def test_reset_connection(
    client: httpx.Client, captures: list[Capture], resetting: RawServer
) -> None:
    """A connection reset (SO_LINGER 0) after the request is Network/ConnectionReset."""
    _fail(client, resetting.url())
    capture = _only(captures)
    assert (capture.error_category, capture.error_type) == ("Network", "ConnectionReset")
    assert {"dns", "connect", "send"} <= set(capture.phases)


def test_garbage_response(
    client: httpx.Client, captures: list[Capture], garbage: RawServer
) -> None:
    """Bytes that are not HTTP are Protocol/HttpProtocolError."""
    error = _fail(client, garbage.url())
    assert isinstance(error, httpx.RemoteProtocolError)
    capture = _only(captures)
    assert (capture.error_category, capture.error_type) == ("Protocol", "HttpProtocolError")


def test_expired_certificate(
    client_tls: ssl.SSLContext, captures: list[Capture], expired_upstream: Upstream
) -> None:
    """A certificate past its notAfter is Protocol/CertificateExpired, with a tls phase."""
    with instrument_client(
        httpx.Client(verify=client_tls), on_capture=captures.append, capture_log=False
    ) as client:
        error = _fail(client, expired_upstream.url("/ok"))
    assert classify(error) == ErrorClass("Protocol", "CertificateExpired")
    capture = _only(captures)
    assert capture.error_type == "CertificateExpired"
    assert {"dns", "connect", "tls"} <= set(capture.phases)
    assert "send" not in capture.phases


def test_certificate_for_another_host(
    client_tls: ssl.SSLContext, captures: list[Capture], wrong_host_upstream: Upstream
) -> None:
    """A valid certificate naming another host is Protocol/CertificateInvalid."""
    with instrument_client(
        httpx.Client(verify=client_tls), on_capture=captures.append, capture_log=False
    ) as client:
        error = _fail(client, wrong_host_upstream.url("/ok"))
    assert classify(error) == ErrorClass("Protocol", "CertificateInvalid")
    assert _only(captures).error_type == "CertificateInvalid"


def test_tls_to_a_plain_http_port(upstream: Upstream) -> None:
    """Speaking TLS to a plain HTTP port fails the handshake: Protocol/SslHandshakeFailed."""
    with httpx.Client(timeout=2) as client:
        error = _fail(client, upstream.url("/ok").replace("http://", "https://"))
    assert classify(error) == ErrorClass("Protocol", "SslHandshakeFailed")


def test_pool_timeout(upstream: Upstream) -> None:
    """No free connection in the pool within the pool timeout is Timeout/PoolTimeout."""
    limits = httpx.Limits(max_connections=1)
    timeout = httpx.Timeout(2.0, pool=0.2)
    with httpx.Client(limits=limits, timeout=timeout) as client:
        with client.stream("GET", upstream.url("/ok")):  # holds the only connection
            error = _fail(client, upstream.url("/ok"))
    assert classify(error) == ErrorClass("Timeout", "PoolTimeout")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/status/401", ErrorClass("Auth", "AuthenticationFailed")),
        ("/expired-token-header", ErrorClass("Auth", "TokenExpired")),
        ("/expired-token-body", ErrorClass("Auth", "TokenExpired")),
        ("/status/403", ErrorClass("Auth", "PermissionDenied")),
        ("/status/413", ErrorClass("Data", "PayloadTooLarge")),
        ("/status/429?retry_after=7", ErrorClass("Service", "RateLimited")),
        ("/status/503", ErrorClass("Service", "ServiceUnavailable")),
        ("/status/500", ErrorClass("Service", "ServerError")),
        ("/status/504", ErrorClass("Service", "ServerError")),
        ("/status/404", ErrorClass("Unknown", "ClientError")),
    ],
)
def test_status_classes(
    client: httpx.Client,
    captures: list[Capture],
    upstream: Upstream,
    path: str,
    expected: ErrorClass,
) -> None:
    """Each failing status lands in its class, on the capture and through classify()."""
    response = client.get(upstream.url(path))
    assert classify(response=response) == expected
    capture = _only(captures)
    assert (capture.error_category, capture.error_type) == (expected.category, expected.type)
    assert capture.status == response.status_code
    assert {"dns", "connect", "send", "first_byte", "download", "total"} <= set(capture.phases)


def test_status_error_from_raise_for_status(client: httpx.Client, upstream: Upstream) -> None:
    """httpx.HTTPStatusError is classified by its response."""
    response = client.get(upstream.url("/status/429"))
    with pytest.raises(httpx.HTTPStatusError) as raised:
        response.raise_for_status()
    assert classify(raised.value) == ErrorClass("Service", "RateLimited")


def test_success_is_no_error(client: httpx.Client, upstream: Upstream) -> None:
    """A 2xx response, or nothing at all, has no class."""
    assert classify(response=client.get(upstream.url("/ok"))) is None
    assert classify() is None


def test_json_decode_failure_is_captured(
    capture: Telemetry, captures: list[Capture], upstream: Upstream
) -> None:
    """parse_json() on a body that is not JSON: Data/DeserializationFailed, captured, raised."""
    with instrument_client(httpx.Client(), on_capture=captures.append, capture_log=False) as client:
        response = client.get(upstream.url("/json-garbage"))
        with pytest.raises(json.JSONDecodeError):
            parse_json(response)
    found = _only(captures)
    assert (found.error_category, found.error_type) == ("Data", "DeserializationFailed")
    assert found.response_body is not None
    assert found.response_body.preview == "{not json"
    (point,) = capture.metric("appvitals.http.client.errors")
    assert point.attributes["type"] == "DeserializationFailed"


def test_undecodable_json_is_an_encoding_error(captures: list[Capture], upstream: Upstream) -> None:
    """JSON bytes that are not valid UTF-8 are Data/EncodingError."""
    with instrument_client(httpx.Client(), on_capture=captures.append, capture_log=False) as client:
        response = client.get(upstream.url("/bad-utf8-json"))
        with pytest.raises(ValueError, match="codec"):
            parse_json(response)
    assert _only(captures).error_type == "EncodingError"


def _chained(outer: BaseException, inner: BaseException) -> BaseException:
    """``outer`` raised while handling ``inner``, as httpx and httpcore wrap errors."""
    try:
        try:
            raise inner
        except BaseException:
            raise outer from inner
    except BaseException as error:
        return error


def _verification_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(1, f"certificate verify failed: {message}")
    error.verify_code = code
    error.verify_message = message
    return error


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (_chained(httpx.ConnectError("x"), socket.gaierror(-3, "again")), "DnsResolutionFailed"),
        (
            _chained(httpx.ConnectError("x"), OSError(errno.ENETUNREACH, "net")),
            "NetworkUnreachable",
        ),
        (_chained(httpx.ConnectError("x"), OSError(errno.EHOSTUNREACH, "host")), "HostUnreachable"),
        (_chained(httpx.ReadError("x"), BrokenPipeError()), "ConnectionReset"),
        (
            _chained(httpx.ConnectError("x"), _verification_error(10, "expired")),
            "CertificateExpired",
        ),
        (
            _chained(httpx.ConnectError("x"), _verification_error(62, "mismatch")),
            "CertificateInvalid",
        ),
        (
            _chained(httpx.ConnectError("x"), _verification_error(19, "self-signed")),
            "CertificateInvalid",
        ),
        (httpx.ConnectTimeout("x"), "ConnectionTimeout"),
        (httpx.WriteTimeout("x"), "WriteTimeout"),
        (httpx.PoolTimeout("x"), "PoolTimeout"),
        (TimeoutError(errno.ETIMEDOUT, "connect"), "ConnectionTimeout"),
        (httpx.ConnectError("[Errno 111] Connection refused"), "ConnectionRefused"),
        (httpx.ConnectError("Name or service not known"), "DnsResolutionFailed"),
        (httpx.ConnectError("something else"), "ConnectionFailed"),
        (httpx.DecodingError("bad gzip"), "EncodingError"),
        (httpx.TooManyRedirects("loop"), "HttpProtocolError"),
        (json.JSONDecodeError("x", "doc", 0), "DeserializationFailed"),
        (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"), "EncodingError"),
        (RuntimeError("no idea"), "Unknown"),
    ],
)
def test_exception_chains(error: BaseException, expected: str) -> None:
    """Exceptions are classified by their type and by the errors in their cause chain."""
    found = classify(error)
    assert found.type == expected
    assert found.category == TAXONOMY[expected]


def test_error_message_never_empty() -> None:
    """A message-less exception is described by its cause, or at least its type."""
    assert error_message(_chained(httpx.ReadError(""), ConnectionResetError(104, "reset"))) == (
        "ReadError: [Errno 104] reset"
    )
    assert error_message(httpx.ReadError("")) == "ReadError"
    assert error_message(None, 799) == "HTTP 799"


def test_every_taxonomy_type_is_documented() -> None:
    """docs/http.md lists every type of the taxonomy."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "http.md").read_text()
    missing = [name for name in TAXONOMY if f"`{name}`" not in text]
    assert not missing, missing
