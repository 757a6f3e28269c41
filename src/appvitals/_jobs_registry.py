"""Process-wide state of job runs: settings, instruments, active runs and last successes.

The metric instruments come from :mod:`appvitals.metrics` on every use (a cached lookup), so
they follow ``configure()``/``shutdown()`` and test resets like every other helper. The two
observable gauges read this module's registries at export time:

* ``appvitals.job.progress{job.type, job.run_id}`` reports the completion ratio of at most
  ``APPVITALS_JOB_PROGRESS_SERIES`` (default 100) active runs — the oldest ones — and one
  ``job.run_id="other"`` series per job type with the mean ratio of the rest. Runs without a
  known total have no ratio and are not reported.
* ``appvitals.job.last_success{job.type}`` reports the Unix time of each job type's last
  completed run in this process.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
import weakref
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Optional

from appvitals import metrics

if TYPE_CHECKING:
    from appvitals.jobs import JobRun

_logger = logging.getLogger("appvitals")

APPVITALS_JOB_PROGRESS_ITEMS = "APPVITALS_JOB_PROGRESS_ITEMS"
"""Items between two ``job.progress`` span events (default 100; 0 turns the rule off)."""
APPVITALS_JOB_PROGRESS_SECONDS = "APPVITALS_JOB_PROGRESS_SECONDS"
"""Seconds between two ``job.progress`` span events (default 30; 0 turns the rule off)."""
APPVITALS_JOB_PROGRESS_SERIES = "APPVITALS_JOB_PROGRESS_SERIES"
"""Active runs reported one by one in ``appvitals.job.progress`` (default 100)."""

DEFAULT_PROGRESS_ITEMS = 100  # seed 002: "every 100 items or 30 seconds"
DEFAULT_PROGRESS_SECONDS = 30.0
DEFAULT_PROGRESS_SERIES = 100
OTHER_RUNS = "other"
_MAX_JOB_TYPES = 1000  # last_success entries kept; job types are code, not data

# Job durations run from milliseconds (Celery tasks) to hours (bulk syncs).
DURATION_BUCKETS = (
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
)  # fmt: skip

current_run: contextvars.ContextVar[Optional[JobRun]] = contextvars.ContextVar(
    "appvitals_job_run", default=None
)

_lock = threading.Lock()
# Weak values: a run the application forgot to finish disappears from the gauges with it.
_active: weakref.WeakValueDictionary[str, JobRun] = weakref.WeakValueDictionary()
_last_success: dict[str, float] = {}
_warned: set[str] = set()


def _number_from_env(name: str, default: float, *, integer: bool) -> float:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw) if integer else float(raw)
        if value < 0:
            raise ValueError(raw)
    except ValueError:
        if name not in _warned:
            _warned.add(name)
            _logger.warning("appvitals: %s=%r is not a number >= 0; using %s", name, raw, default)
        return default
    return value


def progress_items_default() -> int:
    """``APPVITALS_JOB_PROGRESS_ITEMS`` or 100."""
    return int(_number_from_env(APPVITALS_JOB_PROGRESS_ITEMS, DEFAULT_PROGRESS_ITEMS, integer=True))


def progress_seconds_default() -> float:
    """``APPVITALS_JOB_PROGRESS_SECONDS`` or 30."""
    return _number_from_env(APPVITALS_JOB_PROGRESS_SECONDS, DEFAULT_PROGRESS_SECONDS, integer=False)


def progress_series_limit() -> int:
    """``APPVITALS_JOB_PROGRESS_SERIES`` or 100."""
    return int(
        _number_from_env(APPVITALS_JOB_PROGRESS_SERIES, DEFAULT_PROGRESS_SERIES, integer=True)
    )


class _UnboundedGauge(metrics.Gauge):
    """A callback gauge without the per-instrument cardinality guard.

    The guard remembers every attribute set it ever saw, and every run brings a new
    ``job.run_id``: after 1000 runs every point would be recorded as overflow. The progress
    callback bounds its series itself (``APPVITALS_JOB_PROGRESS_SERIES``).
    """

    __slots__ = ()

    def _guard(self, attributes: metrics.Attributes) -> metrics.Attributes:
        return attributes


class Instruments:
    """The job instruments, looked up in :mod:`appvitals.metrics`' cache."""

    __slots__ = ("active", "duration", "items", "missed", "retries", "runs")

    def __init__(self) -> None:
        self.runs = metrics.counter(
            "appvitals.job.runs", unit="{run}", description="Job runs ended, by outcome"
        )
        self.duration = metrics.histogram(
            "appvitals.job.duration",
            unit="s",
            description="Duration of job runs, from start to end, by outcome",
            buckets=DURATION_BUCKETS,
        )
        self.active = metrics.updown_counter(
            "appvitals.job.active", unit="{run}", description="Job runs running now"
        )
        self.items = metrics.counter(
            "appvitals.job.items", unit="{item}", description="Items processed by job runs"
        )
        self.retries = metrics.counter(
            "appvitals.job.retries", unit="{retry}", description="Retried attempts in job runs"
        )
        self.missed = metrics.counter(
            "appvitals.job.missed", unit="{run}", description="Scheduled job runs never started"
        )
        _ensure_observers()


