"""Fork safety: spans and metrics from every gunicorn worker reach a real OTLP receiver."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from appvitals.testing import OTLPReceiver

pytestmark = pytest.mark.slow

APP = textwrap.dedent(
    """
    import os, time
    import appvitals
    from flask import Flask

    if os.environ.get("CONFIGURE_IN_APP") == "1":
        appvitals.configure(sampler_ratio=1.0)   # in the master when --preload is used

    app = Flask(__name__)
    hits = appvitals.counter("test.hits")

    @app.get("/work")
    @appvitals.traced(name="work")
    def work():
        hits.add(1)
        time.sleep(0.02)
        return str(os.getpid())
    """
)

CONF = "from appvitals.integrations.gunicorn import post_fork  # noqa: F401\n"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    """A real OTLP receiver on loopback."""
    with OTLPReceiver() as running:
        yield running


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def _hit_until_two_workers_answer(port: int, deadline: float) -> set[str]:
    pids: set[str] = set()
    lock = threading.Lock()

    def client() -> None:
        while time.monotonic() < deadline:
            try:
                pid = _get(f"http://127.0.0.1:{port}/work")
            except OSError:
                time.sleep(0.1)  # gunicorn still booting
                continue
            with lock:
                pids.add(pid)
                if len(pids) >= 2:
                    return

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return pids


@pytest.mark.parametrize(
    ("mode", "protocol"),
    [("preload", "grpc"), ("post_fork", "http/protobuf")],
)
def test_every_worker_exports(
    tmp_path: Path, receiver: OTLPReceiver, mode: str, protocol: str
) -> None:
    """gunicorn -w 2: both workers' spans and metrics arrive, each with its own pid."""
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "gunicorn_conf.py").write_text(CONF)
    port = _free_port()
    endpoint = receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "APPVITALS_"))}
    env.update(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            "OTEL_SERVICE_NAME": "forked",
            "OTEL_TRACES_SAMPLER": "always_on",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "OTEL_METRIC_EXPORT_INTERVAL": "500",
            "CONFIGURE_IN_APP": "1" if mode == "preload" else "0",
        }
    )
    # The post_fork hook also runs the due exports whenever a worker wakes up idle: with
    # the default export_mode="auto" a worker has no export thread. --timeout 4: it wakes
    # every 2 s (half the timeout) while waiting for connections.
    command = [sys.executable, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}"]
    command += ["-c", "gunicorn_conf.py", "--timeout", "4"]
    command += ["--preload"] if mode == "preload" else []
    server = subprocess.Popen(
        [*command, "app:app"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        pids = _hit_until_two_workers_answer(port, time.monotonic() + 30)
        assert len(pids) == 2, "both workers should have served requests"

        def from_each_worker(records: list) -> bool:  # type: ignore[type-arg]
            return {str(r.resource.get("process.pid")) for r in records} >= pids

        spans = receiver.wait_for_spans(lambda s: s.name == "work", count=2, timeout=15)
        assert receiver.wait_for(
            lambda: from_each_worker([s for s in receiver.spans() if s.name == "work"]), 15
        )
        assert {s.resource["service.name"] for s in spans} == {"forked"}
        assert receiver.wait_for(
            lambda: from_each_worker([m for m in receiver.metrics() if m.name == "test.hits"]), 15
        )
        instance_ids = {
            s.resource["service.instance.id"] for s in receiver.spans() if s.name == "work"
        }
        assert len(instance_ids) == 2, "each worker is its own service instance"
    finally:
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=30)
    assert server.returncode == 0, stderr.decode()[-2000:]
