"""`appvitals test` and `appvitals health` against real local servers, in-process and as a CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from flask import Flask
from http_servers import Upstream
from werkzeug.serving import make_server

import appvitals
from appvitals.cli import main
from appvitals.testing import Capture as Telemetry


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_refused_port_exits_2(capsys: pytest.CaptureFixture[str], refused_url: str) -> None:
    """`appvitals test` against a refused port exits 2 and names ConnectionRefused."""
    code, out, _ = _run(capsys, "test", refused_url, "--requests", "2")
    assert code == 2
    assert "Network/ConnectionRefused" in out
    assert "(2/2 failed)" in out
    assert out.startswith(("✗", "FAIL"))


def test_live_server_exits_0(capsys: pytest.CaptureFixture[str], upstream: Upstream) -> None:
    """A live local server: exit 0 and one line with DNS, TCP, response, total and the rating."""
    code, out, _ = _run(capsys, "test", upstream.url("/ok"), "--requests", "2")
    assert code == 0
    (line,) = out.splitlines()
    assert line.startswith(("✓", "OK"))
    for part in ("DNS ", "TCP ", "response ", "total ", "Fast"):
        assert part in line
    assert "TLS" not in line  # plain HTTP


def test_json_output(
    capsys: pytest.CaptureFixture[str], upstream: Upstream, refused_url: str
) -> None:
    """--json: per URL dns, connect, first_byte and total (ms), and the overall exit code."""
    code, out, _ = _run(
        capsys, "test", upstream.url("/ok"), refused_url, "--requests", "1", "--json"
    )
    report = json.loads(out)
    assert code == report["exit_code"] == 2
    live, refused = report["results"]
    for key in ("dns", "connect", "first_byte", "total"):
        assert isinstance(live[key], float)
        assert live[key] >= 0
    assert live["passed"] is True
    assert refused["passed"] is False
    assert refused["errors"][0]["type"] == "ConnectionRefused"
    assert refused["first_byte"] is None


def test_slow_exits_1(capsys: pytest.CaptureFixture[str], upstream: Upstream) -> None:
    """A median above --slow-ms rates Slow and exits 1."""
    code, out, _ = _run(
        capsys,
        "test",
        upstream.url("/sleep?seconds=0.02"),
        "--requests",
        "1",
        "--fast-ms",
        "1",
        "--slow-ms",
        "5",
    )
    assert code == 1
    assert "Slow" in out
    assert "dominates" in out


def test_verbose_and_tls(
    capsys: pytest.CaptureFixture[str], tls_upstream: Upstream, tmp_path: Path, ca: trustme.CA
) -> None:
    """--verbose shows the phase table and the TLS session; --cacert trusts a private CA."""
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    code, out, _ = _run(
        capsys,
        "test",
        tls_upstream.url("/ok", host="localhost"),
        "--requests",
        "1",
        "--verbose",
        "--cacert",
        str(bundle),
    )
    assert code == 0
    assert "TLS " in out.splitlines()[0]
    assert "median" in out
    assert "certificate valid until" in out
    assert "statuses    200 x1" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["test"],
        ["test", "ftp://example.com"],
        ["test", "http://127.0.0.1:1", "--requests", "0"],
        ["test", "http://127.0.0.1:1", "--requests", "many"],
        ["test", "http://127.0.0.1:1", "--bogus"],
        ["test", "http://127.0.0.1:99999"],
        ["test", "http://127.0.0.1:1", "--fast-ms", "500", "--slow-ms", "100"],
        ["health"],
        ["health", "not a url"],
        ["health", "http://127.0.0.1:1", "--count", "0"],
        ["health", "http://127.0.0.1:1", "--watch", "-1"],
    ],
)
def test_usage_errors_exit_3(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    """Every usage error of test and health exits 3 with a message on stderr."""
    code, out, err = _run(capsys, *argv)
    assert code == 3
    assert out == ""
    assert "error:" in err


def test_other_commands_unchanged(capsys: pytest.CaptureFixture[str]) -> None:
    """--version still exits 0, and an unknown command is still argparse's 2."""
    assert _run(capsys, "--version")[0] == 0
    assert _run(capsys, "nonsense")[0] == 2


def test_as_a_command(upstream: Upstream) -> None:
    """`python -m appvitals test URL --json` works as a real process."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "appvitals",
            "test",
            upstream.url("/ok"),
            "--requests",
            "1",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["results"][0]["passed"] is True


@pytest.fixture
def service(capture: Telemetry) -> Iterator[str]:
    """A Flask app instrumented by appvitals, served by werkzeug on 127.0.0.1 (its base URL)."""
    app = Flask("orders")

    @app.get("/")
    def index() -> dict[str, str]:
        return {"service": "orders"}

    appvitals.instrument_flask(app)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
        appvitals.health.reset()


def test_health_healthy(capsys: pytest.CaptureFixture[str], service: str) -> None:
    """All checks healthy: a table of checks and exit 0."""
    appvitals.health.register("database", lambda: {"pool": 3})
    appvitals.health.register("cache", lambda: None, critical=False)
    code, out, _ = _run(capsys, "health", service)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].endswith("healthy") or "healthy  (up" in lines[0]
    assert lines[1].split() == ["check", "status", "latency", "critical", "error"]
    assert lines[2].split()[:2] == ["database", "healthy"]
    assert lines[2].split()[3] == "yes"
    assert lines[3].split()[:2] == ["cache", "healthy"]
    assert lines[-1] == "health: healthy (0 of 2 checks failing)"


def test_health_failing_critical_check(capsys: pytest.CaptureFixture[str], service: str) -> None:
    """A failing critical check: unhealthy, its error in the table, exit 2."""

    def database() -> None:
        raise ConnectionError("database is down")

    appvitals.health.register("database", database)
    code, out, _ = _run(capsys, "health", f"{service}/health/detailed")
    assert code == 2
    assert "unhealthy" in out.splitlines()[0]
    assert "ConnectionError: database is down" in out


def test_health_degraded(capsys: pytest.CaptureFixture[str], service: str) -> None:
    """Only a non-critical check failing: degraded, exit 1."""
    appvitals.health.register("disk", lambda: False, critical=False)
    code, out, _ = _run(capsys, "health", service)
    assert code == 1
    assert "degraded" in out


def test_health_json_and_watch(capsys: pytest.CaptureFixture[str], service: str) -> None:
    """--json --watch prints one JSON line per check, --count bounds it."""
    appvitals.health.register("database", lambda: None)
    code, out, _ = _run(capsys, "health", service, "--json", "--watch", "0.01", "--count", "2")
    assert code == 0
    reports = [json.loads(line) for line in out.splitlines()]
    assert len(reports) == 2
    assert reports[0]["status"] == "healthy"
    assert reports[0]["checks"]["database"]["status"] == "healthy"
    assert reports[0]["url"] == f"{service}/health/detailed"


def test_health_unreachable(capsys: pytest.CaptureFixture[str], refused_url: str) -> None:
    """Nothing listening: unreachable, the classified error, exit 2."""
    code, out, _ = _run(capsys, "health", refused_url)
    assert code == 2
    assert "unreachable" in out
    assert "Network/ConnectionRefused" in out


def test_health_not_a_health_endpoint(
    capsys: pytest.CaptureFixture[str], upstream: Upstream
) -> None:
    """A server without appvitals' health payload: exit 2, saying so."""
    code, out, _ = _run(capsys, "health", upstream.url("/"))
    assert code == 2
    assert "not an appvitals health payload" in out
