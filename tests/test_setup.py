"""configure()/shutdown(): import has no side effects, providers, exporters, exit and fork."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.trace import TracerProvider

import appvitals
from appvitals.testing._records import read_logs, read_metrics, read_spans


def _run(
    code: str, env: dict[str, str], cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "APPVITALS_"))}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**clean, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_import_changes_nothing(tmp_path: Path) -> None:
    """Importing appvitals sets no provider, starts no thread and writes no file."""
    result = _run(
        """
        import threading, logging, sys
        before = threading.active_count(), list(logging.getLogger().handlers)
        import appvitals, appvitals.testing
        from opentelemetry import trace, metrics
        assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
        assert type(metrics.get_meter_provider()).__name__ == "_ProxyMeterProvider"
        assert (threading.active_count(), list(logging.getLogger().handlers)) == before
        assert "grpc" not in sys.modules
        print("clean")
        """,
        {"APPVITALS_EXPORTER": "jsonl"},
        tmp_path,
    )
    assert result.stdout.strip() == "clean", result.stderr
    assert list(tmp_path.iterdir()) == []


def test_traced_function_lands_in_jsonl_with_service_name(tmp_path: Path) -> None:
    """APPVITALS_EXPORTER=jsonl + @traced → the span in traces.jsonl, named by OTEL_SERVICE_NAME."""
    result = _run(
        """
        import appvitals
        appvitals.configure(sampler_ratio=1.0)

        @appvitals.traced
        def compute(x):
            return x * 2

        assert compute(21) == 42
        """,
        {"APPVITALS_EXPORTER": "jsonl", "OTEL_SERVICE_NAME": "jsonl-demo"},
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    spans = read_spans(tmp_path / "appvitals-data")
    assert [s.name for s in spans] == ["compute"]
    assert spans[0].resource["service.name"] == "jsonl-demo"
    assert spans[0].attributes["code.function.name"].endswith("compute")
    for line in (tmp_path / "appvitals-data" / "traces.jsonl").read_text().splitlines():
        assert "resourceSpans" in json.loads(line)


def test_sdk_disabled_writes_nothing(tmp_path: Path) -> None:
    """OTEL_SDK_DISABLED=true: configure() installs nothing and no file appears."""
    result = _run(
        """
        import appvitals, logging
        from opentelemetry import trace
        config = appvitals.configure(sampler_ratio=1.0)
        assert config.disabled
        assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)

        @appvitals.traced
        def compute():
            logging.getLogger("x").warning("not exported")
            appvitals.counter("calls").add(1)
            return 1

        assert compute() == 1
        """,
        {"APPVITALS_EXPORTER": "jsonl", "OTEL_SDK_DISABLED": "true"},
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "appvitals-data").exists()


def test_all_three_signals_reach_jsonl(tmp_path: Path) -> None:
    """Spans, metrics and logs all reach their files, logs linked to the span's trace."""
    result = _run(
        """
        import logging, appvitals
        appvitals.configure(sampler_ratio=1.0, service_version="1.0.0", environment="test")
        with appvitals.bind(correlation_id="cid-7"), appvitals.span("outer"):
            logging.getLogger("shop").info("order %s placed", 42)
            appvitals.counter("shop.orders").add(2, {"channel": "web"})
        """,
        {"APPVITALS_EXPORTER": "jsonl"},
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    data = tmp_path / "appvitals-data"
    (outer,) = read_spans(data)
    assert outer.resource["service.version"] == "1.0.0"
    assert outer.resource["deployment.environment.name"] == "test"
    (log,) = [log for log in read_logs(data) if log.body == "order 42 placed"]
    assert (log.trace_id, log.span_id) == (outer.trace_id, outer.span_id)
    assert log.attributes["correlation_id"] == "cid-7"
    (point,) = [p for p in read_metrics(data) if p.name == "shop.orders"]
    assert (point.value, point.attributes) == (2, {"channel": "web"})


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_dead_collector_neither_slows_calls_nor_blocks_exit(tmp_path: Path, protocol: str) -> None:
    """OTLP to a closed port: traced calls stay fast and the process exits within the timeout."""
    result = _run(
        """
        import time, appvitals
        appvitals.configure(sampler_ratio=1.0, metric_export_interval=0.2)

        @appvitals.traced
        def work():
            return 1

        work()  # first call builds the tracer
        start = time.perf_counter()
        for _ in range(1000):
            work()
        print(f"{(time.perf_counter() - start) / 1000 * 1e6:.1f}")
        time.sleep(0.5)  # let the exporters start failing
        """,
        {
            "APPVITALS_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{_closed_port()}",
            "APPVITALS_SHUTDOWN_TIMEOUT": "2",
            # Exporters would keep retrying for a minute: only the bounded shutdown ends it.
            "OTEL_EXPORTER_OTLP_TIMEOUT": "60000",
        },
        tmp_path,
        timeout=25,
    )
    assert result.returncode == 0, result.stderr
    # Generous: the point is "no network round trip per call" (a connect retry takes seconds).
    assert float(result.stdout.strip()) < 5000


def test_existing_global_provider_is_respected() -> None:
    """If the app installed its own TracerProvider, appvitals uses it instead of replacing it."""
    own = TracerProvider()
    trace.set_tracer_provider(own)
    appvitals.configure(exporter="none")
    assert trace.get_tracer_provider() is own
    with appvitals.span("uses-own-provider") as span:
        assert span.is_recording()
    own.shutdown()


def test_configure_is_idempotent() -> None:
    """A second configure() returns the first configuration and keeps the providers."""
    first = appvitals.configure(exporter="none", service_name="first")
    provider = trace.get_tracer_provider()
    meter_provider = metrics.get_meter_provider()
    second = appvitals.configure(exporter="none", service_name="second")
    assert second is first
    assert appvitals.get_config() is first
    assert appvitals.is_configured()
    assert trace.get_tracer_provider() is provider
    assert metrics.get_meter_provider() is meter_provider


def test_shutdown_is_bounded_and_repeatable() -> None:
    """shutdown() returns True when done, and a second call is a no-op."""
    appvitals.configure(exporter="none")
    start = time.monotonic()
    assert appvitals.shutdown(timeout=2) is True
    assert time.monotonic() - start < 2
    assert appvitals.shutdown() is True
    assert not appvitals.is_configured()


def test_force_flush_before_configure_is_harmless() -> None:
    """force_flush() without configure() does nothing and reports success."""
    assert appvitals.force_flush() is True
