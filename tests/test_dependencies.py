"""appvitals.dependencies: caches, queues, peer.service and the two-service example's edge."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from appvitals import dependencies
from appvitals._safety import internal_error_counts
from appvitals.dependencies import peer_service, set_peer_services
from appvitals.prometheus import metrics_text
from appvitals.testing import Capture
from example_runner import run_example

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CLIENT, SERVER = 3, 2
ERROR = 2


@pytest.fixture(autouse=True)
def _forget_registrations() -> Iterator[None]:
    """Queue callbacks and peer maps set by one test do not leak into the next."""
    yield
    dependencies._reset()
    set_peer_services(None)


def test_cache_hits_and_misses_count_by_cache_and_result(capture: Capture) -> None:
    """One counter, appvitals.cache.requests, by cache.name and cache.result."""
    dependencies.cache_hit("sessions")
    dependencies.cache_hit("sessions", 3)
    dependencies.cache_miss("sessions")
    dependencies.cache_miss("catalog", 2)
    points = {
        (p.attributes["cache.name"], p.attributes["cache.result"]): p.value
        for p in capture.metric("appvitals.cache.requests")
    }
    assert points == {("sessions", "hit"): 4, ("sessions", "miss"): 1, ("catalog", "miss"): 2}
    body = metrics_text()[0].decode()
    assert 'appvitals_cache_requests_total{cache_name="sessions",cache_result="hit"} 4' in body


def test_queue_depth_is_read_from_callbacks_at_collection(capture: Capture) -> None:
    """Callbacks run when metrics are collected; replaced or removed callbacks stop reporting."""
    jobs: list[int] = [1, 2, 3]
    dependencies.queue_depth("jobs", lambda: len(jobs))
    dependencies.queue_depth("emails", lambda: 7)
    depths = {p.attributes["queue.name"]: p.value for p in capture.metric("appvitals.queue.depth")}
    assert depths == {"jobs": 3, "emails": 7}
    jobs.pop()
    dependencies.queue_depth("emails", lambda: None)  # unknown right now: no point
    depths = {p.attributes["queue.name"]: p.value for p in capture.metric("appvitals.queue.depth")}
    assert depths == {"jobs": 2}
    dependencies.queue_depth("jobs", None)
    assert capture.metric("appvitals.queue.depth") == []


def test_a_failing_queue_callback_does_not_hide_the_others(capture: Capture) -> None:
    """The broken queue is counted as an internal error; the healthy one still reports."""

    def broken() -> int:
        raise ConnectionError("redis down")

    dependencies.queue_depth("broken", broken)
    dependencies.queue_depth("ok", lambda: 1)
    depths = {p.attributes["queue.name"]: p.value for p in capture.metric("appvitals.queue.depth")}
    assert depths == {"ok": 1}
    assert internal_error_counts()["queue_depth broken callback"] >= 1


def test_enqueue_dequeue_counts_and_lag(capture: Capture) -> None:
    """Messages counted by direction; lag recorded once per dequeue call, never negative."""
    dependencies.enqueued("emails", 5)
    dependencies.dequeued("emails", 2, lag_seconds=1.5)
    dependencies.dequeued("emails", lag_seconds=-0.2)  # producer clock ahead
    dependencies.dequeued("emails")
    messages = {
        p.attributes["direction"]: p.value for p in capture.metric("appvitals.queue.messages")
    }
    assert messages == {"enqueue": 5, "dequeue": 4}
    (lag,) = capture.metric("appvitals.queue.lag")
    assert (lag.unit, lag.value, lag.sum) == ("s", 2, 1.5)
    assert lag.attributes == {"queue.name": "emails"}
    assert lag.explicit_bounds == list(dependencies.LAG_BUCKETS)
    body = metrics_text()[0].decode()
    assert 'appvitals_queue_messages_total{direction="dequeue",queue_name="emails"} 4' in body
    assert 'appvitals_queue_lag_seconds_bucket{queue_name="emails",le="5"} 2' in body


def test_helpers_never_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    """A failing instrument is counted, not raised into the application."""

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(dependencies.metrics, "counter", broken)
    dependencies.cache_hit("x")
    dependencies.enqueued("x")
    dependencies.dequeued("x", lag_seconds=1)
    assert internal_error_counts()["cache_hit"] == 1


def test_peer_services_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """host:port beats host, *.domain matches sub-domains, hosts compare case-insensitively."""
    monkeypatch.setenv(
        "APPVITALS_PEER_SERVICES",
        "api.erp.local=erp, 10.0.0.5:8080=pim ,10.0.0.5=legacy,*.cache.local=cache,[::1]:9000=v6",
    )
    assert peer_service("api.erp.local") == "erp"
    assert peer_service("API.ERP.LOCAL", 443) == "erp"
    assert peer_service("10.0.0.5", 8080) == "pim"
    assert peer_service("10.0.0.5", 9090) == "legacy"
    assert peer_service("redis-1.eu.cache.local", 6379) == "cache"
    assert peer_service("[::1]", 9000) == peer_service("::1", 9000) == "v6"
    assert peer_service("example.org") is None
    assert peer_service(None) is None
    monkeypatch.setenv("APPVITALS_PEER_SERVICES", "api.erp.local=erp-v2")
    assert peer_service("api.erp.local") == "erp-v2", "a changed variable is read again"


def test_code_mapping_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """set_peer_services() entries take precedence; None forgets them."""
    monkeypatch.setenv("APPVITALS_PEER_SERVICES", "api.erp.local=erp")
    set_peer_services({"api.erp.local": "erp-staging", "pim.local:8080": "pim"})
    assert peer_service("api.erp.local") == "erp-staging"
    assert peer_service("pim.local", 8080) == "pim"
    set_peer_services(None)
    assert peer_service("api.erp.local") == "erp"


def test_invalid_peer_entries_are_skipped_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An entry without '=' warns, naming the variable; the valid ones still apply."""
    monkeypatch.setenv("APPVITALS_PEER_SERVICES", "broken,ok.local=ok,=nohost")
    with caplog.at_level(logging.WARNING, logger="appvitals"):
        assert peer_service("ok.local") == "ok"
    assert caplog.text.count("APPVITALS_PEER_SERVICES") == 2


