"""APScheduler 3.x: every scheduled execution becomes a job run, through scheduler events.

``instrument(scheduler)`` adds one listener and changes no job:

* ``EVENT_JOB_SUBMITTED``: one run per scheduled time, ``queued`` and started at once
  (APScheduler 3 reports no separate start of execution).
* ``EVENT_JOB_EXECUTED``: ``completed``, with the duration since submission.
* ``EVENT_JOB_ERROR``: ``failed``, with the exception and its class (transient/permanent).
* ``EVENT_JOB_MISSED``: counted in ``appvitals.job.missed{job.type,
  job.missed.reason="misfire"}``; a run already submitted for that time ends ``cancelled``.
* ``EVENT_JOB_MAX_INSTANCES``: counted with ``job.missed.reason="max_instances"``.

The job type is the job's ``name`` (by default its function's qualified name). Jobs whose
function is decorated with :func:`appvitals.jobs.monitored_job` are left to the decorator,
so no execution is counted twice. The listener runs in the scheduler's threads: log lines of
the job's own code carry ``job_id`` only when the function is a ``monitored_job``.

APScheduler 4 has another API and is not supported (``apscheduler>=3.9,<4``).
"""

from __future__ import annotations

import collections
import importlib
import threading
import weakref
from typing import Any, Optional

from appvitals import _jobs_registry
from appvitals._safety import report_internal_error
from appvitals.jobs import JobRun

__all__ = ["instrument", "uninstrument"]

_MAX_NAMES = 10_000  # job ids remembered (names outlive removal: one-off jobs are removed
# from their store before their submission event is dispatched)
_MAX_PENDING = 10_000  # submitted runs awaiting their outcome event
_instrumented: weakref.WeakKeyDictionary[Any, _Listener] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def _require_apscheduler() -> Any:
    message = "appvitals.integrations.apscheduler needs APScheduler 3.x: " + (
        "pip install 'appvitals[apscheduler]'"
    )
    try:
        apscheduler = importlib.import_module("apscheduler")
        events = importlib.import_module("apscheduler.events")
    except ImportError as error:
        raise ImportError(message) from error
    if tuple(getattr(apscheduler, "version_info", (3,)))[:1] >= (4,):
        raise ImportError(f"{message} (APScheduler {apscheduler.__version__} is installed)")
    return events


