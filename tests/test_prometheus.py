"""appvitals.prometheus: real SDK metrics rendered as Prometheus text, single- and multi-process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from prometheus_client.parser import text_string_to_metric_families

from appvitals import prometheus
from appvitals._safety import internal_error_counts
from appvitals.prometheus import (
    CONTENT_TYPE,
    PrometheusReader,
    label_name,
    mark_process_dead,
    metric_name,
    metrics_text,
    unit_suffix,
)

DIRECTORY_VARIABLE = "APPVITALS_PROMETHEUS_MULTIPROC_DIR"


@pytest.fixture(autouse=True)
def _no_prometheus_client_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    """A PROMETHEUS_MULTIPROC_DIR of the machine must not switch tests to multi-process mode."""
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)


@contextmanager
def attached(
    reader: PrometheusReader, attributes: dict[str, Any] | None = None
) -> Iterator[MeterProvider]:
    """A local MeterProvider reading through ``reader``, shut down afterwards."""
    resource = Resource.create(attributes or {"service.name": "shop"})
    provider = MeterProvider(metric_readers=[reader], resource=resource, shutdown_on_exit=False)
    try:
        yield provider
    finally:
        provider.shutdown()


def record_everything(meter: Meter) -> None:
    """Counters, an up-down counter, a gauge, an observable gauge and a histogram."""
    orders = meter.create_counter("shop.orders", unit="{order}", description="Orders placed")
    orders.add(2, {"channel": "web"})
    orders.add(1, {"channel": "web"})
    orders.add(1, {"channel": "app"})
    meter.create_counter("shop.revenue", unit="EUR").add(12.5)
    active = meter.create_up_down_counter("http.server.active_requests", unit="{request}")
    active.add(3)
    active.add(-1)
    meter.create_gauge("shop.queue.depth", unit="{job}").set(7)

    def memory(_options: CallbackOptions) -> list[Observation]:
        return [Observation(2048, {"pool": "main"})]

    meter.create_observable_gauge("shop.memory", callbacks=[memory], unit="By")
    duration = meter.create_histogram(
        "http.server.request.duration",
        unit="s",
        description="Duration of HTTP server requests.",
        explicit_bucket_boundaries_advisory=[0.005, 0.1, 1.0],
    )
    duration.record(0.002, {"http.request.method": "GET"})
    duration.record(0.25, {"http.request.method": "GET"})
    duration.record(3, {"http.request.method": "POST"})


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Parse with prometheus_client (which rejects invalid text) into sample → value."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the rendered ``text``."""
    return samples(text)[(name, frozenset(labels.items()))]


def rendered() -> str:
    """Everything recorded by :func:`record_everything`, rendered in single-process mode."""
    reader = PrometheusReader()
    with attached(reader) as provider:
        record_everything(provider.get_meter("shop"))
        return reader.render()


# --- single process ------------------------------------------------------------------------


def test_render_is_valid_prometheus_text_with_every_type() -> None:
    """prometheus_client parses the output; every instrument appears with its Prometheus type."""
    families = {f.name: f.type for f in text_string_to_metric_families(rendered())}
    assert families == {
        "target_info": "gauge",
        "shop_orders": "counter",  # prometheus_client strips _total from counter families
        "shop_revenue_EUR": "counter",
        "http_server_active_requests": "gauge",
        "shop_queue_depth": "gauge",
        "shop_memory_bytes": "gauge",
        "http_server_request_duration_seconds": "histogram",
    }


