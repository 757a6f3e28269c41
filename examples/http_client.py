"""Outgoing HTTP with appvitals: phases, retries with history, and masked failure captures.

Starts a small upstream on 127.0.0.1 that fails sometimes (a 503 while it "warms up", a
rate limit, an order that is always broken) and calls it through an instrumented httpx
client with a retry transport. Every call's status and attempts are printed, then the
capture of each call that failed for good — with the bearer token and the ``api_key``
masked. Run it with ``python examples/http_client.py``.
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

import appvitals
from appvitals import http

TOKEN = "s3cr3t-token"  # noqa: S105 - a demo secret, to show that it never appears
_requests_seen: dict[str, int] = {}


class Upstream(BaseHTTPRequestHandler):
    """/orders/<id>: a 503 on the first request of each order, then 200; order 13 is
    always 503. /reports: a 429 with Retry-After once, then 200."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        seen = _requests_seen[path] = _requests_seen.get(path, 0) + 1
        status, headers = 200, {"Content-Type": "application/json"}
        body: dict[str, Any] = {"path": path}
        if path.startswith("/orders/") and (seen == 1 or path == "/orders/13"):
            status, body = 503, {"error": "warming up", "retry": True}
        elif path == "/reports" and seen == 1:
            status, body = 429, {"error": "slow down"}
            headers["Retry-After"] = "0"
        payload = json.dumps(body).encode()
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the example prints its own lines


def free_port() -> int:
    """A port of 127.0.0.1 where nothing listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def main() -> None:
    """Serve the upstream, call it, print what happened and the captures."""
    appvitals.configure(service_name="http-client-example")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    captures: list[http.Capture] = []
    # Short backoffs keep the example quick; the defaults are 0.5 s doubling up to 30 s.
    transport = http.RetryTransport(attempts=3, backoff=0.05, max_backoff=0.2)
    client = http.instrument_client(
        httpx.Client(
            transport=transport, timeout=2.0, headers={"Authorization": f"Bearer {TOKEN}"}
        ),
        on_capture=captures.append,
    )
    urls = [
        f"{base}/orders/1",
        f"{base}/orders/2?api_key={TOKEN}",
        f"{base}/reports",
        f"{base}/orders/13",
        f"http://127.0.0.1:{free_port()}/orders/7",  # nothing listens there
    ]
    with client, appvitals.bind(correlation_id="example-run"):
        for url in urls:
            try:
                response = client.get(url)
            except httpx.HTTPError as error:
                outcome = f"raised {type(error).__name__}"
                attempts = error.request.extensions.get("appvitals.attempts", [])
            else:
                outcome = f"HTTP {response.status_code}"
                attempts = response.request.extensions.get("appvitals.attempts", [])
            history = ", ".join(f"#{a.number} {a.status or a.error_type}" for a in attempts)
            print(f"GET {url.split('?')[0]:<40} {outcome:<20} attempts: {history}")
    server.shutdown()
    server.server_close()
    print(f"\n{len(captures)} failed call(s) captured:")
    for capture in captures:
        print(json.dumps(capture.to_dict(), indent=2))
    appvitals.shutdown()


if __name__ == "__main__":
    main()
