"""Shared fixtures: every test starts with appvitals unconfigured and a clean environment."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import appvitals
from appvitals import Config
from appvitals.testing import Capture, OTLPReceiver, reset


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


@pytest.fixture
def configure_otlp(otlp_receiver: OTLPReceiver) -> Callable[..., Config]:
    """``configure()`` sending every signal to ``otlp_receiver`` (HTTP); all spans sampled
    unless ``sampler_ratio`` says otherwise."""

    def configure(service_name: str, **options: Any) -> Config:
        return appvitals.configure(
            service_name=service_name,
            exporter="otlp",
            otlp_endpoint=otlp_receiver.http_endpoint,
            otlp_protocol="http/protobuf",
            **{"sampler_ratio": 1.0, **options},
        )

    return configure