def test_histogram_is_cumulative_with_sum_and_count() -> None:
    """Buckets accumulate up to +Inf; bounds read like Prometheus (0.005, 1 for 1.0)."""
    lines = rendered().splitlines()
    get = [line for line in lines if line.startswith("http_server_") and "GET" in line]
    assert get == [
        'http_server_request_duration_seconds_bucket{http_request_method="GET",le="0.005"} 1',
        'http_server_request_duration_seconds_bucket{http_request_method="GET",le="0.1"} 1',
        'http_server_request_duration_seconds_bucket{http_request_method="GET",le="1"} 2',
        'http_server_request_duration_seconds_bucket{http_request_method="GET",le="+Inf"} 2',
        'http_server_request_duration_seconds_sum{http_request_method="GET"} 0.252',
        'http_server_request_duration_seconds_count{http_request_method="GET"} 2',
    ]
    assert (
        'http_server_request_duration_seconds_bucket{http_request_method="POST",le="1"} 0' in lines
    )
    assert 'http_server_request_duration_seconds_count{http_request_method="POST"} 1' in lines
    assert "# HELP http_server_request_duration_seconds Duration of HTTP server requests." in lines
    assert "# TYPE http_server_request_duration_seconds histogram" in lines


def test_counters_get_total_and_print_integers_without_decimal_point() -> None:
    """Integer counts print as integers, float sums as floats; both are valid Prometheus."""
    lines = rendered().splitlines()
    assert "# HELP shop_orders_total Orders placed" in lines
    assert "# TYPE shop_orders_total counter" in lines
    assert 'shop_orders_total{channel="app"} 1' in lines
    assert 'shop_orders_total{channel="web"} 3' in lines
    assert "shop_revenue_EUR_total 12.5" in lines


def test_units_become_suffixes_and_annotations_are_dropped() -> None:
    """{request} and {job} vanish, By becomes _bytes; up-down counters and gauges are gauges."""
    lines = rendered().splitlines()
    assert "# TYPE http_server_active_requests gauge" in lines
    assert "http_server_active_requests 2" in lines
    assert "shop_queue_depth 7" in lines
    assert 'shop_memory_bytes{pool="main"} 2048' in lines


def test_label_values_and_help_are_escaped() -> None:
    """A value with a quote, a backslash and a newline, and such a description, stay parseable."""
    reader = PrometheusReader()
    with attached(reader) as provider:
        counter = provider.get_meter("shop").create_counter(
            "shop.notes", description='Notes with "quotes",\na second line and a \\ backslash'
        )
        counter.add(1, {"note": 'say "hi"\nC:\\temp'})
        text = reader.render()
    lines = text.splitlines()
    assert r'shop_notes_total{note="say \"hi\"\nC:\\temp"} 1' in lines
    assert (
        r'# HELP shop_notes_total Notes with "quotes",\na second line and a \\ backslash' in lines
    )
    assert value(text, "shop_notes_total", note='say "hi"\nC:\\temp') == 1


def test_attribute_keys_are_sanitised_and_collisions_joined_in_key_order() -> None:
    """a.b and a_b both become a_b: values joined with ';' ordered by the original keys."""
    reader = PrometheusReader()
    with attached(reader) as provider:
        counter = provider.get_meter("shop").create_counter("shop.tagged")
        counter.add(1, {"a_b": "second", "a.b": "first", "2xx": True, "ids": [1, 2], "__x": 1.5})
        text = reader.render()
    assert 'shop_tagged_total{_2xx="true",_x="1.5",a_b="first;second",ids="[1,2]"} 1' in (
        text.splitlines()
    )
    samples(text)


def test_target_info_holds_resource_attributes_but_job_and_instance() -> None:
    """service.name/namespace/instance.id are left to job and instance; process.pid stays."""
    reader = PrometheusReader()
    resource = {
        "service.name": "shop",
        "service.namespace": "retail",
        "service.instance.id": "shop-1",
        "deployment.environment.name": "prod",
        "process.pid": 1234,
    }
    with attached(reader, resource) as provider:
        provider.get_meter("shop").create_counter("shop.orders").add(1)
        text = reader.render()
    (info,) = [s for s in samples(text) if s[0] == "target_info"]
    labels = dict(info[1])
    assert labels["deployment_environment_name"] == "prod"
    assert labels["process_pid"] == "1234"
    assert labels["telemetry_sdk_language"] == "python"
    assert not {"service_name", "service_namespace", "service_instance_id"} & labels.keys()
    assert value(text, "target_info", **labels) == 1
    assert text.startswith("# HELP target_info Target metadata\n# TYPE target_info gauge\n")


