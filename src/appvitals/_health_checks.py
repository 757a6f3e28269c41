"""Built-in health checks, published as ``appvitals.health.checks``.

Each function here is a factory: it validates its arguments at once (a wrong argument is a
bug found at start-up) and returns the check, a callable the registry runs in a worker
thread with its timeout::

    appvitals.health.register("database", appvitals.health.checks.sql(engine))

A check returns details (a dict) when healthy, a :class:`CheckOutcome` when it has
something to say about a failure, or raises; the registry turns an exception into an
unhealthy result whose error is ``"ExcType: message"``. None of them needs a dependency:
``sql`` uses SQLAlchemy only when it is given an engine, ``redis`` speaks RESP over a raw
socket, ``http`` uses urllib, and ``memory`` reads ``/proc/meminfo`` when psutil is absent.
"""

from __future__ import annotations

import importlib
import math
import shutil
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union
from urllib.parse import unquote, urlsplit

__all__ = ["CheckOutcome", "disk", "http", "memory", "redis", "sql"]

#: What a factory returns: a synchronous check the registry can run.
Check = Callable[[], Any]

_GIB = 1024**3


@dataclass(frozen=True)
class CheckOutcome:
    """What a check may return for explicit control over its result.

    Attributes:
        healthy: Whether the dependency is usable.
        details: Shown in the detailed payload (JSON-compatible values).
        error: Why it is unhealthy, shown in the detailed payload.

    Examples:
        >>> CheckOutcome(False, {"lag_seconds": 42}, "replica lagging").healthy
        False
    """

    healthy: bool
    details: Optional[dict[str, Any]] = None
    error: Optional[str] = None


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, not {value!r}")
    return float(value)