def _ensure_observers() -> None:
    metrics._get_or_create(
        "gauge",
        "appvitals.job.progress",
        "1",
        lambda: _UnboundedGauge(
            "appvitals.job.progress",
            "1",
            "Completion ratio (0..1) of running jobs with a known total",
            _observe_progress,
        ),
    )
    metrics.gauge(
        "appvitals.job.last_success",
        unit="s",
        description="Unix time of the last completed run of each job type",
        callback=_observe_last_success,
    )


def register(run: JobRun) -> None:
    """Count ``run`` among the active runs (for the progress gauge)."""
    _register_fork_hook()
    with _lock:
        _active[run.run_id] = run


def unregister(run: JobRun) -> None:
    """Forget an ended run."""
    with _lock:
        _active.pop(run.run_id, None)


def active_runs() -> list[JobRun]:
    """The active runs, oldest first."""
    with _lock:
        return list(_active.values())


def record_success(job_type: str, unix_time: float) -> None:
    """Remember the last success of ``job_type``."""
    with _lock:
        if job_type in _last_success or len(_last_success) < _MAX_JOB_TYPES:
            _last_success[job_type] = unix_time


def last_success(job_type: str) -> Optional[float]:
    """The Unix time of the last completed run of ``job_type`` in this process, if any."""
    with _lock:
        return _last_success.get(job_type)


def _observe_progress() -> Iterable[tuple[float, Mapping[str, Any]]]:
    limit = progress_series_limit()
    points: list[tuple[float, Mapping[str, Any]]] = []
    others: dict[str, list[float]] = {}
    for run in active_runs():
        ratio = run._ratio()
        if ratio is None:
            continue
        if len(points) < limit:
            points.append((ratio, {"job.type": run.job_type, "job.run_id": run.run_id}))
        else:
            others.setdefault(run.job_type, []).append(ratio)
    for job_type, ratios in others.items():
        points.append((sum(ratios) / len(ratios), {"job.type": job_type, "job.run_id": OTHER_RUNS}))
    return points


def _observe_last_success() -> Iterable[tuple[float, Mapping[str, Any]]]:
    with _lock:
        return [(when, {"job.type": job_type}) for job_type, when in _last_success.items()]


def reset() -> None:
    """Forget active runs and last successes (tests)."""
    with _lock:
        _active.clear()
        _last_success.clear()
        _warned.clear()


def _at_fork_reinit() -> None:
    global _lock  # noqa: PLW0603 - a lock held by a parent thread is never released in the child
    _lock = threading.Lock()


_fork_hook_registered = False


def _register_fork_hook() -> None:
    # On first use rather than at import: importing appvitals changes nothing.
    global _fork_hook_registered  # noqa: PLW0603
    if not _fork_hook_registered and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_at_fork_reinit)
        _fork_hook_registered = True
