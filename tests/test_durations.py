"""appvitals' own aggregation of http.server.request.duration (``appvitals._durations``).

The direct histogram must report exactly what the SDK's histogram would have: the tests
record the same values through both and compare, then check that the default set-up uses
it end to end (``/metrics`` and the shared OTLP export) and that any other reader on the
provider sends the durations back through the SDK.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flask
import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    MetricsData,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import SpanContext, TraceFlags

import appvitals
from appvitals import _durations, prometheus
from appvitals.testing import Capture, OTLPReceiver

VALUES = (0.0, 0.001, 0.005, 0.0050001, 0.01, 0.3, 0.75, 9.99, 10.0, 10.5, 123.0)
GET_200 = {"http.request.method": "GET", "url.scheme": "http", "http.response.status_code": 200}
POST_500 = {**GET_200, "http.request.method": "POST", "http.response.status_code": 500}


def _sdk_points(
    records: list[tuple[float, dict[str, Any]]],
) -> tuple[MetricsData, list[HistogramDataPoint]]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    histogram = provider.get_meter(_durations.SCOPE, appvitals.__version__).create_histogram(
        _durations.NAME,
        unit=_durations.UNIT,
        description=_durations.DESCRIPTION,
        explicit_bucket_boundaries_advisory=list(_durations.BUCKETS),
    )
    for value, attributes in records:
        histogram.record(value, attributes)
    data = reader.get_metrics_data()
    assert data is not None
    (metric,) = data.resource_metrics[0].scope_metrics[0].metrics
    return data, list(metric.data.data_points)  # type: ignore[union-attr]


def _summary(point: HistogramDataPoint) -> tuple[Any, ...]:
    return (
        tuple(sorted(point.attributes.items())),  # type: ignore[union-attr]
        point.count,
        round(point.sum, 9),
        tuple(point.bucket_counts),
        tuple(point.explicit_bounds),
        point.min,
        point.max,
    )


def _duration_points(data: MetricsData | None) -> list[HistogramDataPoint]:
    assert data is not None
    return [
        point
        for resource_metrics in data.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
        if metric.name == _durations.NAME
        for point in metric.data.data_points  # type: ignore[union-attr]
    ]


def test_direct_points_equal_the_sdk_histograms() -> None:
    records = [(value, GET_200) for value in VALUES] + [(0.02, POST_500), (0.4, POST_500)]
    direct = _durations.request_duration()
    for value, attributes in records:
        direct.record(value, attributes)
    _data, expected = _sdk_points(records)

    mine = direct.points(now=1)

    assert sorted(map(_summary, mine)) == sorted(map(_summary, expected))
    assert all(point.time_unix_nano == 1 for point in mine)


def test_merge_adds_per_series_and_keeps_the_sdks_exemplars() -> None:
    sampled = [(0.02, GET_200), (0.3, GET_200)]
    data, (sdk_point,) = _sdk_points(sampled)
    # Stand in for a sampled request's exemplar, which the SDK keeps on its own point.
    exemplar = object()
    with_exemplar = HistogramDataPoint(**{**sdk_point.__dict__, "exemplars": [exemplar]})
    resource_metrics = data.resource_metrics[0]
    scope_metrics = resource_metrics.scope_metrics[0]
    metric = scope_metrics.metrics[0]
    data = MetricsData(
        [
            type(resource_metrics)(
                resource_metrics.resource,
                [
                    type(scope_metrics)(
                        scope_metrics.scope,
                        [
                            type(metric)(
                                metric.name,
                                metric.description,
                                metric.unit,
                                type(metric.data)(
                                    [with_exemplar], metric.data.aggregation_temporality
                                ),  # type: ignore[call-arg, union-attr]
                            )
                        ],
                        scope_metrics.schema_url,
                    )
                ],
                resource_metrics.schema_url,
            )
        ]
    )
    unsampled = [(0.001, GET_200), (7.0, GET_200), (0.5, POST_500)]
    direct = _durations.request_duration()
    for value, attributes in unsampled:
        direct.record(value, attributes)

    merged = _duration_points(direct.merge(data, resource=None))

    _all, expected = _sdk_points(sampled + unsampled)
    assert sorted(map(_summary, merged)) == sorted(map(_summary, expected))
    (get,) = [point for point in merged if point.attributes == GET_200]
    assert list(get.exemplars) == [exemplar]
    assert get.start_time_unix_nano == min(
        sdk_point.start_time_unix_nano, direct.points(now=0)[0].start_time_unix_nano
    )


def test_merge_into_an_empty_collection_uses_the_resource() -> None:
    direct = _durations.request_duration()
    assert direct.merge(None, Resource({"service.name": "s"})) is None  # nothing recorded
    direct.record(0.2, GET_200)

    merged = direct.merge(None, Resource({"service.name": "s"}))

    assert merged is not None
    assert merged.resource_metrics[0].resource.attributes["service.name"] == "s"
    scope = merged.resource_metrics[0].scope_metrics[0].scope
    assert (scope.name, scope.version) == (_durations.SCOPE, appvitals.__version__)
    (point,) = _duration_points(merged)
    assert (point.count, point.sum) == (1, 0.2)
    assert direct.merge(None, resource=None) is None  # no resource: nothing to hang it on


def test_series_beyond_the_cardinality_limit_share_the_overflow_series() -> None:
    direct = _durations.request_duration()
    for index in range(_durations.MAX_SERIES + 10):
        direct.record(0.01, {**GET_200, "http.route": f"/r{index}"})

    points = direct.points(now=1)

    assert len(points) == _durations.MAX_SERIES
    (overflow,) = [point for point in points if point.attributes == {"otel.metric.overflow": True}]
    assert overflow.count == 11
    assert sum(point.count for point in points) == _durations.MAX_SERIES + 10


def test_a_forked_child_starts_without_the_parents_series() -> None:
    direct = _durations.request_duration()
    direct.record(0.01, GET_200)
    direct._lock.acquire()  # a parent thread holding the lock at fork time

    direct.at_fork_reinit()
    direct.record(0.02, GET_200)

    (point,) = direct.points(now=1)
    assert (point.count, point.sum) == (1, 0.02)


def _flask_app() -> flask.Flask:
    app = flask.Flask("durations")

    @app.get("/items/<int:item>")
    def item(item: int) -> dict[str, int]:
        return {"item": item}

    appvitals.instrument_flask(app)
    return app


def _scraped_count(app: flask.Flask, route: str) -> float:
    text = app.test_client().get("/metrics").text
    prefix = "http_server_request_duration_seconds_count{"
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(prefix) and f'http_route="{route}"' in line
    )


@pytest.mark.parametrize("ratio", [0.0, 0.5, 1.0])
def test_default_setup_aggregates_durations_directly(
    configure_otlp: Callable[..., Any], otlp_receiver: OTLPReceiver, ratio: float
) -> None:
    configure_otlp("direct", sampler_ratio=ratio, export_mode="background")
    assert _durations.current is not None
    app = _flask_app()
    client = app.test_client()
    for index in range(30):
        assert client.get(f"/items/{index}").status_code == 200

    assert _scraped_count(app, "/items/<int:item>") == 30
    assert appvitals.force_flush()
    points = otlp_receiver.wait_for_metrics(
        lambda p: (
            p.name == _durations.NAME and p.attributes.get("http.route") == "/items/<int:item>"
        )
    )
    assert points[-1].value == 30
    assert sum(points[-1].bucket_counts) == 30
    assert appvitals.shutdown()  # while the receiver still answers the last export


def test_openmetrics_scrape_keeps_exemplars_of_sampled_requests() -> None:
    appvitals.configure(service_name="direct", exporter="none", sampler_ratio=1.0)
    assert _durations.current is not None
    app = _flask_app()
    app.test_client().get("/items/1")

    body, _content_type = prometheus.metrics_text(accept="application/openmetrics-text")

    lines = [line for line in body.decode().splitlines() if "# {trace_id=" in line]
    assert any(line.startswith("http_server_request_duration_seconds_bucket") for line in lines)


def test_another_reader_sends_durations_through_the_sdk() -> None:
    with Capture(service_name="sdk-path") as capture:
        assert _durations.current is None  # the capture's in-memory reader sees the provider
        app = _flask_app()
        for index in range(5):
            app.test_client().get(f"/items/{index}")
        (point,) = [
            p
            for p in capture.metrics()
            if p.name == _durations.NAME and p.attributes.get("http.route") == "/items/<int:item>"
        ]
        assert point.value == 5


def test_delta_temporality_keeps_the_sdk_path(
    monkeypatch: pytest.MonkeyPatch, configure_otlp: Callable[..., Any]
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "delta")
    configure_otlp("delta")
    assert _durations.current is None  # the export is a second reader, with its own state
    assert appvitals.shutdown()


def test_shutdown_leaves_no_direct_histogram() -> None:
    appvitals.configure(service_name="direct", exporter="none")
    assert _durations.current is not None
    appvitals.shutdown()
    assert _durations.current is None


def test_without_prometheus_the_export_reader_keeps_the_sdk_path(
    configure_otlp: Callable[..., Any],
) -> None:
    configure_otlp("direct", prometheus=False)
    assert _durations.current is None
    assert appvitals.shutdown()


def test_an_applications_own_meter_provider_keeps_the_sdk_path() -> None:
    from opentelemetry import metrics

    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
    appvitals.configure(service_name="direct", exporter="none")
    assert _durations.current is None


def _span_context(trace_id: int, span_id: int) -> SpanContext:
    return SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(1))


def test_exemplars_match_the_sdks_and_each_collection_takes_them() -> None:
    records = [(0.002, 1), (0.004, 2), (0.3, 3), (20.0, 4)]  # buckets 0, 0, 6 and the last
    direct = _durations.request_duration()
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    sdk = provider.get_meter("sdk").create_histogram(
        _durations.NAME, unit="s", explicit_bucket_boundaries_advisory=list(_durations.BUCKETS)
    )
    for value, ids in records:
        context = _span_context(0xABC0 + ids, 0x10 + ids)
        direct.record(value, GET_200, context)
        span = trace.NonRecordingSpan(context)
        sdk.record(value, GET_200, trace.set_span_in_context(span))
    direct.record(0.005, GET_200)  # unsampled: no exemplar, and bucket 0 keeps the last one
    data = reader.get_metrics_data()
    assert data is not None
    (sdk_point,) = data.resource_metrics[0].scope_metrics[0].metrics[0].data.data_points  # type: ignore[union-attr]

    (point,) = direct.points(now=1)

    def shape(exemplars: Any) -> list[tuple[Any, ...]]:
        return [(e.filtered_attributes, e.value, e.span_id, e.trace_id) for e in exemplars]

    assert shape(point.exemplars) == shape(sdk_point.exemplars)
    assert [e.span_id for e in point.exemplars] == [0x12, 0x13, 0x14]
    (again,) = direct.points(now=2)
    assert list(again.exemplars) == []
    assert again.count == point.count == 5


def test_exemplars_can_be_switched_off() -> None:
    direct = _durations.request_duration(exemplars=False)
    direct.record(0.1, GET_200, _span_context(1, 2))
    (point,) = direct.points(now=1)
    assert list(point.exemplars) == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [("trace_based", True), ("always_off", False), ("always_on", None), ("bogus", None)],
)
def test_the_exemplar_filter_decides_the_direct_path(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: bool | None
) -> None:
    monkeypatch.setenv("OTEL_METRICS_EXEMPLAR_FILTER", value)
    assert _durations.exemplar_filter() is expected
    if value != "bogus":  # the SDK itself refuses an unknown filter
        appvitals.configure(service_name="filter", exporter="none")
        current = _durations.current
        assert (current is None) if expected is None else (current.exemplars is expected)
