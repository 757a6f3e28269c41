"""Load benchmark: appvitals side by side with a bare app, OpenTelemetry contrib, Sentry, ddtrace.

``.venv/bin/python benchmarks/load.py`` prints one table (``--quick`` for a ~2 minute smoke).

For each framework (Flask on gunicorn, one sync worker; FastAPI on uvicorn, one worker), each
configuration (``BENCH_CONFIG``, see ``apps/bench_common.py``) and each endpoint, the server
runs pinned to core 0 and ``wrk -t1 -c4`` pinned to core 1 drives it (a Python client when
wrk is missing). Measured per run: requests/s, the server's CPU time per request (user +
system time of the server and its workers, from ``/proc/<pid>/stat``, divided by the
requests served) and wrk's p50/p99 latency. Repetitions are interleaved — each repetition
starts every configuration afresh, in a rotated order — and the table shows medians and the
difference to ``bare``. Everything listens on 127.0.0.1 only; every run is bounded in time.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
APPS = HERE / "apps"
BIN = Path(sys.executable).parent
sys.path.insert(0, str(APPS))

from bench_common import CONFIGS, source_state  # noqa: E402 - lives next to the apps

FRAMEWORKS = ("flask", "fastapi")
ENDPOINTS = ("/fast", "/work", "/call")
CONNECTIONS = 4
SERVER_CORE, CLIENT_CORE = "0", "1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# What each configuration needs importable; a configuration whose package is missing is
# left out (and said so) rather than measured as something else.
REQUIRES = {
    "otel": {
        "flask": ("opentelemetry.instrumentation.flask", "opentelemetry.instrumentation.httpx"),
        "fastapi": (
            "opentelemetry.instrumentation.fastapi",
            "opentelemetry.instrumentation.httpx",
        ),
    },
    "sentry": {"flask": ("sentry_sdk",), "fastapi": ("sentry_sdk",)},
    "ddtrace": {"flask": ("ddtrace",), "fastapi": ("ddtrace",)},
}
PACKAGES = (
    "appvitals",
    "flask",
    "werkzeug",
    "gunicorn",
    "fastapi",
    "starlette",
    "uvicorn",
    "h11",
    "httpx",
    "opentelemetry-api",
    "opentelemetry-sdk",
    "opentelemetry-exporter-otlp-proto-http",
    "opentelemetry-instrumentation",
    "opentelemetry-instrumentation-flask",
    "opentelemetry-instrumentation-wsgi",
    "opentelemetry-instrumentation-fastapi",
    "opentelemetry-instrumentation-asgi",
    "opentelemetry-instrumentation-httpx",
    "sentry-sdk",
    "ddtrace",
)


def log(message: str) -> None:
    """Progress goes to stderr so that stdout holds only the report."""
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(core: str, command: list[str]) -> list[str]:
    """``taskset -c core command`` — taskset execs, so the PID stays the command's."""
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", core, *command]
    return command


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    installed = {
        (dist.metadata["Name"] or "").lower().replace("_", "-"): dist.version
        for dist in importlib.metadata.distributions()
    }
    for name in PACKAGES:
        found[name] = installed.get(name, "not installed")
    wrk = shutil.which("wrk")
    if wrk:
        # wrk -v prints its version on the first line and exits 1.
        result = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
        found["wrk"] = (result.stdout or result.stderr).split("Copyright")[0].strip()
    else:
        found["wrk"] = "not installed (Python client used)"
    return found


def machine() -> dict[str, str]:
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": str(os.cpu_count()),
        "cpu_model": model,
        "kernel": platform.release(),
        "source": source_state(),
    }


