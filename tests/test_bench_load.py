"""The load benchmark's arithmetic (benchmarks/load.py): CPU readings and paired differences.

The benchmark itself takes minutes and measures wall-clock CPU, which tests must not assert;
what it computes from its samples is checked here.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from bench_modules import load_benchmark

load = load_benchmark("load.py", "appvitals_bench_load")


def sample(round_: int, cpu_us: float, rps: float = 100.0) -> dict[str, Any]:
    return {
        "round": round_,
        "cpu_us_per_request": cpu_us,
        "rps": rps,
        "p50_ms": 1.0,
        "p99_ms": 2.0,
        "errors": 0,
        "other_cores": 0.0,
    }


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_cpu_seconds_counts_every_thread_to_the_nanosecond() -> None:
    """Another thread's busy loop shows up in the process's reading, below one clock tick."""
    burned: list[float] = []
    done, release = threading.Event(), threading.Event()

    def burn() -> None:
        started = time.thread_time()
        while time.thread_time() - started < 0.004:  # under one 10 ms clock tick
            pass
        burned.append(time.thread_time() - started)
        done.set()
        release.wait(10)  # stay alive: a thread that ended is no longer in /proc

    before = load.cpu_seconds([os.getpid()])
    worker = threading.Thread(target=burn)
    worker.start()
    try:
        assert done.wait(10)
        used = load.cpu_seconds([os.getpid()]) - before
    finally:
        release.set()
        worker.join()
    assert used >= burned[0] > 0.003
    assert used < 5.0
    assert load.cpu_seconds([2**22 + 12345]) == 0.0  # no such process: nothing, no error


def test_differences_are_paired_by_round() -> None:
    """Each configuration is compared with the bare burst of its own round.

    Round 1 ran on a slow machine (everything 20 % slower): unpaired medians would blur
    it, paired ratios keep the 5 % difference exact.
    """
    results = {
        ("flask", "/work", "bare"): [sample(0, 1000), sample(1, 1200), sample(2, 1000)],
        ("flask", "/work", "appvitals"): [sample(0, 1050), sample(1, 1260), sample(2, 1050)],
        ("flask", "/work", "bare-again"): [sample(0, 1010), sample(1, 1200), sample(2, 990)],
    }
    rows = load.summarise(results, ["flask"], ["/work"], ["bare", "appvitals", "bare-again"])
    by_config = {row["config"]: row for row in rows}
    assert "delta_cpu_pct" not in by_config["bare"]
    appvitals = by_config["appvitals"]
    assert appvitals["delta_cpu_pct"] == pytest.approx(5.0)
    assert appvitals["delta_pct_q1"] == pytest.approx(5.0)
    assert appvitals["delta_pct_q3"] == pytest.approx(5.0)
    assert appvitals["delta_cpu_us"] == pytest.approx(50)
    assert appvitals["cpu_us"] == 1050
    noise = by_config["bare-again"]
    assert noise["delta_cpu_pct"] == pytest.approx(0.0)
    assert noise["delta_pct_q1"] == pytest.approx(-0.5)
    assert noise["delta_pct_q3"] == pytest.approx(0.5)
    table = load.table(rows)
    assert "+5.0%" in table
    assert "+5.0..+5.0%" in table


def test_a_round_without_its_bare_burst_is_not_paired() -> None:
    results = {
        ("fastapi", "/fast", "bare"): [sample(0, 100)],
        ("fastapi", "/fast", "otel"): [sample(0, 150), sample(1, 999)],
    }
    (_, otel) = load.summarise(results, ["fastapi"], ["/fast"], ["bare", "otel"])
    assert otel["delta_cpu_pct"] == pytest.approx(50.0)
    assert otel["runs"] == 2


def test_quick_settings_and_bare_always_measured() -> None:
    args = load.parse_args(["--quick", "--configs", "appvitals", "--endpoints", "work"])
    assert args.configs == ["bare", "appvitals"]
    assert args.endpoints == ["/work"]
    assert (args.rounds, args.duration) == (2, 1.0)
    with pytest.raises(SystemExit):
        load.parse_args(["--configs", "newrelic"])


def test_a_server_whose_port_was_taken_is_started_again_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A port taken between free_port() and the bind costs a restart, not the whole run."""
    started: list[int] = []

    class FakeServer:
        def __init__(self, framework: str, config: str, sink: str, upstream: str, label: str):
            self.framework, self.config, self.label = framework, config, label
            started.append(len(started))
            self.attempt = started[-1]

        def wait_ready(self) -> None:
            if self.attempt < taken:
                raise load.PortTakenError("address already in use")

    class FakeSink:
        url, upstream = "http://sink", "http://upstream/"

    monkeypatch.setattr(load, "Server", FakeServer)
    taken = 2
    server = load.ready(FakeServer("flask", "bare", "", "", "bare"), FakeSink())
    assert (server.attempt, len(started)) == (2, 3)
    started.clear()
    taken = 3
    with pytest.raises(load.PortTakenError):
        load.ready(FakeServer("flask", "bare", "", "", "bare"), FakeSink())
