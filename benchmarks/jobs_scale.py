"""1,000 concurrent job runs reporting progress every 10 ms: CPU time and memory.

    python benchmarks/jobs_scale.py                 # 1000 runs, every 10 ms, for 5 s
    python benchmarks/jobs_scale.py --runs 200 --seconds 2 --threads 4

Every run is started (a span, sampled, with its events), then each tick calls
``run.progress(succeeded=1)`` on every run; once a second the metrics are collected, as a
periodic reader would, so the progress and last-success gauges run their callbacks. The
same loop with a plain counter instead of ``progress()`` is timed first, so the report
gives the cost of ``progress()`` itself. Memory is read from the kernel (peak RSS by
``getrusage``, current RSS from ``/proc``) after the first second and at the end: a flat
line means nothing grows per progress call. A churn phase then runs batches of new runs
to measure what the process keeps per finished run.
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

from appvitals.jobs import JobRun
from appvitals.testing import Capture

PAGE = 4096


def rss_mib() -> float:
    """Current resident set size in MiB (Linux), or peak RSS elsewhere."""
    statm = Path("/proc/self/statm")
    if statm.exists():
        return int(statm.read_text().split()[1]) * PAGE / 2**20
    return peak_rss_mib()


def peak_rss_mib() -> float:
    """Peak resident set size in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def cpu_seconds() -> float:
    """User + system CPU time of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def drive(
    targets: list[Any], call: Any, interval: float, seconds: float, on_second: Any = None
) -> tuple[int, float]:
    """Call ``call(target)`` for every target each ``interval`` for ``seconds``; calls, lag."""
    start = time.monotonic()
    deadline = start + seconds
    next_tick = start
    next_second = start + 1.0
    calls = 0
    worst_lag = 0.0
    while True:  # bounded by the deadline
        now = time.monotonic()
        if now >= deadline:
            return calls, worst_lag
        worst_lag = max(worst_lag, now - next_tick)
        for target in targets:
            call(target)
        calls += len(targets)
        if on_second is not None and now >= next_second:
            on_second()
            next_second += 1.0
        next_tick += interval
        pause = next_tick - time.monotonic()
        if pause > 0:
            time.sleep(pause)


def threaded(
    groups: list[list[Any]], call: Any, interval: float, seconds: float, on_second: Any
) -> tuple[int, float]:
    """``drive`` in one thread per group; the first thread also collects metrics."""
    results: list[tuple[int, float]] = []

    def work(index: int) -> None:
        results.append(
            drive(groups[index], call, interval, seconds, on_second if index == 0 else None)
        )

    workers = [threading.Thread(target=work, args=(i,)) for i in range(len(groups))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(r[0] for r in results), max(r[1] for r in results)


class Plain:
    """The baseline's target: one attribute to increment."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0


def bump(target: Plain) -> None:
    target.n += 1


def progress(run: JobRun) -> None:
    run.progress(succeeded=1)


def measure_progress(args: argparse.Namespace, capture: Capture) -> dict[str, Any]:
    """The bare loop, then the same loop calling progress() on started runs."""
    groups = max(1, args.threads)
    collections: list[float] = []
    rss: dict[str, float] = {}

    def on_second() -> None:
        started = time.perf_counter()
        capture.metrics()  # what a periodic metric reader does: the gauges' callbacks run
        collections.append(time.perf_counter() - started)
        rss.setdefault("after 1 s", rss_mib())

    plain = [Plain() for _ in range(args.runs)]
    cpu = cpu_seconds()
    base_calls, _ = threaded(
        [plain[i::groups] for i in range(groups)], bump, args.interval, args.seconds, None
    )
    base_cpu = cpu_seconds() - cpu
    rss["before"] = rss_mib()
    runs = [
        JobRun(f"BENCH_{i % 10}", total=int(args.seconds / args.interval)).start()
        for i in range(args.runs)
    ]
    rss["started"] = rss_mib()
    cpu = cpu_seconds()
    calls, lag = threaded(
        [runs[i::groups] for i in range(groups)], progress, args.interval, args.seconds, on_second
    )
    job_cpu = cpu_seconds() - cpu
    rss["end"] = rss_mib()
    # Counted on the SDK spans themselves: encoding them all to OTLP would dwarf the peak.
    events = sum(
        1
        for run in runs
        for event in getattr(run.span, "events", ())
        if event.name == "job.progress"
    )
    for run in runs:
        run.finish()
    capture.clear()
    return {
        "calls": calls,
        "lag": lag,
        "cpu": job_cpu,
        "base_cpu": base_cpu,
        "base_calls": base_calls,
        "events": events,
        "collections": collections,
        "rss": rss,
    }


def measure_churn(args: argparse.Namespace, capture: Capture) -> tuple[int, float]:
    """Batches of new runs, each reported by the gauge once; Python memory kept per run."""
    tracemalloc.start()
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(args.churn_rounds):
        batch = [JobRun("CHURN", total=10).start() for _ in range(args.runs)]
        for run in batch:
            run.progress(succeeded=5)
        capture.metrics()
        for run in batch:
            run.finish()
        capture.clear()
    del batch
    gc.collect()
    kept = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    churned = args.churn_rounds * args.runs
    return churned, kept / max(churned, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=0.01, help="seconds between ticks")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--churn-rounds", type=int, default=5, help="batches of new runs")
    args = parser.parse_args(argv)

    capture = Capture(service_name="jobs-scale").start()
    result = measure_progress(args, capture)
    churned, per_run = measure_churn(args, capture)
    capture.stop()

    calls, rss, collections = result["calls"], result["rss"], result["collections"]
    bare = result["base_cpu"] * calls / max(result["base_calls"], 1)
    per_call = (result["cpu"] - bare) / max(calls, 1)
    print(f"runs: {args.runs}, progress every {args.interval * 1000:.0f} ms for {args.seconds} s, "
          f"{max(1, args.threads)} thread(s), Python {sys.version.split()[0]}")  # fmt: skip
    print(f"progress() calls: {calls} ({calls / args.seconds:,.0f}/s of "
          f"{args.runs / args.interval:,.0f}/s wanted; worst tick lag "
          f"{result['lag'] * 1000:.0f} ms)")  # fmt: skip
    print(f"CPU: {result['cpu']:.2f} s with progress(), {bare:.2f} s of it the bare loop "
          f"-> {per_call * 1e6:.2f} us per progress() call")  # fmt: skip
    print(f"progress events: {result['events']} ({result['events'] / max(calls, 1):.2%} of calls)")
    if collections:
        print(f"metric collection with {args.runs} active runs: "
              f"{sum(collections) / len(collections) * 1000:.1f} ms on average")  # fmt: skip
    print(f"RSS: {rss['before']:.1f} MiB before the runs, {rss['started']:.1f} MiB started, "
          f"{rss.get('after 1 s', 0):.1f} MiB after 1 s, {rss['end']:.1f} MiB at the end; "
          f"peak {peak_rss_mib():.1f} MiB")  # fmt: skip
    print(f"churn: {churned} more runs, {per_run:,.0f} bytes of Python memory kept per run")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
