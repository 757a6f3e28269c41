"""Celery: every task execution becomes a job run, through Celery's signals.

``instrument()`` connects five signal receivers and changes no task:

* ``task_prerun``: a run of type ``task.name`` starts where the task runs (the worker, or
  the caller for eager tasks); its span is current and ``job_id``/``job_type`` are bound,
  so the task's own spans and log lines belong to it, and ``current_run()`` returns it.
* ``task_failure`` and ``task_retry``: remember the exception for ``task_postrun``.
* ``task_postrun``: ``completed`` (SUCCESS); ``failed`` (FAILURE, with the exception and its
  class); for RETRY ``failed``, transient, category ``celery.retry``, with a ``job.retry``
  event (the next attempt is a new run); ``cancelled`` (IGNORED, REJECTED).
* ``task_revoked``: ``cancelled`` ("revoked", "expired" or "terminated"), counted even when
  the task never started; a task revoked while it runs here sees ``current_run().cancelled``.

The run's span carries ``job.metadata.celery.task_id`` (and ``…celery.retries`` for a
retried attempt). Works with any broker, with ``task_always_eager`` and with worker pools
that run tasks in threads or processes (each process reports its own runs).
"""

from __future__ import annotations

import datetime
import importlib
import threading
from typing import Any, Optional

from appvitals._jobs_retry import RetryAttempt, error_type
from appvitals._jobs_scope import RunScope
from appvitals._safety import report_internal_error
from appvitals.jobs import JobError, JobRun

__all__ = ["instrument", "uninstrument"]

_UID = "appvitals.jobs"
_MAX_ACTIVE = 10_000  # task ids with a run in progress (a worker runs far fewer at once)
_lock = threading.Lock()
_active: dict[str, tuple[JobRun, RunScope]] = {}
_outcomes: dict[str, BaseException] = {}  # failure or retry reason, until task_postrun
_connected = False


def _signals() -> Any:
    try:
        return importlib.import_module("celery.signals")
    except ImportError as error:
        msg = "appvitals.integrations.celery needs Celery: pip install 'appvitals[celery]'"
        raise ImportError(msg) from error


def _receivers(signals: Any) -> list[tuple[Any, Any]]:
    return [
        (signals.task_prerun, _on_prerun),
        (signals.task_failure, _on_failure),
        (signals.task_retry, _on_retry),
        (signals.task_postrun, _on_postrun),
        (signals.task_revoked, _on_revoked),
    ]


def instrument() -> None:
    """Report every Celery task execution in this process as a job run (idempotent).

    Raises:
        ImportError: Celery is not installed.

    Examples:
        >>> from appvitals.integrations import celery
        >>> celery.instrument()
        >>> celery.uninstrument()
        True
    """
    global _connected  # noqa: PLW0603 - Celery's signals are process-wide too
    signals = _signals()
    with _lock:
        if _connected:
            return
        for signal, receiver in _receivers(signals):
            signal.connect(receiver, weak=False, dispatch_uid=_UID)
        _connected = True


def uninstrument() -> bool:
    """Disconnect the receivers; ``True`` if they were connected."""
    global _connected  # noqa: PLW0603
    signals = _signals()
    with _lock:
        if not _connected:
            return False
        for signal, receiver in _receivers(signals):
            signal.disconnect(receiver, dispatch_uid=_UID)
        _connected = False
        _outcomes.clear()
        return True


def _task_name(task: Any, request: Any = None) -> str:
    name = getattr(task, "name", None) or getattr(request, "task", None)
    return str(name or "celery.task")


def _on_prerun(task_id: Optional[str] = None, task: Any = None, **_: Any) -> None:
    try:
        if task_id is None:
            return
        request = getattr(task, "request", None)
        metadata: dict[str, Any] = {"celery.task_id": task_id}
        retries = getattr(request, "retries", 0) or 0
        if retries:
            metadata["celery.retries"] = retries
        run = JobRun(_task_name(task), metadata=metadata).start()
        scope = run.bound()
        with _lock:
            if len(_active) >= _MAX_ACTIVE:
                report_internal_error("celery active runs", RuntimeError("too many"))
                run.cancel("untracked")
                run.finish()
                return
            _active[task_id] = (run, scope)
        # Entered last, so that nothing can fail between entering and remembering it:
        # task_postrun exits it in the same thread and context.
        scope.__enter__()
    except Exception as error:
        report_internal_error("celery task_prerun", error)


def _on_failure(
    task_id: Optional[str] = None, exception: Optional[BaseException] = None, **_: Any
) -> None:
    if task_id is not None and exception is not None:
        with _lock:
            if task_id in _active:
                _outcomes[task_id] = exception


def _on_retry(request: Any = None, reason: Any = None, **_: Any) -> None:
    task_id = getattr(request, "id", None)
    if task_id is not None and isinstance(reason, BaseException):
        with _lock:
            if task_id in _active:
                _outcomes[task_id] = reason


def _on_postrun(
    task_id: Optional[str] = None,
    task: Any = None,
    retval: Any = None,
    state: Optional[str] = None,
    **_: Any,
) -> None:
    with _lock:
        entry = _active.pop(task_id, None) if task_id is not None else None
        outcome = _outcomes.pop(task_id, None) if task_id is not None else None
    if entry is None:
        return
    run, scope = entry
    try:
        scope.__exit__(None, None, None)
        if state == "SUCCESS":
            run.finish()
        elif state == "RETRY":
            _end_retried(run, task, outcome)
        elif state == "FAILURE":
            error = outcome if outcome is not None else retval
            run.fail(error if isinstance(error, BaseException) else JobError(str(error)))
        else:  # IGNORED, REJECTED and states of custom tasks
            run.cancel(str(state or "ignored").lower())
            run.finish()
    except Exception as error:
        report_internal_error("celery task_postrun", error)


def _end_retried(run: JobRun, task: Any, retry: Optional[BaseException]) -> None:
    original = getattr(retry, "exc", None)
    error = original if isinstance(original, BaseException) else retry
    request = getattr(task, "request", None)
    attempt = (getattr(request, "retries", 0) or 0) + 1
    run._record_attempt(
        RetryAttempt(
            attempt,
            error_type(error) if error is not None else "Retry",
            _retry_delay(getattr(retry, "when", None)),
            _task_name(task),
        )
    )
    run.fail(
        error if error is not None else JobError("retry"), transient=True, category="celery.retry"
    )


def _retry_delay(when: Any) -> float:
    if isinstance(when, (int, float)):
        return float(when)
    if isinstance(when, datetime.datetime):
        now = datetime.datetime.now(when.tzinfo or datetime.timezone.utc)
        return max(0.0, (when - now).total_seconds())
    return 0.0


def _on_revoked(
    sender: Any = None,
    request: Any = None,
    terminated: bool = False,
    expired: bool = False,
    **_: Any,
) -> None:
    try:
        reason = "expired" if expired else "terminated" if terminated else "revoked"
        task_id = getattr(request, "id", None)
        with _lock:
            entry = _active.get(task_id) if task_id is not None else None
        if entry is not None:
            # Revoked while it runs in this process: the token asks the task to stop, and
            # task_postrun, in the task's own thread, ends the run (cancelled: the token
            # decides) and leaves its scope.
            entry[0].cancel(reason)
            return
        run = JobRun(_task_name(sender, request), metadata={"celery.task_id": task_id or ""})
        run.cancel(reason)
        run.finish()
    except Exception as error:
        report_internal_error("celery task_revoked", error)
