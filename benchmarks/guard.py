"""Overhead guard: appvitals' default set-up may add at most 2 % to a ~3.5 ms request.

``.venv/bin/python benchmarks/guard.py`` (``make bench-guard``) exits 1 when it does not.

Timings on a shared two-core machine move by several per cent from run to run, so the
guard counts instructions instead: each case runs in its own interpreter under
``valgrind --tool=callgrind``, which serves ``--requests`` in-process ``GET /work`` requests
(``apps/bench_common.py``: SQLite and JSON, ~3.5 ms) through the benchmark app's WSGI
callable (Flask) or ASGI callable (FastAPI, with a synthetic scope; no server, no socket).
Only the request loop is counted: it is called through a ctypes callback and callgrind
collects only inside ``ffi_call`` (``--collect-atstart=no --toggle-collect=ffi_call``);
collection state is per thread, so start-up, warm-up, and the exporters' threads are
excluded. The result is instructions per request, bare versus ``BENCH_CONFIG=appvitals``
(appvitals' defaults: 10 % sampling, metrics and logs on, OTLP exporters).

The appvitals case keeps the production pipeline — ``BatchSpanProcessor``,
``PeriodicExportingMetricReader``, ``BatchLogRecordProcessor`` and OTLP/HTTP exporters — so
what a request pays to hand its telemetry over (aggregation, queueing) is counted; their
schedule delays are set to an hour (``OTEL_BSP_SCHEDULE_DELAY`` and friends) and the
exporter points at a closed port, so no export happens while the loop runs, and the child
leaves with ``os._exit`` before the exit-time flush. Exporting is the background threads'
work, measured by ``benchmarks/load.py`` instead. Sampling decisions come from a seeded
``random`` and ``PYTHONHASHSEED=0`` fixes hashing, so a case counts the same instructions
on every run. What still moves the count is incidental — dict layouts, where malloc places a
buffer that ``realloc`` must then copy — so the guard runs the bare case a second time with
another hash seed and a larger environment, and prints the difference as the noise.

Instruction counts do not see costs that are cycles, not instructions: cache misses, and
the atomic operations that glibc skips while a process has a single thread (any exporter
thread ends that: see docs/benchmarks.md). The load benchmark shows those.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
APPS = HERE / "apps"
BUDGET_PCT = 2.0
FRAMEWORKS = ("flask", "fastapi")
INSTRUMENTED = "appvitals"
SLOWDOWN_ENV = "APPVITALS_BENCH_SLOWDOWN_US"
# Exporters set up but idle for the whole run (see the module docstring).
QUIET_EXPORT = {
    "OTEL_BSP_SCHEDULE_DELAY": "3600000",
    "OTEL_BSP_MAX_QUEUE_SIZE": "100000",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "100000",
    "OTEL_BLRP_SCHEDULE_DELAY": "3600000",
    "OTEL_BLRP_MAX_QUEUE_SIZE": "100000",
    "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE": "100000",
    "OTEL_METRIC_EXPORT_INTERVAL": "3600000",
}
CLOSED_PORT_SINK = "http://127.0.0.1:9"  # the discard port: nothing listens there


# --- the decision (pure; tests/test_bench_guard.py checks it) --------------------------


@dataclasses.dataclass(frozen=True)
class Row:
    """One framework's numbers: instructions per request and what follows from them."""

    framework: str
    bare: float
    instrumented: float
    bare_again: float | None = None

    @property
    def extra(self) -> float:
        return self.instrumented - self.bare

    @property
    def overhead_pct(self) -> float:
        return 100.0 * self.extra / self.bare

    @property
    def noise_pct(self) -> float | None:
        if self.bare_again is None:
            return None
        return 100.0 * abs(self.bare_again - self.bare) / self.bare


def passes(row: Row, budget_pct: float = BUDGET_PCT) -> bool:
    """Whether ``row`` is within the budget (equal to the budget still passes)."""
    return row.overhead_pct <= budget_pct


def decide(rows: list[Row], budget_pct: float = BUDGET_PCT) -> int:
    """The exit status: 0 when every framework is within the budget, else 1."""
    if not rows:
        return 1
    return 0 if all(passes(row, budget_pct) for row in rows) else 1


