"""OpenMetrics /metrics with exemplars: a metric's sample links to the trace that produced it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.parser import (
    text_string_to_metric_families as text_004_to_metric_families,
)

import appvitals
from appvitals import prometheus
from appvitals.prometheus import OPENMETRICS_CONTENT_TYPE, metrics_text, wants_openmetrics
from appvitals.testing import Capture

# What Prometheus 2.x/3.x sends by default.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
)


def exemplars(text: str) -> dict[str, list[Any]]:
    """Sample name → the samples carrying an exemplar, parsed by the strict OpenMetrics parser."""
    found: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.exemplar is not None:
                found.setdefault(sample.name, []).append(sample)
    return found


def make_app() -> Flask:
    """A Flask app whose handler records a histogram and a counter inside a sampled span."""
    app = Flask("shop")
    duration = appvitals.histogram("heartbeat.processing.duration", buckets=[0.01, 0.1, 1.0])
    received = appvitals.counter("heartbeat.received", unit="{heartbeat}")

    @app.post("/heartbeat")
    def heartbeat() -> dict[str, str]:
        with appvitals.span("heartbeat.process"):
            duration.record(0.05, {"outcome": "ok"})
            received.add(1)
        return {"status": "ok"}

    appvitals.instrument_flask(app)
    return app


def test_openmetrics_exemplar_trace_id_matches_an_exported_span(capture: Capture) -> None:
    """/metrics in OpenMetrics shows exemplars whose trace and span ids are exported spans'."""
    client = make_app().test_client()
    assert client.post("/heartbeat").status_code == 200
    body, content_type = metrics_text(accept=PROMETHEUS_ACCEPT)
    text = body.decode()
    assert content_type == OPENMETRICS_CONTENT_TYPE
    assert text.endswith("# EOF\n")
    found = exemplars(text)
    process = capture.span("heartbeat.process")
    request = capture.span("POST /heartbeat")
    (bucket,) = found["heartbeat_processing_duration_seconds_bucket"]
    assert bucket.labels == {"outcome": "ok", "le": "0.1"}, "the bucket holding 0.05"
    assert bucket.exemplar.value == 0.05
    assert bucket.exemplar.labels == {"trace_id": process.trace_id, "span_id": process.span_id}
    assert bucket.exemplar.timestamp is not None
    (total,) = found["heartbeat_received_total"]
    assert total.exemplar.labels["trace_id"] == process.trace_id
    # The middleware's own histogram: recorded while the SERVER span is current.
    http = found["http_server_request_duration_seconds_bucket"]
    assert {sample.exemplar.labels["span_id"] for sample in http} == {request.span_id}
    assert request.trace_id == process.trace_id


def test_exemplars_persist_across_scrapes_and_follow_new_measurements(capture: Capture) -> None:
    """The SDK hands an exemplar to one collection; the reader keeps the latest per bucket."""
    client = make_app().test_client()
    client.post("/heartbeat")
    first = exemplars(metrics_text(PROMETHEUS_ACCEPT)[0].decode())
    again = exemplars(metrics_text(PROMETHEUS_ACCEPT)[0].decode())
    assert first == again
    capture.clear()
    client.post("/heartbeat")
    latest = exemplars(metrics_text(PROMETHEUS_ACCEPT)[0].decode())
    (bucket,) = latest["heartbeat_processing_duration_seconds_bucket"]
    assert bucket.exemplar.labels["trace_id"] == capture.span("heartbeat.process").trace_id
    assert bucket.value == 2


def test_default_scrape_stays_prometheus_text_without_exemplars(capture: Capture) -> None:
    """No Accept header (or text/plain): the 0.0.4 format, unchanged, without # EOF."""
    make_app().test_client().post("/heartbeat")
    for body, content_type in (metrics_text(), metrics_text("text/plain;version=0.0.4")):
        text = body.decode()
        assert content_type == prometheus.CONTENT_TYPE
        assert "# EOF" not in text
        assert "trace_id" not in text
        assert {f.name for f in text_004_to_metric_families(text)} >= {
            "heartbeat_processing_duration_seconds",
            "heartbeat_received",
        }


def test_openmetrics_types_names_and_target_info(capture: Capture) -> None:
    """Counters are declared without _total, target_info is an info family, le is canonical."""
    appvitals.counter("shop.orders", unit="{order}").add(2)
    appvitals.updown_counter("shop.queue", unit="{job}").add(3)
    appvitals.histogram("shop.latency", buckets=[1.0, 10.0]).record(2)
    text = metrics_text("application/openmetrics-text")[0].decode()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert families["shop_orders"].type == "counter"
    assert families["shop_queue"].type == "gauge"
    assert families["shop_latency_seconds"].type == "histogram"
    assert families["target"].type == "info"
    (info,) = families["target"].samples
    assert info.name == "target_info"
    assert "host_name" in info.labels
    assert "service_name" not in info.labels, "job and instance identify the target"
    assert "# TYPE shop_orders counter" in text
    assert "shop_orders_total 2" in text
    assert 'shop_latency_seconds_bucket{le="1.0"} 0' in text
    assert 'shop_latency_seconds_bucket{le="10.0"} 1' in text
    assert "\n# TYPE target info\n" in text


def test_no_exemplars_outside_sampled_spans() -> None:
    """With nothing sampled there are no exemplars, and the output is still valid OpenMetrics."""
    with Capture(service_name="quiet", sampler_ratio=0.0):
        make_app().test_client().post("/heartbeat")
        text = metrics_text(PROMETHEUS_ACCEPT)[0].decode()
    assert exemplars(text) == {}
    assert "heartbeat_processing_duration_seconds_count" in text


def test_multiprocess_mode_renders_this_process_exemplars(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a snapshot directory the merged output carries the rendering worker's exemplars."""
    monkeypatch.setenv("APPVITALS_PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    with Capture(service_name="workers") as capture:
        make_app().test_client().post("/heartbeat")
        found = exemplars(metrics_text(PROMETHEUS_ACCEPT)[0].decode())
        trace_id = capture.span("heartbeat.process").trace_id
    (bucket,) = found["heartbeat_processing_duration_seconds_bucket"]
    assert bucket.exemplar.labels["trace_id"] == trace_id
    snapshot = next(tmp_path.glob("appvitals-*.json")).read_text()
    assert trace_id not in snapshot, "exemplars are not written to the snapshot files"


def test_not_configured_openmetrics_body_is_valid() -> None:
    """Before configure() the OpenMetrics body is the comment line and # EOF."""
    body, content_type = metrics_text(PROMETHEUS_ACCEPT)
    assert content_type == OPENMETRICS_CONTENT_TYPE
    assert list(text_string_to_metric_families(body.decode())) == []


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (PROMETHEUS_ACCEPT, True),
        ("application/openmetrics-text", True),
        ("application/openmetrics-text; version=0.0.1", True),
        ("application/openmetrics-text; version=2.0.0", False),
        ("application/openmetrics-text;q=0.2, text/plain;q=0.9", False),
        ("application/openmetrics-text;q=0", False),
        ("text/plain;version=0.0.4;q=0.3,*/*;q=0.1", False),
        ("application/json", False),
        ("*/*", False),
        ("", False),
        (None, False),
    ],
)
def test_accept_negotiation(accept: str | None, expected: bool) -> None:
    """OpenMetrics only when the scraper asks for a version we write, at least as much as text."""
    assert wants_openmetrics(accept) is expected
