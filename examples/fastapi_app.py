"""A FastAPI service instrumented by appvitals: `uvicorn examples.fastapi_app:app`.

Same telemetry as the Flask example: spans, RED metrics, correlation ids, health endpoints
and `/metrics`.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from contextlib import closing

from fastapi import FastAPI

import appvitals
from appvitals.health import checks

app = FastAPI()
appvitals.instrument_fastapi(app)

DATABASE = os.environ.get("EXAMPLE_DATABASE", ":memory:")


def connect() -> sqlite3.Connection:
    """Open the database; a file database must exist (so a deleted file fails the check)."""
    if DATABASE == ":memory:":
        return sqlite3.connect(DATABASE)
    return sqlite3.connect(f"file:{DATABASE}?mode=rw", uri=True)


log = logging.getLogger("example.fastapi")
appvitals.health.register("database", checks.sql(connect))


@app.get("/orders/{order_id}")
async def get_order(order_id: int) -> dict[str, object]:
    query = appvitals.span("database.query", **{"db.system.name": "sqlite"})
    with query, closing(connect()) as db:
        row = db.execute("SELECT ?", (order_id,)).fetchone()
    log.info("order %s read", order_id)
    return {"id": row[0], "correlation_id": appvitals.correlation_id(), "pid": os.getpid()}


@app.get("/fail")
async def fail() -> None:
    raise RuntimeError("this endpoint always fails")
