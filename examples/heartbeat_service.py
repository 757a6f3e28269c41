"""Seed 004's heartbeat monitoring service, instrumented with appvitals.

Applications POST heartbeats; a background checker marks applications overdue and sends
alerts. Run it: ``python examples/heartbeat_service.py`` (serves on 127.0.0.1:8004 and sends
itself heartbeats for ``HEARTBEAT_DEMO_SECONDS``, default 5). It emits the metrics and spans
seed 004 lists:

- ``heartbeat_received_total``, ``heartbeat_processing_duration_seconds``,
  ``application_overdue_count``, ``alert_sent_total``, ``database_connection_pool_size``,
  ``background_service_health`` (Prometheus names on ``/metrics``);
- spans ``heartbeat.process``, ``database.query``, ``alert.send``,
  ``application.check_status``.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import sqlite3
import threading
import time
import urllib.request
from contextlib import closing

from flask import Flask, jsonify

import appvitals

OVERDUE_AFTER = float(os.environ.get("HEARTBEAT_OVERDUE_SECONDS", "1.0"))
POOL_SIZE = 5
log = logging.getLogger("heartbeat")

# Configured before instrument_flask(), which would otherwise configure from the environment.
appvitals.configure(service_name="heartbeat-service", sampler_ratio=1.0, metric_export_interval=1)
received = appvitals.counter("heartbeat.received", unit="{heartbeat}", description="Heartbeats")
processing = appvitals.histogram(
    "heartbeat.processing.duration", unit="s", description="Time to process one heartbeat"
)
alerts_sent = appvitals.counter("alert.sent", unit="{alert}", description="Overdue alerts sent")


class Store:
    """Last heartbeat per application, in SQLite, behind a fixed-size connection pool."""

    def __init__(self, uri: str) -> None:
        # SQLite's shared in-memory cache answers "database table is locked" at once instead
        # of waiting when two connections meet, so statements take turns.
        self.lock = threading.Lock()
        self.pool: queue.Queue[sqlite3.Connection] = queue.Queue()
        for _ in range(POOL_SIZE):
            self.pool.put(sqlite3.connect(uri, uri=True, check_same_thread=False))
        self.execute("CREATE TABLE IF NOT EXISTS beats (app TEXT PRIMARY KEY, at REAL)")

    def execute(self, sql: str, *args: object) -> list[tuple[object, ...]]:
        operation = sql.split(maxsplit=1)[0].upper()
        connection = self.pool.get(timeout=5)
        try:
            with appvitals.span("database.query", **{"db.operation.name": operation}), self.lock:
                rows = connection.execute(sql, args).fetchall()
                connection.commit()
                return rows
        finally:
            self.pool.put(connection)


store = Store(os.environ.get("HEARTBEAT_DATABASE", "file:heartbeats?mode=memory&cache=shared"))
# The pool's size as seed 004's database_connection_pool_size.
appvitals.gauge(
    "database.connection.pool.size",
    unit="{connection}",
    description="Connections in the database pool",
    callback=lambda: POOL_SIZE,
)
checker_alive = threading.Event()
appvitals.gauge(
    "background.service.health",
    unit="{status}",
    description="1 while the overdue checker runs, 0 when it stopped",
    callback=lambda: 1 if checker_alive.is_set() else 0,
)
overdue: set[str] = set()
appvitals.gauge(
    "application.overdue.count",
    unit="{application}",
    description="Applications whose heartbeat is overdue",
    callback=lambda: len(overdue),
)

app = Flask(__name__)
appvitals.instrument_flask(app)
appvitals.health.register("database", lambda: bool(store.execute("SELECT 1")))
appvitals.health.register("overdue_checker", checker_alive.is_set, critical=False)


@app.post("/heartbeat/<app_id>")
def heartbeat(app_id: str):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    with appvitals.span("heartbeat.process", **{"application.id": app_id}):
        store.execute("INSERT OR REPLACE INTO beats VALUES (?, ?)", app_id, time.time())
        overdue.discard(app_id)
        received.add(1, {"outcome": "accepted"})
        log.info("heartbeat from %s", app_id)
    processing.record(time.perf_counter() - start)
    return jsonify(status="ok", application=app_id)


@appvitals.traced(name="alert.send")
def send_alert(app_id: str, silent_for: float) -> None:
    alerts_sent.add(1, {"alert.channel": "log"})
    log.warning("application %s overdue: silent for %.1f s", app_id, silent_for)


def check_once() -> None:
    with appvitals.span("application.check_status") as span:
        now = time.time()
        rows = store.execute("SELECT app, at FROM beats")
        late = {
            str(app_id): now - float(at) for app_id, at in rows if now - float(at) > OVERDUE_AFTER
        }  # type: ignore[arg-type]
        for app_id, age in late.items():
            if app_id not in overdue:
                send_alert(app_id, age)
        overdue.clear()
        overdue.update(late)
        span.set_attribute("application.overdue.count", len(late))


def checker(stop: threading.Event, interval: float) -> None:
    checker_alive.set()
    try:
        while not stop.wait(interval):
            try:
                check_once()
            except Exception:  # noqa: PERF203 - a failed check must not stop the checker
                log.exception("overdue check failed")  # logged; the next turn checks again
    finally:
        checker_alive.clear()


def main() -> None:
    """Serve on loopback, send heartbeats from three 'applications' (one goes quiet), stop."""
    from werkzeug.serving import make_server

    seconds = float(os.environ.get("HEARTBEAT_DEMO_SECONDS", "5"))
    stop = threading.Event()
    threading.Thread(target=checker, args=(stop, 0.25), daemon=True).start()
    server = make_server("127.0.0.1", int(os.environ.get("HEARTBEAT_PORT", "8004")), app)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    rng = random.Random(4)
    started = time.monotonic()
    try:
        while time.monotonic() - started < seconds:
            for app_id in ("billing", "crm", "erp"):
                if app_id == "erp" and time.monotonic() - started > seconds / 3:
                    continue  # erp goes quiet and becomes overdue
                url = f"{base}/heartbeat/{app_id}"
                request = urllib.request.Request(url, method="POST")  # noqa: S310 - loopback
                with closing(urllib.request.urlopen(request, timeout=5)):  # noqa: S310 - loopback
                    pass
            time.sleep(rng.uniform(0.05, 0.15))
        # On a slow machine the quiet application may not be overdue yet: wait (bounded)
        # for the checker to report it, so that every seed-004 signal is emitted.
        deadline = time.monotonic() + OVERDUE_AFTER + 10
        while "erp" not in overdue and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        server.shutdown()
        appvitals.shutdown()


if __name__ == "__main__":
    appvitals.configure(
        service_name="heartbeat-service", sampler_ratio=1.0, metric_export_interval=1
    )
    main()
