"""The appvitals command: --version and doctor, run in-process and as ``python -m appvitals``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import appvitals
from appvitals.cli import main


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No OTEL_*/APPVITALS_* variable from outside, and a scratch working directory."""
    for name in list(os.environ):
        if name.startswith(("OTEL_", "APPVITALS_")):
            monkeypatch.delenv(name)
    # The default jsonl folder is relative; keep it inside the test's own directory.
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, read, closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture
def listening_port() -> Iterator[int]:
    """A port on 127.0.0.1 with a listening socket, closed after the test."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


def _doctor_json(capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code = main(["doctor", "--json"])
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert report["exit_code"] == code
    return code, report


def _statuses(report: dict[str, Any]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for check in report["checks"]:
        found.setdefault(check["status"], []).append(check["detail"])
    return found


def test_version_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    """--version prints 'appvitals <version>' and returns 0."""
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"appvitals {appvitals.__version__}\n"


def test_version_as_module() -> None:
    """`python -m appvitals --version` works through __main__.py."""
    result = subprocess.run(
        [sys.executable, "-m", "appvitals", "--version"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"appvitals {appvitals.__version__}"


def test_missing_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """No subcommand: argparse's usage error, exit code 2, message on stderr."""
    assert main([]) == 2
    assert "usage: appvitals" in capsys.readouterr().err


def test_doctor_jsonl_writable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """jsonl into a writable folder: exit 0, traces go to <dir>/traces.jsonl, nothing written."""
    target = tmp_path / "telemetry"
    monkeypatch.setenv("APPVITALS_JSONL_DIR", str(target))
    code, report = _doctor_json(capsys)
    assert code == 0, report["checks"]
    assert report["version"] == appvitals.__version__
    assert report["config"]["exporter"] == "jsonl"
    assert report["signals"]["traces"].endswith("traces.jsonl")
    assert set(report["signals"]) == {"traces", "metrics", "logs"}
    assert {check["status"] for check in report["checks"]} == {"ok"}
    assert not target.exists(), "doctor must not create the folder"
    assert not appvitals.is_configured(), "doctor must not configure appvitals"


def test_doctor_human_output(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The text report has the configuration, the destinations and a summary line."""
    monkeypatch.setenv("APPVITALS_JSONL_DIR", str(tmp_path))
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "service_name" in out
    assert str(tmp_path / "traces.jsonl") in out
    assert out.rstrip().splitlines()[-1] == "doctor: 0 warnings, 0 errors"


def test_doctor_jsonl_dir_cannot_be_created(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A jsonl folder beneath a regular file cannot be created: exit 2."""
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    monkeypatch.setenv("APPVITALS_JSONL_DIR", str(blocker / "sub"))
    code, report = _doctor_json(capsys)
    assert code == 2
    assert any("afile" in detail for detail in _statuses(report)["error"])


def test_doctor_otlp_refused(
    monkeypatch: pytest.MonkeyPatch, closed_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """An OTLP endpoint nobody listens on is an error that says 'refused'."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{closed_port}")
    code, report = _doctor_json(capsys)
    assert code == 2
    assert report["config"]["exporter"] == "otlp"
    errors = _statuses(report)["error"]
    assert len(errors) == 1, "the three signals share one host:port, probed once"
    assert "refused" in errors[0]
    assert f"127.0.0.1:{closed_port}" in errors[0]


def test_doctor_otlp_dns_failure(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A host that does not resolve (.invalid never does, RFC 6761) is a DNS error."""
    monkeypatch.setenv(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://collector.invalid:4318/v1/traces"
    )
    monkeypatch.setenv("APPVITALS_METRICS", "false")
    monkeypatch.setenv("APPVITALS_LOGS", "false")
    code, report = _doctor_json(capsys)
    assert code == 2
    assert report["signals"]["metrics"] == "disabled"
    (error,) = _statuses(report)["error"]
    assert "DNS" in error
    assert "collector.invalid:4318 (traces)" in error


def test_doctor_otlp_reachable(
    monkeypatch: pytest.MonkeyPatch, listening_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """An OTLP endpoint with a listening socket is reachable: exit 0."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{listening_port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "grpc")
    code, report = _doctor_json(capsys)
    assert code == 0, report["checks"]
    assert report["signals"]["metrics"] == f"OTLP grpc http://127.0.0.1:{listening_port}"
    assert any("reachable" in detail for detail in _statuses(report)["ok"])


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({}, "auto: every destination is on this machine"),  # jsonl files
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, "auto: every destination"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector.invalid:4318"}, "auto: a remote"),
        ({"APPVITALS_EXPORT_MODE": "inline"}, "inline: the application's requests"),
        ({"APPVITALS_EXPORT_MODE": "background"}, "background: the OpenTelemetry SDK's"),
    ],
)
def test_doctor_says_which_thread_exports(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    variables: dict[str, str],
    expected: str,
) -> None:
    """The export mode check: who runs the exports with this environment."""
    monkeypatch.setenv("APPVITALS_JSONL_DIR", str(tmp_path))
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    _code, report = _doctor_json(capsys)
    (check,) = [check for check in report["checks"] if check["name"] == "export mode"]
    assert check["status"] == "ok"
    assert check["detail"].startswith(expected)


def test_doctor_never_prints_secrets(
    monkeypatch: pytest.MonkeyPatch, listening_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """Header values and URL passwords are masked in both output formats."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "api-key=s3cret")
    monkeypatch.setenv(
        "OTEL_EXPORTER_OTLP_ENDPOINT", f"http://user:s3cret@127.0.0.1:{listening_port}"
    )
    main(["doctor", "--json"])
    json_output = capsys.readouterr()
    main(["doctor"])
    text_output = capsys.readouterr()
    for output in (json_output, text_output):
        assert "s3cret" not in output.out + output.err
    report = json.loads(json_output.out)
    assert report["config"]["otlp_headers"] == {"api-key": "***"}
    assert report["config"]["otlp_endpoints"]["traces"].startswith("http://user:***@127.0.0.1")
    assert "user:***@" in text_output.out


def test_doctor_invalid_value_warns(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unusable environment value is a warning naming the variable: exit 1, not on stderr."""
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "abc")
    code, report = _doctor_json(capsys)
    assert code == 1
    warnings = _statuses(report)["warning"]
    assert len(warnings) == 1
    assert "OTEL_TRACES_SAMPLER_ARG" in warnings[0]
    assert main(["doctor"]) == 1
    captured = capsys.readouterr()
    assert captured.err == "", "the warning is reported once, as a check"
    assert captured.out.rstrip().endswith("doctor: 1 warning, 0 errors")


def test_doctor_sdk_disabled_warns(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """OTEL_SDK_DISABLED=true: a warning that nothing will be exported, exit 1."""
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    code, report = _doctor_json(capsys)
    assert code == 1
    assert set(report["signals"].values()) == {"disabled"}
    assert any("nothing will be exported" in detail for detail in _statuses(report)["warning"])


def test_doctor_exporter_none_warns(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """APPVITALS_EXPORTER=none: a warning, exit 1."""
    monkeypatch.setenv("APPVITALS_EXPORTER", "none")
    code, report = _doctor_json(capsys)
    assert code == 1
    assert any("none" in detail for detail in _statuses(report)["warning"])
