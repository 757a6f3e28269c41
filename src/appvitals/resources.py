"""Process, runtime and host resource metrics (psutil), read only when metrics are collected.

:func:`register` adds observable instruments with OpenTelemetry semantic-convention names to
a ``MeterProvider``; nothing is polled in between, so the cost is a few ``/proc`` reads per
export or scrape. Three groups:

``process`` (default)
    ``process.cpu.time`` (s, ``cpu.mode`` = ``user`` | ``system``),
    ``process.cpu.utilization`` (1, by ``cpu.mode``, share of the CPUs available to the
    process since the previous reading at least a second old), ``process.memory.usage``
    (By, resident set), ``process.memory.virtual`` (By), ``process.thread.count``,
    ``process.unix.file_descriptor.count`` (the current name of the deprecated
    ``process.open_file_descriptor.count``; not on Windows) and ``process.context_switches``
    (``process.context_switch.type`` = ``voluntary`` | ``involuntary``).
``gc`` (default)
    ``cpython.gc.collections``, ``cpython.gc.collected_objects``,
    ``cpython.gc.uncollectable_objects`` (by ``cpython.gc.generation``) and
    ``appvitals.cpython.gc.pause.time`` (s): the time spent in collections, timed by a
    ``gc.callbacks`` hook that only adds to a float — recording into an SDK instrument from
    inside a collection could deadlock on the SDK's own locks.
``system`` (opt-in)
    ``system.cpu.utilization`` (by ``cpu.mode``), ``system.memory.usage`` /
    ``system.memory.utilization`` (``system.memory.state``), ``system.memory.limit``,
    ``system.paging.usage`` (swap, ``system.paging.state``), ``system.filesystem.usage``
    (real mounts only, at most 32), ``system.disk.io`` (By, ``system.device``,
    ``disk.io.direction``) and ``system.network.io`` (By, ``network.interface.name``,
    ``network.io.direction``).

Every process reports its own process metrics: under gunicorn each worker's resource carries
its ``process.pid``, and the psutil handle is re-created when the pid changes (after
``fork``). Host-wide ``system.*`` metrics are the same in every process, so with the
Prometheus multi-process directory only one process reports them (an ``flock`` election in
that directory); see ``docs/resources.md``.

``APPVITALS_RESOURCE_METRICS`` chooses the groups ``configure()`` registers:
``process`` (default: process and gc), ``process,system``, ``system``, ``gc``, ``all`` or
``none`` (see :func:`parse_resource_metrics`).

Examples:
    >>> from opentelemetry.sdk.metrics import MeterProvider
    >>> from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    >>> from appvitals import resources
    >>> reader = InMemoryMetricReader()
    >>> provider = MeterProvider(metric_readers=[reader])
    >>> resources.register(provider)
    >>> names = {m.name for rm in reader.get_metrics_data().resource_metrics
    ...          for sm in rm.scope_metrics for m in sm.metrics}
    >>> {"process.cpu.time", "process.memory.usage", "cpython.gc.collections"} <= names
    True
    >>> provider.shutdown()
"""

from __future__ import annotations

import gc as _gc
import logging
import os
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Optional

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from appvitals._safety import report_internal_error
from appvitals._version import __version__

__all__ = [
    "DEFAULT_RESOURCE_METRICS",
    "RESOURCE_METRICS_VARIABLE",
    "parse_resource_metrics",
    "process_summary",
    "register",
    "register_from_environment",
]

RESOURCE_METRICS_VARIABLE = "APPVITALS_RESOURCE_METRICS"
"""Environment variable: the resource metric groups ``configure()`` registers."""

DEFAULT_RESOURCE_METRICS = "process"
"""Its default: process and garbage-collector metrics, no host metrics."""

_GROUPS = ("process", "system", "gc")
_MIN_INTERVAL = 1.0  # seconds: utilisation over shorter spans is mostly noise
_logger = logging.getLogger("appvitals")
_Callback = Callable[[CallbackOptions], Iterable[Observation]]


# --- configuration ------------------------------------------------------------------------------


