"""appvitals.resources: process, GC and host metrics, their names, fork safety and exports."""

from __future__ import annotations

import gc
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from appvitals import _system_metrics, resources
from appvitals._otlp_json import to_otlp_json
from appvitals._safety import internal_error_counts
from appvitals.prometheus import metrics_text
from appvitals.testing import Capture, MetricPoint, metrics_from, read_metrics

PROCESS = {
    "process.cpu.time",
    "process.cpu.utilization",
    "process.memory.usage",
    "process.memory.virtual",
    "process.thread.count",
    "process.unix.file_descriptor.count",
    "process.context_switches",
}
GC = {
    "cpython.gc.collections",
    "cpython.gc.collected_objects",
    "cpython.gc.uncollectable_objects",
    "appvitals.cpython.gc.pause.time",
}
SYSTEM = {
    "system.cpu.utilization",
    "system.memory.usage",
    "system.memory.utilization",
    "system.memory.limit",
    "system.paging.usage",
    "system.filesystem.usage",
    "system.disk.io",
    "system.network.io",
}


class Local:
    """A MeterProvider of the test's own, read like Capture, whatever configure() registers."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader])

    def metrics(self) -> list[MetricPoint]:
        """Every data point collected now."""
        data = self.reader.get_metrics_data()
        return [] if data is None else metrics_from([to_otlp_json(encode_metrics(data))])

    def metric(self, name: str) -> list[MetricPoint]:
        """The data points of the metric ``name``."""
        return [point for point in self.metrics() if point.name == name]


@pytest.fixture
def local() -> Iterator[Local]:
    """A local provider, shut down after the test."""
    provider = Local()
    yield provider
    provider.provider.shutdown()


def names(source: Capture | Local) -> set[str]:
    """Every metric name collected now."""
    return {point.name for point in source.metrics()}


def test_process_metrics_have_semantic_convention_names_units_and_attributes(
    capture: Capture,
) -> None:
    """CPU time by mode, RSS and virtual memory, threads, fds and context switches appear."""
    resources.register()
    assert names(capture) >= PROCESS | GC
    cpu = {p.attributes["cpu.mode"]: p for p in capture.metric("process.cpu.time")}
    assert set(cpu) == {"user", "system"}
    assert cpu["user"].unit == "s"
    assert cpu["user"].is_monotonic is True
    assert cpu["user"].value > 0
    (rss,) = capture.metric("process.memory.usage")
    (virtual,) = capture.metric("process.memory.virtual")
    assert rss.unit == virtual.unit == "By"
    assert 1024 * 1024 < rss.value <= virtual.value
    (threads,) = capture.metric("process.thread.count")
    assert threads.value >= 1
    (fds,) = capture.metric("process.unix.file_descriptor.count")
    assert fds.value >= 3
    assert fds.unit == "{file_descriptor}"
    switches = {
        p.attributes["process.context_switch.type"]
        for p in capture.metric("process.context_switches")
    }
    assert switches == {"voluntary", "involuntary"}
    utilization = {
        p.attributes["cpu.mode"]: p.value for p in capture.metric("process.cpu.utilization")
    }
    assert set(utilization) == {"user", "system"}
    assert all(0.0 <= share <= 1.0 for share in utilization.values())
    assert sum(utilization.values()) > 0, "the first reading averages since the process started"
    # The same readings in Prometheus form, as /metrics shows them.
    body = metrics_text()[0].decode()
    assert 'process_cpu_time_seconds_total{cpu_mode="user"}' in body
    assert "process_memory_usage_bytes " in body
    assert 'process_context_switches_total{process_context_switch_type="voluntary"}' in body


def test_gc_collections_by_generation_and_pause_time(local: Local) -> None:
    """gc.collect() shows up in the generation-2 collection count and the pause time."""
    resources.register(local.provider, process=False)
    before = {
        p.attributes["cpython.gc.generation"]: p.value
        for p in local.metric("cpython.gc.collections")
    }
    pause_before = sum(p.value for p in local.metric("appvitals.cpython.gc.pause.time"))
    gc.collect()
    after = {
        p.attributes["cpython.gc.generation"]: p.value
        for p in local.metric("cpython.gc.collections")
    }
    assert set(after) == {0, 1, 2}
    assert after[2] >= before.get(2, 0) + 1
    pauses = local.metric("appvitals.cpython.gc.pause.time")
    assert {p.unit for p in pauses} == {"s"}
    assert sum(p.value for p in pauses) > pause_before
    assert not names(local) & PROCESS, "process=False leaves the process group out"


def test_register_is_idempotent_per_provider_and_adds_missing_groups(local: Local) -> None:
    """Registering twice keeps one series per attribute set; system=True adds only the host."""
    resources.register(local.provider)
    resources.register(local.provider)
    assert len(local.metric("process.cpu.time")) == 2
    assert names(local) == PROCESS | GC
    resources.register(local.provider, system=True)
    assert names(local) == PROCESS | GC | SYSTEM
    assert len(local.metric("process.cpu.time")) == 2


def test_system_metrics_are_opt_in_with_bounded_attributes(local: Local) -> None:
    """Host CPU shares sum to 1; memory, swap, filesystem, disk and network carry their states."""
    resources.register(local.provider, process=False, gc=False, system=True)
    assert names(local) == SYSTEM
    shares = {p.attributes["cpu.mode"]: p.value for p in local.metric("system.cpu.utilization")}
    assert {"user", "system", "idle"} <= set(shares)
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-6)
    memory = {
        p.attributes["system.memory.state"]: p.value for p in local.metric("system.memory.usage")
    }
    assert {"used", "free"} <= set(memory)
    (limit,) = local.metric("system.memory.limit")
    assert 0 < memory["used"] < limit.value
    assert {p.attributes["system.paging.state"] for p in local.metric("system.paging.usage")} == {
        "used",
        "free",
    }
    filesystems = local.metric("system.filesystem.usage")
    assert filesystems, "the root filesystem at least"
    assert len({p.attributes["system.device"] for p in filesystems}) <= 32
    assert {p.attributes["system.filesystem.state"] for p in filesystems} == {
        "used",
        "free",
        "reserved",
    }
    assert not any(p.attributes["system.device"].startswith("/dev/loop") for p in filesystems)
    directions = {p.attributes["network.io.direction"] for p in local.metric("system.network.io")}
    assert directions == {"receive", "transmit"}
    assert all(p.unit == "By" for p in local.metric("system.disk.io"))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, {"process": True, "system": False, "gc": True}),
        ("", {"process": True, "system": False, "gc": True}),
        ("process", {"process": True, "system": False, "gc": True}),
        ("process,system", {"process": True, "system": True, "gc": True}),
        (" System , PROCESS ", {"process": True, "system": True, "gc": True}),
        ("system", {"process": False, "system": True, "gc": False}),
        ("gc", {"process": False, "system": False, "gc": True}),
        ("all", {"process": True, "system": True, "gc": True}),
        ("none", {"process": False, "system": False, "gc": False}),
    ],
)
def test_parse_resource_metrics(raw: str | None, expected: dict[str, bool]) -> None:
    """APPVITALS_RESOURCE_METRICS values map to register() flags."""
    assert resources.parse_resource_metrics(raw) == expected


@pytest.mark.parametrize("raw", ["proces", "none,system", "all,gc"])
def test_invalid_resource_metrics_warn_and_use_the_default(
    raw: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A typo warns once, naming the variable, and the default (process) applies."""
    with caplog.at_level(logging.WARNING, logger="appvitals"):
        groups = resources.parse_resource_metrics(raw)
    assert groups == {"process": True, "system": False, "gc": True}
    assert "APPVITALS_RESOURCE_METRICS" in caplog.text