def test_target_info_is_there_before_anything_is_recorded() -> None:
    """An idle application still describes itself (and the output is otherwise empty)."""
    reader = PrometheusReader()
    with attached(reader, {"service.name": "shop", "host.name": "web-1"}):
        text = reader.render()
    assert [name for name, _ in samples(text)] == ["target_info"]
    assert 'host_name="web-1"' in text


def test_families_are_sorted_declared_once_and_merged_across_scopes() -> None:
    """One TYPE line per family, sorted by name; the same counter from two meters is summed."""
    reader = PrometheusReader()
    with attached(reader) as provider:
        provider.get_meter("zeta").create_counter("jobs.done").add(2, {"queue": "q"})
        provider.get_meter("alpha").create_counter("jobs.done").add(3, {"queue": "q"})
        provider.get_meter("alpha").create_gauge("a.gauge").set(1)
        text = reader.render()
    types = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert types == ["target_info", "a_gauge", "jobs_done_total"]
    assert 'jobs_done_total{queue="q"} 5' in text.splitlines()


def test_conflicting_types_keep_the_first_family(caplog: pytest.LogCaptureFixture) -> None:
    """A counter and a gauge that translate to one name: one family survives, with a warning."""
    reader = PrometheusReader()
    with attached(reader) as provider:
        meter = provider.get_meter("shop")
        meter.create_counter("jobs").add(1)
        meter.create_gauge("jobs.total").set(9)
        text = reader.render()
    assert text.count("# TYPE jobs_total") == 1
    assert "jobs_total 1" in text.splitlines()
    samples(text)
    assert "different types" in caplog.text


def test_render_of_a_reader_without_provider_is_empty() -> None:
    """A reader not attached to any MeterProvider renders nothing and does not warn."""
    assert PrometheusReader().render() == ""


def test_metrics_text_before_configuration_says_so() -> None:
    """Without a MeterProvider behind the process-wide reader: a single comment line."""
    assert metrics_text() == (b"# appvitals is not configured\n", CONTENT_TYPE)
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


def test_metrics_text_renders_the_process_wide_reader_until_its_provider_stops() -> None:
    """reader() is a singleton; once its provider shuts down a fresh, unattached one follows."""
    shared = prometheus.reader()
    assert prometheus.reader() is shared
    with attached(shared) as provider:
        provider.get_meter("shop").create_counter("shop.orders").add(4)
        body, content_type = metrics_text()
    assert content_type == CONTENT_TYPE
    assert "shop_orders_total 4" in body.decode().splitlines()
    assert shared.is_shutdown
    assert prometheus.reader() is not shared
    assert metrics_text()[0] == b"# appvitals is not configured\n"


@pytest.mark.parametrize(
    ("name", "unit", "kind", "expected"),
    [
        ("http.server.request.duration", "s", "histogram", "http_server_request_duration_seconds"),
        (
            "db.client.operation.duration",
            "ms",
            "histogram",
            "db_client_operation_duration_milliseconds",
        ),
        ("gc.pause", "us", "gauge", "gc_pause_microseconds"),
        ("http.server.request.body.size", "By", "histogram", "http_server_request_body_size_bytes"),
        ("cache.size", "KiBy", "gauge", "cache_size_kibibytes"),
        ("heap.size", "MiBy", "gauge", "heap_size_mebibytes"),
        ("shop.orders", "{order}", "counter", "shop_orders_total"),
        ("http.server.active_requests", "{request}", "gauge", "http_server_active_requests"),
        ("cpu.utilization", "1", "gauge", "cpu_utilization_ratio"),
        ("retries", "1", "counter", "retries_total"),
        ("errors", "1", "histogram", "errors"),
        ("network.io", "By/s", "gauge", "network_io_bytes_per_second"),
        ("requests.rate", "{request}/s", "gauge", "requests_rate_per_second"),
        ("speed", "m/h", "gauge", "speed_meters_per_hour"),
        ("price", "EUR", "gauge", "price_EUR"),
        ("weird", "kg.m-2", "gauge", "weird_kg_m_2"),
        ("latency_seconds", "s", "histogram", "latency_seconds"),
        ("jobs_total", "", "counter", "jobs_total"),
        ("work.total", "s", "counter", "work_seconds_total"),
        (
            "process.runtime.cpython.gc-count",
            "",
            "counter",
            "process_runtime_cpython_gc_count_total",
        ),
        ("2xx.responses", "", "counter", "_2xx_responses_total"),
        ("a..b__c", "", "gauge", "a_b_c"),
        ("ns:metric", "", "gauge", "ns:metric"),
        ("café.visits", "", "counter", "caf_visits_total"),
    ],
)
def test_metric_names_follow_the_specification(
    name: str, unit: str, kind: prometheus.Kind, expected: str
) -> None:
    """Sanitising, unit suffixes (not repeated) and _total, as the compatibility spec says."""
    assert metric_name(name, unit, kind) == expected


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("http.request.method", "http_request_method"),
        ("url.scheme", "url_scheme"),
        ("2xx", "_2xx"),
        ("__reserved", "_reserved"),
        ("a..b", "a_b"),
        ("ns:key", "ns_key"),
        ("ünïcode", "_n_code"),
        ("", "_"),
    ],
)
def test_label_names_follow_the_specification(key: str, expected: str) -> None:
    """Label names: [a-zA-Z0-9_] only, no repeated _, no leading digit, no __ prefix."""
    assert label_name(key) == expected