def parse_resource_metrics(raw: Optional[str]) -> dict[str, bool]:
    """The groups named by an ``APPVITALS_RESOURCE_METRICS`` value, as :func:`register` flags.

    ``process`` includes the garbage collector (``gc``); ``all`` is every group; ``none``
    (or ``off``, ``false``) none. An unknown word logs one warning naming the variable and
    the default applies, because a typo in a manifest must not take the service down.

    Args:
        raw: The variable's value; ``None`` or blank means the default, ``process``.

    Returns:
        ``{"process": bool, "system": bool, "gc": bool}``.

    Examples:
        >>> parse_resource_metrics("process,system")
        {'process': True, 'system': True, 'gc': True}
        >>> parse_resource_metrics("none")
        {'process': False, 'system': False, 'gc': False}
    """
    words = {word.strip().lower() for word in (raw or "").split(",") if word.strip()}
    if not words:
        words = {DEFAULT_RESOURCE_METRICS}
    if words & {"none", "off", "false", "0"}:
        if len(words) == 1:
            return dict.fromkeys(_GROUPS, False)
    elif words == {"all"}:
        return dict.fromkeys(_GROUPS, True)
    elif words <= set(_GROUPS):
        return {
            "process": "process" in words,
            "system": "system" in words,
            "gc": "gc" in words or "process" in words,
        }
    _logger.warning(
        "appvitals: invalid %s=%r (expected process, system, gc, all or none, comma-separated);"
        " using %r",
        RESOURCE_METRICS_VARIABLE,
        raw,
        DEFAULT_RESOURCE_METRICS,
    )
    return parse_resource_metrics(DEFAULT_RESOURCE_METRICS)


def register_from_environment(meter_provider: Any = None) -> None:
    """Register the groups ``APPVITALS_RESOURCE_METRICS`` names; never raises.

    This is what ``configure()`` calls. Without psutil the process and system groups are
    skipped with one warning naming ``pip install psutil``.

    Args:
        meter_provider: The provider; ``None`` means the global one.
    """
    try:
        groups = parse_resource_metrics(os.environ.get(RESOURCE_METRICS_VARIABLE))
        if (groups["process"] or groups["system"]) and _psutil() is None:
            _logger.warning(
                "appvitals: process and system metrics need psutil: pip install psutil (%s)",
                RESOURCE_METRICS_VARIABLE,
            )
            groups["process"] = groups["system"] = False
        register(meter_provider, **groups)
    except Exception as error:
        report_internal_error("resource metrics", error)


# --- psutil, per process ------------------------------------------------------------------------


def _psutil() -> Any:
    try:
        import psutil
    except ImportError:
        return None
    return psutil


class _Process:
    """The psutil handle of *this* process, re-created after ``fork``."""

    def __init__(self) -> None:
        self.pid = 0
        self.handle: Any = None
        self.lock = threading.Lock()

    def get(self) -> Any:
        pid = os.getpid()
        handle = self.handle
        if handle is None or self.pid != pid:
            import psutil

            handle = psutil.Process(pid)
            self.handle, self.pid = handle, pid
        return handle


_process = _Process()


class _Deltas:
    """Differences of cumulative readings (CPU seconds) over a span of at least a second.

    Several readers collect (the Prometheus scrape, the OTLP export, tests), each calling the
    callbacks; a reading is kept only when the last kept one is a second old, and a
    utilisation is computed against the newest kept reading that old — so two collections a
    millisecond apart do not divide by a millisecond. The first one compares with
    ``baseline`` (process start, boot).
    """

    def __init__(self, baseline: Callable[[], tuple[float, Mapping[str, float]]]) -> None:
        self._baseline = baseline
        self._kept: deque[tuple[float, Mapping[str, float]]] = deque(maxlen=2)
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def delta(self, values: Mapping[str, float]) -> tuple[float, dict[str, float]]:
        """(seconds, value differences) between ``values`` now and the reference reading."""
        now = time.monotonic()
        with self._lock:
            if self._pid != os.getpid():  # a forked child starts its own history
                self._kept.clear()
                self._pid = os.getpid()
            reference = next(
                (kept for kept in reversed(self._kept) if now - kept[0] >= _MIN_INTERVAL), None
            )
            if reference is None:
                reference = self._baseline()
            if not self._kept or now - self._kept[-1][0] >= _MIN_INTERVAL:
                self._kept.append((now, dict(values)))
        then, old = reference
        return now - then, {key: value - old.get(key, 0.0) for key, value in values.items()}


def _process_baseline() -> tuple[float, Mapping[str, float]]:
    age = max(time.time() - _process.get().create_time(), 1e-3)
    return time.monotonic() - age, {}


def _available_cpus() -> int:
    handle = _process.get()
    try:
        return max(len(handle.cpu_affinity()), 1)
    except (AttributeError, NotImplementedError, OSError):  # macOS has no affinity
        return max(os.cpu_count() or 1, 1)


def _process_cpu(handle: Any) -> dict[str, float]:
    times = handle.cpu_times()
    return {"user": float(times.user), "system": float(times.system)}


