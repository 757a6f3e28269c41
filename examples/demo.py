"""`make demo`: an instrumented order-processing worker, then a summary of its telemetry.

Runs for about ten seconds (``APPVITALS_DEMO_SECONDS`` to change it), exporting spans,
metrics and logs through the embedded ``jsonl`` exporter — no collector needed — and then
reads the files back and prints what a monitoring backend would show: counts per signal,
the slowest spans and the errors.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import sqlite3
import time
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
    appvitals.gauge("demo.uptime", unit="s", callback=lambda: time.monotonic() - started)
    rng = random.Random(7)
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE orders (id INTEGER, items INTEGER)")
    started = time.monotonic()
    print(f"appvitals demo: processing orders for {SECONDS:.0f} s, telemetry → {DATA}/")
    order_id = 0
    while time.monotonic() - started < SECONDS:
        order_id += 1
        handle(db, rng, order_id)
    appvitals.shutdown()
    summarise(order_id)


def summarise(processed: int) -> None:
    spans, points, logs = read_spans(DATA), read_metrics(DATA), read_logs(DATA)
    print(f"\n{processed} orders processed. Exported:")
    print(f"  spans          {len(spans):6d}  ({DATA / 'traces.jsonl'})")
    print(f"  metric points  {len(points):6d}  ({DATA / 'metrics.jsonl'})")
    print(f"  log records    {len(logs):6d}  ({DATA / 'logs.jsonl'})")
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
    warned = [record for record in logs if record.severity_text == "WARN"]
    if warned:
        sample = warned[0]
        print("\nA warning log, linked to its trace:")
        cid = sample.attributes.get("correlation_id")
        print(f"  {sample.body!r} trace_id={sample.trace_id} correlation_id={cid}")


if __name__ == "__main__":
    run()
