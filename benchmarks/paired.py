"""Paired benchmark: CPU time per request, bare and instrumented, one request apart.

``.venv/bin/python benchmarks/paired.py`` prints, per framework, what each configuration
adds to a ``/work`` request in CPU time, with a 95 % confidence interval.

``load.py`` pairs bursts of 2 s a few seconds apart; on a shared virtual machine whose
speed moves by 10 % within a second (neighbours' cache and memory traffic), two bare
servers then differ by a few per cent in one pair, and a run of 16 rounds cannot tell
1.6 % from 2.3 %. Here the pairs are single requests: every configuration (and a second
bare server, the noise floor) runs in its own server, all pinned to core 0, and a client on
core 1 sends one request to each in turn, cycle after cycle, in an order rotated every
cycle. A server's CPU time (every thread of its process tree, from
``/proc/<pid>/task/<tid>/schedstat``) is read just before each of its requests, so the
difference between two readings is the whole cost of one request, including anything the
server does after answering (an export that runs at the end of a request, an idle timer).
Each configuration's request is compared with the bare request of the same cycle, taken
milliseconds earlier or later. The extra is the **mean** of these per-cycle differences —
not a median: a request that runs an export is part of the cost — with a 95 % interval
from its standard error; servers are restarted every round, so no configuration keeps one
process's lucky or unlucky memory layout.

That interval covers the requests, not the processes: two processes of the same app differ
by up to ±1 % for as long as they live (heap and address layout, hash seed), and every
request of a round shares its processes' draw. So each round's extra (its mean difference,
as a share of its bare mean) is one sample of the processes too, and the ``rounds`` column
gives their mean with a 95 % Student-t interval over rounds: the one to read against a
budget. It needs many rounds more than many cycles, hence the defaults (12 rounds of 150 cycles).

One request at a time is a server at moderate load: between two of its requests the other
servers' requests run on the same core and evict its caches, alike for every
configuration. ``load.py`` (servers saturated by wrk) remains the throughput view.
Everything listens on 127.0.0.1; every run is bounded in requests.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from load import (  # noqa: E402 - benchmarks/ is not a package
    NOISE,
    Server,
    Sink,
    cpu_seconds,
    log,
    machine,
    start_servers,
    versions,
)

FRAMEWORKS = ("flask", "fastapi")
DEFAULT_CONFIGS = ("bare", "appvitals", "otel")
Z95 = 1.96
# Two-sided 95 % quantiles of Student's t for 1..30 degrees of freedom (beyond: Z95).
T95 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def request(port: int, path: str) -> int:
    """One GET on a new connection (gunicorn's sync worker closes every connection)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path, headers={"Connection": "close"})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def cycles(
    servers: dict[str, Server], path: str, count: int, pids: dict[str, list[int]]
) -> dict[str, list[float]]:
    """``count`` cycles of one request per server; CPU seconds of each request, by label.

    A reading before each request; the cost of a request is the next reading minus this
    one, so the last cycle's requests only close the previous ones.
    """
    labels = list(servers)
    costs: dict[str, list[float]] = {label: [] for label in labels}
    last: dict[str, float] = {}
    for cycle in range(count + 1):
        shift = cycle % len(labels)
        for label in labels[shift:] + labels[:shift]:
            now = cpu_seconds(pids[label])
            if label in last:
                costs[label].append(now - last[label])
            last[label] = now
            if cycle < count:
                status = request(servers[label].port, path)
                if status != 200:
                    msg = f"{servers[label].framework}/{label} answered {status} on {path}"
                    raise RuntimeError(msg)
    return costs


def paired(bare: list[float], other: list[float]) -> dict[str, float]:
    """Mean of the per-cycle differences ``other - bare``, its 95 % interval, as µs and %."""
    differences = [b - a for a, b in zip(bare, other, strict=True)]
    mean_bare = statistics.fmean(bare)
    mean = statistics.fmean(differences)
    half = Z95 * statistics.stdev(differences) / math.sqrt(len(differences))
    return {
        "n": len(differences),
        "bare_us": mean_bare * 1e6,
        "config_us": statistics.fmean(other) * 1e6,
        "extra_us": mean * 1e6,
        "ci_us": half * 1e6,
        "extra_pct": 100 * mean / mean_bare,
        "ci_pct": 100 * half / mean_bare,
        "median_extra_us": statistics.median(differences) * 1e6,
    }


def over_rounds(extras_pct: list[float]) -> tuple[float, float]:
    """Mean of the per-round extras (per cent) and its 95 % t interval (nan for one round)."""
    mean = statistics.fmean(extras_pct)
    count = len(extras_pct)
    if count < 2:
        return mean, math.nan
    t = T95[count - 2] if count - 2 < len(T95) else Z95
    return mean, t * statistics.stdev(extras_pct) / math.sqrt(count)


