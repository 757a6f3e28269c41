"""examples/http_client.py runs: retries recover, two failures are captured, secrets masked."""

from __future__ import annotations

import json
from pathlib import Path

from example_runner import run_example


def test_http_client_example(tmp_path: Path) -> None:
    """The example prints every call's attempts and the masked captures of the failed ones."""
    result = run_example("http_client.py", tmp_path, APPVITALS_EXPORTER="none")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "attempts: #1 503, #2 200" in out
    assert "attempts: #1 429, #2 200" in out
    assert "2 failed call(s) captured:" in out
    captures = [json.loads("{" + block) for block in out.split("\n{")[1:]]
    assert [c["error"]["type"] for c in captures] == ["ServiceUnavailable", "ConnectionRefused"]
    assert all(len(c["attempts"]) == 3 for c in captures)
    assert captures[0]["request"]["headers"]["authorization"] == "Bearer ***"
    assert "s3cr3t" not in out
    assert "s3cr3t" not in result.stderr
