"""Every metric the rules and dashboards use is really emitted, with that name, unit and kind.

The library runs for real in one process under :class:`appvitals.testing.Capture`: a Flask
request and its health endpoint, an httpx call retried against a local server that answers
503, a job run with progress, resource metrics, an internal error, a cardinality overflow
and a full span queue. What it emits is compared with ``appvitals.artifacts._catalog``
twice: as OpenTelemetry instruments (name, unit, kind) and as ``/metrics`` families.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from flask import Flask
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult

import appvitals
from appvitals import health, resources
from appvitals._exporters import CountingBatchSpanProcessor, SafeSpanExporter
from appvitals._safety import report_internal_error
from appvitals.artifacts import _catalog
from appvitals.http import RetryTransport, instrument_client
from appvitals.prometheus import Kind
from appvitals.testing import Capture, MetricPoint

# Metric name -> (unit, Prometheus kind), gathered over several collections.
Emitted = dict[str, tuple[str, Kind]]
TYPE_LINE = re.compile(r"^# TYPE (\S+) (\S+)$", re.MULTILINE)


class _Unavailable(BaseHTTPRequestHandler):
    """Answers every GET with 503: a Service error that RetryTransport retries."""

    def do_GET(self) -> None:
        body = b'{"error": "busy"}'
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        """No access log on stderr."""


@pytest.fixture
def unavailable_url() -> Iterator[str]:
    """A server on 127.0.0.1 that answers 503 to everything."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Unavailable)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/articles"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def _no_health_checks() -> Iterator[None]:
    """The default health registry is empty before and after (its runner thread stopped)."""
    health.reset()
    yield
    health.reset()


def _kind(point: MetricPoint) -> Kind:
    """The Prometheus kind /metrics gives an OTLP point (an up-down sum is a gauge)."""
    if point.kind == "sum":
        return "counter" if point.is_monotonic else "gauge"
    if point.kind == "histogram":
        return "histogram"
    assert point.kind == "gauge", f"{point.name}: unexpected kind {point.kind}"
    return "gauge"


class _Observer:
    """Collects the metrics and the /metrics families seen at every :meth:`look`."""

    def __init__(self, capture: Capture, app: Flask) -> None:
        self.capture = capture
        self.client = app.test_client()
        self.emitted: Emitted = {}
        self.families: dict[str, str] = {}

    def look(self) -> None:
        for point in self.capture.metrics():
            seen = (point.unit, _kind(point))
            assert self.emitted.setdefault(point.name, seen) == seen, point.name
        scrape = self.client.get("/metrics")
        assert scrape.status_code == 200
        self.families.update(TYPE_LINE.findall(scrape.get_data(as_text=True)))


def _flask_app() -> Flask:
    app = Flask("emitted")

    @app.get("/orders/<int:order_id>")
    def order(order_id: int) -> dict[str, int]:
        return {"id": order_id}

    appvitals.instrument_flask(app)
    return app


def _drop_spans() -> None:
    """A batch processor whose exporter never returns: its full queue drops and counts."""
    release = threading.Event()

    class StuckExporter(SafeSpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            release.wait(10)
            return SpanExportResult.SUCCESS

    processor = CountingBatchSpanProcessor(
        StuckExporter(lambda: None),  # type: ignore[arg-type,return-value]
        max_queue_size=2,
        max_export_batch_size=1,
        schedule_delay_millis=10,
    )
    provider = TracerProvider()
    provider.add_span_processor(processor)
    try:
        tracer = provider.get_tracer("emitted")
        for _ in range(10):
            tracer.start_span("dropped").end()
    finally:
        release.set()
        provider.shutdown()


@pytest.mark.usefixtures("_no_health_checks")
def test_every_catalog_metric_is_emitted_as_catalogued(unavailable_url: str) -> None:
    """Each catalog entry matches an emitted instrument and a /metrics family of its kind."""
    with Capture(service_name="emitted", cardinality_limit=20) as capture:
        app = _flask_app()
        observer = _Observer(capture, app)
        resources.register(system=True)

        assert observer.client.get("/orders/7").status_code == 200
        health.register("database", lambda: True)
        health.register("disk", lambda: {"free_ratio": 0.5}, critical=False)
        assert observer.client.get("/health/detailed").status_code == 200

        transport = RetryTransport(attempts=3, backoff=0.0, jitter=False, sleep=lambda _: None)
        with instrument_client(httpx.Client(transport=transport)) as client:
            assert client.get(unavailable_url).status_code == 503

        with appvitals.job("EMITTED_SYNC", total=10) as run:
            run.progress(processed=4, succeeded=3, failed=1)
            observer.look()  # progress and active runs exist only while the run runs
            run.progress(processed=6, succeeded=6)

        report_internal_error("emitted test", RuntimeError("deliberate"))
        hits = appvitals.counter("emitted.page.hits")
        for user in range(30):
            hits.add(1, {"user.id": str(user)})
        _drop_spans()
        observer.look()
        observer.look()  # utilisations are rates: the second collection has an interval

    mismatches = []
    for metric in _catalog.ALL:
        found = observer.emitted.get(metric.otel_name)
        expected = (metric.unit, metric.kind)
        if found != expected:
            mismatches.append(f"{metric.otel_name}: catalog {expected}, emitted {found}")
        elif observer.families.get(metric.name) != metric.kind:
            family = observer.families.get(metric.name)
            mismatches.append(f"{metric.name}: /metrics has {family}, catalog {metric.kind}")
    assert not mismatches, "\n".join(mismatches)


def test_catalog_names_are_unique() -> None:
    """No two catalog entries share an OpenTelemetry or a Prometheus name."""
    assert len({m.otel_name for m in _catalog.ALL}) == len(_catalog.ALL)
    assert len({m.name for m in _catalog.ALL}) == len(_catalog.ALL)