# --- process CPU time ------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces; everything after its ")" is split.
    return raw[raw.rindex(")") + 2 :].split()


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants (gunicorn master and worker)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of ``pids`` (all their threads included)."""
    ticks = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            # After the command name: state=0, ppid=1, ... utime=11, stime=12.
            ticks += int(fields[11]) + int(fields[12])
    return ticks / CLOCK_TICKS


# --- servers ---------------------------------------------------------------------------


class Server:
    """One benchmark app in its server, pinned to the server core; stopped by its PID."""

    def __init__(self, framework: str, config: str, sink: str, upstream: str) -> None:
        self.framework = framework
        self.config = config
        self.port = free_port()
        bind = f"127.0.0.1:{self.port}"
        if framework == "flask":
            command = [
                str(BIN / "gunicorn"),
                "--workers=1",
                "--worker-class=sync",
                "--no-control-socket",  # gunicorn 27's default socket is shared per user
                "--log-level=warning",
                f"--chdir={APPS}",
                f"--bind={bind}",
                "flask_app:app",
            ]
        else:
            command = [
                str(BIN / "uvicorn"),
                f"--app-dir={APPS}",
                "--host=127.0.0.1",
                f"--port={self.port}",
                "--workers=1",
                "--no-access-log",  # as gunicorn's default: measure instrumentation, not logs
                "--log-level=warning",
                "fastapi_app:app",
            ]
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("OTEL_", "APPVITALS_", "DD_", "SENTRY_", "BENCH_"))
        }
        env.update(BENCH_CONFIG=config, BENCH_SINK=sink, BENCH_UPSTREAM=upstream)
        self.log_path = Path(f"/tmp/appvitals-bench-{framework}-{config}-{self.port}.log")
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            pinned(SERVER_CORE, command), env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            with contextlib.suppress(OSError, http.client.HTTPException):
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                connection.request("GET", "/fast")
                if connection.getresponse().status == 200:
                    return
            time.sleep(0.2)
        tail = self.log_path.read_text(errors="replace")[-2000:]
        self.stop()
        msg = f"{self.framework}/{self.config} did not start:\n{tail}"
        raise RuntimeError(msg)

    def pids(self) -> list[int]:
        return process_tree(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self._log.close()


class Sink:
    """benchmarks/sink.py (null sink + upstream) in its own process, on the client core."""

    def __init__(self, max_seconds: float) -> None:
        self.sink_port, self.upstream_port = free_port(), free_port()
        self.process = subprocess.Popen(
            pinned(
                CLIENT_CORE,
                [
                    sys.executable,
                    str(HERE / "sink.py"),
                    f"--sink-port={self.sink_port}",
                    f"--upstream-port={self.upstream_port}",
                    f"--max-seconds={max_seconds:.0f}",
                ],
            ),
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.process.stdout.readline()  # "sink http://... upstream http://..." once bound
        self.url = f"http://127.0.0.1:{self.sink_port}"
        self.upstream = f"http://127.0.0.1:{self.upstream_port}/"

    def pids(self) -> list[int]:
        return process_tree(self.process.pid)

    def received(self) -> dict[str, int]:
        connection = http.client.HTTPConnection("127.0.0.1", self.sink_port, timeout=5)
        connection.request("GET", "/_stats")
        return dict(json.loads(connection.getresponse().read()))

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


# --- load generation -------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        msg = f"unexpected wrk latency {text!r}"
        raise ValueError(msg)
    return float(match.group(1)) * _UNITS[match.group(2)]


def run_wrk(url: str, duration: float) -> dict[str, Any]:
    command = pinned(
        CLIENT_CORE,
        ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{max(1, round(duration))}s", "--latency", url],
    )
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=duration + 30, check=False
    )
    out = result.stdout
    requests = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    if result.returncode != 0 or requests is None:
        msg = f"wrk failed ({result.returncode}): {out}{result.stderr}"
        raise RuntimeError(msg)
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.MULTILINE))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    elapsed = _ms(requests.group(2) + requests.group(3)) / 1000
    count = int(requests.group(1))
    return {
        "requests": count,
        "seconds": elapsed,
        "rps": count / elapsed,
        "p50_ms": _ms(latency["50"]),
        "p99_ms": _ms(latency["99"]),
        "errors": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else "",
    }


def run_python_client(url: str, duration: float) -> dict[str, Any]:
    """The fallback when wrk is missing: CONNECTIONS keep-alive threads for ``duration`` s.

    Slower than wrk (one GIL drives every connection), so it can limit requests/s on the
    fastest endpoints; CPU µs per request, measured on the server, stays comparable.
    """
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {int(CLIENT_CORE)})  # threads created below inherit it
    host, _, rest = url.removeprefix("http://").partition("/")
    address, port = host.split(":")
    path = "/" + rest
    latencies: list[list[float]] = [[] for _ in range(CONNECTIONS)]
    errors = [0] * CONNECTIONS
    deadline = time.monotonic() + duration

    def drive(index: int) -> None:
        connection = http.client.HTTPConnection(address, int(port), timeout=10)
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                connection.request("GET", path)
                response = connection.getresponse()
                response.read()
                if response.status != 200:
                    errors[index] += 1
                if response.will_close:
                    connection.close()
            except (OSError, http.client.HTTPException):
                errors[index] += 1
                connection.close()
            latencies[index].append((time.perf_counter() - started) * 1000)

    started = time.monotonic()
    threads = [threading.Thread(target=drive, args=(index,)) for index in range(CONNECTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(duration + 30)
    elapsed = time.monotonic() - started
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    every = sorted(value for values in latencies for value in values)
    if not every:
        msg = f"no request to {url} completed"
        raise RuntimeError(msg)
    return {
        "requests": len(every),
        "seconds": elapsed,
        "rps": len(every) / elapsed,
        "p50_ms": every[len(every) // 2],
        "p99_ms": every[min(len(every) - 1, int(len(every) * 0.99))],
        "errors": sum(errors),
        "socket_errors": "",
    }


def drive(url: str, duration: float) -> dict[str, Any]:
    return run_wrk(url, duration) if shutil.which("wrk") else run_python_client(url, duration)


def machine_busy_seconds() -> float:
    """CPU time every process on the machine spent busy so far (``/proc/stat``)."""
    first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in first[1:9])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def own_seconds() -> float:
    """CPU time of this process and its waited-for children (wrk)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def measure_once(server: Server, url: str, duration: float, sink_pids: list[int]) -> dict[str, Any]:
    pids = server.pids()
    before = cpu_seconds(pids), cpu_seconds(sink_pids), own_seconds(), machine_busy_seconds()
    result = drive(url, duration)
    after = cpu_seconds(pids), cpu_seconds(sink_pids), own_seconds(), machine_busy_seconds()
    server_s, sink_s, own_s, busy_s = (a - b for a, b in zip(after, before, strict=True))
    result["cpu_s"] = server_s
    result["cpu_us_per_request"] = server_s * 1e6 / max(1, result["requests"])
    result["cpu_utilisation"] = server_s / result["seconds"]
    # Whatever else ran on the machine meanwhile (other users' tests on a shared box), in
    # cores: it competes for the caches and, on the server's core, for the CPU itself.
    result["other_cores"] = max(0.0, busy_s - server_s - sink_s - own_s) / result["seconds"]
    return result


