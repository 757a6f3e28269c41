"""Fixtures of the outgoing-HTTP tests: real servers on 127.0.0.1 (see ``http_servers``)."""

from __future__ import annotations

import datetime
import socket
import ssl
from collections.abc import Iterator

import pytest
import trustme
from http_servers import RawServer, Upstream, garbage_reply, now, reset_reply, tls_server


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    """A plain HTTP server with the routes of ``http_servers.Handler``."""
    with Upstream() as server:
        yield server


@pytest.fixture
def refused_url() -> str:
    """An URL on a port of 127.0.0.1 where nothing listens (bound, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/orders"


@pytest.fixture
def silent() -> Iterator[RawServer]:
    """Accepts connections and never answers (read timeouts)."""
    with RawServer(lambda connection: None) as server:
        yield server


@pytest.fixture
def resetting() -> Iterator[RawServer]:
    """Reads the request, then resets the connection (SO_LINGER 0)."""
    with RawServer(reset_reply) as server:
        yield server


@pytest.fixture
def garbage() -> Iterator[RawServer]:
    """Reads the request, then answers bytes that are not HTTP."""
    with RawServer(garbage_reply) as server:
        yield server


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    """A private certificate authority for the TLS servers."""
    return trustme.CA()


@pytest.fixture
def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    """A client TLS context that trusts :func:`ca` (and verifies host names)."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture
def tls_upstream(ca: trustme.CA) -> Iterator[Upstream]:
    """HTTPS with a valid certificate for 127.0.0.1 and localhost (20 more days)."""
    day = datetime.timedelta(days=1)
    with tls_server(
        ca, "127.0.0.1", "localhost", not_before=now() - day, not_after=now() + 20 * day
    ) as server:
        yield server


@pytest.fixture
def expired_upstream(ca: trustme.CA) -> Iterator[Upstream]:
    """HTTPS whose certificate (for 127.0.0.1) expired yesterday."""
    day = datetime.timedelta(days=1)
    with tls_server(
        ca, "127.0.0.1", "localhost", not_before=now() - 30 * day, not_after=now() - day
    ) as server:
        yield server


@pytest.fixture
def wrong_host_upstream(ca: trustme.CA) -> Iterator[Upstream]:
    """HTTPS whose valid certificate names another host (wrong.example)."""
    day = datetime.timedelta(days=1)
    with tls_server(
        ca, "wrong.example", not_before=now() - day, not_after=now() + 30 * day
    ) as server:
        yield server
