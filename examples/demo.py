"""`make demo`: an instrumented Flask service and worker, then a summary of their telemetry.

Serves ``examples/flask_app.py`` on 127.0.0.1 and sends it traffic (orders, failures, health
probes, a Prometheus scrape) while an order-processing worker runs beside it, for about ten
seconds (``APPVITALS_DEMO_SECONDS``). Spans, metrics and logs go through the embedded
``jsonl`` exporter — no collector needed — and are then read back and summarised as a
monitoring backend would show them: counts per signal, requests by route, the slowest spans,
errors, health and a ``/metrics`` excerpt.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import sqlite3
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import appvitals
from appvitals.testing import read_logs, read_metrics, read_spans

DATA = Path(os.environ.get("APPVITALS_JSONL_DIR", "appvitals-data/demo"))
SECONDS = float(os.environ.get("APPVITALS_DEMO_SECONDS", "10"))

log = logging.getLogger("demo.orders")
orders = appvitals.counter("demo.orders", unit="{order}", description="Orders processed")
basket = appvitals.histogram("demo.basket.size", unit="{item}", buckets=[1, 2, 5, 10, 20])


class PaymentDeclinedError(Exception):
    """The (simulated) payment provider said no."""


@appvitals.traced(name="database.query", attributes={"db.system.name": "sqlite"})
def save(db: sqlite3.Connection, order_id: int, items: int) -> None:
    db.execute("INSERT INTO orders VALUES (?, ?)", (order_id, items))
    db.execute("SELECT count(*), sum(items) FROM orders").fetchone()


@appvitals.traced(name="payment.charge")
@appvitals.timed("demo.payment.duration")
def charge(rng: random.Random, amount: float) -> None:
    time.sleep(rng.uniform(0.001, 0.02))
    if rng.random() < 0.1:
        raise PaymentDeclinedError(f"card declined for {amount:.2f}")


def handle(db: sqlite3.Connection, rng: random.Random, order_id: int) -> None:
    """One 'request': its own correlation id, a root span, children, metrics and logs."""
    fields = {"correlation_id": appvitals.new_correlation_id(), "user_id": f"u-{order_id % 7}"}
    with (
        appvitals.bind(**fields),
        appvitals.span("order.process", **{"order.id": order_id}) as span,
    ):
        items = rng.randint(1, 12)
        basket.record(items)
        save(db, order_id, items)
        try:
            charge(rng, items * 9.99)
        except PaymentDeclinedError:
            span.set_attribute("order.outcome", "declined")
            orders.add(1, {"outcome": "declined"})
            log.warning("order %d declined", order_id)
            return
        orders.add(1, {"outcome": "paid"})
        log.info("order %d paid with %d items", order_id, items)


def serve_and_call(stop: threading.Event, rng: random.Random) -> tuple[str, str]:
    """Serve the Flask example on loopback and call it until ``stop``; return probe outputs."""
    from werkzeug.serving import make_server

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import flask_app

    server = make_server("127.0.0.1", 0, flask_app.app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"

    def get(path: str, headers: dict[str, str] | None = None) -> str:
        request = urllib.request.Request(base + path, headers=headers or {})  # noqa: S310 - loopback
        try:
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback
                return str(response.read().decode())
        except urllib.error.HTTPError as error:
            return str(error.read().decode())

    try:
        number = 0
        while not stop.is_set():
            number += 1
            get(f"/orders/{number}", {"X-Correlation-ID": f"demo-{number}"})
            if rng.random() < 0.05:
                get("/fail")
            if rng.random() < 0.02:
                get(f"/no/such/page/{number}")
            time.sleep(0.005)
        return get("/health/detailed"), get("/metrics")
    finally:
        server.shutdown()


def run() -> None:
    shutil.rmtree(DATA, ignore_errors=True)
    appvitals.configure(
        service_name="appvitals-demo",
        service_version=appvitals.__version__,
        environment="demo",
        exporter="jsonl",
        jsonl_dir=str(DATA),
        sampler_ratio=1.0,  # a demo shows every trace; production keeps the 10 % default
        metric_export_interval=2.0,
    )
    # The summary below is the demo's output; the JSON log lines still go to logs.jsonl.
    appvitals.configure_logging(console_level="CRITICAL")
    appvitals.gauge("demo.uptime", unit="s", callback=lambda: time.monotonic() - started)
    rng = random.Random(7)
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE orders (id INTEGER, items INTEGER)")
    started = time.monotonic()
    print(f"appvitals demo: a Flask service and a worker for {SECONDS:.0f} s, telemetry → {DATA}/")
    stop = threading.Event()
    probes: list[tuple[str, str]] = []
    web = threading.Thread(target=lambda: probes.append(serve_and_call(stop, random.Random(3))))
    web.start()
    order_id = 0
    while time.monotonic() - started < SECONDS:
        order_id += 1
        handle(db, rng, order_id)
    stop.set()
    web.join()
    appvitals.shutdown()
    summarise(order_id, *(probes[0] if probes else ("", "")))


def summarise(processed: int, health: str, prometheus: str) -> None:
    spans, points, logs = read_spans(DATA), read_metrics(DATA), read_logs(DATA)
    print(f"\n{processed} orders processed by the worker. Exported:")
    print(f"  spans          {len(spans):6d}  ({DATA / 'traces.jsonl'})")
    print(f"  metric points  {len(points):6d}  ({DATA / 'metrics.jsonl'})")
    print(f"  log records    {len(logs):6d}  ({DATA / 'logs.jsonl'})")
    requests = Counter(s.name for s in spans if s.kind == 2)  # SERVER spans
    print("\nHTTP requests by route (server spans):")
    for name, count in requests.most_common():
        print(f"  {count:6d}  {name}")
    print("\nSlowest spans:")
    for record in sorted(spans, key=lambda s: s.duration_s, reverse=True)[:5]:
        print(f"  {record.duration_s * 1000:8.2f} ms  {record.name:16s} trace {record.trace_id}")
    errors = Counter(s.attributes.get("error.type", "?") for s in spans if s.status_code == 2)
    print("\nErrors by type:")
    for error_type, count in errors.most_common():
        print(f"  {count:6d}  {error_type}")
    latest = {p.name: p for p in points if p.name.startswith("demo.")}
    print("\nMetrics (latest export):")
    for name in sorted(latest):
        print(f"  {name}")
    print("\nGET /health/detailed:")
    print(f"  {health}")
    print("\nGET /metrics (request counts):")
    for line in prometheus.splitlines():
        if line.startswith("http_server_request_duration_seconds_count"):
            print(f"  {line}")
    warned = [record for record in logs if record.severity_text == "WARN"]
    if warned:
        sample = warned[0]
        print("\nA warning log, linked to its trace:")
        cid = sample.attributes.get("correlation_id")
        print(f"  {sample.body!r} trace_id={sample.trace_id} correlation_id={cid}")


if __name__ == "__main__":
    run()
