"""The examples run: the demo, the heartbeat service, and gunicorn with the example config."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from appvitals.testing import read_logs, read_metrics, read_spans
from example_runner import run_example

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_demo_emits_and_summarises(tmp_path: Path) -> None:
    """The demo exports spans, metrics and logs to jsonl and prints the summary."""
    result = run_example(
        "demo.py",
        tmp_path,
        APPVITALS_DEMO_SECONDS="2",
        APPVITALS_JSONL_DIR=str(tmp_path / "data"),
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

    result = run_example(
        "heartbeat_service.py",
        tmp_path,
        HEARTBEAT_DEMO_SECONDS="3",
        HEARTBEAT_PORT="0",
        APPVITALS_EXPORTER="jsonl",
        APPVITALS_JSONL_DIR=str(tmp_path / "data"),
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


def _example_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "APPVITALS_"))}
    env.update({"APPVITALS_EXPORTER": "jsonl", "APPVITALS_JSONL_DIR": str(tmp_path / "data")})
    return env


def _gunicorn(*arguments: str) -> list[str]:
    config = str(EXAMPLES / "gunicorn.conf.py")
    return [sys.executable, "-m", "gunicorn", "-c", config, "--chdir", str(EXAMPLES), *arguments]


def test_gunicorn_conf_passes_check_config(tmp_path: Path) -> None:
    """`gunicorn --check-config -c examples/gunicorn.conf.py` loads the config and the app."""
    result = subprocess.run(
        _gunicorn("--check-config", "flask_app:app"),
        env=_example_env(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_gunicorn_conf_serves_and_stops(tmp_path: Path) -> None:
    """Under the example config gunicorn serves a request; its hooks manage /metrics' folder."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    metrics_dir = tmp_path / "metrics"
    env = _example_env(tmp_path)
    env["APPVITALS_PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)  # on_starting creates it
    env["GUNICORN_WORKERS"] = "1"
    process = subprocess.Popen(
        _gunicorn("-b", f"127.0.0.1:{port}", "flask_app:app"),
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        body = _get_when_up(f"http://127.0.0.1:{port}/orders/7", deadline=time.monotonic() + 30)
        assert json.loads(body)["id"] == 7
        metrics = _get_when_up(f"http://127.0.0.1:{port}/metrics", deadline=time.monotonic() + 5)
        assert 'http_server_request_duration_seconds_count{http_request_method="GET"' in metrics
        assert list(metrics_dir.glob("appvitals-[0-9]*.json")), "the worker writes its snapshot"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            _, log = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise
    assert process.returncode == 0, log
    assert f"/metrics of every worker in {metrics_dir}" in log
    # child_exit folded the stopped worker into appvitals-dead.json and removed its snapshot.
    assert (metrics_dir / "appvitals-dead.json").exists()
    assert not list(metrics_dir.glob("appvitals-[0-9]*.json"))


def _get_when_up(url: str, deadline: float) -> str:
    """GET ``url``, retrying while gunicorn boots (connection refused) until ``deadline``."""
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return str(response.read().decode())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
