"""The Flask benchmark app; ``BENCH_CONFIG`` picks the instrumentation (bench_common.CONFIGS).

Run by ``benchmarks/load.py`` as ``gunicorn -w 1 --chdir benchmarks/apps flask_app:app``.
Endpoints: ``/fast`` (a tiny JSON body), ``/work`` (about 3.5 ms of SQLite and JSON work) and
``/call`` (one outgoing httpx call to ``BENCH_UPSTREAM``).
"""

from __future__ import annotations

import os

import bench_common

if bench_common.CONFIG == "ddtrace":
    # ddtrace reads its settings when it is imported, and ddtrace.auto must run before flask
    # and httpx are imported: it patches them as they load.
    os.environ.setdefault("DD_TRACE_AGENT_URL", bench_common.SINK)
    # ddtrace 4 ignores DD_TRACE_SAMPLE_RATE; a sampling rule is how it takes a ratio now.
    os.environ.setdefault("DD_TRACE_SAMPLING_RULES", '[{"sample_rate": 0.1}]')
    os.environ.setdefault("DD_TRACE_SAMPLE_RATE", "0.1")
    os.environ.setdefault("DD_SERVICE", "bench-flask")
    import ddtrace.auto  # noqa: F401

import flask
import httpx

CONFIG = bench_common.CONFIG
SERVICE = "bench-flask"

if CONFIG in ("appvitals", "appvitals100"):
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


if CONFIG in ("appvitals", "appvitals100"):
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
