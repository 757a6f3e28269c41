"""The paired benchmark (benchmarks/paired.py): per-request CPU readings and their pairing.

What it measures is CPU time, which tests must not assert; what it computes from its
readings, and that one short run against real servers produces its table, is checked here.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from bench_modules import load_benchmark

paired = load_benchmark("paired.py", "appvitals_bench_paired")


def test_the_extra_is_the_mean_of_the_per_cycle_differences() -> None:
    bare = [0.001, 0.002, 0.003, 0.002]
    other = [0.0011, 0.0021, 0.0036, 0.0021]  # +100, +100, +600, +100 µs
    row = paired.paired(bare, other)
    assert row["n"] == 4
    assert row["extra_us"] == pytest.approx(225.0)  # the mean: the one expensive request counts
    assert row["median_extra_us"] == pytest.approx(100.0)
    assert row["extra_pct"] == pytest.approx(100 * 225e-6 / 0.002)
    assert row["ci_us"] == pytest.approx(1.96 * 250.0 / math.sqrt(4))  # stdev of the differences
    assert row["ci_pct"] == pytest.approx(100 * row["ci_us"] * 1e-6 / 0.002)


def test_the_rounds_column_is_a_t_interval_over_the_rounds_extras() -> None:
    """Each round is one draw of process layouts: its extra % is one sample."""
    mean, half = paired.over_rounds([1.0, 2.0, 3.0])
    assert mean == pytest.approx(2.0)
    assert half == pytest.approx(4.303 * 1.0 / math.sqrt(3))  # t(0.975, 2 df) * stdev / sqrt(n)
    assert math.isnan(paired.over_rounds([1.5])[1])
    # Past the table, the normal quantile.
    assert paired.over_rounds([1.0, 3.0] * 20)[1] == pytest.approx(
        1.96 * paired.statistics.stdev([1.0, 3.0] * 20) / math.sqrt(40)
    )


def test_the_table_pools_requests_and_keeps_rounds_apart() -> None:
    """Two rounds of +10 % and +30 %: the pooled extra and the rounds' mean both say +20 %."""
    costs = {
        "bare": [[0.001, 0.001], [0.001, 0.001]],
        "appvitals": [[0.0011, 0.0011], [0.0013, 0.0013]],
    }
    (line,) = paired.table("flask", costs)
    fields = line.split()
    assert fields[:3] == ["flask", "appvitals", "4"]
    assert fields[7] == "+20.00"  # pooled over every request
    assert fields[-3:] == [
        "+20.00",
        "%",
        f"±{12.706 * paired.statistics.stdev([10, 30]) / math.sqrt(2):.2f}",
    ]


def test_a_request_costs_the_difference_of_the_readings_around_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Readings are taken just before each request; the cost lands on the request before.

    Each fake server's CPU clock advances by its own cost per request it serves, plus an
    amount after the response (an export at the end of a request) that must count too.
    """
    per_request = {"bare": 0.004, "appvitals": 0.005, "bare-again": 0.004}
    after_response = {"bare": 0.0, "appvitals": 0.0002, "bare-again": 0.0}
    clocks = dict.fromkeys(per_request, 0.0)
    order: list[str] = []

    class FakeServer:
        def __init__(self, label: str) -> None:
            self.port = label
            self.framework = "flask"

    def fake_request(port: str, path: str) -> int:
        assert path == "/work"
        order.append(port)
        clocks[port] += per_request[port] + after_response[port]
        return 200

    monkeypatch.setattr(paired, "request", fake_request)
    monkeypatch.setattr(paired, "cpu_seconds", lambda pids: clocks[pids[0]])
    servers = {label: FakeServer(label) for label in per_request}
    costs = paired.cycles(servers, "/work", 5, {label: [label] for label in per_request})

    assert {label: len(values) for label, values in costs.items()} == dict.fromkeys(per_request, 5)
    for label, values in costs.items():
        assert values == pytest.approx([per_request[label] + after_response[label]] * 5)
    # Rotated: every server goes first once in a while, never always after the same one.
    firsts = [order[i * 3] for i in range(5)]
    assert set(firsts) == set(per_request)


def test_a_failed_request_stops_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    class FakeServer:
        port, framework = "bare", "flask"

    monkeypatch.setattr(paired, "request", lambda port, path: 500)
    monkeypatch.setattr(paired, "cpu_seconds", lambda pids: 0.0)
    with pytest.raises(RuntimeError, match="answered 500"):
        paired.cycles({"bare": FakeServer()}, "/work", 2, {"bare": [1]})


def test_bare_is_always_measured_and_bad_settings_are_refused() -> None:
    args = paired.parse_args(["--configs", "appvitals", "--frameworks", "fastapi"])
    assert args.configs == ["bare", "appvitals"]
    assert args.frameworks == ["fastapi"]
    with pytest.raises(SystemExit):
        paired.parse_args(["--frameworks", "django"])
    with pytest.raises(SystemExit):
        paired.parse_args(["--cycles", "1"])


@pytest.mark.skipif(
    shutil.which("taskset") is None or not Path("/proc/self/task").is_dir(),
    reason="needs Linux /proc and taskset",
)
def test_one_short_run_against_real_servers_prints_its_table(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Real gunicorn servers answer /fast; the table has one row per configuration but bare."""
    assert (
        paired.main(
            [
                "--frameworks",
                "flask",
                "--configs",
                "bare,appvitals",
                "--path",
                "/fast",
                "--rounds",
                "1",
                "--cycles",
                "3",
                "--warmup",
                "1",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith("flask ")]
    assert [row[1] for row in rows] == ["appvitals", "bare-again"]
    assert all(row[2] == "3" for row in rows)  # three paired requests each
    assert "GET /fast, 1 rounds" in out
