"""Micro-benchmarks: what each appvitals operation costs the calling thread, in ns.

``.venv/bin/python benchmarks/micro.py`` prints one table (``--quick``: fewer repeats).

Each figure is the median over ``--repeats`` timeit runs (garbage collection left on, as in
an application) divided by the calls per run. appvitals is configured with its defaults
(10 % parent-based sampling, metrics and logs on) and the production pipeline —
``BatchSpanProcessor``, ``PeriodicExportingMetricReader``, ``BatchLogRecordProcessor`` — over
exporters that drop everything, so what is timed is the caller's hot path (span creation,
aggregation, queueing); serialising and sending are the export threads' work, measured by
``benchmarks/load.py``. "sampled"/"unsampled" run inside a sampled/unsampled parent span,
as code inside a request does.

The bare Flask app is timed first, while the process has one thread, and again after the
SDK processors above started their export threads (``configure()`` itself starts none in a
single-threaded process, ``export_mode="auto"``): glibc takes a faster, non-atomic path for
its mutexes (and so for the GIL and SQLite) only while a process is single-threaded.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import platform
import statistics
import sys
import timeit
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "apps"))

ATTRIBUTES = {"order.region": "eu-west", "order.channel": "web", "payment.method": "card"}
Row = tuple[str, float | None, float | None, str]


def measure(fn: Callable[[], Any], repeats: int, target_seconds: float) -> tuple[float, float]:
    """(median, min) ns per call of ``fn`` over ``repeats`` runs of about ``target_seconds``."""
    timer = timeit.Timer(fn, setup="gc.enable()", globals={"gc": __import__("gc")})
    number = 1
    while True:  # calibrate: the smallest power of ten that runs for target_seconds / 10
        if timer.timeit(number) >= target_seconds / 10:
            break
        number *= 10
    number = max(1, int(number * 10 * target_seconds / max(timer.timeit(number), 1e-9) / 10))
    runs = [seconds / number * 1e9 for seconds in timer.repeat(repeat=repeats, number=number)]
    return statistics.median(runs), min(runs)


def wsgi_caller(app: Any, path: str) -> Callable[[], int]:
    """A request through ``app.wsgi_app``, in process: no server, no socket."""
    environ = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_USER_AGENT": "appvitals-micro",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }

    def start_response(_status: str, _headers: Any, _exc_info: Any = None) -> None:
        return None

    def call() -> int:
        request = dict(environ)
        request["wsgi.input"] = io.BytesIO(b"")
        result = app.wsgi_app(request, start_response)
        size = sum(len(chunk) for chunk in result)
        close = getattr(result, "close", None)
        if close is not None:
            close()
        return size

    return call


def flask_app(instrumented: bool) -> Any:
    import bench_common
    import flask

    app = flask.Flask(f"micro-{'instrumented' if instrumented else 'bare'}")
    database = bench_common.make_database()

    @app.get("/fast")
    def fast() -> dict[str, object]:
        return {"status": "ok", "items": 3}

    @app.get("/work")
    def work() -> flask.Response:
        return flask.Response(bench_common.work(database), mimetype="application/json")

    if instrumented:
        import appvitals

        appvitals.instrument_flask(app)
    return app


def configure_appvitals() -> None:
    """appvitals' defaults with the production processors over exporters that drop all."""
    from opentelemetry import _logs, metrics, trace
    from opentelemetry.sdk._logs.export import (
        BatchLogRecordProcessor,
        LogRecordExporter,
        LogRecordExportResult,
    )
    from opentelemetry.sdk.metrics.export import (
        MetricExporter,
        MetricExportResult,
        PeriodicExportingMetricReader,
    )
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    import appvitals

    class DropSpans(SpanExporter):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:  # noqa: ARG002 - drops all
            return SpanExportResult.SUCCESS

    class DropLogs(LogRecordExporter):
        def export(self, batch: Sequence[Any]) -> LogRecordExportResult:  # noqa: ARG002
            return LogRecordExportResult.SUCCESS

        def force_flush(self, timeout_millis: int = 30_000) -> bool:  # noqa: ARG002
            return True

        def shutdown(self) -> None:
            return None

    class DropMetrics(MetricExporter):
        def export(self, metrics_data: Any, timeout_millis: float = 10_000, **_: Any) -> Any:  # noqa: ARG002
            return MetricExportResult.SUCCESS

        def force_flush(self, timeout_millis: float = 10_000) -> bool:  # noqa: ARG002
            return True

        def shutdown(self, timeout_millis: float = 30_000, **_: Any) -> None:  # noqa: ARG002
            return None

    appvitals.configure(service_name="micro", exporter="none")
    trace.get_tracer_provider().add_span_processor(BatchSpanProcessor(DropSpans()))  # type: ignore[attr-defined]
    _logs.get_logger_provider().add_log_record_processor(BatchLogRecordProcessor(DropLogs()))  # type: ignore[attr-defined]
    metrics.get_meter_provider().add_metric_reader(  # type: ignore[attr-defined]
        PeriodicExportingMetricReader(DropMetrics(), export_interval_millis=60_000)
    )