def _ratio(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, not {value!r}")
    return float(value)


def sql(target: Any, query: str = "SELECT 1") -> Check:
    """A check that runs ``query`` on a database.

    Args:
        target: A SQLAlchemy ``Engine`` (anything whose ``connect()`` returns a context
            manager with ``execute()``; the query is wrapped in ``sqlalchemy.text``) or a
            DB-API ``connect`` function returning a new connection, which is closed after
            each check.
        query: A cheap statement that proves the database answers.

    Returns:
        A check whose details are ``{"query": query}``.

    Raises:
        TypeError: ``target`` is neither an engine nor a callable.
        ValueError: ``query`` is empty.

    Examples:
        >>> import sqlite3
        >>> check = sql(lambda: sqlite3.connect(":memory:"))
        >>> check()
        {'query': 'SELECT 1'}
    """
    if not isinstance(query, str) or not query.strip():
        raise ValueError("query must be a non-empty SQL string")
    connect = getattr(target, "connect", None)
    if callable(connect):
        statement: Any = query
        try:
            sqlalchemy = importlib.import_module("sqlalchemy")
        except ImportError:
            pass
        else:
            # SQLAlchemy 2 refuses plain strings; text() is accepted by 1.4 as well.
            statement = sqlalchemy.text(query)

        def sql_engine_check() -> dict[str, Any]:
            with connect() as connection:
                result = connection.execute(statement)
                fetchone = getattr(result, "fetchone", None)
                if callable(fetchone):
                    fetchone()
            return {"query": query}

        return sql_engine_check
    if not callable(target):
        raise TypeError(
            "sql() needs a SQLAlchemy engine or a DB-API connect function, "
            f"not {type(target).__name__}"
        )

    def sql_connect_check() -> dict[str, Any]:
        connection = target()
        try:
            cursor = connection.cursor()
            try:
                cursor.execute(query)
                cursor.fetchone()
            finally:
                cursor.close()
        finally:
            connection.close()
        return {"query": query}

    return sql_connect_check


def _read_line(stream: Any) -> str:
    line: bytes = stream.readline(4096)
    if not line:
        raise ConnectionError("redis closed the connection without replying")
    return line.decode("utf-8", "replace").rstrip("\r\n")


def _resp_command(*parts: str) -> bytes:
    """One command in RESP array form (safe for passwords with spaces or CRLF)."""
    encoded = [part.encode() for part in parts]
    chunks = [b"$%d\r\n%s\r\n" % (len(part), part) for part in encoded]
    return b"*%d\r\n" % len(encoded) + b"".join(chunks)


def redis(url: str = "redis://localhost:6379/0", *, timeout: float = 2.0) -> Check:
    """A check that sends ``PING`` to a Redis server and expects ``+PONG``.

    No Redis client is needed: the check opens a socket to the URL's host and port
    (TLS for ``rediss://``), authenticates with ``AUTH`` when the URL has a password
    (``redis://:secret@host`` or ``redis://user:secret@host``), pings and closes.

    Args:
        url: ``redis://[[user]:password@]host[:port][/db]``.
        timeout: Socket timeout in seconds, for connecting and for each reply.

    Returns:
        A check that raises when Redis cannot be reached or replies with anything else.

    Raises:
        ValueError: The URL is not a ``redis://`` or ``rediss://`` URL, or ``timeout`` <= 0.

    Examples:
        >>> check = redis("redis://cache.internal:6380/1")
        >>> callable(check)
        True
    """
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"expected a redis:// or rediss:// URL, not {url!r}")
    try:
        port = parts.port or 6379
    except ValueError as error:
        raise ValueError(f"invalid port in {url!r}") from error
    host = parts.hostname or "localhost"
    seconds = _positive("timeout", timeout)
    password = unquote(parts.password) if parts.password else None
    username = unquote(parts.username) if parts.username else None
    use_tls = parts.scheme == "rediss"

    def redis_check() -> None:
        with socket.create_connection((host, port), timeout=seconds) as raw:
            conn: socket.socket = raw
            if use_tls:
                conn = ssl.create_default_context().wrap_socket(raw, server_hostname=host)
            with conn, conn.makefile("rb") as replies:
                if password is not None:
                    auth = ("AUTH", username, password) if username else ("AUTH", password)
                    conn.sendall(_resp_command(*auth))
                    reply = _read_line(replies)
                    if reply != "+OK":
                        raise ConnectionError(f"AUTH failed: {reply}")
                conn.sendall(b"PING\r\n")
                reply = _read_line(replies)
                if reply != "+PONG":
                    raise ConnectionError(f"unexpected reply to PING: {reply}")

    return redis_check


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Report a redirect as its own status instead of following it to another host."""

    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None


def http(
    url: str,
    *,
    expect_status: Union[int, Container[int]] = range(200, 400),
    timeout: float = 2.0,
    headers: Optional[Mapping[str, str]] = None,
) -> Check:
    """A check that sends ``GET url`` and expects a status in ``expect_status``.

    Redirects are not followed: a 3xx is judged as it is (healthy by default), so a check
    never ends up talking to another host.

    Args:
        url: An ``http://`` or ``https://`` URL.
        expect_status: A status code or a container of them (``range(200, 400)``).
        timeout: Seconds for connecting and for reading the response.
        headers: Extra request headers (an ``Authorization`` header, for instance).

    Returns:
        A check whose details are ``{"status_code": status}``; an unexpected status is
        unhealthy with error ``"unexpected status 500"``.

    Raises:
        ValueError: The URL is not http(s), or ``timeout`` <= 0.

    Examples:
        >>> check = http("http://payments.internal/health", expect_status=200)
        >>> callable(check)
        True
    """
    if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
        raise ValueError(f"expected an http:// or https:// URL, not {url!r}")
    seconds = _positive("timeout", timeout)
    expected: Container[int] = (expect_status,) if isinstance(expect_status, int) else expect_status
    request_headers = dict(headers or {})
    opener = urllib.request.build_opener(_NoRedirect())

    def http_check() -> CheckOutcome:
        request = urllib.request.Request(url, headers=request_headers, method="GET")  # noqa: S310 - scheme checked above
        try:
            with opener.open(request, timeout=seconds) as response:
                status = int(response.status)
        except urllib.error.HTTPError as error:
            # An HTTPError is also the response; closing it releases the socket.
            with error:
                status = int(error.code)
        details = {"status_code": status}
        if status in expected:
            return CheckOutcome(True, details)
        return CheckOutcome(False, details, f"unexpected status {status}")

    return http_check


def disk(path: str = "/", min_free_ratio: float = 0.1) -> Check:
    """A check that the filesystem holding ``path`` has at least ``min_free_ratio`` free.

    Args:
        path: Any path on the filesystem to watch.
        min_free_ratio: The smallest acceptable free share, between 0 and 1.

    Returns:
        A check whose details are ``free_gb``, ``total_gb`` and ``free_ratio``.

    Examples:
        >>> result = disk("/", min_free_ratio=0.0)()
        >>> result.healthy, sorted(result.details)
        (True, ['free_gb', 'free_ratio', 'total_gb'])
    """
    threshold = _ratio("min_free_ratio", min_free_ratio)
    location = str(path)

    def disk_check() -> CheckOutcome:
        usage = shutil.disk_usage(location)
        ratio = usage.free / usage.total if usage.total else 0.0
        details = {
            "free_gb": round(usage.free / _GIB, 2),
            "total_gb": round(usage.total / _GIB, 2),
            "free_ratio": round(ratio, 4),
        }
        if ratio >= threshold:
            return CheckOutcome(True, details)
        return CheckOutcome(
            False, details, f"free space {ratio:.1%} is below {threshold:.1%} on {location}"
        )

    return disk_check


def _used_memory_ratio() -> float:
    try:
        import psutil
    except ImportError:
        pass
    else:
        memory = psutil.virtual_memory()
        return float(memory.total - memory.available) / float(memory.total)
    fields: dict[str, int] = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, value = line.partition(":")
        number = value.split()
        if number and number[0].isdigit():
            fields[key] = int(number[0])
    total = fields["MemTotal"]
    available = fields.get("MemAvailable", fields.get("MemFree", 0))
    return (total - available) / total


def memory(max_used_ratio: float = 0.9) -> Check:
    """A check that the system's used memory share is at most ``max_used_ratio``.

    Used memory is ``total - available`` (what new processes could not get without
    swapping), read with psutil when it is installed, else from ``/proc/meminfo``.

    Args:
        max_used_ratio: The largest acceptable used share, between 0 and 1.

    Returns:
        A check whose details are ``{"used_ratio": ...}``.

    Examples:
        >>> memory(max_used_ratio=1.0)().healthy
        True
    """
    threshold = _ratio("max_used_ratio", max_used_ratio)

    def memory_check() -> CheckOutcome:
        ratio = _used_memory_ratio()
        details = {"used_ratio": round(ratio, 4)}
        if ratio <= threshold:
            return CheckOutcome(True, details)
        return CheckOutcome(False, details, f"memory used {ratio:.1%} is above {threshold:.1%}")

    return memory_check