@pytest.mark.parametrize(
    ("unit", "kind", "expected"),
    [
        ("s", "histogram", "seconds"),
        ("{packet}", "counter", ""),
        ("1", "gauge", "ratio"),
        ("1", "counter", ""),
        ("1/s", "gauge", "per_second"),
        ("By/{request}", "gauge", "bytes"),
        ("%", "gauge", "percent"),
        ("", "gauge", ""),
    ],
)
def test_unit_suffixes(unit: str, kind: prometheus.Kind, expected: str) -> None:
    """UCUM units map to the words Prometheus uses."""
    assert unit_suffix(unit, kind) == expected


# --- multi-process -------------------------------------------------------------------------

WORKER = textwrap.dedent(
    """
    import os
    import sys

    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.resources import Resource

    from appvitals.prometheus import PrometheusReader

    orders, active, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    reader = PrometheusReader()
    provider = MeterProvider(
        metric_readers=[reader],
        resource=Resource.create({"service.name": "shop"}),
        shutdown_on_exit=False,
    )
    try:
        meter = provider.get_meter("shop")
        meter.create_counter("shop.orders").add(orders, {"channel": "web"})
        meter.create_histogram(
            "http.server.request.duration", unit="s", explicit_bucket_boundaries_advisory=[0.1, 1.0]
        ).record(0.05, {"http.request.method": "GET"})
        meter.create_up_down_counter("http.server.active_requests", unit="{request}").add(active)
        reader.render()
        print(os.getpid(), flush=True)
        if mode == "wait":
            sys.stdin.read()
    finally:
        provider.shutdown()
    """
)


def worker_environment(directory: Path) -> dict[str, str]:
    """This environment with the multi-process directory set (and no coverage of ours lost)."""
    environment = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    environment[DIRECTORY_VARIABLE] = str(directory)
    return environment


def run_worker(directory: Path, orders: int, active: int) -> int:
    """A worker process that records, renders once (writing its snapshot) and exits."""
    process = subprocess.run(
        [sys.executable, "-c", WORKER, str(orders), str(active), "exit"],
        env=worker_environment(directory),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert process.returncode == 0, process.stderr
    return int(process.stdout)


@contextmanager
def live_worker(directory: Path, orders: int, active: int) -> Iterator[subprocess.Popen[str]]:
    """A worker that stays alive (waiting on stdin) after writing its snapshot."""
    process = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(orders), str(active), "wait"],
        env=worker_environment(directory),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == f"{process.pid}\n"
        yield process
    finally:
        if process.stdin is not None:
            process.stdin.close()
        process.wait(timeout=60)
        if process.stdout is not None:
            process.stdout.close()


