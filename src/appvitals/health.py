"""Health checks and the payloads of the liveness, readiness and detailed endpoints.

Register a check — a callable, sync or ``async def``, that returns ``None``/``True``
(healthy), ``False`` (unhealthy), a dict of details (healthy) or a :class:`CheckOutcome`,
or raises (unhealthy) — and the endpoints report it::

    appvitals.health.register("database", appvitals.health.checks.sql(engine))
    appvitals.health.register("disk", appvitals.health.checks.disk("/"), critical=False)

Checks never run on a request. A background thread runs all of them, in parallel, every
``APPVITALS_HEALTH_INTERVAL`` seconds (default 30), each in a worker thread bounded by its
own timeout; the payload functions answer from the cached results. The runner starts on
the first payload call (or :func:`ensure_running`), which also runs the checks once
synchronously if they have no result yet, so the first answer is real; an application
without checks starts no thread. A forked child
(gunicorn ``--preload``) keeps the cached results and restarts the runner on its next call.

A check that hangs is reported as timed out and its thread is abandoned, not joined; while
it stays stuck it is not started again (it keeps reporting the timeout), so a dependency
that never answers costs one thread, not one per interval. Nothing in here raises into the
application: errors inside appvitals are counted and logged once (``appvitals`` logger).

After every run the registry records ``appvitals.health.check.status`` (gauge, 1 healthy,
0 unhealthy; ``check.name``, ``check.critical``) and ``appvitals.health.check.duration``
(histogram, seconds; ``check.name``, ``check.status``).

Examples:
    >>> from appvitals.health import HealthRegistry
    >>> registry = HealthRegistry()
    >>> registry.register("queue", lambda: {"depth": 3}, critical=False)
    >>> registry.run_now()["queue"].details
    {'depth': 3}
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Optional

from appvitals import _health_checks as checks
from appvitals._health_checks import CheckOutcome
from appvitals._safety import internal_errors, report_internal_error

__all__ = [
    "CheckOutcome",
    "CheckResult",
    "HealthRegistry",
    "checks",
    "detailed_payload",
    "ensure_running",
    "get_registry",
    "live_payload",
    "ready_payload",
    "register",
    "reset",
    "results",
    "run_now",
    "start",
    "stop",
    "unregister",
]

# The public name of the outcome type is appvitals.health.CheckOutcome.
CheckOutcome.__module__ = __name__

#: A health check: a callable (sync or ``async def``) taking no arguments.
Check = Callable[[], Any]
Status = Literal["healthy", "unhealthy"]

DEFAULT_INTERVAL = 30.0
INTERVAL_ENV = "APPVITALS_HEALTH_INTERVAL"
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_logger = logging.getLogger("appvitals")


@dataclass(frozen=True)
class CheckResult:
    """The latest result of one check.

    Attributes:
        name: The registered name.
        status: ``"healthy"`` or ``"unhealthy"``.
        latency_ms: How long the check ran, in milliseconds (2 decimals).
        last_checked: When it started, ISO 8601 UTC with milliseconds
            (``2024-05-01T12:00:00.123Z``).
        critical: Whether a failure makes the service not ready.
        details: What the check reported (JSON-compatible values).
        error: Why it is unhealthy (``"ConnectionError: refused"``), else ``None``.

    Examples:
        >>> result = CheckResult("db", "healthy", 1.25, "2024-05-01T12:00:00.123Z", True)
        >>> result.healthy, result.to_dict()["latency_ms"]
        (True, 1.25)
    """

    name: str
    status: Status
    latency_ms: float
    last_checked: str
    critical: bool
    details: dict[str, Any] = field(default_factory=dict)
    error: Optional[str] = None

    @property
    def healthy(self) -> bool:
        """Whether the status is ``"healthy"``."""
        return self.status == "healthy"

    def to_dict(self) -> dict[str, Any]:
        """The result as a JSON-compatible dict (a copy; changing it changes nothing)."""
        return {
            "name": self.name,
            "status": self.status,
            "latency_ms": self.latency_ms,
            "last_checked": self.last_checked,
            "critical": self.critical,
            "details": _jsonable(self.details),
            "error": self.error,
        }


@dataclass(frozen=True, eq=False)
class _Registration:
    """One registered check (compared by identity: re-registering makes a new one)."""

    name: str
    check: Check
    critical: bool
    timeout: float


class _Run:
    """One execution of a check in its worker thread."""

    __slots__ = ("done", "elapsed", "outcome")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.outcome = CheckOutcome(False, None, "did not finish")
        self.elapsed = 0.0


def _jsonable(value: Any, depth: int = 0) -> Any:
    """``value`` with anything JSON cannot encode turned into text (details are user data)."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if depth < 8 and isinstance(value, Mapping):
        return {str(key): _jsonable(item, depth + 1) for key, item in value.items()}
    if depth < 8 and isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(item, depth + 1) for item in value]
    return str(value)