def render(rows: list[Row], budget_pct: float = BUDGET_PCT) -> str:
    header = (
        f"{'framework':<9} {'bare':>13} {'bare again':>13} {'appvitals':>13} "
        f"{'extra/request':>14} {'overhead':>9} {'noise':>7}  budget {budget_pct:.1f} %"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        again = f"{row.bare_again:>13,.0f}" if row.bare_again is not None else f"{'-':>13}"
        noise = f"{row.noise_pct:.3f}%" if row.noise_pct is not None else "-"
        lines.append(
            f"{row.framework:<9} {row.bare:>13,.0f} {again} {row.instrumented:>13,.0f} "
            f"{row.extra:>+14,.0f} {row.overhead_pct:>+8.2f}% {noise:>7}  "
            f"{'ok' if passes(row, budget_pct) else 'OVER BUDGET'}"
        )
    return "\n".join(lines)


# --- the child: one case, run under callgrind ------------------------------------------


def busy(iterations: int) -> None:
    """The injected slow-down: a fixed number of iterations, so a fixed instruction count."""
    for _ in range(iterations):
        pass


def _flask_loop(config: str, slow_iterations: int) -> tuple[Any, Any]:
    import io

    import flask_app

    app = flask_app.app
    environ = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": os.environ.get("GUARD_PATH", "/work"),
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "50000",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_USER_AGENT": "appvitals-guard",
        "HTTP_ACCEPT": "*/*",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if config != "bare" and slow_iterations:
        inner = app.wsgi_app

        def slowed(environ: dict[str, Any], start_response: Any) -> Any:
            busy(slow_iterations)
            return inner(environ, start_response)

        app.wsgi_app = slowed
    statuses: list[str] = []

    def start_response(status: str, _headers: Any, _exc_info: Any = None) -> None:
        statuses.append(status)

    def request() -> int:
        request_environ = dict(environ)
        request_environ["wsgi.input"] = io.BytesIO(b"")
        result = app(request_environ, start_response)
        size = sum(len(chunk) for chunk in result)
        close = getattr(result, "close", None)
        if close is not None:
            close()
        return size

    def loop(count: int) -> None:
        for _ in range(count):
            request()

    def check() -> str:
        size = request()
        return f"{statuses[-1]}, {size} bytes"

    return loop, check


def _fastapi_loop(config: str, slow_iterations: int) -> tuple[Any, Any]:
    import asyncio

    import fastapi_app

    app: Any = fastapi_app.app
    if config != "bare" and slow_iterations:
        inner = app

        async def slowed(scope: Any, receive: Any, send: Any) -> None:
            busy(slow_iterations)
            await inner(scope, receive, send)

        app = slowed
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": os.environ.get("GUARD_PATH", "/work"),
        "raw_path": os.environ.get("GUARD_PATH", "/work").encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"user-agent", b"appvitals-guard"),
            (b"accept", b"*/*"),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    request_message = {"type": "http.request", "body": b"", "more_body": False}
    seen: list[Any] = []

    async def receive() -> dict[str, Any]:
        return request_message

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            seen.append(message["status"])
        elif message["type"] == "http.response.body":
            seen.append(len(message.get("body", b"")))

    async def requests(count: int) -> None:
        for _ in range(count):
            request_scope = dict(scope)
            request_scope["headers"] = list(scope["headers"])
            await app(request_scope, receive, send)

    event_loop = asyncio.new_event_loop()

    def loop(count: int) -> None:
        event_loop.run_until_complete(requests(count))

    def check() -> str:
        seen.clear()
        loop(1)
        return f"{seen[0]}, {seen[1]} bytes"

    return loop, check


def _sampled_spans() -> int | None:
    """Spans waiting in the BatchSpanProcessor queue (private SDK attributes: best effort)."""
    try:
        from opentelemetry import trace

        processors = trace.get_tracer_provider()._active_span_processor._span_processors  # type: ignore[attr-defined]
        return sum(len(p._batch_processor._queue) for p in processors)
    except Exception:
        return None


