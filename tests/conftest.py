"""Shared fixtures: every test starts with appvitals unconfigured and a clean environment."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from appvitals.testing import Capture, reset


@pytest.fixture(autouse=True)
def _clean_appvitals(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Remove OTEL_*/APPVITALS_* variables and reset appvitals around each test."""
    for name in list(os.environ):
        if name.startswith(("OTEL_", "APPVITALS_")):
            monkeypatch.delenv(name)
    reset()
    yield
    reset()


@pytest.fixture
def capture() -> Iterator[Capture]:
    """appvitals configured with in-memory exporters and every span sampled."""
    with Capture(service_name="test-service") as active:
        yield active