def measure(
    server: Server, endpoint: str, args: argparse.Namespace, sink_pids: list[int]
) -> dict[str, Any]:
    """One sample; measured again (at most ``--attempts`` times) while others load the box."""
    url = f"http://127.0.0.1:{server.port}{endpoint}"
    best: dict[str, Any] | None = None
    for attempt in range(1, args.attempts + 1):
        if args.warmup > 0:
            drive(url, args.warmup)
        sample = measure_once(server, url, args.duration, sink_pids)
        sample["attempts"] = attempt
        if best is None or sample["other_cores"] < best["other_cores"]:
            best = sample
        if sample["other_cores"] <= args.max_other or attempt == args.attempts:
            break
        log(f"    other processes used {sample['other_cores']:.2f} cores: measuring again")
        time.sleep(3)
    assert best is not None
    return best


# --- report ----------------------------------------------------------------------------


def median(samples: list[dict[str, Any]], key: str) -> float:
    return statistics.median(sample[key] for sample in samples)


def summarise(
    results: dict[tuple[str, str, str], list[dict[str, Any]]],
    frameworks: list[str],
    endpoints: list[str],
    configs: list[str],
) -> list[dict[str, Any]]:
    rows = []
    for framework in frameworks:
        for endpoint in endpoints:
            bare = results.get((framework, endpoint, "bare"))
            for config in configs:
                samples = results.get((framework, endpoint, config))
                if not samples:
                    continue
                cpus = [sample["cpu_us_per_request"] for sample in samples]
                row: dict[str, Any] = {
                    "framework": framework,
                    "endpoint": endpoint,
                    "config": config,
                    "runs": len(samples),
                    "rps": median(samples, "rps"),
                    "cpu_us": statistics.median(cpus),
                    "cpu_us_spread": max(cpus) - min(cpus),
                    "p50_ms": median(samples, "p50_ms"),
                    "p99_ms": median(samples, "p99_ms"),
                    "errors": sum(sample["errors"] for sample in samples),
                    "other_cores": median(samples, "other_cores"),
                }
                if bare and config != "bare":
                    bare_cpu = statistics.median(s["cpu_us_per_request"] for s in bare)
                    bare_rps = median(bare, "rps")
                    row["delta_cpu_us"] = row["cpu_us"] - bare_cpu
                    row["delta_cpu_pct"] = 100 * (row["cpu_us"] / bare_cpu - 1)
                    row["delta_rps_pct"] = 100 * (row["rps"] / bare_rps - 1)
                rows.append(row)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    header = (
        f"{'framework':<9} {'endpoint':<8} {'config':<13} {'req/s':>8} {'vs bare':>8} "
        f"{'CPU µs/req':>11} {'±':>5} {'vs bare':>14} {'p50 ms':>7} {'p99 ms':>7} {'others':>6}"
    )
    lines = [header, "-" * len(header)]
    previous = None
    for row in rows:
        group = (row["framework"], row["endpoint"])
        if previous is not None and group != previous:
            lines.append("")
        previous = group
        if "delta_cpu_us" in row:
            rps_delta = f"{row['delta_rps_pct']:+.1f} %"
            cpu_delta = f"{row['delta_cpu_us']:+.0f} µs ({row['delta_cpu_pct']:+.0f}%)"
        else:
            rps_delta = cpu_delta = ""
        errors = f"  {row['errors']} errors" if row["errors"] else ""
        lines.append(
            f"{row['framework']:<9} {row['endpoint']:<8} {row['config']:<13} "
            f"{row['rps']:>8.0f} {rps_delta:>8} {row['cpu_us']:>11.0f} "
            f"{row['cpu_us_spread'] / 2:>5.0f} {cpu_delta:>14} "
            f"{row['p50_ms']:>7.2f} {row['p99_ms']:>7.2f} {row['other_cores']:>6.2f}{errors}"
        )
    return "\n".join(lines)


