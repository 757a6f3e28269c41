"""The opt-in ``system`` group of :mod:`appvitals.resources`: host CPU, memory, disks, network.

Host-wide values are the same in every process of the host. The multi-process ``/metrics``
adds the processes' series up, so with a multi-process directory one process reports them
(:class:`HostReporter`) and the Prometheus renderer keeps ``system_*`` counters of dead
processes out of its totals (a successor reports the same since-boot counters).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Optional

from opentelemetry.metrics import Observation

from appvitals.resources import _Deltas, _guarded

_MAX_DEVICES = 32

# psutil's cpu_times() fields → cpu.mode (guest time is already inside user and nice).
_CPU_MODES = {
    "user": "user",
    "nice": "nice",
    "system": "system",
    "idle": "idle",
    "iowait": "iowait",
    "irq": "interrupt",
    "softirq": "interrupt",
    "steal": "steal",
}
_HOST_LOCK_FILE = ".appvitals-system.lock"


class HostReporter:
    """Whether this process reports the host-wide ``system.*`` metrics.

    Every process would report the same values, and the multi-process ``/metrics`` adds
    the processes' series up; so with a multi-process directory the process holding an
    ``flock`` on ``<dir>/.appvitals-system.lock`` reports them, and another takes over
    (retrying every few seconds) when it exits.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.descriptor: Optional[int] = None
        self.retry_at = 0.0
        self.lock = threading.Lock()

    def after_fork_in_child(self) -> None:
        # The inherited descriptor shares the parent's lock: it is the parent's, not ours.
        if self.descriptor is not None:
            os.close(self.descriptor)
        self.descriptor, self.pid, self.retry_at = None, os.getpid(), 0.0
        self.lock = threading.Lock()

    def should_report(self) -> bool:
        from appvitals.prometheus import _directory_from_environment

        directory = _directory_from_environment()
        if directory is None or sys.platform == "win32":
            return True
        import fcntl

        with self.lock:
            if self.pid != os.getpid():
                self.after_fork_in_child()
            if self.descriptor is not None:
                return True
            now = time.monotonic()
            if now < self.retry_at:
                return False
            self.retry_at = now + 5.0
            directory.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(directory / _HOST_LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(descriptor)
                return False
            self.descriptor = descriptor
            return True


_host_reporter = HostReporter()


_cpu = _Deltas(lambda: (0.0, {}))  # the first reading compares with boot
_fork_hook_installed = False


def _cpu_utilization() -> Iterable[Observation]:
    import psutil

    times = psutil.cpu_times()
    modes: dict[str, float] = {}
    for field, mode in _CPU_MODES.items():
        modes[mode] = modes.get(mode, 0.0) + float(getattr(times, field, 0.0))
    _, used = _cpu.delta(modes)
    total = sum(used.values())
    for mode, seconds in used.items():
        yield Observation(seconds / total if total > 0 else 0.0, {"cpu.mode": mode})


def _memory(utilization: bool) -> Callable[[], Iterable[Observation]]:
    def read() -> Iterable[Observation]:
        import psutil

        memory = psutil.virtual_memory()
        for state in ("used", "free", "buffers", "cached"):
            if hasattr(memory, state):
                value = getattr(memory, state)
                share = value / memory.total if memory.total else 0.0
                yield Observation(share if utilization else value, {"system.memory.state": state})

    return read


def _memory_limit() -> Iterable[Observation]:
    import psutil

    yield Observation(psutil.virtual_memory().total)


def _paging() -> Iterable[Observation]:
    import psutil

    swap = psutil.swap_memory()
    yield Observation(swap.used, {"system.paging.state": "used"})
    yield Observation(swap.free, {"system.paging.state": "free"})


def _filesystems() -> Iterable[Observation]:
    import psutil

    seen: set[str] = set()
    for part in psutil.disk_partitions(all=False):
        # Bind mounts repeat a device (containers mount /etc/hosts from the root disk);
        # loop devices are snaps and images, not storage the service fills.
        if part.device in seen or part.device.startswith("/dev/loop"):
            continue
        if len(seen) >= _MAX_DEVICES:
            break
        seen.add(part.device)
        try:
            usage = psutil.disk_usage(part.mountpoint)
        except OSError:
            continue
        attributes = {
            "system.device": part.device,
            "system.filesystem.mountpoint": part.mountpoint,
            "system.filesystem.type": part.fstype,
            "system.filesystem.mode": "ro" if "ro" in part.opts.split(",") else "rw",
        }
        reserved = max(usage.total - usage.used - usage.free, 0)
        for state, value in (("used", usage.used), ("free", usage.free), ("reserved", reserved)):
            yield Observation(value, {**attributes, "system.filesystem.state": state})


def _disk_io() -> Iterable[Observation]:
    import psutil

    disks = psutil.disk_io_counters(perdisk=True) or {}
    # Loop and RAM disks are images and tmpfs-like devices, not the storage the host fills.
    names = [name for name in sorted(disks) if not name.startswith(("loop", "ram"))]
    for name in names[:_MAX_DEVICES]:
        for direction, value in (
            ("read", disks[name].read_bytes),
            ("write", disks[name].write_bytes),
        ):
            yield Observation(value, {"system.device": name, "disk.io.direction": direction})


def _network_io() -> Iterable[Observation]:
    import psutil

    interfaces = psutil.net_io_counters(pernic=True) or {}
    for name in sorted(interfaces)[:_MAX_DEVICES]:
        counters = interfaces[name]
        for direction, value in (
            ("receive", counters.bytes_recv),
            ("transmit", counters.bytes_sent),
        ):
            attributes = {"network.interface.name": name, "network.io.direction": direction}
            yield Observation(value, attributes)


def _host(read: Callable[[], Iterable[Observation]]) -> Callable[[], Iterable[Observation]]:
    return lambda: read() if _host_reporter.should_report() else ()


def register_system(meter: Any) -> None:
    """Create the host instruments on ``meter`` (observable: read at collection time)."""
    global _fork_hook_installed  # noqa: PLW0603 - one hook per process
    if not _fork_hook_installed and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_host_reporter.after_fork_in_child)
        _fork_hook_installed = True
    counter, gauge, updown = (
        meter.create_observable_counter,
        meter.create_observable_gauge,
        meter.create_observable_up_down_counter,
    )
    for create, name, unit, description, read in (
        (gauge, "system.cpu.utilization", "1", "Share of host CPU time by mode.", _cpu_utilization),
        (updown, "system.memory.usage", "By", "Host memory in use, by state.", _memory(False)),
        (gauge, "system.memory.utilization", "1", "Share of host memory, by state.", _memory(True)),
        (updown, "system.memory.limit", "By", "Total host memory.", _memory_limit),
        (updown, "system.paging.usage", "By", "Swap space, used and free.", _paging),
        (updown, "system.filesystem.usage", "By", "Filesystem space by state.", _filesystems),
        (counter, "system.disk.io", "By", "Bytes read from and written to disks.", _disk_io),
        (counter, "system.network.io", "By", "Bytes received and sent.", _network_io),
    ):
        create(name, callbacks=[_guarded(name, _host(read))], unit=unit, description=description)
