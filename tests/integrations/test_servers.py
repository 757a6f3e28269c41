"""The examples under real servers: gunicorn -w 2 and uvicorn --workers 2 on 127.0.0.1.

Exporting to the real OTLP receiver: route templates, correlation ids from the client, the
echo, invalid ids replaced, health flipping to 503, and /metrics holding every worker's
requests. Debian's Prometheus scrapes /metrics and reports the target up.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

import pytest

from appvitals.testing import OTLPReceiver

pytestmark = pytest.mark.slow
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class Server:
    """A running example server and what it needs."""

    port: int
    process: subprocess.Popen[bytes]
    database: Path
    receiver: OTLPReceiver

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, Message, bytes]:
        """GET ``path``; the headers are case-insensitive (uvicorn sends lowercase names)."""
        request = urllib.request.Request(self.url(path), headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers, error.read()


def _start(kind: str, tmp_path: Path, receiver: OTLPReceiver) -> Iterator[Server]:
    database = tmp_path / "app.sqlite"
    sqlite3.connect(database).close()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "APPVITALS_"))}
    env.update(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.http_endpoint,
            "OTEL_SERVICE_NAME": f"{kind}-example",
            "OTEL_TRACES_SAMPLER": "always_on",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "OTEL_METRIC_EXPORT_INTERVAL": "500",
            "APPVITALS_HEALTH_INTERVAL": "0.3",
            "APPVITALS_PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"),
            "APPVITALS_PROMETHEUS_WRITE_INTERVAL": "0.2",
            "EXAMPLE_DATABASE": str(database),
        }
    )
    (tmp_path / "prom").mkdir()
    if kind == "flask":
        # examples/gunicorn.conf.py, as docs/flask.md runs it; --timeout 4: an idle worker
        # wakes every 2 s, when the conf's post_fork hook runs the due exports.
        command = [sys.executable, "-m", "gunicorn", "-w", "2", "--chdir", str(EXAMPLES)]
        command += ["-c", str(EXAMPLES / "gunicorn.conf.py"), "--timeout", "4"]
        command += ["-b", f"127.0.0.1:{port}", "flask_app:app"]
    else:
        command = [sys.executable, "-m", "uvicorn", "--workers", "2", "--app-dir", str(EXAMPLES)]
        command += ["--host", "127.0.0.1", "--port", str(port), "fastapi_app:app"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    server = Server(port, process, database, receiver)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if server.get("/health/live")[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


@pytest.fixture(params=["flask", "fastapi"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    """An example app under gunicorn -w 2 (Flask) or uvicorn --workers 2 (FastAPI)."""
    with OTLPReceiver() as receiver:
        yield from _start(request.param, tmp_path, receiver)


def _hit_both_workers(server: Server) -> tuple[set[int], int]:
    """Send requests from 4 threads until two worker pids answered; return them and the count."""
    pids: set[int] = set()
    sent = 0
    lock = threading.Lock()
    deadline = time.monotonic() + 30

    def client(number: int) -> None:
        nonlocal sent
        while time.monotonic() < deadline:
            with lock:
                if len(pids) >= 2 and sent >= 20:
                    return
                sent += 1
                cid = f"client-{number}-{sent}"
            status, headers, body = server.get(f"/orders/{sent}", {"X-Correlation-ID": cid})
            assert status == 200
            assert headers["X-Correlation-ID"] == cid
            payload = json.loads(body)
            assert payload["correlation_id"] == cid
            with lock:
                pids.add(payload["pid"])

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return pids, sent


def test_requests_traced_from_every_worker(server: Server) -> None:
    """Spans carry the route template and the client's correlation id, from both workers."""
    pids, sent = _hit_both_workers(server)
    assert len(pids) == 2
    template = {"/orders/<int:order_id>", "/orders/{order_id}"}

    def ours(span: object) -> bool:
        return getattr(span, "kind", 0) == 2 and span.attributes.get("http.route") in template  # type: ignore[attr-defined]

    spans = server.receiver.wait_for_spans(ours, count=sent, timeout=20)
    assert len(spans) >= sent
    assert all(s.attributes["correlation_id"].startswith("client-") for s in spans)
    assert {s.resource["process.pid"] for s in spans} == pids
    children = server.receiver.wait_for_spans(lambda s: s.name == "database.query", count=sent)
    assert {c.trace_id for c in children} <= {s.trace_id for s in spans}


