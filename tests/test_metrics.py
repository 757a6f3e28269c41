"""Metric helpers: caching, validation, gauges, and the cardinality guard."""

from __future__ import annotations

import pytest

import appvitals
from appvitals.testing._capture import Capture


def test_instruments_are_cached_and_recorded(capture: Capture) -> None:
    """Same name → same instrument; values reach the exporter with their attributes."""
    orders = appvitals.counter("shop.orders", unit="{order}", description="Orders")
    assert appvitals.counter("shop.orders") is orders
    orders.add(2, {"channel": "web"})
    orders.add(1, {"channel": "web"})
    queue = appvitals.updown_counter("queue.items")
    queue.add(5)
    queue.add(-2)
    latency = appvitals.histogram("heartbeat.duration", buckets=[0.01, 0.1, 1])
    latency.record(0.05)
    temperature = appvitals.gauge("room.temperature", unit="Cel")
    temperature.set(21.5, {"room": "a"})
    (point,) = capture.metric("shop.orders")
    assert (point.value, point.attributes, point.unit) == (3, {"channel": "web"}, "{order}")
    assert point.description == "Orders"
    assert capture.metric("queue.items")[0].value == 3
    (hist,) = capture.metric("heartbeat.duration")
    assert hist.explicit_bounds == [0.01, 0.1, 1.0]
    assert hist.bucket_counts == [0, 1, 0, 0]
    assert capture.metric("room.temperature")[0].value == 21.5


def test_observable_gauge_callback_forms(capture: Capture) -> None:
    """A gauge callback may return a number, pairs with attributes, or None."""
    appvitals.gauge("application.overdue.count", callback=lambda: 3)
    appvitals.gauge("pool.size", callback=lambda: [(5, {"pool": "main"}), (2, {"pool": "replica"})])
    appvitals.gauge("nothing.yet", callback=lambda: None)
    assert capture.metric("application.overdue.count")[0].value == 3
    assert {p.attributes["pool"]: p.value for p in capture.metric("pool.size")} == {
        "main": 5,
        "replica": 2,
    }
    assert capture.metric("nothing.yet") == []


@pytest.mark.parametrize(
    ("name", "unit"),
    [
        ("1starts.with.digit", "1"),
        ("has space", "1"),
        ("x" * 256, "1"),
        ("ok", "é"),
        ("ok2", "u" * 64),
    ],
)
def test_invalid_definitions_fail_at_definition_time(name: str, unit: str) -> None:
    """Names and units breaking OpenTelemetry's rules raise MetricDefinitionError at once."""
    with pytest.raises(appvitals.MetricDefinitionError):
        appvitals.counter(name, unit=unit)


def test_same_name_other_kind_is_an_error() -> None:
    """Redefining a counter as a histogram is refused."""
    appvitals.counter("dual.use")
    with pytest.raises(appvitals.MetricDefinitionError, match="already a counter"):
        appvitals.histogram("dual.use")


def test_cardinality_guard_overflows_and_counts() -> None:
    """Past the limit, new attribute sets go to otel.metric.overflow and are counted."""
    with Capture(cardinality_limit=3) as capture:
        hits = appvitals.counter("page.hits")
        for user in range(10):
            hits.add(1, {"user.id": str(user)})
        hits.add(1, {"user.id": "0"})  # a known set still records normally
        points = {tuple(p.attributes.items()): p.value for p in capture.metric("page.hits")}
        assert points[(("user.id", "0"),)] == 2
        assert points[(("otel.metric.overflow", True),)] == 7
        assert len(points) == 4
        (overflow,) = capture.metric("appvitals.metrics.cardinality_overflow")
        assert (overflow.value, overflow.attributes) == (7, {"instrument": "page.hits"})


def test_unhashable_attribute_values_are_guarded(capture: Capture) -> None:
    """List-valued attributes (allowed by OpenTelemetry) do not break the guard."""
    appvitals.counter("tagged").add(1, {"tags": ["a", "b"]})
    assert capture.metric("tagged")[0].attributes == {"tags": ["a", "b"]}


def test_failing_gauge_callback_is_contained(capture: Capture) -> None:
    """A callback that raises yields no point, and the error is counted, not raised."""

    def broken() -> float:
        raise RuntimeError("sensor offline")

    appvitals.gauge("sensor.value", callback=broken)
    assert capture.metric("sensor.value") == []
    errors = {p.attributes["where"]: p.value for p in capture.metric("appvitals.internal.errors")}
    assert errors["gauge sensor.value callback"] >= 1
