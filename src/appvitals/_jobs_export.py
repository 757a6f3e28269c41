"""What a job run exports when it reports progress and when it ends.

Kept apart from :class:`~appvitals.jobs.JobRun`, which holds the state: these functions turn
a snapshot of that state into span events and attributes, metric points and pings. Every
caller runs them inside the fail-open boundary.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from opentelemetry.trace import Span, Status, StatusCode

from appvitals import _jobs_pings, _jobs_registry
from appvitals._jobs_cancel import CANCELLED
from appvitals._jobs_retry import error_type
from appvitals._safety import report_internal_error
from appvitals.decorators import _tracer

if TYPE_CHECKING:
    from appvitals._jobs_run import JobRun, Outcome

_EXIT_STATUS = {"timed_out": 124, "cancelled": 130}  # timeout(1) and Ctrl-C conventions
_PING_SUFFIX = {"completed": "", "failed": "fail"}


def end(run: JobRun, outcome: Outcome, was_running: bool, pending: tuple[int, int]) -> None:
    """End the span, count the run, flush its items and send its last ping."""
    span = run._span
    if not was_running:
        start_ns = int(run.queued_at * 1e9)
        span = run._span = _tracer().start_span(
            f"job {run.job_type}", attributes=run._identity(), start_time=start_ns
        )
    if span.is_recording():
        _end_span_attributes(run, span, outcome)
    span.end()
    instruments = run._instruments or _jobs_registry.Instruments()
    by_type = {"job.type": run.job_type}
    by_outcome = {"job.type": run.job_type, "outcome": outcome}
    instruments.runs.add(1, by_outcome)
    if was_running:
        instruments.duration.record(run._duration or 0.0, by_outcome)
        instruments.active.add(-1, by_type)
    flush_items(run, instruments, *pending)
    if outcome == "completed" and run.ended_at is not None:
        _jobs_registry.record_success(run.job_type, run.ended_at)
    if run._pings is not None:
        _send_end_ping(run, outcome)


def _end_span_attributes(run: JobRun, span: Span, outcome: Outcome) -> None:
    with run._lock:
        attributes: dict[str, Any] = {
            "job.outcome": outcome,
            "job.items.processed": run._processed,
            "job.items.succeeded": run._succeeded,
            "job.items.failed": run._failed,
            "job.retries": run._retries,
        }
        if run._total is not None:
            attributes["job.items.total"] = run._total
    error = run.error
    if error is not None:
        attributes["error.type"] = error_type(error)
        attributes["job.error.transient"] = bool(run.error_transient)
        if run.error_category:
            attributes["job.error.category"] = run.error_category
        span.record_exception(error, escaped=True)
    if outcome in ("cancelled", "timed_out"):
        attributes["job.cancel.reason"] = run.cancellation.reason or CANCELLED
    if outcome == "timed_out":
        attributes.setdefault("error.type", "timeout")
        span.set_status(Status(StatusCode.ERROR, f"timed out after {run._max_runtime} s"))
    elif outcome == "failed":
        message = f"{type(error).__name__}: {error}" if error is not None else "failed"
        span.set_status(Status(StatusCode.ERROR, message))
    span.set_attributes(attributes)


def _send_end_ping(run: JobRun, outcome: Outcome) -> None:
    assert run._pings is not None
    suffix = _PING_SUFFIX.get(outcome)
    if suffix is None:
        suffix = str(_EXIT_STATUS[outcome])
    counts = run.counts
    summary = (
        f"{run.job_type} run {run.run_id} {outcome} after {run._duration or 0.0:.1f} s: "
        f"{counts.processed} processed, {counts.succeeded} succeeded, {counts.failed} failed"
    )
    if run.error is not None:
        summary += f"; {error_type(run.error)}: {run.error}"
    url = _jobs_pings.ping_url(run._pings, suffix, run.run_id)
    _jobs_pings.pinger.send(url, _jobs_pings.body(summary, run._log_lines))


def progress_attributes_locked(run: JobRun) -> dict[str, Any]:
    """The ``job.progress`` event's attributes (call with ``run._lock`` held)."""
    attributes: dict[str, Any] = {
        "job.items.processed": run._processed,
        "job.items.succeeded": run._succeeded,
        "job.items.failed": run._failed,
    }
    if run._total is not None:
        attributes["job.items.total"] = run._total
    percent = run._percent_locked()
    if percent is not None:
        attributes["job.progress.percent"] = round(percent, 2)
    eta = run._eta_locked()
    if eta is not None:
        attributes["job.progress.eta_seconds"] = round(eta, 3)
    if run._rate is not None:
        attributes["job.progress.rate"] = round(run._rate, 3)
    if run.current_step is not None:
        attributes["job.step.name"] = run.current_step
    return attributes


def progress(run: JobRun, attributes: dict[str, Any], pending: tuple[int, int]) -> None:
    """Add a ``job.progress`` event and the items counted since the last one."""
    try:
        instruments = run._instruments or _jobs_registry.Instruments()
        flush_items(run, instruments, *pending)
        span = run._span
        if span.is_recording():
            span.add_event("job.progress", attributes)
    except Exception as error:
        report_internal_error("job progress", error)


def flush_items(
    run: JobRun, instruments: _jobs_registry.Instruments, succeeded: int, failed: int
) -> None:
    """Add items counted since the last flush to ``appvitals.job.items``."""
    # Items are added to the counter in batches, at progress events and at the end,
    # so that progress() itself stays a few additions under a lock.
    if succeeded:
        instruments.items.add(succeeded, {"job.type": run.job_type, "result": "succeeded"})
    if failed:
        instruments.items.add(failed, {"job.type": run.job_type, "result": "failed"})