class _Listener:
    """Turns one scheduler's job events into job runs."""

    def __init__(self, scheduler: Any, events: Any) -> None:
        self._scheduler = scheduler
        self._events = events
        self._lock = threading.Lock()
        # job id → job type, or None for a monitored_job function (the decorator reports it)
        self._names: collections.OrderedDict[str, Optional[str]] = collections.OrderedDict()
        self._pending: dict[tuple[str, Any], JobRun] = {}
        # Outcomes that arrived before their submission event (a job faster than the
        # scheduler's dispatch loop): the late submission is then ignored.
        self._early: collections.OrderedDict[tuple[str, Any], None] = collections.OrderedDict()
        self.mask = (
            events.EVENT_JOB_ADDED
            | events.EVENT_JOB_MODIFIED
            | events.EVENT_JOB_SUBMITTED
            | events.EVENT_JOB_EXECUTED
            | events.EVENT_JOB_ERROR
            | events.EVENT_JOB_MISSED
            | events.EVENT_JOB_MAX_INSTANCES
        )
        try:
            for job in scheduler.get_jobs():
                self._remember(job)
        except Exception as error:
            report_internal_error("apscheduler jobs", error)

    def __call__(self, event: Any) -> None:
        try:
            self._handle(event)
        except Exception as error:
            report_internal_error("apscheduler listener", error)

    def _handle(self, event: Any) -> None:
        events, code = self._events, event.code
        if code in (events.EVENT_JOB_ADDED, events.EVENT_JOB_MODIFIED):
            self._remember(self._scheduler.get_job(event.job_id, event.jobstore))
        elif code == events.EVENT_JOB_SUBMITTED:
            self._submitted(event)
        elif code == events.EVENT_JOB_EXECUTED:
            run = self._take(event)
            if run is not None:
                run.finish()
        elif code == events.EVENT_JOB_ERROR:
            run = self._take(event)
            if run is not None:
                run.fail(event.exception or RuntimeError(event.traceback or "job error"))
        elif code == events.EVENT_JOB_MISSED:
            self._missed(event, "misfire", 1)
            run = self._take(event, create=False)
            if run is not None:
                run.cancel("missed")
                run.finish()
        elif code == events.EVENT_JOB_MAX_INSTANCES:
            self._missed(event, "max_instances", len(event.scheduled_run_times or ()) or 1)

    def _remember(self, job: Any) -> None:
        if job is None:
            return
        func = getattr(job, "func", None)
        monitored = getattr(func, "_self_appvitals_job_type", None) is not None
        with self._lock:
            self._names[job.id] = None if monitored else str(job.name or job.id)
            self._names.move_to_end(job.id)
            while len(self._names) > _MAX_NAMES:
                self._names.popitem(last=False)

    def _job_type(self, job_id: str) -> Optional[str]:
        with self._lock:
            if job_id in self._names:
                return self._names[job_id]
        job = self._scheduler.get_job(job_id)
        if job is None:
            return job_id
        self._remember(job)
        with self._lock:
            return self._names.get(job_id, str(job.name or job_id))

    def _new_run(self, job_id: str, job_type: str, run_time: Any) -> JobRun:
        metadata: dict[str, Any] = {"apscheduler.job_id": job_id}
        if run_time is not None:
            metadata["apscheduler.scheduled_time"] = run_time.isoformat()
        return JobRun(job_type, metadata=metadata).start()

    def _submitted(self, event: Any) -> None:
        job_type = self._job_type(event.job_id)
        if job_type is None:
            return
        for run_time in event.scheduled_run_times or ():
            key = (event.job_id, run_time)
            # One lock around the check and the insert: the outcome event may be dispatched
            # from an executor thread at this very moment, and must find either the run
            # or nothing (then it opens and ends one itself, and this submission is skipped).
            with self._lock:
                if key in self._early:
                    del self._early[key]
                    continue
                if len(self._pending) >= _MAX_PENDING:
                    report_internal_error("apscheduler pending runs", RuntimeError("too many"))
                    return
                self._pending[key] = self._new_run(event.job_id, job_type, run_time)

    def _take(self, event: Any, *, create: bool = True) -> Optional[JobRun]:
        key = (event.job_id, event.scheduled_run_time)
        with self._lock:
            run = self._pending.pop(key, None)
            if run is None:
                self._early[key] = None
                while len(self._early) > _MAX_PENDING:
                    self._early.popitem(last=False)
        if run is None and create:
            job_type = self._job_type(event.job_id)
            if job_type is not None:
                run = self._new_run(event.job_id, job_type, event.scheduled_run_time)
        return run

    def _missed(self, event: Any, reason: str, count: int) -> None:
        job_type = self._job_type(event.job_id)
        if job_type is not None:
            _jobs_registry.Instruments().missed.add(
                count, {"job.type": job_type, "job.missed.reason": reason}
            )

    def close(self) -> None:
        """End the runs still waiting for their outcome (``cancelled``, "uninstrumented")."""
        with self._lock:
            pending, self._pending = list(self._pending.values()), {}
        for run in pending:
            run.cancel("uninstrumented")
            run.finish()


def instrument(scheduler: Any) -> None:
    """Report every execution of ``scheduler``'s jobs as a job run (idempotent).

    Raises:
        ImportError: APScheduler 3.x is not installed.

    Examples:
        >>> from apscheduler.schedulers.background import BackgroundScheduler
        >>> from appvitals.integrations import apscheduler
        >>> scheduler = BackgroundScheduler()
        >>> apscheduler.instrument(scheduler)
        >>> apscheduler.uninstrument(scheduler)
        True
    """
    events = _require_apscheduler()
    with _lock:
        if scheduler in _instrumented:
            return
        listener = _Listener(scheduler, events)
        _instrumented[scheduler] = listener
    scheduler.add_listener(listener, listener.mask)


def uninstrument(scheduler: Any) -> bool:
    """Remove the listener; ``True`` if ``scheduler`` was instrumented."""
    with _lock:
        listener = _instrumented.pop(scheduler, None)
    if listener is None:
        return False
    scheduler.remove_listener(listener)
    listener.close()
    return True
