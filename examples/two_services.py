"""Two services and the edge between them: `python examples/two_services.py`.

``shop`` answers ``GET /orders/<sku>`` by calling ``inventory``'s ``GET /stock/<sku>`` with
an instrumented httpx client (``appvitals.http.instrument_client``). The call is a CLIENT
span carrying ``peer.service`` (from ``APPVITALS_PEER_SERVICES`` or
``appvitals.dependencies.set_peer_services``) and it sends ``traceparent`` and the correlation
id, so inventory's SERVER span is the CLIENT span's child.
That pair — ``peer.service`` plus the parent link — is the edge a service map draws. When
inventory fails, its SERVER span, shop's CLIENT span and shop's SERVER span (502) all end
in error.

Both services run on 127.0.0.1 in this one process (werkzeug servers in threads), so they
share one ``service.name``; deployed, each is its own process with its own
``OTEL_SERVICE_NAME``, and the edge reads the same. The script writes the spans to jsonl
files (``APPVITALS_JSONL_DIR``, default a temporary folder) and prints the edges found.
"""

from __future__ import annotations

import os
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from types import TracebackType
from typing import Any, Optional

import httpx
from flask import Flask, jsonify
from werkzeug.serving import BaseWSGIServer, make_server

import appvitals
from appvitals.dependencies import set_peer_services
from appvitals.http import instrument_client
from appvitals.testing import SpanRecord, read_spans

CLIENT, SERVER = 3, 2  # OTLP span kinds


def create_inventory() -> Flask:
    """Service B: stock levels; the SKU ``broken`` fails with an exception (500)."""
    app = Flask("inventory")

    @app.get("/stock/<sku>")
    def stock(sku: str) -> Any:
        if sku == "broken":
            raise RuntimeError("inventory database unavailable")
        return jsonify(sku=sku, available=7)

    appvitals.instrument_flask(app)
    return app


def get(url: str, headers: Optional[dict[str, str]] = None) -> tuple[int, bytes]:
    """GET an ``http://`` URL: (status, body), error statuses included."""
    if not url.startswith("http://"):
        raise ValueError(url)
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - http only
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - http only
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()


def create_shop(inventory_url: str) -> Flask:
    """Service A: orders, checking stock with inventory; 502 when inventory fails."""
    app = Flask("shop")

    # Every call through this client is a CLIENT span with peer.service and the phases, and
    # carries traceparent and the correlation id (docs/http.md).
    client = instrument_client(httpx.Client(timeout=5))

    @app.get("/orders/<sku>")
    def order(sku: str) -> Any:
        response = client.get(f"{inventory_url}/stock/{urllib.parse.quote(sku)}")
        if response.status_code >= 500:
            return jsonify(error="inventory unavailable", status=response.status_code), 502
        return jsonify(order="accepted", stock=response.json())

    appvitals.instrument_flask(app)
    return app


class Server:
    """A Flask app served on a free port of 127.0.0.1 by a werkzeug thread."""

    def __init__(self, app: Flask) -> None:
        self._server: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self._server.server_port}"

    @property
    def port(self) -> int:
        """The port the server listens on."""
        return int(self._server.server_port)

    def __enter__(self) -> Server:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def edges(spans: list[SpanRecord]) -> Counter[tuple[str, str, int]]:
    """(peer.service, server span name, status code) of every CLIENT → SERVER pair."""
    servers = {span.parent_span_id: span for span in spans if span.kind == SERVER}
    found: Counter[tuple[str, str, int]] = Counter()
    for client in (span for span in spans if span.kind == CLIENT):
        server = servers.get(client.span_id)
        if server is not None and server.trace_id == client.trace_id:
            peer = str(client.attributes.get("peer.service", "?"))
            found[(peer, server.name, server.status_code)] += 1
    return found


def main() -> None:
    """Run both services, place three orders (one failing) and print the edges."""
    folder = os.environ.get("APPVITALS_JSONL_DIR") or tempfile.mkdtemp(prefix="two-services-")
    appvitals.configure(service_name="shop", exporter="jsonl", jsonl_dir=folder, sampler_ratio=1)
    with Server(create_inventory()) as inventory:
        set_peer_services({f"127.0.0.1:{inventory.port}": "inventory"})
        with Server(create_shop(inventory.url)) as shop:
            for sku in ("apple", "pear", "broken"):
                print(f"GET /orders/{sku} -> {get(f'{shop.url}/orders/{sku}')[0]}")
    set_peer_services(None)
    appvitals.shutdown()
    for (peer, server_name, status_code), count in sorted(edges(read_spans(folder)).items()):
        outcome = "error" if status_code == 2 else "ok"
        print(f"edge: shop -> {peer} ({server_name}, {outcome}) x{count}")
    print(f"spans in {folder}")


if __name__ == "__main__":
    main()