def test_register_from_environment(local: Local, monkeypatch: pytest.MonkeyPatch) -> None:
    """configure()'s entry point reads APPVITALS_RESOURCE_METRICS: none registers nothing."""
    monkeypatch.setenv("APPVITALS_RESOURCE_METRICS", "none")
    resources.register_from_environment(local.provider)
    assert names(local) == set()
    monkeypatch.setenv("APPVITALS_RESOURCE_METRICS", "process,system")
    resources.register_from_environment(local.provider)
    assert names(local) == PROCESS | GC | SYSTEM


def test_without_psutil_register_raises_and_configure_path_warns(
    local: Local, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An explicit register() names the extra to install; the configure() path keeps GC only."""
    monkeypatch.setattr(resources, "_psutil", lambda: None)
    with pytest.raises(ImportError, match="pip install psutil"):
        resources.register(local.provider)
    with caplog.at_level(logging.WARNING, logger="appvitals"):
        resources.register_from_environment(local.provider)
    assert "psutil" in caplog.text
    assert names(local) == GC


def test_a_failing_reading_is_counted_not_raised(
    capture: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """psutil errors drop that instrument's points and count an internal error."""
    resources.register()

    def broken() -> object:
        raise PermissionError("denied")

    monkeypatch.setattr(resources._process, "get", broken)
    assert capture.metric("process.memory.usage") == []
    assert capture.metric("cpython.gc.collections"), "the other instruments still report"
    assert internal_error_counts()["resource metrics process.memory.usage"] >= 1


def test_process_summary_for_the_dashboard() -> None:
    """CPU percent of the available CPUs, RSS in MB, threads and descriptors of this process."""
    summary = resources.process_summary()
    assert summary["pid"] == os.getpid()
    assert 0.0 <= summary["cpu_percent"] <= 100.0
    assert summary["memory_rss_mb"] > 1
    assert summary["threads"] >= 1
    assert summary["open_fds"] >= 3


def test_host_metrics_are_reported_by_one_process_per_multiprocess_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The flock election: one reporter holds the lock; another takes over once it is freed."""
    monkeypatch.setenv("APPVITALS_PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    first, second = _system_metrics.HostReporter(), _system_metrics.HostReporter()
    try:
        assert first.should_report()
        assert not second.should_report()
        assert first.should_report(), "the holder keeps reporting"
        first.after_fork_in_child()  # closes its descriptor, releasing the lock
        assert not second.should_report(), "a loser retries only every few seconds"
        second.retry_at = 0.0
        assert second.should_report()
    finally:
        first.after_fork_in_child()
        second.after_fork_in_child()
    monkeypatch.delenv("APPVITALS_PROMETHEUS_MULTIPROC_DIR")
    assert _system_metrics.HostReporter().should_report(), "single process: always"


def run_python(code: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter without the test's OTEL_/APPVITALS_ variables."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "APPVITALS_"))}
    clean.update(env)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=clean,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_jsonl_exporter_writes_the_resource_metrics(tmp_path: Path) -> None:
    """configure() alone, with the jsonl exporter: the files hold the process metrics."""
    result = run_python(
        """
        import os
        import appvitals

        appvitals.configure(service_name="worker")
        print(os.getpid())
        assert appvitals.shutdown()
        """,
        tmp_path,
        APPVITALS_EXPORTER="jsonl",
        APPVITALS_JSONL_DIR=str(tmp_path / "data"),
    )
    assert result.returncode == 0, result.stderr
    points = read_metrics(tmp_path / "data")
    assert {p.name for p in points} >= {"process.cpu.time", "process.memory.usage"}
    (rss,) = [p for p in points if p.name == "process.memory.usage"]
    assert rss.unit == "By"
    assert rss.value > 0
    assert rss.resource["process.pid"] == int(result.stdout.split()[-1])
    assert rss.resource["service.name"] == "worker"


def test_a_forked_child_reports_its_own_process(tmp_path: Path) -> None:
    """After fork the psutil handle is re-created: the child's readings are the child's."""
    result = run_python(
        """
        import os
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from appvitals import resources

        reader = InMemoryMetricReader()
        provider = MeterProvider(metric_readers=[reader])
        resources.register(provider)
        reader.get_metrics_data()
        assert resources._process.pid == os.getpid()
        child = os.fork()
        if child == 0:
            reader.get_metrics_data()
            ok = resources._process.pid == os.getpid() == resources._process.handle.pid
            os._exit(0 if ok else 1)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert resources._process.pid == os.getpid()
        provider.shutdown()
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr


def test_nothing_is_registered_or_polled_at_import(tmp_path: Path) -> None:
    """Importing the modules adds no gc callback and starts no thread."""
    result = run_python(
        """
        import gc, threading
        import appvitals.resources, appvitals.dependencies, appvitals.db, appvitals.monitoring_api
        import appvitals.integrations.sqlalchemy
        assert not gc.callbacks, gc.callbacks
        assert threading.active_count() == 1
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr


def test_register_on_an_explicit_provider() -> None:
    """A provider of the application's own is accepted and read only when collected."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        resources.register(provider, gc=False)
        data = reader.get_metrics_data()
        assert data is not None
        collected = {
            m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
        }
        assert collected == PROCESS
    finally:
        provider.shutdown()
