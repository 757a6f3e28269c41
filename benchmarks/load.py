"""Load benchmark: appvitals side by side with a bare app, OpenTelemetry contrib, Sentry, ddtrace.

``.venv/bin/python benchmarks/load.py`` prints one table (``--quick`` for a ~3 minute smoke).

For each framework (Flask on gunicorn, one sync worker; FastAPI on uvicorn, one worker) every
configuration (``BENCH_CONFIG``, see ``apps/bench_common.py``) runs in its own server at the
same time, all pinned to core 0, plus a second bare server ("bare-again", the noise floor).
``wrk -t1 -c4`` pinned to core 1 (a Python client when wrk is missing) then drives one server
at a time in short bursts, round after round, in a rotated order: a configuration is always
compared with the bare app measured seconds earlier, so the slow drifts of a shared virtual
machine (steal time, neighbours) cancel out of the paired differences, and every round runs
in freshly started server processes, so no configuration keeps one process's lucky or
unlucky memory layout for the whole run. Measured per burst:
requests/s, the server's CPU time per request (the nanosecond run time of every thread of
the server and its workers, from ``/proc/<pid>/task/<tid>/schedstat``, divided by the
requests served) and wrk's p50/p99 latency. The table shows medians over the rounds and,
against bare, the median and interquartile range of the per-round differences. Everything
listens on 127.0.0.1 only; every run is bounded in time.
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

from bench_common import CONFIGS, KNOWN_CONFIGS, source_state  # noqa: E402 - lives next to the apps

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
    tree, pending = [], [root]
    while pending:
        pid = pending.pop()
        tree.append(pid)
        pending.extend(children.get(pid, ()))
    return tree


def cpu_seconds(pids: list[int]) -> float:
    """CPU time of ``pids``, all their threads included, to the nanosecond.

    ``/proc/<pid>/task/<tid>/schedstat`` starts with the time the thread has run, in
    nanoseconds; ``/proc/<pid>/stat`` counts clock ticks (10 ms), too coarse for a burst of
    a second. A thread that ended since the last reading is not counted.
    """
    nanoseconds = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    nanoseconds += int((task / "schedstat").read_text().split()[0])
    return nanoseconds / 1e9


# --- servers ---------------------------------------------------------------------------


class PortTakenError(RuntimeError):
    """The server could not bind the port :func:`free_port` had found free."""


class Server:
    """One benchmark app in its server, pinned to the server core; stopped by its PID."""

    def __init__(
        self, framework: str, config: str, sink: str, upstream: str, label: str | None = None
    ) -> None:
        self.framework = framework
        self.config = config
        self.label = label or config
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
        self.log_path = Path(f"/tmp/appvitals-bench-{framework}-{self.label}-{self.port}.log")
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
        if "in use" in tail:  # the free port was taken (by an outgoing connection) meanwhile
            raise PortTakenError(msg)
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
        if self.process.stdout is not None:
            self.process.stdout.close()


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
    """One burst of load on ``server``: requests/s, CPU per request, latencies."""
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


# --- report ----------------------------------------------------------------------------

NOISE = "bare-again"  # the second bare server: what "no difference" measures as


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """First quartile, median and third quartile (linear interpolation; one value: itself)."""
    if len(values) == 1:
        return values[0], values[0], values[0]
    first, _, third = statistics.quantiles(values, n=4, method="inclusive")
    return first, statistics.median(values), third


def summarise(
    results: dict[tuple[str, str, str], list[dict[str, Any]]],
    frameworks: list[str],
    endpoints: list[str],
    labels: list[str],
) -> list[dict[str, Any]]:
    """One row per framework, endpoint and configuration; differences paired by round."""
    rows = []
    for framework in frameworks:
        for endpoint in endpoints:
            bare = {s["round"]: s for s in results.get((framework, endpoint, "bare"), [])}
            for label in labels:
                samples = results.get((framework, endpoint, label))
                if not samples:
                    continue
                row: dict[str, Any] = {
                    "framework": framework,
                    "endpoint": endpoint,
                    "config": label,
                    "runs": len(samples),
                    "rps": statistics.median(s["rps"] for s in samples),
                    "cpu_us": statistics.median(s["cpu_us_per_request"] for s in samples),
                    "p50_ms": statistics.median(s["p50_ms"] for s in samples),
                    "p99_ms": statistics.median(s["p99_ms"] for s in samples),
                    "errors": sum(s["errors"] for s in samples),
                    "other_cores": statistics.median(s["other_cores"] for s in samples),
                }
                paired = [(s, bare[s["round"]]) for s in samples if s["round"] in bare]
                if label != "bare" and paired:
                    pct = [
                        100 * (s["cpu_us_per_request"] / b["cpu_us_per_request"] - 1)
                        for s, b in paired
                    ]
                    extra = [s["cpu_us_per_request"] - b["cpu_us_per_request"] for s, b in paired]
                    row["delta_pct_q1"], row["delta_cpu_pct"], row["delta_pct_q3"] = quartiles(pct)
                    row["delta_cpu_us"] = statistics.median(extra)
                    row["delta_rps_pct"] = statistics.median(
                        100 * (s["rps"] / b["rps"] - 1) for s, b in paired
                    )
                rows.append(row)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    header = (
        f"{'framework':<9} {'endpoint':<8} {'config':<13} {'req/s':>7} {'vs bare':>8} "
        f"{'CPU µs/req':>10} {'extra µs':>8} {'extra CPU':>9} {'IQR':>15} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'others':>6}"
    )
    lines = [header, "-" * len(header)]
    previous = None
    for row in rows:
        group = (row["framework"], row["endpoint"])
        if previous is not None and group != previous:
            lines.append("")
        previous = group
        if "delta_cpu_us" in row:
            rps_delta = f"{row['delta_rps_pct']:+.1f}%"
            extra_us = f"{row['delta_cpu_us']:+.0f}"
            extra_pct = f"{row['delta_cpu_pct']:+.1f}%"
            spread = f"{row['delta_pct_q1']:+.1f}..{row['delta_pct_q3']:+.1f}%"
        else:
            rps_delta = extra_us = extra_pct = spread = ""
        errors = f"  {row['errors']} errors" if row["errors"] else ""
        lines.append(
            f"{row['framework']:<9} {row['endpoint']:<8} {row['config']:<13} "
            f"{row['rps']:>7.0f} {rps_delta:>8} {row['cpu_us']:>10.0f} {extra_us:>8} "
            f"{extra_pct:>9} {spread:>15} "
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
    parser.add_argument("--duration", type=float, help="seconds measured per burst (default 2)")
    parser.add_argument("--warmup", type=float, help="seconds of load before each burst (0.5)")
    parser.add_argument("--rounds", type=int, help="bursts per configuration (default 7)")
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS), help="comma-separated")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated")
    parser.add_argument("--endpoints", default=",".join(ENDPOINTS), help="comma-separated")
    parser.add_argument("--json", type=Path, help="also write every sample to this file")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1 s bursts, 2 rounds (~3 minutes)"
    )
    args = parser.parse_args(argv)
    quick = args.quick
    args.duration = args.duration or (1.0 if quick else 2.0)
    args.warmup = args.warmup if args.warmup is not None else (0.3 if quick else 0.5)
    args.rounds = args.rounds or (2 if quick else 7)
    args.frameworks = [name for name in args.frameworks.split(",") if name]
    args.configs = [name for name in args.configs.split(",") if name]
    args.endpoints = [
        name if name.startswith("/") else "/" + name for name in args.endpoints.split(",") if name
    ]
    for name in args.frameworks:
        if name not in FRAMEWORKS:
            parser.error(f"unknown framework {name!r}; expected {', '.join(FRAMEWORKS)}")
    for name in args.configs:
        if name not in KNOWN_CONFIGS:
            parser.error(f"unknown config {name!r}; expected {', '.join(KNOWN_CONFIGS)}")
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


def ready(server: Server, sink: Sink, attempts: int = 3) -> Server:
    """``server`` once it answers, or a new one on another port if its port was taken.

    :func:`free_port` releases the port before the server binds it, and wrk's and the
    apps' outgoing connections draw their ports from the same range.
    """
    try:
        server.wait_ready()
    except PortTakenError:
        if attempts <= 1:
            raise
        log(f"{server.framework} {server.label}: port taken, starting it on another")
        again = Server(server.framework, server.config, sink.url, sink.upstream, server.label)
        return ready(again, sink, attempts - 1)
    return server


def start_servers(framework: str, labels: list[str], sink: Sink) -> dict[str, Server]:
    """One answering server per label (``bare-again`` runs bare); none left if one fails."""
    servers: dict[str, Server] = {}
    try:
        for label in labels:
            config = "bare" if label == NOISE else label
            servers[label] = Server(framework, config, sink.url, sink.upstream, label)
        for label in labels:
            servers[label] = ready(servers[label], sink)
    except BaseException:
        for server in servers.values():
            server.stop()
        raise
    return servers


def run_framework(
    framework: str, configs: list[str], args: argparse.Namespace, sink: Sink, results: Results
) -> dict[str, dict[str, int]]:
    """Every configuration of ``framework`` served at once, measured in rotated bursts.

    Every round starts fresh server processes: two processes of one app differ by a few per
    cent in CPU per request for as long as they live (their heap and address layouts, hash
    seeds), so a configuration measured in one process would carry that process's luck into
    every round. New processes per round turn it into round-to-round noise, which the
    median over rounds averages and the IQR shows.
    """
    labels = [*configs, NOISE]
    received: dict[str, dict[str, int]] = {}
    started = time.monotonic()
    before: dict[str, int] | None = None
    sink_pids = sink.pids()  # the sink never forks: read its process tree once
    for round_ in range(args.rounds):
        servers = start_servers(framework, labels, sink)
        try:
            if before is None:
                before = sink.received()
            shift = round_ % len(labels)  # no configuration always first or after another
            for endpoint in args.endpoints:
                for label in labels[shift:] + labels[:shift]:
                    server = servers[label]
                    url = f"http://127.0.0.1:{server.port}{endpoint}"
                    if args.warmup > 0:
                        drive(url, args.warmup)
                    sample = measure_once(server, url, args.duration, sink_pids)
                    sample["round"] = round_
                    results.setdefault((framework, endpoint, label), []).append(sample)
                    log(
                        f"[{time.monotonic() - started:5.0f} s] {framework:<7} {endpoint:<5} "
                        f"round {round_ + 1}/{args.rounds} {label:<12} {sample['rps']:7.0f} "
                        f"req/s {sample['cpu_us_per_request']:6.0f} µs/req, "
                        f"others {sample['other_cores']:.2f} cores"
                    )
        finally:
            for server in servers.values():
                server.stop()
    # The sink cannot tell the servers apart; what arrived is the framework's total.
    for key, value in sink.received().items():
        if before is not None and value - before.get(key, 0):
            received.setdefault(framework, {})[key] = value - before.get(key, 0)
    return received


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
        f"settings: every configuration served at once, in new server processes each "
        f"round, {args.rounds} rounds of "
        f"{args.duration:g} s bursts (after {args.warmup:g} s of warm-up load) per "
        f"configuration and endpoint, rotated; {CONNECTIONS} connections; servers on core "
        f"{SERVER_CORE}, load generator on core {CLIENT_CORE}"
    )
    print(
        "columns: medians over rounds; CPU µs/req = CPU time of the server's threads / "
        "requests; extra = paired difference to the bare burst of the same round (median, "
        f"and IQR = its interquartile range); {NOISE} = a second bare server, the noise "
        "floor; others = cores used by other processes during the burst"
    )
    print()
    print(table(rows))
    print()
    print("telemetry received by the null sink (requests, all configurations):")
    for name, counts in received.items():
        shown = ", ".join(f"{key} x{value}" for key, value in sorted(counts.items())) or "none"
        print(f"  {name:<8} {shown}")
    for line in skipped:
        print(f"skipped {line}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    found = {"machine": machine(), "versions": versions()}
    plan, skipped = make_plan(args)
    bursts = sum(len(configs) + 1 for configs in plan.values()) * len(args.endpoints)
    burst_seconds = args.duration + args.warmup + 0.3
    estimate = args.rounds * (bursts * burst_seconds + 8 * len(plan)) + 20  # 8 s: start-ups
    log(f"{bursts * args.rounds} bursts, about {estimate / 60:.0f} minutes")
    sink = Sink(max_seconds=estimate * 2 + 600)
    results: Results = {}
    received: dict[str, dict[str, int]] = {}
    try:
        for framework in args.frameworks:
            received.update(run_framework(framework, plan[framework], args, sink, results))
    finally:
        sink.stop()
    labels = [*args.configs, NOISE]
    rows = summarise(results, args.frameworks, args.endpoints, labels)
    report(args, rows, received, skipped, found)
    if args.json:
        document = {
            **found,
            "settings": {
                "duration": args.duration,
                "warmup": args.warmup,
                "rounds": args.rounds,
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
