"""The job run: state, lifecycle, progress, ETA, cancellation and retries of one run.

The public API is :mod:`appvitals.jobs`, which re-exports :class:`JobRun`; what a run exports
lives in :mod:`appvitals._jobs_export`, where its code runs in :mod:`appvitals._jobs_scope`.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Optional, TypeVar, Union, cast

from opentelemetry.trace import INVALID_SPAN, Span

from appvitals import _jobs_export, _jobs_pings, _jobs_registry
from appvitals._jobs_cancel import (
    CANCELLED,
    TIMEOUT,
    CancellationToken,
    Clock,
    JobCancelled,
    watchdog,
)
from appvitals._jobs_retry import (
    JobError,
    RetryAttempt,
    RetryPolicy,
    category_of,
    is_transient,
    retrying,
)
from appvitals._jobs_scope import RunScope, Step
from appvitals._safety import report_internal_error
from appvitals.decorators import _tracer

if TYPE_CHECKING:
    from collections import deque

State = Literal["queued", "running", "completed", "failed", "cancelled", "timed_out"]
Outcome = Literal["completed", "failed", "cancelled", "timed_out"]
R = TypeVar("R")

_ENDED = frozenset({"completed", "failed", "cancelled", "timed_out"})
_RATE_INTERVAL = 1.0  # seconds of the run's clock one rate sample covers at least
_RATE_SMOOTHING = 0.3  # weight of the newest sample in the exponentially smoothed rate
_MAX_ATTEMPTS_KEPT = 100  # run.attempts keeps the first ones; job.retries counts them all


@dataclass(frozen=True)
class ItemCounts:
    """A run's item counts: ``total`` (``None`` when unknown), processed, succeeded, failed."""

    total: Optional[int]
    processed: int
    succeeded: int
    failed: int


def _attribute_value(value: Any) -> Any:
    if isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple)) and all(
        isinstance(v, (str, bool, int, float)) for v in value
    ):
        return tuple(value)
    return str(value)