# --- main ------------------------------------------------------------------------------


def available(framework: str, config: str) -> str | None:
    """Why ``config`` cannot run here, or None."""
    for module in REQUIRES.get(config, {}).get(framework, ()):
        if importlib.util.find_spec(module.split(".")[0]) is None or (
            "." in module and importlib.util.find_spec(module) is None
        ):
            return f"{module} is not installed (pip install -r benchmarks/requirements.txt)"
    return None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, help="seconds measured per run (default 5)")
    parser.add_argument("--warmup", type=float, help="seconds of load before each run (1)")
    parser.add_argument("--repetitions", type=int, help="interleaved repetitions (default 3)")
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS), help="comma-separated")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated")
    parser.add_argument("--endpoints", default=",".join(ENDPOINTS), help="comma-separated")
    parser.add_argument("--json", type=Path, help="also write every sample to this file")
    parser.add_argument(
        "--max-other",
        type=float,
        default=0.15,
        help="measure again when other processes used more cores than this (0.15)",
    )
    parser.add_argument("--attempts", type=int, default=3, help="at most this many tries (3)")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 2 s runs, 1 repetition (~2 minutes)"
    )
    args = parser.parse_args(argv)
    quick = args.quick
    args.duration = args.duration or (2.0 if quick else 5.0)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if quick else 1.0)
    args.repetitions = args.repetitions or (1 if quick else 3)
    args.frameworks = [name for name in args.frameworks.split(",") if name]
    args.configs = [name for name in args.configs.split(",") if name]
    args.endpoints = [
        name if name.startswith("/") else "/" + name for name in args.endpoints.split(",") if name
    ]
    for name in args.frameworks:
        if name not in FRAMEWORKS:
            parser.error(f"unknown framework {name!r}; expected {', '.join(FRAMEWORKS)}")
    for name in args.configs:
        if name not in CONFIGS:
            parser.error(f"unknown config {name!r}; expected {', '.join(CONFIGS)}")
    for name in args.endpoints:
        if name not in ENDPOINTS:
            parser.error(f"unknown endpoint {name!r}; expected {', '.join(ENDPOINTS)}")
    if "bare" not in args.configs:
        args.configs.insert(0, "bare")  # every difference is taken against bare
    return args


def make_plan(args: argparse.Namespace) -> tuple[dict[str, list[str]], list[str]]:
    """The configurations to run per framework, and those left out with the reason."""
    plan: dict[str, list[str]] = {}
    skipped: list[str] = []
    for framework in args.frameworks:
        plan[framework] = []
        for config in args.configs:
            reason = available(framework, config)
            if reason is None:
                plan[framework].append(config)
            else:
                skipped.append(f"{framework}/{config}: {reason}")
    return plan, skipped


