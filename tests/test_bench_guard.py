"""The overhead guard (benchmarks/guard.py): its decision, and that it can pass and fail.

The end-to-end test runs the guard in subprocesses (it configures appvitals, which the
autouse fixture of conftest.py resets between tests in this process) in its cheap ``--quick``
mode: 20 requests per case under callgrind, about half a minute per run.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

GUARD = Path(__file__).resolve().parent.parent / "benchmarks" / "guard.py"


def _load_guard() -> ModuleType:
    spec = importlib.util.spec_from_file_location("appvitals_bench_guard", GUARD)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


guard = _load_guard()


def test_overhead_and_noise_are_relative_to_bare() -> None:
    row = guard.Row("flask", bare=50_000_000, instrumented=50_750_000, bare_again=50_010_000)
    assert row.extra == 750_000
    assert row.overhead_pct == pytest.approx(1.5)
    assert row.noise_pct == pytest.approx(0.02)
    assert guard.Row("flask", bare=100, instrumented=100).noise_pct is None


@pytest.mark.parametrize(
    ("instrumented", "expected"),
    [
        (50_000_000, True),  # no overhead
        (49_000_000, True),  # faster than bare (noise) passes
        (51_000_000, True),  # exactly the budget passes
        (51_000_001, False),  # one instruction over fails
        (60_000_000, False),
    ],
)
def test_passes_at_most_the_budget(instrumented: float, expected: bool) -> None:
    assert guard.passes(guard.Row("flask", 50_000_000, instrumented), 2.0) is expected


def test_decide_fails_when_any_framework_is_over_budget() -> None:
    ok = guard.Row("flask", 100_000, 101_000)  # +1 %
    over = guard.Row("fastapi", 100_000, 102_500)  # +2.5 %
    assert guard.decide([ok], 2.0) == 0
    assert guard.decide([ok, over], 2.0) == 1
    assert guard.decide([over, ok], 2.0) == 1
    assert guard.decide([over], 3.0) == 0  # the budget is a parameter
    assert guard.decide([], 2.0) == 1  # nothing measured is not a pass


def test_render_marks_the_framework_over_budget() -> None:
    text = guard.render(
        [guard.Row("flask", 100_000, 101_000, 100_000), guard.Row("fastapi", 100_000, 103_000)]
    )
    flask_line, fastapi_line = text.splitlines()[2:]
    assert flask_line.startswith("flask")
    assert flask_line.endswith("ok")
    assert "+1.00%" in flask_line
    assert "0.000%" in flask_line
    assert fastapi_line.startswith("fastapi")
    assert fastapi_line.endswith("OVER BUDGET")
    assert "+3.00%" in fastapi_line


def _run_guard(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(GUARD), "--quick", *arguments],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("valgrind") is None,
    reason="valgrind is not installed: the guard counts instructions with callgrind",
)
def test_guard_passes_as_built_and_fails_when_slowed_down() -> None:
    passed = _run_guard()
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "PASS" in passed.stdout
    # 500 µs is about 15 % of a /work request: far over the 2 % budget, so one framework
    # and a few requests are enough to show the failure and keep the test short.
    failed = _run_guard("--slow-down-us", "500", "--frameworks", "flask", "--requests", "5")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "OVER BUDGET" in failed.stdout
    assert "FAIL" in failed.stdout
