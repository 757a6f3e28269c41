"""The documented API, type-checked by mypy --strict (`make typecheck`), never executed.

If a signature in the docs stops type-checking, users' code would too.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

from fastapi import FastAPI
from flask import Flask

import appvitals
from appvitals.integrations.flask import FlaskVitals
from appvitals.testing import Capture, SpanRecord

config: appvitals.Config = appvitals.configure(service_name="typed", sampler_ratio=0.5)
name: str = config.service_name


@appvitals.traced
def add(a: int, b: int) -> int:
    return a + b


@appvitals.traced(name="fetch", attributes={"k": "v"})
async def fetch(x: int) -> str:
    await asyncio.sleep(0)
    return str(x)


@appvitals.traced
def numbers() -> Iterator[int]:
    yield 1


@appvitals.traced
async def stream() -> AsyncIterator[int]:
    yield 1


@appvitals.timed("render.duration")
@appvitals.counted("render.calls")
def render() -> str:
    return "ok"


total: int = add(1, 2)
text: str = render()
with appvitals.span("block", attribute=1) as current:
    current.set_attribute("x", 1)
appvitals.counter("orders", unit="{order}").add(1, {"channel": "web"})
appvitals.histogram("latency", buckets=[0.1, 1.0]).record(0.2)
appvitals.updown_counter("queue").add(-1)
appvitals.gauge("temperature").set(21.5)
appvitals.gauge("overdue", callback=lambda: 3)
with appvitals.bind(correlation_id="c"):
    cid: str | None = appvitals.correlation_id()
headers = appvitals.inject_headers({})
flask_app = Flask("typed")
vitals: FlaskVitals = appvitals.instrument_flask(flask_app, health_live_path="/livez")
fastapi_app = appvitals.instrument_fastapi(FastAPI())
appvitals.health.register("db", lambda: True, critical=True, timeout=1.0)
status, payload = appvitals.health.ready_payload()
finished: bool = appvitals.shutdown(timeout=1.0)
with Capture() as capture:
    record: SpanRecord = capture.span("x")


# Outgoing HTTP, resources and dependencies.
appvitals.instrument_httpx(failure_status={500, 502, 503}, capture_body_bytes=512)
connection: appvitals.http.ConnectionTestResult = appvitals.test_connection(
    "https://example.com", requests=3, timeout=2.0
)
rating: str | None = connection.rating
appvitals.cache_hit("users")
appvitals.cache_miss("users", 2)
appvitals.queue_depth("emails", lambda: 3)
appvitals.dependencies.dequeued("emails", lag_seconds=1.5)
with appvitals.db.query("select users", system="sqlite", statement="SELECT * FROM users"):
    pass
appvitals.resources.register(process=True, system=True)