def load_example() -> ModuleType:
    """examples/two_services.py as a module (it has no side effects at import)."""
    spec = importlib.util.spec_from_file_location("two_services", EXAMPLES / "two_services.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_two_services_form_a_dependency_edge(capture: Capture) -> None:
    """shop's CLIENT span carries peer.service and is the parent of inventory's SERVER span."""
    example = load_example()
    with example.Server(example.create_inventory()) as inventory:
        set_peer_services({f"127.0.0.1:{inventory.port}": "inventory"})
        with example.Server(example.create_shop(inventory.url)) as shop:
            status, _ = example.get(f"{shop.url}/orders/apple")
            assert status == 200
    order = capture.span("GET /orders/<sku>")
    call = capture.span("GET")
    stock = capture.span("GET /stock/<sku>")
    assert (order.kind, call.kind, stock.kind) == (SERVER, CLIENT, SERVER)
    assert call.parent_span_id == order.span_id
    assert stock.parent_span_id == call.span_id, "traceparent made the server a child"
    assert order.trace_id == call.trace_id == stock.trace_id
    assert call.attributes["peer.service"] == "inventory"
    assert call.attributes["server.address"] == "127.0.0.1"
    assert call.attributes["http.response.status_code"] == 200
    assert stock.attributes["correlation_id"] == order.attributes["correlation_id"]
    assert example.edges(capture.spans()) == {("inventory", "GET /stock/<sku>", 0): 1}


def test_an_error_in_the_callee_is_an_error_in_both_services(capture: Capture) -> None:
    """inventory's exception: its SERVER span, shop's CLIENT span and shop's 502 all in error."""
    example = load_example()
    with example.Server(example.create_inventory()) as inventory:
        set_peer_services({f"127.0.0.1:{inventory.port}": "inventory"})
        with example.Server(example.create_shop(inventory.url)) as shop:
            status, _ = example.get(f"{shop.url}/orders/broken")
            assert status == 502
    order, call, stock = (
        capture.span(name) for name in ("GET /orders/<sku>", "GET", "GET /stock/<sku>")
    )
    assert stock.status_code == call.status_code == order.status_code == ERROR
    assert stock.attributes["error.type"] == "RuntimeError"
    assert call.attributes["error.type"] == "ServerError"  # the taxonomy type (docs/http.md)
    assert order.attributes["error.type"] == "502"
    assert stock.parent_span_id == call.span_id


def test_two_services_script_prints_the_edges(tmp_path: Path) -> None:
    """`python examples/two_services.py` runs and finds two good calls and one failed call."""
    result = run_example("two_services.py", tmp_path, APPVITALS_JSONL_DIR=str(tmp_path / "data"))
    assert result.returncode == 0, result.stderr
    assert "edge: shop -> inventory (GET /stock/<sku>, ok) x2" in result.stdout
    assert "edge: shop -> inventory (GET /stock/<sku>, error) x1" in result.stdout
    assert "GET /orders/broken -> 502" in result.stdout
