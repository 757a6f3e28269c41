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
    env.update({"APPVITALS_DEMO_SECONDS": "2", "APPVITALS_JSONL_DIR": str(tmp_path / "data")})
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
    assert "GET /orders/<int:order_id>" in result.stdout, "the Flask service was called"
    assert '"status":"healthy"' in result.stdout
    assert "http_server_request_duration_seconds_count{" in result.stdout
    spans = read_spans(tmp_path / "data")
    assert {"order.process", "database.query", "payment.charge", "GET /fail"} <= {
        s.name for s in spans
    }
    names = {p.name for p in read_metrics(tmp_path / "data")}
    assert {"demo.orders", "demo.basket.size", "demo.payment.duration", "demo.uptime"} <= names
    assert {"http.server.request.duration", "http.server.active_requests"} <= names
    logs = read_logs(tmp_path / "data")
    assert logs
    ours = [log for log in logs if log.scope in ("demo.orders", "example.flask")]
    assert ours
    assert all(log.trace_id for log in ours), "every application log line is linked to its trace"
    served = [log for log in logs if log.scope == "example.flask"]
    assert all(log.attributes["correlation_id"].startswith("demo-") for log in served)


def test_heartbeat_service_emits_seed_004_signals(tmp_path: Path) -> None:
    """Run for a few seconds, the heartbeat example exports every metric and span of seed 004."""
    from appvitals.prometheus import metric_name

    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "APPVITALS_"))}
    env.update(
        {
            "HEARTBEAT_DEMO_SECONDS": "3",
            "HEARTBEAT_PORT": "0",
            "APPVITALS_EXPORTER": "jsonl",
            "APPVITALS_JSONL_DIR": str(tmp_path / "data"),
        }
    )
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "heartbeat_service.py")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    spans = {s.name for s in read_spans(tmp_path / "data")}
    assert {
        "heartbeat.process",
        "database.query",
        "alert.send",
        "application.check_status",
    } <= spans
    points = read_metrics(tmp_path / "data")
    prometheus_names = {
        metric_name(
            p.name, p.unit, {"sum": "counter", "histogram": "histogram"}.get(p.kind, "gauge")
        )
        for p in points
        if not (p.kind == "sum" and not p.is_monotonic)
    } | {metric_name(p.name, p.unit) for p in points if p.kind == "sum" and not p.is_monotonic}
    assert {
        "heartbeat_received_total",
        "heartbeat_processing_duration_seconds",
        "application_overdue_count",
        "alert_sent_total",
        "database_connection_pool_size",
        "background_service_health",
    } <= prometheus_names
    overdue = [p.value for p in points if p.name == "application.overdue.count"]
    assert max(overdue) >= 1, "the application that went quiet was reported overdue"
