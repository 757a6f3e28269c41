"""The Flask benchmark app; ``BENCH_CONFIG`` picks the instrumentation (bench_common.CONFIGS).

Run by ``benchmarks/load.py`` as ``gunicorn -w 1 --chdir benchmarks/apps flask_app:app``.
Endpoints: ``/fast`` (a tiny JSON body), ``/work`` (about 3.5 ms of SQLite and JSON work) and
``/call`` (one outgoing httpx call to ``BENCH_UPSTREAM``).
"""

from __future__ import annotations

import bench_common

if bench_common.CONFIG == "ddtrace":
    bench_common.ddtrace_auto("bench-flask")  # before the framework and httpx load

import flask
import httpx

CONFIG = bench_common.CONFIG
SERVICE = "bench-flask"

if CONFIG in bench_common.APPVITALS_CONFIGS:
    bench_common.appvitals_configure(SERVICE)
elif CONFIG == "otel":
    bench_common.otel_providers(SERVICE)
elif CONFIG == "sentry":
    bench_common.sentry_init()

app = flask.Flask(__name__)
database = bench_common.make_database()
# One pooled client per worker, as a real service keeps it: /call measures the call, not
# the TCP handshake.
client = httpx.Client(timeout=5.0)


@app.get("/fast")
def fast() -> dict[str, object]:
    return {"status": "ok", "items": 3}


@app.get("/work")
def work() -> flask.Response:
    return flask.Response(bench_common.work(database), mimetype="application/json")


@app.get("/call")
def call() -> dict[str, object]:
    response = client.get(bench_common.UPSTREAM)
    return {"upstream": response.json(), "status": response.status_code}


if CONFIG in bench_common.INSTRUMENTED_CONFIGS:
    import appvitals

    appvitals.instrument_flask(app)
    if bench_common.INSTRUMENT_HTTPX:  # spans, phases and captures on /call
        appvitals.http.instrument_client(client)
elif CONFIG == "otel":
    from opentelemetry.instrumentation.flask import FlaskInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    FlaskInstrumentor().instrument_app(app)
    if bench_common.INSTRUMENT_HTTPX:
        # instrument_client, not instrument(): the client above already exists.
        HTTPXClientInstrumentor().instrument_client(client)