def _describe(error: BaseException) -> str:
    message = str(error)
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


async def _await(awaitable: Any) -> Any:
    return await awaitable


def _outcome(value: Any) -> CheckOutcome:
    """What a check's return value means."""
    if value is None or value is True:
        return CheckOutcome(True, {})
    if value is False:
        return CheckOutcome(False, {}, "check returned False")
    if isinstance(value, CheckOutcome):
        return value
    if isinstance(value, Mapping):
        return CheckOutcome(True, dict(value))
    return CheckOutcome(
        False,
        {},
        f"TypeError: check returned {type(value).__name__}; "
        "expected None, a bool, a dict or a CheckOutcome",
    )


def _invoke(check: Check) -> CheckOutcome:
    """Call a check; an ``async def`` check runs on its own event loop in this thread."""
    value = check()
    if inspect.iscoroutine(value):
        value = asyncio.run(value)
    elif inspect.isawaitable(value):
        value = asyncio.run(_await(value))
    return _outcome(value)


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _interval_from_env() -> float:
    raw = os.environ.get(INTERVAL_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_INTERVAL
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        _logger.warning(
            "appvitals: invalid %s=%r (expected seconds > 0); using %.0f",
            INTERVAL_ENV,
            raw,
            DEFAULT_INTERVAL,
        )
        return DEFAULT_INTERVAL
    return value


def _seconds(what: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be a number of seconds, not {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what} must be > 0 seconds, not {value!r}")
    return float(value)


class HealthRegistry:
    """A set of named checks, their cached results and the runner that refreshes them.

    The module-level functions (:func:`register`, :func:`ready_payload`, ...) use one
    default registry; build your own for a second set of checks or in tests.

    Args:
        interval: Seconds between two runs of the background runner; ``None`` reads
            ``APPVITALS_HEALTH_INTERVAL`` when the runner starts (default 30).
        clock: Monotonic seconds, for ``uptime_seconds`` (counted from the registry's
            creation; for the default registry, from ``appvitals.health``'s import).

    Raises:
        ValueError: ``interval`` is not a number > 0.

    Examples:
        >>> registry = HealthRegistry(interval=60.0)
        >>> registry.register("cache", lambda: False, critical=False)
        >>> status, payload = registry.detailed_payload()
        >>> status, payload["status"], payload["checks"]["cache"]["error"]
        (200, 'degraded', 'check returned False')
        >>> registry.stop()
    """

    def __init__(
        self, interval: Optional[float] = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if interval is not None:
            interval = _seconds("interval", interval)
        self._interval = interval
        self._clock = clock
        self._started = clock()
        self._lock = threading.Lock()  # guards the fields below and the copy-on-write dicts
        self._run_lock = threading.Lock()  # one run at a time
        # Replaced, never mutated, so payloads read them without taking a lock.
        self._checks: dict[str, _Registration] = {}
        self._results: dict[str, CheckResult] = {}
        self._in_flight: dict[_Registration, _Run] = {}
        self._runner: Optional[threading.Thread] = None
        # Asked to run (ensure_running, a payload): starts once a check is registered.
        self._wanted = False
        self._stop_event = threading.Event()
        self._pid = os.getpid()
        _registries.add(self)

    # -- registration ---------------------------------------------------------------------

    def register(
        self, name: str, check: Check, *, critical: bool = True, timeout: float = 2.0
    ) -> None:
        """Add ``check`` under ``name``, replacing a check of the same name.

        Args:
            name: 1 to 64 characters of ``A-Z a-z 0-9 _ . -``.
            check: A callable taking no arguments, sync or ``async def``.
            critical: Whether its failure makes the service not ready (503).
            timeout: Seconds after which a run counts as failed (> 0).

        Raises:
            ValueError: Invalid name or timeout.
            TypeError: ``check`` is not callable.
        """
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(
                f"invalid check name {name!r}: use 1 to 64 characters of A-Z a-z 0-9 _ . -"
            )
        if not callable(check):
            raise TypeError(f"check {name!r} must be callable, not {type(check).__name__}")
        registration = _Registration(name, check, bool(critical), _seconds("timeout", timeout))
        with self._lock:
            updated = dict(self._checks)
            updated[name] = registration
            self._checks = updated
            self._results = {k: v for k, v in self._results.items() if k != name}
        if self._wanted:  # the endpoints are served: the new check needs the runner
            with internal_errors("health runner start"):
                self.ensure_running()

    def unregister(self, name: str) -> bool:
        """Remove the check ``name`` and its result; False when there was none."""
        with self._lock:
            if name not in self._checks:
                return False
            self._checks = {k: v for k, v in self._checks.items() if k != name}
            self._results = {k: v for k, v in self._results.items() if k != name}
            return True

    @property
    def names(self) -> list[str]:
        """The registered check names, in registration order."""
        return list(self._checks)

    @property
    def interval(self) -> float:
        """Seconds between runs: the constructor's value, else the environment's."""
        return self._interval if self._interval is not None else _interval_from_env()

    def results(self) -> dict[str, CheckResult]:
        """The cached results, by name (a copy; runs nothing)."""
        return dict(self._results)

    # -- running --------------------------------------------------------------------------

    def run_now(self) -> dict[str, CheckResult]:
        """Run every check once, in parallel, and return the fresh results by name.

        Waits for each check up to its timeout, then updates the cache and the metrics.
        Never raises: an error inside appvitals is counted and the cache returned.
        """
        _install_fork_hook()
        self._check_pid()
        with self._run_lock:
            return self._run_locked()

    def _run_locked(self) -> dict[str, CheckResult]:
        try:
            fresh = self._run_all(list(self._checks.values()))
        except Exception as error:
            report_internal_error("health run", error)
            return self.results()
        with self._lock:
            current = self._checks
            merged = dict(self._results)
            for name, result in fresh.items():
                # A check unregistered or replaced during the run keeps its new state.
                if current.get(name) is result[0]:
                    merged[name] = result[1]
            self._results = {name: merged[name] for name in current if name in merged}
        with internal_errors("health metrics"):
            _record_metrics(result for _, result in fresh.values())
        return self.results()

    def _run_all(
        self, registrations: list[_Registration]
    ) -> dict[str, tuple[_Registration, CheckResult]]:
        launched: list[tuple[_Registration, _Run, float, str]] = []
        finished: dict[str, tuple[_Registration, CheckResult]] = {}
        for registration in registrations:
            checked_at = _now_iso()
            with self._lock:
                busy = registration in self._in_flight
                run = _Run()
                if not busy:
                    self._in_flight[registration] = run
            if busy:
                # Still stuck since an earlier run: report it without starting another thread.
                finished[registration.name] = (
                    registration,
                    _timed_out(registration, checked_at),
                )
                continue
            worker = threading.Thread(
                target=self._work,
                args=(registration, run),
                name=f"appvitals-health-{registration.name}",
                daemon=True,  # a stuck check must never keep the process from exiting
            )
            try:
                worker.start()
            except Exception as error:
                with self._lock:
                    self._in_flight.pop(registration, None)
                report_internal_error("health worker start", error)
                finished[registration.name] = (
                    registration,
                    _result(
                        registration, CheckOutcome(False, None, _describe(error)), 0.0, checked_at
                    ),
                )
                continue
            launched.append((registration, run, time.perf_counter(), checked_at))
        for registration, run, began, checked_at in launched:
            remaining = registration.timeout - (time.perf_counter() - began)
            if run.done.wait(max(remaining, 0.0)):
                result = _result(registration, run.outcome, run.elapsed, checked_at)
            else:
                result = _timed_out(registration, checked_at)
            finished[registration.name] = (registration, result)
        return {r.name: finished[r.name] for r in registrations if r.name in finished}

    def _work(self, registration: _Registration, run: _Run) -> None:
        began = time.perf_counter()
        try:
            run.outcome = _invoke(registration.check)
        except BaseException as error:
            # Whatever the check raises is its result, never an error of this thread.
            run.outcome = CheckOutcome(False, None, _describe(error))
        finally:
            run.elapsed = time.perf_counter() - began
            with self._lock:
                if self._in_flight.get(registration) is run:
                    del self._in_flight[registration]
            run.done.set()

    def _run_if_missing(self) -> None:
        """Run the checks now if one of them has no result yet (first call, new check)."""
        if self._missing():
            with self._run_lock:
                if self._missing():  # another thread may have run them while we waited
                    self._run_locked()

    def _missing(self) -> bool:
        results = self._results
        return any(name not in results for name in self._checks)

    # -- the background runner ------------------------------------------------------------

    def start(self) -> None:
        """Start the background runner (a daemon thread); no-op when it is running."""
        _install_fork_hook()
        self._check_pid()
        with self._lock:
            if self._runner is not None and self._runner.is_alive():
                return
            stop_event = threading.Event()
            runner = threading.Thread(
                target=self._loop,
                args=(stop_event, self.interval),
                name="appvitals-health-runner",
                daemon=True,
            )
            self._stop_event = stop_event
            self._runner = runner
            self._pid = os.getpid()
        runner.start()
        from appvitals import _inline

        _inline.threads_started()  # export_mode="auto": no single-threaded process to keep

    def stop(self, timeout: Optional[float] = 5.0) -> None:
        """Stop the background runner, waiting up to ``timeout`` seconds for a run to end.

        The next payload call (or :meth:`ensure_running`) starts it again.
        """
        with self._lock:
            runner, self._runner = self._runner, None
            self._wanted = False
            self._stop_event.set()
        if runner is not None and runner is not threading.current_thread() and runner.is_alive():
            runner.join(timeout)

    def ensure_running(self) -> None:
        """Start the runner unless it runs in this process (after ``fork`` it does not).

        While no check is registered there is nothing to run, so no thread is started
        until :meth:`register` adds the first check.
        """
        self._wanted = True
        if not self._checks:
            return
        runner = self._runner
        if runner is None or self._pid != os.getpid() or not runner.is_alive():
            self.start()

    def _loop(self, stop_event: threading.Event, interval: float) -> None:
        with internal_errors("health runner"):
            self._run_if_missing()
        while not stop_event.wait(interval):
            with internal_errors("health runner"):
                self._run_locked_if_current(stop_event)

    def _run_locked_if_current(self, stop_event: threading.Event) -> None:
        with self._run_lock:
            if not stop_event.is_set():
                self._run_locked()

    def _check_pid(self) -> None:
        if self._pid != os.getpid():
            self._after_fork()

    def _after_fork(self) -> None:
        """In a forked child: no thread of the parent exists, and its locks may be held."""
        self._lock = threading.Lock()
        self._run_lock = threading.Lock()
        self._in_flight = {}
        self._runner = None
        self._stop_event = threading.Event()
        self._pid = os.getpid()

    def reset(self) -> None:
        """Stop the runner and forget every check and result (tests)."""
        self.stop()
        with self._lock:
            self._checks = {}
            self._results = {}

    # -- payloads -------------------------------------------------------------------------

    def uptime_seconds(self) -> float:
        """Seconds since the registry was created, to 1 decimal."""
        return round(self._clock() - self._started, 1)

    def live_payload(self) -> dict[str, Any]:
        """The liveness answer: the process is up. Never runs a check.

        Examples:
            >>> payload = HealthRegistry().live_payload()
            >>> payload["status"], sorted(payload)
            ('alive', ['memory_usage_mb', 'status', 'uptime_seconds'])
        """
        return {
            "status": "alive",
            "uptime_seconds": self.uptime_seconds(),
            "memory_usage_mb": _rss_mb(),
        }

    def _current(self) -> list[tuple[_Registration, CheckResult]]:
        """Make sure the runner runs and every check has a result; then read the cache."""
        with internal_errors("health runner start"):
            self.ensure_running()
        with internal_errors("health first run"):
            self._run_if_missing()
        results = self._results
        pairs = []
        for name, registration in self._checks.items():
            result = results.get(name)
            if result is None:  # registered while we read: not checked yet
                result = _result(
                    registration,
                    CheckOutcome(False, None, "not checked yet"),
                    0.0,
                    _now_iso(),
                )
            pairs.append((registration, result))
        return pairs

    def ready_payload(self) -> tuple[int, dict[str, Any]]:
        """The readiness answer: 200 when every critical check is healthy, else 503.

        Examples:
            >>> registry = HealthRegistry()
            >>> registry.register("database", lambda: True)
            >>> registry.ready_payload()
            (200, {'status': 'ready', 'services': {'database': 'connected'}})
            >>> registry.stop()
        """
        pairs = self._current()
        services = {
            result.name: "connected" if result.healthy else "disconnected" for _, result in pairs
        }
        failing = [result.name for reg, result in pairs if reg.critical and not result.healthy]
        if failing:
            return 503, {"status": "not_ready", "services": services, "failing": failing}
        return 200, {"status": "ready", "services": services}

    def detailed_payload(self) -> tuple[int, dict[str, Any]]:
        """Every check's latest result: healthy (200), degraded (200) or unhealthy (503).

        ``degraded`` means only non-critical checks fail.
        """
        pairs = self._current()
        critical_failure = any(reg.critical and not res.healthy for reg, res in pairs)
        any_failure = any(not res.healthy for _, res in pairs)
        status = "unhealthy" if critical_failure else "degraded" if any_failure else "healthy"
        payload = {
            "status": status,
            "uptime_seconds": self.uptime_seconds(),
            "checks": {result.name: result.to_dict() for _, result in pairs},
        }
        return (503 if critical_failure else 200), payload


def _result(
    registration: _Registration, outcome: CheckOutcome, elapsed: float, checked_at: str
) -> CheckResult:
    healthy = outcome.healthy is True
    error = outcome.error
    if not healthy and error is None:
        error = "unhealthy"
    return CheckResult(
        name=registration.name,
        status="healthy" if healthy else "unhealthy",
        latency_ms=round(elapsed * 1000.0, 2),
        last_checked=checked_at,
        critical=registration.critical,
        details=_jsonable(outcome.details or {}),
        error=None if healthy else str(error),
    )


def _timed_out(registration: _Registration, checked_at: str) -> CheckResult:
    return _result(
        registration,
        CheckOutcome(False, None, f"timed out after {registration.timeout}s"),
        registration.timeout,
        checked_at,
    )


# -- metrics ------------------------------------------------------------------------------

_registries: weakref.WeakSet[HealthRegistry] = weakref.WeakSet()


def _observe_status() -> Iterable[tuple[int, Mapping[str, Any]]]:
    """The gauge callback: the cached status of every check of every live registry."""
    points = []
    for registry in list(_registries):
        for result in registry._results.values():
            attributes = {"check.name": result.name, "check.critical": result.critical}
            points.append((1 if result.healthy else 0, attributes))
    return points


def _record_metrics(fresh: Iterable[CheckResult]) -> None:
    from appvitals import metrics

    # Called after every run so the instruments exist on the current meter provider (the
    # helpers cache them and forget them when appvitals is reset).
    metrics.gauge(
        "appvitals.health.check.status",
        unit="1",
        description="Latest health check status (1 healthy, 0 unhealthy)",
        callback=_observe_status,
    )
    duration = metrics.histogram(
        "appvitals.health.check.duration",
        unit="s",
        description="Duration of health check runs",
    )
    for result in fresh:
        duration.record(
            result.latency_ms / 1000.0, {"check.name": result.name, "check.status": result.status}
        )


# -- process memory -----------------------------------------------------------------------

_process: Any = None
_process_pid = 0
_psutil_missing = False


def _rss_bytes() -> float:
    global _process, _process_pid, _psutil_missing  # noqa: PLW0603 - per-process caches
    if not _psutil_missing:
        # Imported once: a failing import searches sys.path again on every call.
        try:
            import psutil
        except ImportError:
            _psutil_missing = True
        else:
            pid = os.getpid()
            if _process is None or _process_pid != pid:
                _process, _process_pid = psutil.Process(pid), pid
            return float(_process.memory_info().rss)
    try:
        resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
        return float(resident_pages * os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, IndexError):
        import resource
        import sys

        # ru_maxrss is the peak, in KiB on Linux and bytes on macOS: the best left.
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return float(peak if sys.platform == "darwin" else peak * 1024)


def _rss_mb() -> float:
    try:
        return round(_rss_bytes() / (1024 * 1024), 1)
    except Exception as error:
        report_internal_error("health memory usage", error)
        return 0.0


# -- fork ---------------------------------------------------------------------------------

_fork_hook_installed = False


def _after_fork_in_child() -> None:
    for registry in list(_registries):
        with internal_errors("health fork"):
            registry._after_fork()


def _install_fork_hook() -> None:
    global _fork_hook_installed  # noqa: PLW0603 - once per process, on first use
    if not _fork_hook_installed and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)
        _fork_hook_installed = True


# -- the default registry -----------------------------------------------------------------

_default = HealthRegistry()


def get_registry() -> HealthRegistry:
    """The default registry, used by the module-level functions.

    Examples:
        >>> get_registry() is get_registry()
        True
    """
    return _default


def register(name: str, check: Check, *, critical: bool = True, timeout: float = 2.0) -> None:
    """Add ``check`` under ``name`` to the default registry (see :meth:`HealthRegistry.register`).

    Examples:
        >>> from appvitals import health
        >>> health.register("cache", lambda: {"hits": 9}, critical=False, timeout=1.0)
        >>> health.ready_payload()
        (200, {'status': 'ready', 'services': {'cache': 'connected'}})
        >>> health.reset()
    """
    _default.register(name, check, critical=critical, timeout=timeout)


def unregister(name: str) -> bool:
    """Remove the check ``name`` from the default registry; False when there was none.

    Examples:
        >>> unregister("no-such-check")
        False
    """
    return _default.unregister(name)


def run_now() -> dict[str, CheckResult]:
    """Run the default registry's checks now and return their results.

    Examples:
        >>> from appvitals import health
        >>> health.register("answer", lambda: 6 * 7 == 42)
        >>> health.run_now()["answer"].status
        'healthy'
        >>> health.reset()
    """
    return _default.run_now()


def results() -> dict[str, CheckResult]:
    """The default registry's cached results, by name (runs nothing).

    Examples:
        >>> results()
        {}
    """
    return _default.results()


def start() -> None:
    """Start the default registry's background runner (no-op when running).

    Examples:
        >>> start()
        >>> stop()
    """
    _default.start()


def stop(timeout: Optional[float] = 5.0) -> None:
    """Stop the default registry's background runner.

    Examples:
        >>> stop()
    """
    _default.stop(timeout)


def ensure_running() -> None:
    """Start the default runner unless it already runs in this process.

    Examples:
        >>> ensure_running()
        >>> stop()
    """
    _default.ensure_running()


def live_payload() -> dict[str, Any]:
    """``/health/live``: ``{"status": "alive", "uptime_seconds", "memory_usage_mb"}``.

    Examples:
        >>> live_payload()["status"]
        'alive'
    """
    return _default.live_payload()


def ready_payload() -> tuple[int, dict[str, Any]]:
    """``/health/ready``: ``(200, {"status": "ready", ...})`` or ``(503, {... "failing"})``.

    Examples:
        >>> from appvitals import health
        >>> health.register("database", lambda: False)
        >>> status, payload = health.ready_payload()
        >>> status, payload["status"], payload["failing"]
        (503, 'not_ready', ['database'])
        >>> health.reset()
    """
    return _default.ready_payload()


def detailed_payload() -> tuple[int, dict[str, Any]]:
    """``/health/detailed``: every check's result and an overall status.

    Examples:
        >>> from appvitals import health
        >>> health.register("disk", health.checks.disk("/", min_free_ratio=0.0))
        >>> status, payload = health.detailed_payload()
        >>> status, payload["status"], sorted(payload["checks"]["disk"]["details"])
        (200, 'healthy', ['free_gb', 'free_ratio', 'total_gb'])
        >>> health.reset()
    """
    return _default.detailed_payload()


def reset() -> None:
    """Stop the default runner and forget its checks and results (tests).

    Examples:
        >>> reset()
    """
    _default.reset()