def record_own(meter: Meter, orders: int, active: int) -> None:
    """The same instruments as WORKER, in the test process."""
    meter.create_counter("shop.orders").add(orders, {"channel": "web"})
    meter.create_histogram(
        "http.server.request.duration", unit="s", explicit_bucket_boundaries_advisory=[0.1, 1.0]
    ).record(0.05, {"http.request.method": "GET"})
    meter.create_up_down_counter("http.server.active_requests", unit="{request}").add(active)


def totals(text: str) -> tuple[float, float, float]:
    """(orders, request count, active requests) of a merged rendering."""
    parsed = samples(text)
    count = parsed[
        ("http_server_request_duration_seconds_count", frozenset({("http_request_method", "GET")}))
    ]
    active = parsed.get(("http_server_active_requests", frozenset()), 0.0)
    return value(text, "shop_orders_total", channel="web"), count, active


def snapshot_files(directory: Path) -> list[str]:
    """The appvitals-*.json files in ``directory``."""
    return sorted(path.name for path in directory.glob("appvitals-*.json"))


def test_workers_are_merged_counters_from_all_gauges_from_live_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counters and histograms sum every worker, dead ones too; gauges only the live ones."""
    first = run_worker(tmp_path, orders=2, active=1)
    second = run_worker(tmp_path, orders=3, active=2)
    assert snapshot_files(tmp_path) == sorted(
        [f"appvitals-{first}.json", f"appvitals-{second}.json"]
    )
    monkeypatch.setenv(DIRECTORY_VARIABLE, str(tmp_path))
    reader = PrometheusReader()
    with attached(reader) as provider:
        record_own(provider.get_meter("shop"), orders=1, active=5)
        text = reader.render()
        # Both workers exited: their active requests no longer count, their orders do.
        assert totals(text) == (6, 3, 5)
        lines = text.splitlines()
        assert lines.count("# TYPE shop_orders_total counter") == 1
        assert (
            'http_server_request_duration_seconds_bucket{http_request_method="GET",le="0.1"} 3'
            in (lines)
        )
        # One target_info, this process's, without a pid that changes from scrape to scrape.
        assert text.count("target_info{") == 1
        assert "process_pid" not in text

        with live_worker(tmp_path, orders=4, active=7) as live:
            assert totals(reader.render()) == (10, 4, 12)
        # It exited (and wrote a last snapshot): its gauge is gone, its counts stay.
        assert totals(reader.render()) == (10, 4, 5)

        assert mark_process_dead(live.pid, tmp_path)
        assert mark_process_dead(first)
        assert mark_process_dead(second, str(tmp_path))
        assert not mark_process_dead(second, tmp_path)
        assert totals(reader.render()) == (10, 4, 5)
        own = f"appvitals-{os.getpid()}.json"
        assert snapshot_files(tmp_path) == sorted(["appvitals-dead.json", own])


def test_a_worker_marked_dead_while_running_loses_only_its_gauges(tmp_path: Path) -> None:
    """mark_process_dead keeps counters even when the pid still answers (pid reuse)."""
    reader = PrometheusReader(directory=tmp_path)
    with attached(reader) as provider:
        record_own(provider.get_meter("shop"), orders=1, active=1)
        with live_worker(tmp_path, orders=2, active=10) as live:
            assert totals(reader.render()) == (3, 2, 11)
            assert mark_process_dead(live.pid, tmp_path)
            assert totals(reader.render()) == (3, 2, 1)
        # Its last snapshot, written after being marked dead, is not counted a second time.
        assert totals(reader.render()) == (3, 2, 1)


def test_a_dead_predecessor_with_our_pid_is_kept(tmp_path: Path) -> None:
    """A snapshot left under this pid by another process is folded in before being replaced."""
    stale = {
        "version": 1,
        "pid": os.getpid(),
        "token": "a-previous-process",
        "families": [
            {
                "name": "shop_orders_total",
                "type": "counter",
                "help": "",
                "samples": [["", [["channel", "web"]], 40]],
            },
            {
                "name": "http_server_active_requests",
                "type": "gauge",
                "help": "",
                "samples": [["", [], 100]],
            },
        ],
    }
    (tmp_path / f"appvitals-{os.getpid()}.json").write_text(json.dumps(stale))
    reader = PrometheusReader(directory=tmp_path)
    with attached(reader) as provider:
        record_own(provider.get_meter("shop"), orders=2, active=1)
        assert totals(reader.render()) == (42, 1, 1)
        assert totals(reader.render()) == (42, 1, 1)
    mine = json.loads((tmp_path / f"appvitals-{os.getpid()}.json").read_text())
    assert mine["token"] != "a-previous-process"


def test_corrupt_and_foreign_files_are_skipped_and_counted(tmp_path: Path) -> None:
    """Unreadable snapshots never break the scrape; each one is counted as an internal error."""
    (tmp_path / "appvitals-999999998.json").write_text("{not json")
    (tmp_path / "appvitals-999999999.json").write_text(json.dumps({"version": 99}))
    (tmp_path / "appvitals-notes.json").write_text("ignored: not a worker snapshot")
    (tmp_path / "counter_123.db").write_bytes(b"\0")  # prometheus_client's own files
    reader = PrometheusReader(directory=tmp_path)
    with attached(reader) as provider:
        record_own(provider.get_meter("shop"), orders=1, active=1)
        assert totals(reader.render()) == (1, 1, 1)
    assert internal_error_counts()["prometheus.multiprocess"] >= 2


def test_a_corrupt_dead_worker_file_is_removed_by_mark_process_dead(tmp_path: Path) -> None:
    """Nothing can be recovered from it, so it does not stay around forever."""
    path = tmp_path / "appvitals-999999997.json"
    path.write_text("[")
    assert not mark_process_dead(999999997, tmp_path)
    assert not path.exists()


def test_mark_process_dead_without_a_directory_does_nothing(tmp_path: Path) -> None:
    """No multi-process directory (or a missing one): nothing to do, no error."""
    assert not mark_process_dead(os.getpid())
    assert not mark_process_dead(os.getpid(), tmp_path / "missing")
    assert "prometheus.multiprocess" not in internal_error_counts()


@pytest.fixture
def own_snapshot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This process's snapshot file, in a multi-process directory written every 50 ms."""
    monkeypatch.setenv(DIRECTORY_VARIABLE, str(tmp_path))
    monkeypatch.setenv("APPVITALS_PROMETHEUS_WRITE_INTERVAL", "0.05")
    return tmp_path / f"appvitals-{os.getpid()}.json"


