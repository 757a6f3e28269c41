"""A Flask service instrumented by appvitals: `gunicorn -w 2 examples.flask_app:app`.

Every request is traced and measured, `/health/live`, `/health/ready`, `/health/detailed`
and `/metrics` are served, and `X-Correlation-ID` is read, generated and echoed.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from contextlib import closing

from flask import Flask, jsonify

import appvitals
from appvitals.health import checks

app = Flask(__name__)
appvitals.instrument_flask(app)  # configures appvitals from OTEL_*/APPVITALS_* if needed

DATABASE = os.environ.get("EXAMPLE_DATABASE", ":memory:")


def connect() -> sqlite3.Connection:
    """Open the database; a file database must exist (so a deleted file fails the check)."""
    if DATABASE == ":memory:":
        return sqlite3.connect(DATABASE)
    return sqlite3.connect(f"file:{DATABASE}?mode=rw", uri=True)


log = logging.getLogger("example.flask")
appvitals.health.register("database", checks.sql(connect))
appvitals.health.register("disk", checks.disk("/"), critical=False)


@app.get("/orders/<int:order_id>")
def get_order(order_id: int):  # type: ignore[no-untyped-def]
    query = appvitals.span("database.query", **{"db.system.name": "sqlite"})
    with query, closing(connect()) as db:
        row = db.execute("SELECT ?", (order_id,)).fetchone()
    log.info("order %s read", order_id)
    return jsonify(id=row[0], correlation_id=appvitals.correlation_id(), pid=os.getpid())


@app.get("/fail")
def fail():  # type: ignore[no-untyped-def]
    raise RuntimeError("this endpoint always fails")
