"""Real servers on 127.0.0.1 for the outgoing-HTTP tests: HTTP, TLS and misbehaving sockets.

Every server binds port 0 on 127.0.0.1 and is stopped (listener, connections, thread) when
its ``with`` block ends. Nothing is mocked below httpx: the failures are real refused,
reset, silent and garbled connections, and real certificates that are expired or for
another host.

This folder has no ``__init__.py`` on purpose: as a package it would be called ``http``
and shadow the standard library's ``http`` (pytest puts ``tests/`` on ``sys.path``), so
this module has a name of its own and the test modules are named ``test_http_*``.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import socket
import ssl
import struct
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import trustme

SECRET = "s3cr3t"
"""Sent as ``Authorization: Bearer s3cr3t`` and ``?api_key=s3cr3t``; must never be shown."""


class Upstream(ThreadingHTTPServer):
    """An HTTP/1.1 server with a fixed set of routes (see :meth:`Handler.route`)."""

    daemon_threads = True

    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        if context is not None:
            self.socket = context.wrap_socket(self.socket, server_side=True)
        self.scheme = "https" if context is not None else "http"
        self.seen: list[dict[str, Any]] = []
        self.counters: dict[str, int] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05})

    @property
    def port(self) -> int:
        """The port the server listens on."""
        return int(self.server_address[1])

    def url(self, path: str = "/", host: str = "127.0.0.1") -> str:
        """An absolute URL of ``path`` on this server."""
        return f"{self.scheme}://{host}:{self.port}{path}"

    def count(self, key: str) -> int:
        """How many times ``key`` was requested before, counting this time (1 the first)."""
        with self._lock:
            self.counters[key] = self.counters.get(key, 0) + 1
            return self.counters[key]

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Ignore clients that went away (a timed-out test client); report anything else."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def __enter__(self) -> Upstream:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(5)


class Handler(BaseHTTPRequestHandler):
    """Routes: /ok, /echo, /status/<code>, /expired-token-*, /flaky/<n>, /redirect,
    /binary, /latin1, /big, /sleep, /json-garbage, /bad-utf8-json."""

    protocol_version = "HTTP/1.1"  # keep-alive, so that connection reuse can be seen
    server: Upstream

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep the test output clean

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        self.server.seen.append(
            {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
        )
        status, headers, payload = self.route(parts.path, query)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def route(self, path: str, query: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        """Status, headers and body for ``path``."""
        as_json = {"Content-Type": "application/json"}
        if path == "/ok":
            return 200, as_json, b'{"ok": true}'
        if path == "/echo":
            return 200, as_json, json.dumps(dict(self.headers)).encode()
        if path.startswith("/status/"):
            status = int(path.rsplit("/", 1)[1])
            headers = dict(as_json)
            if status in (429, 503) and "retry_after" in query:
                headers["Retry-After"] = query["retry_after"]
            return status, headers, json.dumps({"error": f"status {status}"}).encode()
        if path == "/expired-token-header":
            challenge = 'Bearer error="invalid_token", error_description="The access token expired"'
            return 401, {"WWW-Authenticate": challenge}, b""
        if path == "/expired-token-body":
            return 401, as_json, b'{"error": "invalid_token", "message": "Token has expired"}'
        if path.startswith("/flaky/"):
            failures = int(path.rsplit("/", 1)[1])
            attempt = self.server.count(query.get("key", path))
            if attempt <= failures:
                return 503, as_json, b'{"error": "warming up"}'
            return 200, as_json, json.dumps({"attempt": attempt}).encode()
        if path == "/redirect":
            return 302, {"Location": "/ok"}, b""
        if path == "/binary":
            return 500, {"Content-Type": "application/octet-stream"}, bytes(range(256)) * 8
        if path == "/latin1":
            return 500, {"Content-Type": "text/plain"}, "café déjà vu".encode("latin-1")
        if path == "/big":
            return 500, {"Content-Type": "text/plain; charset=utf-8"}, b"x" * 200_000
        if path == "/sleep":
            time.sleep(float(query.get("seconds", "0.1")))
            return 200, as_json, b"{}"
        if path == "/json-garbage":
            return 200, as_json, b"{not json"
        if path == "/bad-utf8-json":
            return 200, as_json, b'{"name": "\xff\xfe"}'
        return 404, as_json, b'{"error": "not found"}'


class RawServer:
    """A TCP listener whose connections get ``behaviour(connection)`` in a thread."""

    def __init__(self, behaviour: Callable[[socket.socket], None]) -> None:
        self._behaviour = behaviour
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.settimeout(0.05)
        self._connections: list[socket.socket] = []
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept)
        self.port: int = self._listener.getsockname()[1]

    def url(self, path: str = "/") -> str:
        """An ``http://`` URL of ``path`` on this listener."""
        return f"http://127.0.0.1:{self.port}{path}"

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                connection, _ = self._listener.accept()
            except OSError:  # the 50 ms timeout, or the listener closed by stop()
                continue
            self._connections.append(connection)
            with contextlib.suppress(OSError):  # the client went away first: nothing to do
                self._behaviour(connection)

    def __enter__(self) -> RawServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopped.set()
        self._thread.join(5)
        self._listener.close()
        for connection in self._connections:
            connection.close()


def _read_request(connection: socket.socket) -> None:
    connection.settimeout(2)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            return
        data += chunk


def reset_reply(connection: socket.socket) -> None:
    """Read the request, then reset the connection."""
    _read_request(connection)
    # SO_LINGER on, 0 seconds: close() sends RST instead of FIN.
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    connection.close()


def garbage_reply(connection: socket.socket) -> None:
    """Read the request, then answer bytes that are not HTTP."""
    _read_request(connection)
    connection.sendall(b"\x00\x01garbage \xff\xfe not http\r\n\r\n")
    connection.close()


def tls_server(
    ca: trustme.CA, *names: str, not_before: datetime.datetime, not_after: datetime.datetime
) -> Upstream:
    """An HTTPS :class:`Upstream` whose certificate, issued by ``ca``, names ``names``."""
    certificate = ca.issue_cert(*names, not_before=not_before, not_after=not_after)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate.configure_cert(context)
    return Upstream(context)


def now() -> datetime.datetime:
    """The current time, in UTC."""
    return datetime.datetime.now(datetime.timezone.utc)