class JobRun:
    """One run of a job: use it as ``with``/``async with``, or drive it explicitly.

    ``with JobRun(...) as run:`` starts the run, makes its span current, binds ``job_id``
    and ``job_type`` (and ``tenant_id``) for log lines, and ends it: ``completed``, or
    ``failed`` when an exception leaves the block (which propagates), or ``cancelled`` /
    ``timed_out`` when its cancellation token was set — a :class:`JobCancelled` raised by
    this run's token is swallowed at the end of the block, like a cancel scope. For runs
    that span callbacks call :meth:`start`, :meth:`finish`, :meth:`fail` or :meth:`cancel`
    yourself and enter :meth:`bound` wherever the job's code runs.

    Args:
        job_type: the job's name, low-cardinality (``"ERP_ARTICLE_SYNC"``).
        total: items the run will process, if known (enables ``percent`` and ETA).
        tenant: the tenant the run works for (span attribute ``job.tenant``; bound as
            ``tenant_id`` for log lines; never a metric attribute).
        metadata: extra span attributes, recorded as ``job.metadata.<key>``.
        max_runtime: seconds after which the run's token is set with reason ``"timeout"``
            and the run ends ``timed_out`` (cooperative: nothing is killed).
        progress_every_items: processed items between two ``job.progress`` events
            (``APPVITALS_JOB_PROGRESS_ITEMS``, default 100; 0 disables the rule).
        progress_every_seconds: seconds between two ``job.progress`` events
            (``APPVITALS_JOB_PROGRESS_SECONDS``, default 30; 0 disables the rule).
        clock: the monotonic clock for durations, throttling, ETA and the deadline
            (default :func:`time.monotonic`; tests inject their own).
        pings: a Healthchecks-compatible ping URL (see ``docs/jobs.md``).

    Raises:
        ValueError: an empty ``job_type``, a negative ``total``, a non-positive
            ``max_runtime``, a negative progress setting or a ping URL that is not http(s).

    Examples:
        >>> run = JobRun("ERP_ORDER_EXPORT", total=3)
        >>> run.state
        'queued'
        >>> with run.start().bound():
        ...     run.progress(succeeded=3)
        >>> run.finish()
        >>> run.state, run.counts.processed
        ('completed', 3)
    """

    __slots__ = (
        "__weakref__",
        "_attempts",
        "_block_scope",
        "_clock",
        "_duration",
        "_every_items",
        "_every_seconds",
        "_failed",
        "_instruments",
        "_last_event_clock",
        "_lock",
        "_log_lines",
        "_max_runtime",
        "_pending_failed",
        "_pending_succeeded",
        "_pings",
        "_processed",
        "_rate",
        "_rate_clock",
        "_rate_processed",
        "_retries",
        "_since_event",
        "_span",
        "_started_clock",
        "_state",
        "_succeeded",
        "_total",
        "cancellation",
        "current_step",
        "ended_at",
        "error",
        "error_category",
        "error_transient",
        "job_type",
        "metadata",
        "queued_at",
        "run_id",
        "started_at",
        "tenant",
    )

    def __init__(
        self,
        job_type: str,
        *,
        total: Optional[int] = None,
        tenant: Optional[str] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        max_runtime: Optional[float] = None,
        progress_every_items: Optional[int] = None,
        progress_every_seconds: Optional[float] = None,
        clock: Optional[Clock] = None,
        pings: Optional[str] = None,
    ) -> None:
        if not isinstance(job_type, str) or not job_type.strip():
            raise ValueError(f"job_type must be a non-empty string, not {job_type!r}")
        if total is not None and (not isinstance(total, int) or total < 0):
            raise ValueError(f"total must be an int >= 0 or None, not {total!r}")
        if max_runtime is not None and not max_runtime > 0:
            raise ValueError(f"max_runtime must be > 0 seconds, not {max_runtime!r}")
        every_items = (
            _jobs_registry.progress_items_default()
            if progress_every_items is None
            else progress_every_items
        )
        every_seconds = (
            _jobs_registry.progress_seconds_default()
            if progress_every_seconds is None
            else progress_every_seconds
        )
        if every_items < 0 or every_seconds < 0:
            raise ValueError("progress_every_items and progress_every_seconds must be >= 0")
        self._clock: Clock = clock or time.monotonic
        self._lock = threading.Lock()
        self.job_type = job_type
        self.run_id = uuid.uuid4().hex
        self.tenant = tenant
        self.metadata: dict[str, Any] = dict(metadata or {})
        self._total = total
        self._max_runtime = max_runtime
        self._every_items = every_items
        self._every_seconds = float(every_seconds)
        self._pings = None if pings is None else _jobs_pings.validate_ping_url(pings)
        self._state: State = "queued"
        self.queued_at: float = time.time()
        self.started_at: Optional[float] = None
        self.ended_at: Optional[float] = None
        self._started_clock = 0.0
        self._duration: Optional[float] = None
        self._processed = self._succeeded = self._failed = 0
        self._pending_succeeded = self._pending_failed = self._since_event = 0
        self._last_event_clock = self._rate_clock = 0.0
        self._rate_processed = 0
        self._rate: Optional[float] = None
        self.cancellation = CancellationToken(self._clock)
        self.current_step: Optional[str] = None
        self.error: Optional[BaseException] = None
        self.error_transient: Optional[bool] = None
        self.error_category: Optional[str] = None
        self._attempts: list[RetryAttempt] = []
        self._retries = 0
        self._span: Span = INVALID_SPAN
        self._instruments: Optional[_jobs_registry.Instruments] = None
        self._log_lines: Optional[deque[str]] = None
        self._block_scope: Optional[RunScope] = None

    # --- state -------------------------------------------------------------------------

    @property
    def state(self) -> State:
        """``queued``, ``running``, ``completed``, ``failed``, ``cancelled`` or ``timed_out``."""
        return self._state

    @property
    def outcome(self) -> Optional[Outcome]:
        """How the run ended, or ``None`` while it has not."""
        state = self._state
        return cast(Outcome, state) if state in _ENDED else None

    @property
    def total(self) -> Optional[int]:
        """Items the run will process, if known."""
        return self._total

    @property
    def counts(self) -> ItemCounts:
        """Items processed, succeeded and failed so far."""
        with self._lock:
            return ItemCounts(self._total, self._processed, self._succeeded, self._failed)

    @property
    def percent(self) -> Optional[float]:
        """Processed items in percent of ``total`` (at most 100), ``None`` without a total."""
        with self._lock:
            return self._percent_locked()

    @property
    def rate(self) -> Optional[float]:
        """Items per second, exponentially smoothed; ``None`` until a second has passed."""
        return self._rate

    @property
    def eta_seconds(self) -> Optional[float]:
        """Seconds until ``total`` at the smoothed rate; ``None`` until it is known."""
        with self._lock:
            return self._eta_locked()

    @property
    def duration(self) -> Optional[float]:
        """Seconds from start to end (by the run's clock); running: so far; queued: ``None``."""
        if self._duration is not None:
            return self._duration
        if self._state == "running":
            return self._clock() - self._started_clock
        return None

    @property
    def attempts(self) -> list[RetryAttempt]:
        """Failed attempts of retried calls in this run (the first 100)."""
        with self._lock:
            return list(self._attempts)

    @property
    def cancelled(self) -> bool:
        """Whether the run was asked to stop (``cancel()`` or ``max_runtime``)."""
        return self.cancellation.is_set()

    @property
    def span(self) -> Span:
        """The run's span (a non-recording one before :meth:`start`)."""
        return self._span

    def raise_if_cancelled(self) -> None:
        """Raise :class:`JobCancelled` if the run was asked to stop."""
        self.cancellation.raise_if_cancelled()

    def _percent_locked(self) -> Optional[float]:
        total = self._total
        if not total:
            return None
        return min(100.0, self._processed * 100.0 / total)

    def _eta_locked(self) -> Optional[float]:
        total = self._total
        if total is None:
            return None
        remaining = total - self._processed
        if remaining <= 0:
            return 0.0
        rate = self._rate
        return None if not rate else remaining / rate

    def _ratio(self) -> Optional[float]:
        total = self._total
        return None if not total else min(1.0, self._processed / total)

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> JobRun:
        """``queued`` → ``running``: start the span, the clock and the watchdog; ``self``."""
        with self._lock:
            if self._state != "queued":
                return self
            self._state = "running"
            now = self._clock()
            self._started_clock = self._rate_clock = self._last_event_clock = now
            self.started_at = time.time()
            if self._max_runtime is not None:
                self.cancellation._arm(now + self._max_runtime)
        try:
            attributes = self._identity()
            attributes["job.queue.duration"] = max(0.0, self.started_at - self.queued_at)
            if self._max_runtime is not None:
                attributes["job.max_runtime"] = self._max_runtime
            self._span = _tracer().start_span(f"job {self.job_type}", attributes=attributes)
            self._instruments = _jobs_registry.Instruments()
            self._instruments.active.add(1, {"job.type": self.job_type})
            _jobs_registry.register(self)
            if self._max_runtime is not None:
                watchdog.watch(self.cancellation)
            if self._pings is not None:
                self._log_lines = _jobs_pings.new_log_buffer()
                _jobs_pings.capture_logs()
                _jobs_pings.pinger.send(_jobs_pings.ping_url(self._pings, "start", self.run_id))
        except Exception as error:
            report_internal_error("job start", error)
        return self

    def _identity(self) -> dict[str, Any]:
        attributes: dict[str, Any] = {"job.type": self.job_type, "job.run_id": self.run_id}
        if self.tenant is not None:
            attributes["job.tenant"] = self.tenant
        if self._total is not None:
            attributes["job.items.total"] = self._total
        for key, value in self.metadata.items():
            attributes[f"job.metadata.{key}"] = _attribute_value(value)
        return attributes

    def finish(self) -> None:
        """End the run ``completed`` (``cancelled``/``timed_out`` if its token was set)."""
        self._end("completed")

    def fail(
        self,
        error: Union[BaseException, str, None] = None,
        *,
        transient: Optional[bool] = None,
        category: Optional[str] = None,
    ) -> None:
        """End the run ``failed`` with ``error`` (an exception or a message).

        ``transient`` and ``category`` default to what the error says about itself (see
        :func:`is_transient` and :class:`JobError`).
        """
        if not isinstance(error, BaseException):
            error = JobError(error or "job failed", transient=bool(transient), category=category)
        self._end("failed", error, transient, category)

    def cancel(self, reason: str = CANCELLED) -> None:
        """Ask the run to stop (any thread); a run still ``queued`` ends ``cancelled`` at once.

        A running run ends ``cancelled`` when its code stops: at the end of the ``with``
        block, or at :meth:`finish`/:meth:`fail`.
        """
        self.cancellation.set(reason)
        if self._state == "queued":
            self._end("cancelled")

    def _end(
        self,
        outcome: Outcome,
        error: Optional[BaseException] = None,
        transient: Optional[bool] = None,
        category: Optional[str] = None,
    ) -> bool:
        token = self.cancellation
        stopped = token.is_set()  # also sets "timeout" when the deadline has passed
        with self._lock:
            if self._state in _ENDED:
                return False
            was_running = self._state == "running"
            if was_running and stopped:
                # The token decides: the code stopped because it was asked to.
                outcome = "timed_out" if token.reason == TIMEOUT else "cancelled"
            self._state = outcome
            self.ended_at = time.time()
            self._duration = self._clock() - self._started_clock if was_running else 0.0
            pending = (self._pending_succeeded, self._pending_failed)
            self._pending_succeeded = self._pending_failed = 0
        if error is not None:
            self.error = error
            self.error_transient = is_transient(error) if transient is None else transient
            self.error_category = category or category_of(error)
        try:
            _jobs_export.end(self, outcome, was_running, pending)
        except Exception as internal:
            report_internal_error("job end", internal)
        finally:
            _jobs_registry.unregister(self)
            watchdog.unwatch(token)
            if self._log_lines is not None:  # the run captured log lines for its pings
                _jobs_pings.release_logs()
        return True

    # --- progress, steps, retries ------------------------------------------------------

    def progress(
        self,
        processed: Optional[int] = None,
        succeeded: int = 0,
        failed: int = 0,
        *,
        total: Optional[int] = None,
    ) -> None:
        """Add to the item counts (``processed`` defaults to ``succeeded + failed``).

        Cheap and thread-safe. A ``job.progress`` span event (and the items metric) is
        exported when ``progress_every_items`` items or ``progress_every_seconds`` seconds
        have passed since the last one; ``total`` replaces the expected total.
        """
        if processed is None:
            processed = succeeded + failed
        snapshot: Optional[dict[str, Any]] = None
        timed_out = False
        with self._lock:
            if self._state in _ENDED:
                return
            if total is not None:
                self._total = total
            self._processed += processed
            self._succeeded += succeeded
            self._failed += failed
            self._pending_succeeded += succeeded
            self._pending_failed += failed
            if self._state != "running":
                return
            self._since_event += processed
            now = self._clock()
            deadline = self.cancellation._deadline
            timed_out = deadline is not None and now >= deadline
            elapsed = now - self._rate_clock
            if elapsed >= _RATE_INTERVAL:
                sample = (self._processed - self._rate_processed) / elapsed
                previous = self._rate
                self._rate = (
                    sample
                    if previous is None
                    else _RATE_SMOOTHING * sample + (1 - _RATE_SMOOTHING) * previous
                )
                self._rate_clock, self._rate_processed = now, self._processed
            every_items, every_seconds = self._every_items, self._every_seconds
            if (every_items and self._since_event >= every_items) or (
                every_seconds and now - self._last_event_clock >= every_seconds
            ):
                self._since_event = 0
                self._last_event_clock = now
                snapshot = _jobs_export.progress_attributes_locked(self)
                pending = (self._pending_succeeded, self._pending_failed)
                self._pending_succeeded = self._pending_failed = 0
        if timed_out:
            self.cancellation.set(TIMEOUT)
        if snapshot is not None:
            _jobs_export.progress(self, snapshot, pending)

    def step(self, name: str) -> Step:
        """Mark the start of a step (a ``job.step`` span event); ``with`` it for a child span.

        Examples:
            >>> run = JobRun("PIM_IMPORT").start()
            >>> run.step("download")          # an event on the run's span
            <Step 'download'>
            >>> with run.step("upload"):      # an event and a child span "step upload"
            ...     pass
            >>> run.finish()
        """
        self.current_step = name
        try:
            span = self._span
            if span.is_recording():
                span.add_event("job.step", {"job.step.name": name})
        except Exception as error:
            report_internal_error("job step", error)
        return Step(self, name)

    def retry(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
        """Call ``fn(*args, **kwargs)`` with the default retry policy, recording on this run.

        For other settings use ``appvitals.jobs.retry(fn, attempts=5, run=run)(*args)``.
        """
        return retrying(fn, RetryPolicy(), time.sleep, lambda: self)(*args, **kwargs)

    def _record_attempt(self, attempt: RetryAttempt) -> None:
        with self._lock:
            if len(self._attempts) < _MAX_ATTEMPTS_KEPT:
                self._attempts.append(attempt)
            if attempt.delay is not None:
                self._retries += 1
        if attempt.delay is None:
            return
        try:
            instruments = self._instruments or _jobs_registry.Instruments()
            instruments.retries.add(1, {"job.type": self.job_type})
            span = self._span
            if span.is_recording():
                span.add_event(
                    "job.retry",
                    {
                        "job.retry.attempt": attempt.number,
                        "job.retry.delay_seconds": attempt.delay,
                        "job.retry.operation": attempt.operation,
                        "error.type": attempt.error_type,
                    },
                )
        except Exception as error:
            report_internal_error("job retry", error)

    # --- context -----------------------------------------------------------------------

    def bound(self) -> RunScope:
        """A context manager that makes this run current where the job's code runs.

        Inside it, the run's span is the current span, ``job_id``/``job_type`` (and
        ``tenant_id``) are bound for log lines, and :func:`current_run` returns the run.
        Enter it in each thread or callback that works for the run.
        """
        return RunScope(self)

    def __enter__(self) -> JobRun:
        self.start()
        scope = RunScope(self)
        scope.__enter__()
        self._block_scope = scope
        return self

    def __exit__(self, exc_type: Any, exc: Optional[BaseException], tb: Any) -> bool:
        scope, self._block_scope = self._block_scope, None
        if scope is not None:
            scope.__exit__(None, None, None)
        return self._conclude(exc, suppress=True)

    async def __aenter__(self) -> JobRun:
        return self.__enter__()

    async def __aexit__(self, exc_type: Any, exc: Optional[BaseException], tb: Any) -> bool:
        return self.__exit__(exc_type, exc, tb)

    def _conclude(self, error: Optional[BaseException], *, suppress: bool) -> bool:
        """End the run as the code that ran it ended; whether to swallow ``error``."""
        if error is None:
            self._end("completed")
            return False
        if isinstance(error, JobCancelled):
            self.cancellation.set(error.reason)
            self._end("cancelled")
            return suppress and error.token is self.cancellation
        if isinstance(error, (KeyboardInterrupt, asyncio.CancelledError)):
            self.cancellation.set(type(error).__name__)
            self._end("cancelled")
            return False
        self._end("failed", error)
        return False

    def __repr__(self) -> str:
        return f"<JobRun {self.job_type} {self.run_id} {self._state}>"


# Documented (and pickled) as appvitals.jobs.*, where they are re-exported.
JobRun.__module__ = ItemCounts.__module__ = "appvitals.jobs"
