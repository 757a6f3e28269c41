"""appvitals' pytest plugin and helpers for testing telemetry.

Installing appvitals registers this module as a pytest plugin (the ``pytest11`` entry point
``appvitals = "appvitals.testing"``), which provides two fixtures:

``appvitals_capture``
    appvitals configured with in-memory exporters and every span sampled (a
    :class:`Capture`), reset after the test: ``appvitals_capture.span("name")``,
    ``appvitals_capture.metric("name")``, ``appvitals_capture.logs()``.

``otlp_receiver``
    A running :class:`OTLPReceiver` (OTLP/gRPC and OTLP/HTTP on free ports of 127.0.0.1)
    that is stopped after the test. Point an exporter at ``otlp_receiver.grpc_endpoint`` or
    ``otlp_receiver.http_endpoint + "/v1/traces"`` and read back with
    ``otlp_receiver.wait_for_spans(...)``.

The readers turn OTLP/JSON, from the receiver or from the ``jsonl`` exporter's files
(:func:`read_spans`, :func:`read_metrics`, :func:`read_logs`), into flat records with plain
Python values: :class:`SpanRecord`, :class:`MetricPoint` and :class:`LogRecord`.

pytest imports every installed plugin at startup, in every project that has appvitals
installed, so this module must stay cheap to import: gRPC and the receiver load only when the
fixture runs or ``OTLPReceiver`` is first used, and pytest itself is optional.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from appvitals.testing._capture import Capture, reset
from appvitals.testing._records import (
    LogRecord,
    MetricPoint,
    SpanRecord,
    any_value,
    attributes,
    logs_from,
    metrics_from,
    read_jsonl,
    read_logs,
    read_metrics,
    read_spans,
    spans_from,
)

if TYPE_CHECKING:
    from appvitals.testing._receiver import OTLPReceiver

__all__ = [
    "Capture",
    "LogRecord",
    "MetricPoint",
    "OTLPReceiver",
    "SpanRecord",
    "any_value",
    "attributes",
    "logs_from",
    "metrics_from",
    "read_jsonl",
    "read_logs",
    "read_metrics",
    "read_spans",
    "reset",
    "spans_from",
]


def __getattr__(name: str) -> Any:
    # Loading the receiver imports grpc, which would tax every pytest run that has appvitals
    # installed; so it loads on first use instead.
    if name == "OTLPReceiver":
        from appvitals.testing._receiver import OTLPReceiver

        return OTLPReceiver
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


try:
    import pytest
except ImportError:  # pragma: no cover - the helpers work without pytest
    pass
else:

    @pytest.fixture
    def otlp_receiver() -> Iterator[OTLPReceiver]:
        """A running OTLP receiver (gRPC and HTTP on 127.0.0.1), stopped after the test."""
        from appvitals.testing._receiver import OTLPReceiver

        with OTLPReceiver() as receiver:
            yield receiver

    @pytest.fixture
    def appvitals_capture() -> Iterator[Capture]:
        """appvitals configured with in-memory exporters (every span sampled), reset after."""
        with Capture() as capture:
            yield capture