def child(args: argparse.Namespace) -> None:
    """Set up one case, warm it up, then serve ``args.requests`` requests inside ffi_call."""
    import ctypes
    import gc
    import random

    random.seed(20240611)  # the sampler's trace ids come from `random`: same decisions every run
    sys.path.insert(0, str(APPS))
    make = _flask_loop if args.framework == "flask" else _fastapi_loop
    loop, check = make(args.config, args.slow_iterations)
    first = check()
    loop(args.warmup)
    queued_before = _sampled_spans()
    # A sampled request's first-time costs (lazy imports, caches) belong to the warm-up too.
    extra = 0
    while queued_before == 0 and extra < 10 * args.warmup:
        loop(1)
        extra += 1
        queued_before = _sampled_spans()
    # Start from empty young generations, so that the warm-up's leftovers do not put a full
    # collection into a short measured loop; the loop's own collections are counted.
    gc.collect()
    # Callgrind collects only inside ffi_call, i.e. inside this callback.
    ctypes.CFUNCTYPE(None)(lambda: loop(args.requests))()
    queued_after = _sampled_spans()
    sampled = None
    if queued_before is not None and queued_after is not None:
        sampled = queued_after - queued_before
    print(json.dumps({"first_response": first, "spans_queued": sampled}), flush=True)
    # Leave before atexit: the exporters' flush is not part of a request.
    os._exit(0)


# --- the parent ------------------------------------------------------------------------


def calibrate_iterations_per_us() -> float:
    """Iterations of :func:`busy` per microsecond on this machine, natively (best of 5)."""
    count = 200_000
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        busy(count)
        best = min(best, time.perf_counter() - started)
    return count / (best * 1e6)


