"""The examples run: `make demo`'s script produces all three signals and a summary."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from appvitals.testing import read_logs, read_metrics, read_spans

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_demo_emits_and_summarises(tmp_path: Path) -> None:
    """The demo exports spans, metrics and logs to jsonl and prints the summary."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "APPVITALS_"))}
    env.update({"APPVITALS_DEMO_SECONDS": "1", "APPVITALS_JSONL_DIR": str(tmp_path / "data")})
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "demo.py")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Slowest spans:" in result.stdout
    assert "PaymentDeclinedError" in result.stdout
    spans = read_spans(tmp_path / "data")
    assert {"order.process", "database.query", "payment.charge"} <= {s.name for s in spans}
    names = {p.name for p in read_metrics(tmp_path / "data")}
    assert {"demo.orders", "demo.basket.size", "demo.payment.duration", "demo.uptime"} <= names
    logs = read_logs(tmp_path / "data")
    assert logs
    assert all(log.trace_id for log in logs), "every log line is linked to its trace"