class _CpuUtilization:
    def __init__(self) -> None:
        self.deltas = _Deltas(_process_baseline)

    def read(self) -> dict[str, float]:
        elapsed, used = self.deltas.delta(_process_cpu(_process.get()))
        capacity = elapsed * _available_cpus()
        return {mode: max(0.0, value / capacity) for mode, value in used.items()}


_cpu_utilization = _CpuUtilization()
_summary_utilization = _CpuUtilization()  # the dashboard's own history


def process_summary() -> dict[str, Any]:
    """A few figures of this process for dashboards: CPU %, resident memory, threads.

    ``cpu_percent`` is the share of the CPUs available to the process (100 = all of them)
    since the previous call at least a second earlier (the first call: since the process
    started). Values that cannot be read are ``None``.

    Returns:
        ``{"pid", "cpu_percent", "memory_rss_mb", "threads", "open_fds"}``.

    Examples:
        >>> summary = process_summary()
        >>> sorted(summary), summary["memory_rss_mb"] > 0
        (['cpu_percent', 'memory_rss_mb', 'open_fds', 'pid', 'threads'], True)
    """
    summary: dict[str, Any] = dict.fromkeys(("cpu_percent", "memory_rss_mb", "threads"))
    summary["pid"] = os.getpid()
    summary["open_fds"] = None
    if _psutil() is None:
        return summary
    try:
        handle = _process.get()
        utilization = _summary_utilization.read()
        summary["cpu_percent"] = round(100.0 * sum(utilization.values()), 2)
        summary["memory_rss_mb"] = round(handle.memory_info().rss / (1024 * 1024), 1)
        summary["threads"] = handle.num_threads()
        if hasattr(handle, "num_fds"):
            summary["open_fds"] = handle.num_fds()
    except Exception as error:
        report_internal_error("process summary", error)
    return summary


def _guarded(where: str, read: Callable[[], Iterable[Observation]]) -> _Callback:
    """A callback that reports (never raises) and yields nothing when reading fails."""

    def callback(_options: CallbackOptions) -> Iterable[Observation]:
        try:
            return list(read())
        except Exception as error:
            report_internal_error(f"resource metrics {where}", error)
            return []

    return callback


def _register_process(meter: Any) -> None:
    def cpu_time() -> Iterable[Observation]:
        for mode, seconds in _process_cpu(_process.get()).items():
            yield Observation(seconds, {"cpu.mode": mode})

    def cpu_utilization() -> Iterable[Observation]:
        for mode, share in _cpu_utilization.read().items():
            yield Observation(share, {"cpu.mode": mode})

    def memory_usage() -> Iterable[Observation]:
        yield Observation(_process.get().memory_info().rss)

    def memory_virtual() -> Iterable[Observation]:
        yield Observation(_process.get().memory_info().vms)

    def threads() -> Iterable[Observation]:
        yield Observation(_process.get().num_threads())

    def file_descriptors() -> Iterable[Observation]:
        yield Observation(_process.get().num_fds())

    def context_switches() -> Iterable[Observation]:
        switches = _process.get().num_ctx_switches()
        yield Observation(switches.voluntary, {"process.context_switch.type": "voluntary"})
        yield Observation(switches.involuntary, {"process.context_switch.type": "involuntary"})

    counter, gauge, updown = (
        meter.create_observable_counter,
        meter.create_observable_gauge,
        meter.create_observable_up_down_counter,
    )
    instruments: list[tuple[Any, str, str, str, Callable[[], Iterable[Observation]]]] = [
        (counter, "process.cpu.time", "s", "Total CPU seconds broken down by mode.", cpu_time),
        (
            gauge,
            "process.cpu.utilization",
            "1",
            "Share of the available CPUs used by the process, by mode.",
            cpu_utilization,
        ),
        (updown, "process.memory.usage", "By", "Resident memory of the process.", memory_usage),
        (
            updown,
            "process.memory.virtual",
            "By",
            "Virtual memory committed by the process.",
            memory_virtual,
        ),
        (updown, "process.thread.count", "{thread}", "Threads of the process.", threads),
        (
            counter,
            "process.context_switches",
            "{context_switch}",
            "Context switches of the process, by type.",
            context_switches,
        ),
    ]
    if sys.platform != "win32":
        instruments.append(
            (
                updown,
                "process.unix.file_descriptor.count",
                "{file_descriptor}",
                "File descriptors in use by the process.",
                file_descriptors,
            )
        )
    for create, name, unit, description, read in instruments:
        create(name, callbacks=[_guarded(name, read)], unit=unit, description=description)


# --- the garbage collector ------------------------------------------------------------------------