def in_parent(sampled: bool, fn: Callable[[], Any]) -> Callable[[], Any]:
    """Run ``fn`` inside a (non-recording) parent span that was or was not sampled."""
    from opentelemetry import context, trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    parent = trace.set_span_in_context(
        NonRecordingSpan(
            SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, False, flags)
        )
    )

    def run() -> Any:
        token = context.attach(parent)
        try:
            return fn()
        finally:
            context.detach(token)

    return run


def benchmarks(repeats: int, target: float) -> list[Row]:
    rows: list[Row] = []

    def add(name: str, fn: Callable[[], Any], note: str = "") -> float:
        median, best = measure(fn, repeats, target)
        rows.append((name, median, best, note))
        print(f"  {name:<52} {median:>10,.0f} ns", file=sys.stderr, flush=True)
        return median

    # 1. Before configure(): the bare app in a single-threaded process.
    bare = flask_app(instrumented=False)
    bare_fast = wsgi_caller(bare, "/fast")
    bare_work = wsgi_caller(bare, "/work")
    single_fast = add("Flask /fast, bare (single-threaded process)", bare_fast)
    single_work = add("Flask /work, bare (single-threaded process)", bare_work)

    # 2. appvitals configured, plus the SDK's dropping processors: from here the process
    #    has their export threads.
    configure_appvitals()
    import appvitals

    instrumented = flask_app(instrumented=True)
    threaded_fast = add("Flask /fast, bare (process with export threads)", bare_fast)
    fast = add("Flask /fast, instrumented (appvitals default)", wsgi_caller(instrumented, "/fast"))
    rows.append(
        (
            "  = middleware per request on /fast",
            fast - threaded_fast,
            None,
            f"{fast - single_fast:+,.0f} ns vs the single-threaded bare app",
        )
    )
    threaded_work = add("Flask /work, bare (process with export threads)", bare_work)
    work = add("Flask /work, instrumented (appvitals default)", wsgi_caller(instrumented, "/work"))
    rows.append(
        (
            "  = middleware per request on /work",
            work - threaded_work,
            None,
            f"{work - single_work:+,.0f} ns vs the single-threaded bare app "
            f"({100 * (work / single_work - 1):+.1f} %)",
        )
    )

    def plain() -> int:
        return 1

    @appvitals.traced
    def decorated() -> int:
        return 1

    add("plain function call (baseline)", plain)
    add("@traced call, sampled", in_parent(True, decorated), "includes the parent attach")
    add("@traced call, unsampled", in_parent(False, decorated), "includes the parent attach")

    def block() -> None:
        with appvitals.span("micro.block"):
            pass

    add("with span(), sampled", in_parent(True, block))
    add("with span(), unsampled", in_parent(False, block))
    add("in_parent() alone (subtract from the four above)", in_parent(True, plain))

    counter = appvitals.counter("micro.orders", unit="{order}")
    histogram = appvitals.histogram("micro.latency", unit="s")
    add("counter.add(1, 3 attributes)", lambda: counter.add(1, ATTRIBUTES))
    add("histogram.record(v, 3 attributes)", lambda: histogram.record(0.0123, ATTRIBUTES))

    logger = logging.getLogger("micro.orders")
    add(
        "logger.info() through the OTel logs bridge",
        lambda: logger.info("order %s placed", 42),
        f"root level {logging.getLevelName(logging.getLogger().level)}, handler from configure()",
    )
    from appvitals.jobs import JobRun

    # A long job: progress events (span event, log line) every 100 items / 30 s by default,
    # so most calls only count; the median is what a job loop pays per call.
    run = JobRun("MICRO", total=10**12).start()
    add("job run.progress(succeeded=1)", lambda: run.progress(succeeded=1), "default thresholds")
    run.finish()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, help="timeit runs per benchmark (default 7)")
    parser.add_argument("--seconds", type=float, help="seconds per run (default 0.2)")
    parser.add_argument("--quick", action="store_true", help="3 runs of 0.05 s")
    args = parser.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 7)
    target = args.seconds or (0.05 if args.quick else 0.2)
    # Environment settings would change what is measured; the defaults are the point.
    for name in list(os.environ):
        if name.startswith(("OTEL_", "APPVITALS_")):
            del os.environ[name]
    from importlib.metadata import version

    rows = benchmarks(repeats, target)
    import bench_common

    print("appvitals micro-benchmarks")
    print(f"source: {bench_common.source_state()}")
    print(
        f"python {platform.python_version()}, appvitals {version('appvitals')}, "
        f"opentelemetry-sdk {version('opentelemetry-sdk')}, flask {version('flask')}; "
        f"median of {repeats} runs of ~{target:g} s (gc on), ns per operation"
    )
    print()
    print(f"{'benchmark':<52} {'median ns':>11} {'min ns':>10}  note")
    print("-" * 100)
    for name, median, best, note in rows:
        shown = f"{median:>11,.0f}" if median is not None else f"{'-':>11}"
        low = f"{best:>10,.0f}" if best is not None else f"{'-':>10}"
        print(f"{name:<52} {shown} {low}  {note}".rstrip())
    import appvitals

    appvitals.shutdown(timeout=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