def test_bad_correlation_ids_are_replaced(server: Server) -> None:
    """1,000 characters or a control character in the header: replaced, never echoed."""
    long_id = "a" * 1000
    status, headers, _ = server.get("/orders/1", {"X-Correlation-ID": long_id})
    assert status == 200
    assert headers["X-Correlation-ID"] != long_id
    assert len(headers["X-Correlation-ID"]) == 32
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(
            b"GET /orders/2 HTTP/1.1\r\nHost: x\r\nX-Correlation-ID: ab\x01cd\r\nConnection: close\r\n\r\n"
        )
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    head = response.split(b"\r\n\r\n", 1)[0].lower()
    assert b"ab\x01cd" not in head
    if head.startswith(b"http/1.1 200"):
        assert b"x-correlation-id: " in head


def test_health_flips_to_503_within_one_interval(server: Server) -> None:
    """Removing the database makes /health/ready 503 and /health/detailed name the error."""
    status, _, body = server.get("/health/ready")
    assert (status, json.loads(body)["services"]["database"]) == (200, "connected")
    server.database.unlink()
    deadline = time.monotonic() + 10
    statuses: set[int] = set()
    while time.monotonic() < deadline:
        # Either worker may answer any request, and each runs its own checks: poll both
        # endpoints until every answer sampled says so.
        statuses = {server.get("/health/ready")[0] for _ in range(4)}
        status, _, body = server.get("/health/detailed")
        statuses.add(status)
        if statuses == {503}:
            break
        time.sleep(0.1)
    assert statuses == {503}
    detailed = json.loads(body)
    assert detailed["status"] == "unhealthy"
    assert detailed["checks"]["database"]["status"] == "unhealthy"
    assert "unable to open database" in detailed["checks"]["database"]["error"]
    live = json.loads(server.get("/health/live")[2])
    assert live["status"] == "alive"
    assert live["memory_usage_mb"] > 0


def _metric_count(text: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if (
            line.startswith("http_server_request_duration_seconds_count{")
            and 'http_route="/orders' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_endpoint_sums_every_worker(server: Server) -> None:
    """/metrics answered by either worker counts the requests of both."""
    pids, sent = _hit_both_workers(server)
    assert len(pids) == 2
    deadline = time.monotonic() + 15
    counts: list[float] = []
    while time.monotonic() < deadline:
        counts = [_metric_count(server.get("/metrics")[2].decode()) for _ in range(4)]
        if all(count == sent for count in counts):
            break
        time.sleep(0.2)
    assert counts, "no /metrics answer"
    assert all(count == sent for count in counts), counts

    # And the same requests reached the OTLP exporter from both workers.
    def exported_pids() -> set[int]:
        return {
            p.resource["process.pid"]
            for p in server.receiver.metrics()
            if p.name == "http.server.request.duration"
        }

    assert server.receiver.wait_for(lambda: exported_pids() >= pids, timeout=15), exported_pids()


@pytest.fixture
def flask_server(tmp_path: Path) -> Iterator[Server]:
    """The Flask example under gunicorn -w 2."""
    with OTLPReceiver() as receiver:
        yield from _start("flask", tmp_path, receiver)


def test_prometheus_scrapes_the_app(flask_server: Server, tmp_path: Path) -> None:
    """Debian's Prometheus scrapes /metrics and reports the target up."""
    binary = shutil.which("prometheus")
    if binary is None:
        if os.environ.get("APPVITALS_REQUIRE_PROMETHEUS"):
            pytest.fail("prometheus is required here (apt-get install prometheus)")
        pytest.skip("Debian's prometheus is not installed")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: appvitals-example\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{flask_server.port}']}}]\n"
    )
    flask_server.get("/orders/1")
    prometheus = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        up = requests_seen = None
        while time.monotonic() < deadline:
            try:
                up = _query(port, "up")
                requests_seen = _query(port, "http_server_request_duration_seconds_count")
            except OSError:
                pass
            if up == ["1"] and requests_seen:
                break
            time.sleep(0.5)
        assert up == ["1"]
        assert requests_seen
    finally:
        prometheus.terminate()
        prometheus.wait(timeout=30)


def _query(port: int, query: str) -> list[str]:
    url = f"http://127.0.0.1:{port}/api/v1/query?query={query}"
    with urllib.request.urlopen(url, timeout=5) as response:
        data = json.loads(response.read())
    return [result["value"][1] for result in data["data"]["result"]]