_gc_started = [0.0]
# Seconds paused, by generation. Its keys are made once, when the hook is installed: the
# hook then only replaces values, so a reader iterating it never sees its size change.
_gc_pause: dict[int, float] = {}
_gc_baseline: list[dict[str, int]] = []
_gc_hooked = False
_gc_hook_lock = threading.Lock()


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    # Runs inside every collection, on whichever thread allocated: plain arithmetic only —
    # no locks (a thread holding one may be the one collecting) and no SDK calls.
    if phase == "start":
        _gc_started[0] = time.perf_counter()
    elif _gc_started[0]:
        generation = info.get("generation", 0)
        if generation in _gc_pause:
            _gc_pause[generation] += time.perf_counter() - _gc_started[0]
        _gc_started[0] = 0.0


def _gc_after_fork_in_child() -> None:
    # Counts since *this* process started: the multi-process /metrics adds the workers'
    # counters, which must not each include the master's collections before the fork.
    for generation in _gc_pause:
        _gc_pause[generation] = 0.0
    _gc_baseline[:] = _gc.get_stats()


def _install_gc_hook() -> None:
    global _gc_hooked  # noqa: PLW0603 - one hook per interpreter, installed on first register()
    with _gc_hook_lock:
        if _gc_hooked:
            return
        _gc_hooked = True
    for generation in range(len(_gc.get_count())):
        _gc_pause[generation] = 0.0
    _gc.callbacks.append(_on_gc)
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_gc_after_fork_in_child)


def _gc_stats() -> list[dict[str, int]]:
    stats = _gc.get_stats()
    baseline = _gc_baseline
    if not baseline:
        return stats
    return [
        {key: value - baseline[index].get(key, 0) for key, value in generation.items()}
        if index < len(baseline)
        else generation
        for index, generation in enumerate(stats)
    ]


def _register_gc(meter: Any) -> None:
    _install_gc_hook()

    def stat(key: str) -> Callable[[], Iterable[Observation]]:
        def read() -> Iterable[Observation]:
            for generation, values in enumerate(_gc_stats()):
                yield Observation(values.get(key, 0), {"cpython.gc.generation": generation})

        return read

    def pause() -> Iterable[Observation]:
        # Every generation from the start, zeros included: rate() needs the series to exist.
        for generation, seconds in sorted(_gc_pause.items()):
            yield Observation(seconds, {"cpython.gc.generation": generation})

    for name, unit, description, read in (
        (
            "cpython.gc.collections",
            "{collection}",
            "Collections of each generation since the process started.",
            stat("collections"),
        ),
        (
            "cpython.gc.collected_objects",
            "{object}",
            "Objects collected in each generation since the process started.",
            stat("collected"),
        ),
        (
            "cpython.gc.uncollectable_objects",
            "{object}",
            "Objects found uncollectable in each generation since the process started.",
            stat("uncollectable"),
        ),
        (
            "appvitals.cpython.gc.pause.time",
            "s",
            "Time spent in garbage collections (the program is paused meanwhile).",
            pause,
        ),
    ):
        meter.create_observable_counter(
            name, callbacks=[_guarded(name, read)], unit=unit, description=description
        )


# --- registration ---------------------------------------------------------------------------------

_registered: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()
_registered_lock = threading.Lock()


def register(
    meter_provider: Any = None, *, process: bool = True, system: bool = False, gc: bool = True
) -> None:
    """Add the resource metric groups to ``meter_provider`` (idempotent per provider).

    Instruments are observable: psutil is read only when a reader collects. Calling again
    with more groups adds the missing ones; a group is never registered twice.

    Args:
        meter_provider: The provider; ``None`` means the global one (call after
            ``appvitals.configure()``).
        process: Process CPU, memory, threads, file descriptors, context switches.
        system: Host CPU, memory, swap, filesystems, disk and network I/O.
        gc: CPython garbage collector collections and pause time.

    Raises:
        ImportError: ``process`` or ``system`` without psutil installed.
    """
    if (process or system) and _psutil() is None:
        msg = "appvitals.resources needs psutil: pip install psutil"
        raise ImportError(msg)
    provider = metrics.get_meter_provider() if meter_provider is None else meter_provider
    wanted = {name for name, on in (("process", process), ("system", system), ("gc", gc)) if on}
    with _registered_lock:
        done = _registered.setdefault(provider, set())
        missing = wanted - done
        done |= missing
    if not missing:
        return
    meter = provider.get_meter("appvitals.resources", __version__)
    if "process" in missing:
        _register_process(meter)
    if "gc" in missing:
        _register_gc(meter)
    if "system" in missing:
        from appvitals._system_metrics import register_system

        register_system(meter)
