"""What the Flask and FastAPI benchmark apps share: settings from the environment and /work.

The apps are imported by gunicorn/uvicorn (``--chdir``/``--app-dir benchmarks/apps``), by
``benchmarks/guard.py`` and by ``benchmarks/micro.py``, so this module is a top-level module
next to them rather than part of a package.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import threading

# bare-threads: the bare app plus one idle thread, a reference row. A process that has ever
# started a second thread runs slower at SQLite and allocation-heavy work although it
# executes the same instructions: glibc then takes its internal locks with atomic
# (``lock``-prefixed) instructions, which it skips in a single-threaded process. Every
# exporter with a background thread pays that; the row shows how much of /work's extra it is.
CONFIGS = (
    "bare",
    "appvitals",
    "appvitals100",
    "appvitals-background",
    "otel",
    "sentry",
    "ddtrace",
    "bare-threads",
)
# Diagnostic rows, measured only when asked for (load.py --configs): appvitals-idle is
# configure() with its defaults but no framework integration, so no request runs appvitals
# code; its extra is what the process pays for having appvitals loaded (imports, providers,
# a larger heap), apart from the request path. appvitals0 samples no request: against
# appvitals, what the sampled tenth costs.
DIAGNOSTIC_CONFIGS = ("appvitals-idle", "appvitals0")
KNOWN_CONFIGS = CONFIGS + DIAGNOSTIC_CONFIGS
# appvitals-background: the defaults but export_mode="background" (the SDK's export threads);
# appvitals runs the default, export_mode="auto" (no thread in these single-threaded workers).
APPVITALS_CONFIGS = (
    "appvitals",
    "appvitals100",
    "appvitals-background",
    "appvitals-idle",
    "appvitals0",
)
# The configurations whose apps appvitals instruments (the integration and the httpx client).
INSTRUMENTED_CONFIGS = tuple(name for name in APPVITALS_CONFIGS if name != "appvitals-idle")

CONFIG = os.environ.get("BENCH_CONFIG", "bare")
if CONFIG not in KNOWN_CONFIGS:
    raise SystemExit(f"BENCH_CONFIG={CONFIG!r}: expected one of {', '.join(KNOWN_CONFIGS)}")
if CONFIG == "bare-threads":
    threading.Thread(target=threading.Event().wait, name="bench-idle", daemon=True).start()

# The null sink (benchmarks/sink.py) answers OTLP/HTTP, Sentry and the Datadog agent API.
SINK = os.environ.get("BENCH_SINK", "http://127.0.0.1:4318").rstrip("/")
UPSTREAM = os.environ.get("BENCH_UPSTREAM", "http://127.0.0.1:4319/")
# Instrument the outgoing httpx client (appvitals.http / HTTPXClientInstrumentor) for /call.
# benchmarks/guard.py turns it off: it measures the default set-up, configure() and the
# framework integration, on /work, which makes no outgoing call.
INSTRUMENT_HTTPX = os.environ.get("BENCH_HTTPX", "1") != "0"
SAMPLE_RATIO = 0.1

# Rows in the in-memory table that /work aggregates: sized so that one /work request costs
# about 3.5 ms of CPU on the benchmark machine (docs/benchmarks.md), a typical small
# database-backed endpoint, against which a 2 % budget is about 70 µs.
WORK_ROWS = int(os.environ.get("BENCH_WORK_ROWS", "6000"))

_SUMMARY = """
SELECT region, product, COUNT(*), ROUND(SUM(amount), 2), ROUND(AVG(quantity), 3)
FROM orders WHERE amount > ? GROUP BY region, product ORDER BY 4 DESC
"""
_TOP = """
SELECT id, customer, region, product, amount, quantity FROM orders
WHERE region = ? ORDER BY amount DESC LIMIT 150
"""


def make_database(rows: int = WORK_ROWS) -> sqlite3.Connection:
    """An in-memory table of ``rows`` orders with a fixed seed, so every run does equal work."""
    # check_same_thread=False: FastAPI may call a sync endpoint from its thread pool.
    connection = sqlite3.connect(":memory:", check_same_thread=False)
    connection.execute(
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT, region TEXT,"
        " product TEXT, amount REAL, quantity INTEGER)"
    )
    rng = random.Random(20240611)
    regions = ("eu-west", "eu-north", "us-east", "us-west", "ap-south", "ap-east")
    products = [f"sku-{number:03d}" for number in range(40)]
    connection.executemany(
        "INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?)",
        (
            (
                index,
                f"customer-{rng.randrange(900):04d}",
                rng.choice(regions),
                rng.choice(products),
                round(rng.uniform(1, 500), 2),
                rng.randrange(1, 20),
            )
            for index in range(rows)
        ),
    )
    connection.commit()
    return connection


def work(connection: sqlite3.Connection) -> bytes:
    """Real CPU work, the same for both frameworks: two SQLite queries and a JSON body."""
    summary = connection.execute(_SUMMARY, (25.0,)).fetchall()
    top = connection.execute(_TOP, ("eu-west",)).fetchall()
    payload = {
        "groups": [
            {"region": r, "product": p, "orders": n, "revenue": s, "avg_quantity": q}
            for r, p, n, s, q in summary
        ],
        "top": [
            {"id": i, "customer": c, "region": r, "product": p, "amount": a, "quantity": q}
            for i, c, r, p, a, q in top
        ],
    }
    return json.dumps(payload, separators=(",", ":")).encode()


def ddtrace_auto(service_name: str) -> None:
    """ddtrace with a 10 % sampling rule, reporting to the null sink.

    Call it before the framework and httpx are imported: ddtrace reads its settings when it
    is imported, and ``ddtrace.auto`` patches those libraries as they load.
    """
    os.environ.setdefault("DD_TRACE_AGENT_URL", SINK)
    # ddtrace 4 ignores DD_TRACE_SAMPLE_RATE; a sampling rule is how it takes a ratio now.
    os.environ.setdefault("DD_TRACE_SAMPLING_RULES", f'[{{"sample_rate": {SAMPLE_RATIO}}}]')
    os.environ.setdefault("DD_TRACE_SAMPLE_RATE", str(SAMPLE_RATIO))
    os.environ.setdefault("DD_SERVICE", service_name)
    import ddtrace.auto  # noqa: F401


def otel_providers(service_name: str) -> None:
    """The plain OpenTelemetry SDK set-up of the ``otel`` configuration (contrib alone).

    Traces and metrics over OTLP/HTTP to the null sink with 10 % parent-based sampling, as
    the OpenTelemetry documentation shows it; no logs bridge (the contrib instrumentations
    do not log per request).
    """
    from opentelemetry import metrics, trace
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    resource = Resource.create({"service.name": service_name})
    tracer_provider = TracerProvider(
        resource=resource, sampler=ParentBased(TraceIdRatioBased(SAMPLE_RATIO))
    )
    tracer_provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{SINK}/v1/traces"))
    )
    trace.set_tracer_provider(tracer_provider)
    reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=f"{SINK}/v1/metrics"))
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=[reader]))


def sentry_init() -> None:
    """Sentry with its default integrations (Flask/FastAPI, httpx, logging are automatic)."""
    import sentry_sdk

    sentry_sdk.init(
        dsn=SINK.replace("http://", "http://public@", 1) + "/1",
        traces_sample_rate=SAMPLE_RATIO,
    )


def appvitals_configure(service_name: str) -> None:
    """appvitals' defaults (10 % sampling, metrics and logs on) over OTLP to the null sink."""
    import appvitals

    # None: the default, 10 %
    ratio = {"appvitals100": 1.0, "appvitals0": 0.0}.get(CONFIG)
    mode = "background" if CONFIG == "appvitals-background" else None  # None: the default, auto
    appvitals.configure(
        service_name=service_name,
        exporter="otlp",
        otlp_endpoint=SINK,
        sampler_ratio=ratio,
        export_mode=mode,
    )


def source_state() -> str:
    """The commit measured, and whether src/ differs from it (read-only git commands)."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    return f"{commit}{' + uncommitted changes in src/' if changed else ''}"
