"""Fixtures of the artifact tests: promtool, required where APPVITALS_REQUIRE_PROMETHEUS is set."""

from __future__ import annotations

import os
import shutil

import pytest


@pytest.fixture
def promtool() -> str:
    """The path of promtool; skips without it, fails if APPVITALS_REQUIRE_PROMETHEUS is set."""
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("APPVITALS_REQUIRE_PROMETHEUS"):
            pytest.fail("promtool is required here (apt-get install prometheus)")
        pytest.skip("promtool (Debian's prometheus package) is not installed")
    return path