def run_case(
    framework: str,
    config: str,
    args: argparse.Namespace,
    slow_iterations: int,
    keep: Path | None,
    perturbed: bool = False,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="appvitals-guard-") as scratch:
        out = Path(scratch) / "callgrind.out"
        env = {
            name: value
            for name, value in os.environ.items()
            # COVERAGE_*: a coverage tracer started by the test suite would be counted too;
            # PYTHON*: PYTHONMALLOC, PYTHONDEVMODE and the like change what runs.
            if not name.startswith(
                ("OTEL_", "APPVITALS_", "DD_", "SENTRY_", "BENCH_", "COVERAGE_", "PYTHON")
            )
            or name == "PYTHONDONTWRITEBYTECODE"
        }
        env.update(QUIET_EXPORT)
        env.update(
            PYTHONHASHSEED="0",
            BENCH_CONFIG=config,
            BENCH_SINK=CLOSED_PORT_SINK,
            BENCH_UPSTREAM=CLOSED_PORT_SINK + "/",
            BENCH_HTTPX="0",  # the default set-up: no outgoing-call instrumentation
        )
        if perturbed:
            # The noise run: identical runs count identical instructions, so the second bare
            # run changes what a code change may change incidentally — string hashes (dict
            # and set layouts) and the process's memory layout (environment size).
            env.update(PYTHONHASHSEED="1", BENCH_GUARD_PADDING="x" * 4096)
        command = [
            "valgrind",
            "--tool=callgrind",
            "--collect-atstart=no",
            "--toggle-collect=ffi_call",
            f"--callgrind-out-file={out}",
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            f"--framework={framework}",
            f"--config={config}",
            f"--requests={args.requests}",
            f"--warmup={args.warmup}",
            f"--slow-iterations={slow_iterations}",
        ]
        started = time.monotonic()
        result = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=args.timeout, check=False
        )
        elapsed = time.monotonic() - started
        if result.returncode != 0 or not out.exists():
            msg = f"{framework}/{config} failed ({result.returncode}):\n{result.stderr[-3000:]}"
            raise RuntimeError(msg)
        totals = re.search(r"^totals:\s+(\d+)", out.read_text(), re.MULTILINE)
        instructions = int(totals.group(1)) if totals else 0
        if instructions == 0:
            msg = f"{framework}/{config}: callgrind collected nothing inside ffi_call"
            raise RuntimeError(msg)
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            suffix = ".again" if perturbed else ""
            shutil.copy(out, keep / f"callgrind.{framework}.{config}{suffix}.out")
        details = json.loads(result.stdout.strip().splitlines()[-1])
        return {
            "framework": framework,
            "config": config,
            "perturbed": perturbed,
            "instructions": instructions,
            "per_request": instructions / args.requests,
            "seconds": elapsed,
            **details,
        }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, help="measured requests per case (200)")
    parser.add_argument("--warmup", type=int, help="unmeasured requests first (20)")
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS), help="comma-separated")
    parser.add_argument("--budget", type=float, default=BUDGET_PCT, help="per cent (2.0)")
    parser.add_argument(
        "--slow-down-us",
        type=float,
        default=float(os.environ.get(SLOWDOWN_ENV) or 0),
        help=f"inject a busy loop of this many µs into every instrumented request "
        f"(or {SLOWDOWN_ENV}): shows that the guard fails",
    )
    parser.add_argument(
        "--quick", action="store_true", help="20 requests, no noise run (the test uses it)"
    )
    parser.add_argument(
        "--compare",
        default="",
        help="also count these configurations, for comparison only (e.g. otel,sentry,ddtrace)",
    )
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds per case")
    parser.add_argument("--keep", type=Path, help="keep the callgrind files in this folder")
    parser.add_argument("--json", type=Path, help="write the numbers to this file")
    # The child side, started by the parent under valgrind.
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--framework", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--slow-iterations", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.requests = args.requests or (20 if args.quick else 200)
    args.warmup = args.warmup if args.warmup is not None else (5 if args.quick else 20)
    args.frameworks = [name for name in args.frameworks.split(",") if name]
    args.compare = [name for name in args.compare.split(",") if name]
    for name in args.frameworks:
        if name not in FRAMEWORKS:
            parser.error(f"unknown framework {name!r}; expected {', '.join(FRAMEWORKS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child(args)
        return 0  # not reached: child() leaves with os._exit
    if shutil.which("valgrind") is None:
        print("bench-guard: valgrind is not installed (apt-get install valgrind)")
        return 2
    slow_iterations = 0
    if args.slow_down_us > 0:
        slow_iterations = round(args.slow_down_us * calibrate_iterations_per_us())
        print(
            f"injecting a busy loop of {args.slow_down_us:g} µs ({slow_iterations:,} "
            f"iterations) into every {INSTRUMENTED} request"
        )
    cases = [(framework, "bare", False) for framework in args.frameworks]
    cases += [(framework, INSTRUMENTED, False) for framework in args.frameworks]
    if not args.quick:
        cases += [(framework, "bare", True) for framework in args.frameworks]  # the noise run
    cases += [(framework, other, False) for other in args.compare for framework in args.frameworks]
    sys.path.insert(0, str(APPS))
    import bench_common

    print(f"source: {bench_common.source_state()}")
    print(
        f"counting instructions of {args.requests} GET /work requests per case "
        f"(after {args.warmup} warm-up) under callgrind, {len(cases)} cases, "
        f"{args.jobs} at a time",
        flush=True,
    )
    started = time.monotonic()
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futures = [
                pool.submit(run_case, framework, config, args, slow_iterations, args.keep, again)
                for framework, config, again in cases
            ]
            measured = [future.result() for future in futures]
    except (RuntimeError, subprocess.TimeoutExpired) as error:
        print(f"bench-guard: measurement failed: {error}")
        return 2
    rows = []
    for framework in args.frameworks:
        mine = [m for m in measured if m["framework"] == framework]
        bare = [m["per_request"] for m in mine if m["config"] == "bare"]
        instrumented = next(m for m in mine if m["config"] == INSTRUMENTED)
        rows.append(
            Row(framework, bare[0], instrumented["per_request"], bare[1] if len(bare) > 1 else None)
        )
    for m in measured:
        spans = "" if m.get("spans_queued") is None else f", {m['spans_queued']} spans sampled"
        config = m["config"] + (" again" if m["perturbed"] else "")
        print(
            f"  {m['framework']:<8} {config:<10} first response {m['first_response']}"
            f"{spans}, {m['seconds']:.0f} s"
        )
    print()
    print(render(rows, args.budget))
    for m in measured:
        if m["config"] in args.compare:
            bare_count = next(row.bare for row in rows if row.framework == m["framework"])
            extra = m["per_request"] - bare_count
            print(
                f"  for comparison: {m['framework']:<8} {m['config']:<10} "
                f"{m['per_request']:>13,.0f} {extra:>+14,.0f} {100 * extra / bare_count:>+8.2f}%"
            )
    status = decide(rows, args.budget)
    print()
    print(
        f"{'PASS' if status == 0 else 'FAIL'}: appvitals' default set-up "
        f"{'stays within' if status == 0 else 'exceeds'} {args.budget:g} % of a /work request "
        f"(instructions; {time.monotonic() - started:.0f} s)"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "budget_pct": args.budget,
                    "requests": args.requests,
                    "slow_down_us": args.slow_down_us,
                    "cases": measured,
                    "rows": [
                        {
                            **dataclasses.asdict(row),
                            "overhead_pct": row.overhead_pct,
                            "noise_pct": row.noise_pct,
                        }
                        for row in rows
                    ],
                    "exit_status": status,
                },
                indent=2,
            )
        )
    return status


if __name__ == "__main__":
    sys.exit(main())