def run_framework(
    framework: str, labels: list[str], args: argparse.Namespace, sink: Sink
) -> dict[str, list[list[float]]]:
    """Every round: new servers, a warm-up, then ``args.cycles`` measured cycles.

    The costs come back per configuration and round (a list of the round's requests each).
    """
    costs: dict[str, list[list[float]]] = {label: [] for label in labels}
    started = time.monotonic()
    for round_ in range(args.rounds):
        servers = start_servers(framework, labels, sink)
        try:
            pids = {label: server.pids() for label, server in servers.items()}
            cycles(servers, args.path, args.warmup, pids)
            measured = cycles(servers, args.path, args.cycles, pids)
        finally:
            for server in servers.values():
                server.stop()
        for label, values in measured.items():
            costs[label].append(values)
        bare = statistics.fmean(measured["bare"]) * 1e6
        log(
            f"[{time.monotonic() - started:5.0f} s] {framework:<7} round {round_ + 1}/"
            f"{args.rounds}: bare {bare:.0f} µs/req, "
            + ", ".join(
                f"{label} {paired(measured['bare'], measured[label])['extra_pct']:+.1f} %"
                for label in labels
                if label != "bare"
            )
        )
    return costs


def table(framework: str, costs: dict[str, list[list[float]]]) -> list[str]:
    """One line per configuration but bare; ``costs`` holds each round's requests."""
    lines = []
    bare_rounds = costs["bare"]
    bare = [value for round_ in bare_rounds for value in round_]
    for label, rounds in costs.items():
        if label == "bare":
            continue
        row = paired(bare, [value for round_ in rounds for value in round_])
        mean, half = over_rounds(
            [paired(b, o)["extra_pct"] for b, o in zip(bare_rounds, rounds, strict=True)]
        )
        lines.append(
            f"{framework:<8} {label:<22} {row['n']:>6} {row['bare_us']:>8.0f} "
            f"{row['config_us']:>8.0f} {row['extra_us']:>+8.1f} ±{row['ci_us']:<6.1f} "
            f"{row['extra_pct']:>+6.2f} % ±{row['ci_pct']:.2f} {row['median_extra_us']:>+9.1f} "
            f"{mean:>+7.2f} % " + ("±-" if math.isnan(half) else f"±{half:.2f}")
        )
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS), help="comma-separated")
    parser.add_argument("--configs", default=",".join(DEFAULT_CONFIGS), help="comma-separated")
    parser.add_argument("--path", default="/work", help="the endpoint measured (/work)")
    parser.add_argument("--rounds", type=int, default=12, help="new servers per round (12)")
    parser.add_argument("--cycles", type=int, default=150, help="measured cycles per round")
    parser.add_argument("--warmup", type=int, default=60, help="unmeasured cycles first")
    parser.add_argument(
        "--json", type=Path, help="also write every request's CPU time (per round) here"
    )
    args = parser.parse_args(argv)
    args.frameworks = [name for name in args.frameworks.split(",") if name]
    args.configs = [name for name in args.configs.split(",") if name]
    for name in args.frameworks:
        if name not in FRAMEWORKS:
            parser.error(f"unknown framework {name!r}; expected {', '.join(FRAMEWORKS)}")
    if "bare" not in args.configs:
        args.configs.insert(0, "bare")
    if args.rounds < 1 or args.cycles < 2 or args.warmup < 0:
        parser.error("--rounds ≥ 1, --cycles ≥ 2 and --warmup ≥ 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    labels = [*args.configs, NOISE]
    found = {"machine": machine(), "versions": versions()}
    log(
        f"{len(args.frameworks)} framework(s) x {args.rounds} rounds x "
        f"{args.warmup + args.cycles} cycles of {len(labels)} requests"
    )
    # A /work request takes 3.5 to 9 ms here; 20 ms a request and 10 s a round to start
    # the servers bound the sink's life generously, and it still stops by itself.
    requests = args.rounds * (args.warmup + args.cycles) * len(labels)
    estimate = len(args.frameworks) * (requests * 0.02 + args.rounds * 10)
    sink = Sink(max_seconds=2 * estimate + 600)
    results: dict[str, dict[str, list[list[float]]]] = {}
    try:
        for framework in args.frameworks:
            results[framework] = run_framework(framework, labels, args, sink)
    finally:
        sink.stop()
    host = found["machine"]
    print("appvitals paired benchmark")
    print(f"machine: {host['cpus']} CPUs, {host['cpu_model']}, Linux {host['kernel']}")
    print(f"source: {host['source']}")
    shown = ("python", "flask", "gunicorn", "fastapi", "uvicorn", "opentelemetry-sdk")
    print("versions: " + ", ".join(f"{n} {found['versions'].get(n, '?')}" for n in shown))
    print(
        f"settings: GET {args.path}, {args.rounds} rounds (new servers each) of "
        f"{args.warmup} + {args.cycles} cycles, one request per server per cycle, rotated; "
        "servers on core 0, client on core 1"
    )
    print(
        "columns: n = paired requests; CPU µs per request, mean over them; extra = mean of "
        "the per-cycle differences to bare, ± its 95 % interval; median = median of the "
        f"differences (exports left out); rounds = mean of each round's extra %, ± its 95 % "
        f"t interval over rounds (new processes each); {NOISE} = a second bare server, "
        "the noise floor"
    )
    print()
    print(
        f"{'framework':<8} {'config':<22} {'n':>6} {'bare µs':>8} {'µs':>8} "
        f"{'extra µs':>15} {'extra CPU':>16} {'median µs':>9} {'rounds':>16}"
    )
    print("-" * 109)
    for framework, costs in results.items():
        print("\n".join(table(framework, costs)))
    if args.json:
        args.json.write_text(
            json.dumps(
                {"args": vars(args) | {"json": str(args.json)}, "found": found, "costs": results}
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
