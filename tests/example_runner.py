"""Run a script of examples/ the way a user would: a fresh interpreter, a clean environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(
    script: str, cwd: Path, *arguments: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """``python examples/<script> <arguments>`` in ``cwd``, without the caller's ``OTEL_*`` and
    ``APPVITALS_*`` variables, plus ``env``; bounded to 60 s."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "APPVITALS_"))}
    environment.update(env)
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *arguments],
        env=environment,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
