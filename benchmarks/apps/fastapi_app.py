"""The FastAPI benchmark app; ``BENCH_CONFIG`` picks the instrumentation (bench_common.CONFIGS).

Run by ``benchmarks/load.py`` as ``uvicorn --app-dir benchmarks/apps fastapi_app:app``.
Endpoints as in flask_app.py: ``/fast``, ``/work`` and ``/call``.

FastAPI ≥ 0.160 has native OpenTelemetry telemetry. It is switched off in ``otel``,
``sentry`` and ``ddtrace`` so that each tool is measured alone; in ``bare`` no provider is
installed, so it stays inert; in ``appvitals`` ``instrument_fastapi()`` switches it off (its
default) and appvitals' middleware emits the server spans and RED metrics.
"""

from __future__ import annotations

from typing import Any

import bench_common

if bench_common.CONFIG == "ddtrace":
    bench_common.ddtrace_auto("bench-fastapi")  # before the framework and httpx load

import httpx
from fastapi import FastAPI, Response

CONFIG = bench_common.CONFIG
SERVICE = "bench-fastapi"

telemetry: Any = None  # FastAPI's default
if CONFIG in bench_common.APPVITALS_CONFIGS:
    bench_common.appvitals_configure(SERVICE)
elif CONFIG == "otel":
    bench_common.otel_providers(SERVICE)
elif CONFIG == "sentry":
    bench_common.sentry_init()
if CONFIG in ("otel", "sentry", "ddtrace", "appvitals-idle"):
    telemetry = {"tracing": False, "metrics": False, "logs": False}

app = FastAPI(telemetry=telemetry)
database = bench_common.make_database()
# One pooled client per worker, as a real service keeps it: /call measures the call, not
# the TCP handshake.
client = httpx.AsyncClient(timeout=5.0)


@app.get("/fast")
async def fast() -> dict[str, object]:
    return {"status": "ok", "items": 3}


# async def although it blocks: the work is pure CPU under the GIL, so running it on the
# event loop costs no throughput with one worker, and it keeps every request on one
# thread (a thread-pool hop per request would add its own cost and noise to the numbers).
@app.get("/work")
async def work() -> Response:
    return Response(bench_common.work(database), media_type="application/json")


@app.get("/call")
async def call() -> dict[str, object]:
    response = await client.get(bench_common.UPSTREAM)
    return {"upstream": response.json(), "status": response.status_code}


if CONFIG in bench_common.INSTRUMENTED_CONFIGS:
    import appvitals

    appvitals.instrument_fastapi(app)
    if bench_common.INSTRUMENT_HTTPX:  # spans, phases and captures on /call
        appvitals.http.instrument_client(client)
elif CONFIG == "otel":
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    FastAPIInstrumentor.instrument_app(app)
    if bench_common.INSTRUMENT_HTTPX:
        HTTPXClientInstrumentor().instrument_client(client)
