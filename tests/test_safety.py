"""Fault injection: errors inside appvitals never change the application's results."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, Span
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

import appvitals
from appvitals import _safety
from appvitals._exporters import SafeSpanExporter
from appvitals._setup import Extras, _configure


class RaisingExporter(SpanExporter):
    """An exporter that always raises."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        raise ConnectionError("collector exploded")


class RaisingProcessor(SimpleSpanProcessor):
    """A span processor that raises when spans start and end."""

    def __init__(self) -> None:
        super().__init__(SafeSpanExporter(RaisingExporter))

    def on_start(self, span: Span, parent_context: Any = None) -> None:
        raise RuntimeError("processor on_start")

    def on_end(self, span: ReadableSpan) -> None:
        raise RuntimeError("processor on_end")


class BadAttribute:
    """An attribute value whose str() raises."""

    def __str__(self) -> str:
        raise RuntimeError("cannot render")


def test_raising_exporter_is_contained(caplog: pytest.LogCaptureFixture) -> None:
    """A raising exporter returns FAILURE, is counted, and logged only once."""
    exporter = SafeSpanExporter(RaisingExporter)
    with caplog.at_level(logging.WARNING, logger="appvitals"):
        assert exporter.export([]) == SpanExportResult.FAILURE
        assert exporter.export([]) == SpanExportResult.FAILURE
    assert _safety.internal_error_counts()["span exporter"] == 2
    assert caplog.text.count("internal error in span exporter") == 1


def test_application_results_unchanged_under_faults(caplog: pytest.LogCaptureFixture) -> None:
    """Exporter, processor and attribute faults leave decorated code's results intact."""
    caplog.set_level(logging.CRITICAL)
    _configure(
        {"exporter": "none", "sampler_ratio": 1.0},
        Extras(span_processors=(RaisingProcessor(),)),
    )

    @appvitals.traced(attributes={"weird": BadAttribute()})  # type: ignore[dict-item]
    def compute(x: int) -> int:
        with appvitals.span("inner", odd=BadAttribute()):
            appvitals.counter("faulty.calls").add(1, {"x": BadAttribute()})
            appvitals.histogram("faulty.values").record(-1)
        return x * 2

    @appvitals.timed("faulty.duration")
    def raises() -> None:
        raise LookupError("the app's own error")

    assert [compute(i) for i in range(3)] == [0, 2, 4]
    with pytest.raises(LookupError, match="the app's own error"):
        raises()


def test_configure_failure_is_contained(monkeypatch: pytest.MonkeyPatch) -> None:
    """If building providers fails, configure() still returns and the app runs."""
    from appvitals import _setup

    def broken(*_args: object) -> None:
        raise OSError("no resource for you")

    monkeypatch.setattr(_setup, "build_resource", broken)
    config = appvitals.configure(exporter="none")
    assert config.exporter == "none"
    assert _safety.internal_error_counts()["configure"] == 1

    @appvitals.traced
    def still_works() -> str:
        return "yes"

    assert still_works() == "yes"


def test_internal_errors_context_manager() -> None:
    """internal_errors() swallows and counts."""
    with _safety.internal_errors("unit"):
        raise ValueError("x")
    assert _safety.internal_error_counts()["unit"] == 1