Results = dict[tuple[str, str, str], list[dict[str, Any]]]


def run_all(
    args: argparse.Namespace, plan: dict[str, list[str]], sink: Sink
) -> tuple[Results, dict[str, dict[str, int]]]:
    """Every repetition, framework, configuration and endpoint, interleaved."""
    results: Results = {}
    received: dict[str, dict[str, int]] = {}
    started = time.monotonic()
    for repetition in range(args.repetitions):
        frameworks = args.frameworks if repetition % 2 == 0 else args.frameworks[::-1]
        for framework in frameworks:
            configs = plan[framework]
            # Rotated so that no configuration always runs first or right after another.
            shift = repetition % max(1, len(configs))
            for config in configs[shift:] + configs[:shift]:
                before = sink.received()
                server = Server(framework, config, sink.url, sink.upstream)
                try:
                    server.wait_ready()
                    for endpoint in args.endpoints:
                        sample = measure(server, endpoint, args, sink.pids())
                        sample["repetition"] = repetition
                        results.setdefault((framework, endpoint, config), []).append(sample)
                        log(
                            f"[{time.monotonic() - started:5.0f} s] rep {repetition + 1} "
                            f"{framework:<7} {config:<12} {endpoint:<5} "
                            f"{sample['rps']:7.0f} req/s {sample['cpu_us_per_request']:6.0f} "
                            f"µs/req, server CPU {sample['cpu_utilisation']:.0%}, "
                            f"others {sample['other_cores']:.2f} cores"
                        )
                finally:
                    server.stop()
                counts = received.setdefault(f"{framework}/{config}", {})
                for key, value in sink.received().items():
                    delta = value - before.get(key, 0)
                    if delta:
                        counts[key] = counts.get(key, 0) + delta
    return results, received


def report(
    args: argparse.Namespace,
    rows: list[dict[str, Any]],
    received: dict[str, dict[str, int]],
    skipped: list[str],
    found: dict[str, dict[str, str]],
) -> None:
    host = found["machine"]
    print("appvitals load benchmark")
    print(f"machine: {host['cpus']} CPUs, {host['cpu_model']}, Linux {host['kernel']}")
    print(f"source: {host['source']}")
    print(
        "versions: " + ", ".join(f"{name} {version}" for name, version in found["versions"].items())
    )
    print(
        f"settings: {args.duration:g} s per run after {args.warmup:g} s warm-up, "
        f"{args.repetitions} interleaved repetitions, {CONNECTIONS} connections; server on "
        f"core {SERVER_CORE}, load generator on core {CLIENT_CORE}"
    )
    print(
        "columns: medians over repetitions; CPU µs/req = server user+system CPU / requests "
        "(± half the range over repetitions); vs bare = difference to the bare app; "
        "others = cores used by other processes on the machine during the run"
    )
    print()
    print(table(rows))
    print()
    print("telemetry received by the null sink (requests, all repetitions):")
    for name, counts in received.items():
        shown = ", ".join(f"{key} x{value}" for key, value in sorted(counts.items())) or "none"
        print(f"  {name:<20} {shown}")
    for line in skipped:
        print(f"skipped {line}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    found = {"machine": machine(), "versions": versions()}
    plan, skipped = make_plan(args)
    runs = sum(len(configs) for configs in plan.values()) * args.repetitions
    estimate = runs * (len(args.endpoints) * (args.duration + args.warmup) + 3)
    log(f"{runs} server starts, about {estimate / 60:.0f} minutes")
    sink = Sink(max_seconds=estimate * 2 + 600)
    try:
        results, received = run_all(args, plan, sink)
    finally:
        sink.stop()
    rows = summarise(results, args.frameworks, args.endpoints, args.configs)
    report(args, rows, received, skipped, found)
    if args.json:
        document = {
            **found,
            "settings": {
                "duration": args.duration,
                "warmup": args.warmup,
                "repetitions": args.repetitions,
                "connections": CONNECTIONS,
            },
            "summary": rows,
            "samples": [
                {"framework": f, "endpoint": e, "config": c, **sample}
                for (f, e, c), samples in results.items()
                for sample in samples
            ],
            "received": received,
            "skipped": skipped,
        }
        args.json.write_text(json.dumps(document, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
