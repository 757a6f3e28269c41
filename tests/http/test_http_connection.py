"""test_connection(): phases, TLS details, rating and recommendations against real servers."""

from __future__ import annotations

import ssl

import pytest
from http_servers import RawServer, Upstream

from appvitals.http import Thresholds, test_connection


def test_live_http_server(upstream: Upstream) -> None:
    """A healthy local server: passed, every plain-HTTP phase measured, Fast."""
    result = test_connection(upstream.url("/ok"), requests=3)
    assert result.passed
    assert (result.requests, result.succeeded, result.failed) == (3, 3, 0)
    assert set(result.phases) == {"dns", "connect", "send", "first_byte", "download", "total"}
    stats = result.phases["total"]
    assert 0 < stats.min_ms <= stats.median_ms <= stats.max_ms
    assert result.rating == "Fast"
    assert result.statuses == (200, 200, 200)
    assert result.tls is None
    assert result.throughput_bps is not None
    assert result.throughput_bps > 0
    assert result.errors == ()
    assert result.recommendations == ()
    data = result.to_dict()
    assert {"dns", "connect", "first_byte", "total"} <= set(data)
    assert data["total"] == result.median_ms("total")
    assert len(upstream.seen) == 3  # one new connection per request: all reached the server


def test_tls_details(client_tls: ssl.SSLContext, tls_upstream: Upstream) -> None:
    """HTTPS: a tls phase, the protocol, the cipher and the certificate's days left."""
    result = test_connection(
        tls_upstream.url("/ok", host="localhost"), requests=2, verify=client_tls
    )
    assert result.passed
    assert result.median_ms("tls") is not None
    assert result.tls is not None
    assert result.tls.protocol in ("TLSv1.2", "TLSv1.3")
    assert result.tls.cipher
    assert result.tls.days_left in (19, 20)
    assert result.tls.not_after is not None
    assert any("expires in" in advice for advice in result.recommendations)


def test_tls_details_without_verification(tls_upstream: Upstream) -> None:
    """verify=False still reports the session, but not the (undecoded) certificate."""
    result = test_connection(tls_upstream.url("/ok"), requests=1, verify=False)
    assert result.passed
    assert result.tls is not None
    assert result.tls.protocol is not None
    assert result.tls.not_after is None


def test_expired_certificate(client_tls: ssl.SSLContext, expired_upstream: Upstream) -> None:
    """An expired certificate fails every request as Protocol/CertificateExpired."""
    result = test_connection(expired_upstream.url("/ok"), requests=2, verify=client_tls)
    assert not result.passed
    assert result.rating is None
    (error,) = result.errors
    assert (error.category, error.type, error.count) == ("Protocol", "CertificateExpired", 2)
    assert any("renew" in advice for advice in result.recommendations)
    assert result.median_ms("tls") is not None  # the handshake was measured until it failed


def test_refused(refused_url: str) -> None:
    """A refused port: failed, ConnectionRefused for each request, with advice."""
    result = test_connection(refused_url, requests=2)
    assert not result.passed
    (error,) = result.errors
    assert (error.type, error.count) == ("ConnectionRefused", 2)
    assert "nothing accepts connections" in result.recommendations[0]
    assert result.median_ms("first_byte") is None


def test_read_timeout(silent: RawServer) -> None:
    """A server that never answers: ReadTimeout after the timeout."""
    result = test_connection(silent.url(), requests=1, timeout=0.2)
    assert [e.type for e in result.errors] == ["ReadTimeout"]
    assert result.phases["first_byte"].median_ms >= 150


def test_failing_status(upstream: Upstream) -> None:
    """A 503 answer is a failed request, classified from the response."""
    result = test_connection(upstream.url("/status/503"), requests=1)
    assert not result.passed
    assert result.statuses == (503,)
    assert [e.type for e in result.errors] == ["ServiceUnavailable"]


def test_slow_rating_names_the_dominant_phase(upstream: Upstream) -> None:
    """Above slow_ms the rating is Slow and the advice names the slowest phase."""
    result = test_connection(
        upstream.url("/sleep?seconds=0.05"), requests=1, thresholds=Thresholds(fast_ms=1, slow_ms=2)
    )
    assert result.passed
    assert result.rating == "Slow"
    (advice,) = result.recommendations
    assert advice.startswith("server response time (time to first byte) dominates")


def test_invalid_arguments() -> None:
    """Bad arguments raise ValueError before anything is sent."""
    with pytest.raises(ValueError, match="http"):
        test_connection("ftp://example.com")
    with pytest.raises(ValueError, match="requests"):
        test_connection("http://127.0.0.1", requests=0)
    with pytest.raises(ValueError, match="timeout"):
        test_connection("http://127.0.0.1", timeout=0)


def test_url_is_masked(upstream: Upstream) -> None:
    """The URL in the result has its secrets masked."""
    result = test_connection(upstream.url("/ok?api_key=s3cr3t"), requests=1)
    assert result.url.endswith("api_key=***")
