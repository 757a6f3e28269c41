"""A null sink for every exporter under test, plus the upstream that ``/call`` calls.

``python benchmarks/sink.py --sink-port 4318 --upstream-port 4319 --max-seconds 1200``

* The sink answers 200 to any POST or PUT (after reading the body): an empty body when the
  request was protobuf (OTLP/HTTP accepts an empty ``Export*ServiceResponse``), else ``{}``
  (Sentry's envelope endpoint, the Datadog agent's trace and telemetry endpoints). A GET
  answers ``{}`` too: ddtrace asks the agent's ``/info`` at start-up. Nothing is stored
  (``GET /_stats`` only counts requests per path), so the numbers measure the instrumented
  process, not a collector.
* The upstream answers every GET with a small JSON document over HTTP/1.1 keep-alive.

Both bind 127.0.0.1 only and stop by themselves after ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import collections
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

UPSTREAM_BODY = b'{"service":"upstream","ok":true,"items":[1,2,3]}'
# "METHOD /path" → requests received, served at GET /_stats so that the load runner can show
# that every configuration really exported something.
_received: collections.Counter[str] = collections.Counter()
_received_lock = threading.Lock()


class _Quiet(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: exporters and httpx reuse connections
    # Headers and body leave in separate writes; with Nagle's algorithm on, the body waits
    # for the client's delayed ACK (40 ms) on a kept-alive connection.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:
        """No per-request logging: it would cost CPU on the load generator's core."""

    def _drain(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        elif "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                self.rfile.read(size + 2)
                if size == 0:
                    break

    def _answer(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class SinkHandler(_Quiet):
    """Accepts and drops OTLP/HTTP, Sentry envelopes and Datadog agent payloads."""

    def do_POST(self) -> None:
        self._drain()
        with _received_lock:
            _received[f"{self.command} {self.path.split('?')[0]}"] += 1
        if "protobuf" in (self.headers.get("Content-Type") or ""):
            self._answer(b"", "application/x-protobuf")
        else:
            self._answer(b"{}", "application/json")

    do_PUT = do_POST  # noqa: N815 - the name http.server dispatches PUT to

    def do_GET(self) -> None:
        if self.path == "/_stats":
            with _received_lock:
                body = json.dumps(dict(_received)).encode()
            self._answer(body, "application/json")
            return
        self._answer(b"{}", "application/json")


class UpstreamHandler(_Quiet):
    """The service that ``/call`` calls."""

    def do_GET(self) -> None:
        self._answer(UPSTREAM_BODY, "application/json")


def serve(handler: type[BaseHTTPRequestHandler], port: int) -> ThreadingHTTPServer:
    """Start ``handler`` on 127.0.0.1:``port`` (0: any free port) in a daemon thread."""
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name=handler.__name__, daemon=True).start()
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sink-port", type=int, default=4318)
    parser.add_argument("--upstream-port", type=int, default=4319)
    parser.add_argument("--max-seconds", type=float, default=1800.0, help="stop after this")
    args = parser.parse_args()
    sink = serve(SinkHandler, args.sink_port)
    upstream = serve(UpstreamHandler, args.upstream_port)
    print(
        f"sink http://127.0.0.1:{sink.server_address[1]} "
        f"upstream http://127.0.0.1:{upstream.server_address[1]}",
        flush=True,
    )
    try:
        time.sleep(args.max_seconds)
    except KeyboardInterrupt:
        pass
    finally:
        sink.shutdown()
        upstream.shutdown()


if __name__ == "__main__":
    main()