def test_snapshots_are_written_in_the_background_and_stop_at_shutdown(own_snapshot: Path) -> None:
    """A worker that is never scraped still publishes its counts every interval."""
    own = own_snapshot
    reader = PrometheusReader()
    with attached(reader) as provider:
        provider.get_meter("shop").create_counter("shop.orders").add(5, {"channel": "web"})

        def written() -> bool:
            # The thread starts at attach: its first snapshot may predate the counter.
            return own.exists() and bool(json.loads(own.read_text())["families"])

        deadline = time.monotonic() + 10
        while not written() and time.monotonic() < deadline:
            time.sleep(0.02)
        snapshot = json.loads(own.read_text())
        assert snapshot["families"][0]["samples"] == [["", [["channel", "web"]], 5]]
        assert reader.start_snapshots()
        threads = [t for t in threading.enumerate() if t.name == "appvitals-prometheus-snapshots"]
        assert len(threads) == 1
    threads[0].join(5)
    assert not threads[0].is_alive()
    assert not reader.start_snapshots()


def test_inline_export_mode_writes_snapshots_from_the_schedule(
    own_snapshot: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """export_mode="inline": the snapshot is an export task run by tick(), not a thread."""
    from appvitals import _inline

    own = own_snapshot
    schedule = _inline.Schedule()
    monkeypatch.setattr(_inline, "current", schedule)
    reader = PrometheusReader()
    with attached(reader) as provider:
        provider.get_meter("shop").create_counter("shop.orders").add(5, {"channel": "web"})
        assert reader.start_snapshots()  # again: still one task
        assert not own.exists()
        time.sleep(0.1)
        _inline.tick()
        snapshot = json.loads(own.read_text())
        assert snapshot["families"][0]["samples"] == [["", [["channel", "web"]], 5]]
        assert not any(t.name == "appvitals-prometheus-snapshots" for t in threading.enumerate())
        assert [task.name for task in schedule._tasks] == ["prometheus snapshot"]


def test_single_process_mode_writes_nothing_and_starts_no_thread(tmp_path: Path) -> None:
    """Without the variable the reader is a plain pull reader."""
    reader = PrometheusReader()
    with attached(reader) as provider:
        provider.get_meter("shop").create_counter("shop.orders").add(1)
        reader.render()
        assert not reader.start_snapshots()
        assert not prometheus.start_snapshots()
    assert not any(t.name == "appvitals-prometheus-snapshots" for t in threading.enumerate())
    assert reader.multiprocess_directory() is None


FORKING = textwrap.dedent(
    """
    import os
    import sys
    import time
    from pathlib import Path

    from opentelemetry.sdk.metrics import MeterProvider

    from appvitals.prometheus import PrometheusReader

    directory = Path(sys.argv[1])
    reader = PrometheusReader(directory=directory, interval=0.05)
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    provider.get_meter("shop").create_counter("shop.orders").add(1)
    child = os.fork()
    if child == 0:
        # No render here: only a snapshot thread restarted in the child writes this file.
        path = directory / f"appvitals-{os.getpid()}.json"
        deadline = time.monotonic() + 10
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        os._exit(0 if path.exists() else 1)
    _, status = os.waitpid(child, 0)
    provider.shutdown()
    print(os.getpid(), child, os.waitstatus_to_exitcode(status))
    """
)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_restarts_the_snapshot_thread(tmp_path: Path) -> None:
    """gunicorn --preload: the child writes its own snapshot, under its own pid and token."""
    environment = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    process = subprocess.run(
        [sys.executable, "-c", FORKING, str(tmp_path)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert process.returncode == 0, process.stderr
    parent_pid, child, status = process.stdout.split()
    assert status == "0", process.stderr
    parent = json.loads((tmp_path / f"appvitals-{parent_pid}.json").read_text())
    forked = json.loads((tmp_path / f"appvitals-{child}.json").read_text())
    assert forked["pid"] == int(child)
    assert forked["token"] != parent["token"]


def test_host_wide_counters_of_dead_processes_are_not_added(tmp_path: Path) -> None:
    """system_* families count only while their reporter lives; a successor reports the same."""
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    document = {
        "version": 1,
        "pid": finished.pid,
        "token": "the-old-reporter",
        "families": [
            {
                "name": "shop_orders_total",
                "type": "counter",
                "help": "",
                "samples": [["", [["channel", "web"]], 4]],
            },
            {
                "name": "system_network_io_bytes_total",
                "type": "counter",
                "help": "",
                "samples": [["", [["network_io_direction", "receive"]], 1000]],
            },
        ],
    }
    (tmp_path / f"appvitals-{finished.pid}.json").write_text(json.dumps(document))
    reader = PrometheusReader(directory=tmp_path)
    with attached(reader) as provider:
        meter = provider.get_meter("host")
        meter.create_counter("system.network.io", unit="By").add(
            1500, {"network.io.direction": "receive"}
        )
        text = reader.render()
        assert value(text, "system_network_io_bytes_total", network_io_direction="receive") == 1500
        assert value(text, "shop_orders_total", channel="web") == 4
        assert mark_process_dead(finished.pid, tmp_path)
        text = reader.render()
        assert value(text, "system_network_io_bytes_total", network_io_direction="receive") == 1500
        assert value(text, "shop_orders_total", channel="web") == 4


def test_metrics_text_keeps_its_zero_argument_form() -> None:
    """metrics_text() and metrics_text(None) are the Prometheus 0.0.4 answer, as before."""
    assert metrics_text() == metrics_text(None) == (prometheus.NOT_CONFIGURED_BODY, CONTENT_TYPE)
