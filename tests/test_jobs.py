"""Job runs: lifecycle, progress, ETA, cancellation, timeouts, decorators, metrics, logs, pings."""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import logging
import pickle
import threading
import time
import urllib.error
import uuid
from collections.abc import Iterator
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from appvitals import _jobs_pings, _jobs_registry, jobs
from appvitals._jobs_cancel import watchdog
from appvitals._jobs_retry import RetryPolicy
from appvitals._safety import internal_error_counts
from appvitals.jobs import (
    JobCancelled,
    JobError,
    JobRun,
    current_run,
    is_transient,
    job,
    monitored_job,
    retry,
)
from appvitals.testing import Capture, MetricPoint, read_spans
from example_runner import run_example

ERROR = 2  # OTLP StatusCode.STATUS_CODE_ERROR
UNSET = 0


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(autouse=True)
def _clean_jobs() -> Iterator[None]:
    """Forget active runs and last successes; let queued pings go out before the next test."""
    _jobs_registry.reset()
    yield
    assert _jobs_pings.flush(5.0)
    _jobs_registry.reset()


@pytest.fixture
def clock() -> FakeClock:
    """An injected clock: no test waits for time to pass."""
    return FakeClock()


def points(capture: Capture, name: str, **attributes: Any) -> list[MetricPoint]:
    """The points of ``name`` whose attributes include ``attributes`` (dots as ``__``)."""
    wanted = {key.replace("__", "."): value for key, value in attributes.items()}
    return [
        p for p in capture.metric(name) if all(p.attributes.get(k) == v for k, v in wanted.items())
    ]


def value(capture: Capture, name: str, **attributes: Any) -> Any:
    """The single point's value of ``name`` with those attributes."""
    (point,) = points(capture, name, **attributes)
    return point.value


# --- lifecycle ---------------------------------------------------------------------------


def test_with_block_runs_queued_running_completed(capture: Capture) -> None:
    """A with block starts and completes the run; the span carries identity and counts."""
    run = job(
        "ERP_ARTICLE_SYNC",
        total=10_000,
        tenant="t-123",
        metadata={"erp.system": "enventa", "batch.sizes": [100, 200], "since": object},
    )
    assert run.state == "queued"
    assert run.outcome is None
    assert run.duration is None
    with run as entered:
        assert entered is run
        assert run.state == "running"
        run.progress(processed=100, succeeded=98, failed=2)
    assert run.state == run.outcome == "completed"
    started, ended = run.started_at, run.ended_at
    assert started is not None
    assert ended is not None
    assert run.queued_at <= started <= ended
    assert uuid.UUID(hex=run.run_id).version == 4
    span = capture.span("job ERP_ARTICLE_SYNC")
    assert span.status_code == UNSET
    assert span.attributes["job.type"] == "ERP_ARTICLE_SYNC"
    assert span.attributes["job.run_id"] == run.run_id
    assert span.attributes["job.tenant"] == "t-123"
    assert span.attributes["job.outcome"] == "completed"
    assert span.attributes["job.items.total"] == 10_000
    assert span.attributes["job.items.processed"] == 100
    assert span.attributes["job.items.succeeded"] == 98
    assert span.attributes["job.items.failed"] == 2
    assert span.attributes["job.metadata.erp.system"] == "enventa"
    assert span.attributes["job.metadata.batch.sizes"] == [100, 200]
    assert span.attributes["job.metadata.since"] == "<class 'object'>"
    assert span.attributes["job.queue.duration"] >= 0


def test_explicit_run_spanning_callbacks(capture: Capture, clock: FakeClock) -> None:
    """start/progress/finish drive a run by hand; ending twice and late progress change nothing."""
    run = JobRun("CRM_EXPORT", clock=clock)
    assert run.start() is run
    assert run.start() is run, "starting again is a no-op"
    clock.advance(12.5)
    assert run.duration == 12.5
    run.progress(succeeded=3)
    run.finish()
    run.finish()
    run.fail(RuntimeError("late"))
    run.progress(succeeded=100)
    assert run.outcome == "completed"
    assert run.duration == 12.5
    assert run.counts == jobs.ItemCounts(None, 3, 3, 0)
    assert run.error is None
    assert len([s for s in capture.spans() if s.name == "job CRM_EXPORT"]) == 1
    assert repr(run) == f"<JobRun CRM_EXPORT {run.run_id} completed>"


def test_exception_fails_run_with_error_class(capture: Capture) -> None:
    """An exception leaving the block fails the run with class, category and stack, and propagates."""
    boom = JobError("enventa unreachable", transient=True, category="ERP_CONNECTION_FAILED")
    with pytest.raises(JobError) as raised, job("ERP_STOCK_SYNC") as run:
        raise boom
    assert raised.value is boom
    assert run.outcome == "failed"
    assert run.error is boom
    assert run.error_transient is True
    assert run.error_category == "ERP_CONNECTION_FAILED"
    span = capture.span("job ERP_STOCK_SYNC")
    assert span.status_code == ERROR
    assert span.status_message == "JobError: enventa unreachable"
    assert span.attributes["error.type"] == "JobError"
    assert span.attributes["job.error.transient"] is True
    assert span.attributes["job.error.category"] == "ERP_CONNECTION_FAILED"
    (event,) = [e for e in span.events if e["name"] == "exception"]
    assert "Traceback" in event["attributes"]["exception.stacktrace"]


def test_fail_with_message_and_classification(capture: Capture) -> None:
    """fail() takes a message or an exception; transient/category default to the error's own."""
    run = JobRun("ERP_CUSTOMER_SYNC").start()
    run.fail("session expired", transient=True, category="ERP_SESSION_TIMEOUT")
    assert (run.outcome, run.error_transient, run.error_category) == (
        "failed",
        True,
        "ERP_SESSION_TIMEOUT",
    )
    assert str(run.error) == "session expired"
    other = JobRun("ERP_CUSTOMER_SYNC").start()
    other.fail(ValueError("article 17 has no EAN"), category="ERP_DATA_VALIDATION")
    assert (other.error_transient, other.error_category) == (False, "ERP_DATA_VALIDATION")
    attributes = [s.attributes for s in capture.spans()]
    assert [a["error.type"] for a in attributes] == ["JobError", "ValueError"]


def _http_error(status: int) -> urllib.error.HTTPError:
    return urllib.error.HTTPError("http://erp.invalid/", status, "status", Message(), None)


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (TimeoutError("read timed out"), True),
        (ConnectionRefusedError(), True),
        (urllib.error.URLError(ConnectionResetError()), True),
        (ValueError("bad EAN"), False),
        (KeyError("sku"), False),
        (JobError("x", transient=True), True),
        (JobCancelled(), False),
        (KeyboardInterrupt(), False),
        (type("ReadTimeout", (Exception,), {})(), True),
    ],
)
def test_is_transient_classifies_errors(error: BaseException, transient: bool) -> None:
    """Timeouts and lost connections are transient; data errors and cancellations are not."""
    assert is_transient(error) is transient


@pytest.mark.parametrize(
    ("status", "transient"), [(429, True), (503, True), (500, True), (404, False), (501, False)]
)
def test_is_transient_reads_http_statuses(status: int, transient: bool) -> None:
    """HTTP errors are transient for rate limits and the 5xx that get better."""
    with _http_error(status) as error:
        assert is_transient(error) is transient


def test_invalid_arguments_are_rejected() -> None:
    """Definition mistakes raise at once, not in the middle of a run."""
    for kwargs in (
        {"total": -1},
        {"max_runtime": 0},
        {"progress_every_items": -5},
        {"pings": "ftp://hc.example/ping/x"},
    ):
        with pytest.raises(ValueError):
            JobRun("T", **kwargs)
    with pytest.raises(ValueError):
        JobRun("  ")


def test_nested_runs_and_current_run(capture: Capture) -> None:
    """A run inside a run is a child span, and current_run() is restored afterwards."""
    with job("OUTER") as outer:
        with job("INNER") as inner:
            assert current_run() is inner
        assert current_run() is outer
    assert current_run() is None
    assert capture.span("job INNER").parent_span_id == capture.span("job OUTER").span_id


def test_telemetry_failure_never_breaks_the_job(
    capture: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broken instrument lookup is counted as an internal error; the job completes."""

    def broken() -> Any:
        raise RuntimeError("instruments unavailable")

    monkeypatch.setattr(_jobs_registry, "Instruments", broken)
    with job("RESILIENT", progress_every_items=1) as run:
        run.progress(succeeded=1)
    assert run.outcome == "completed"
    counts = internal_error_counts()
    assert counts["job start"] >= 1
    assert counts["job progress"] >= 1
    assert counts["job end"] >= 1


def test_pickled_errors_keep_their_meaning() -> None:
    """Task queues pickle exceptions: reason, transient and category survive."""
    cancelled = pickle.loads(pickle.dumps(JobCancelled("timeout")))
    assert cancelled.reason == "timeout"
    assert cancelled.token is None
    error = pickle.loads(pickle.dumps(JobError("down", transient=True, category="ERP_X")))
    assert (str(error), error.transient, error.category) == ("down", True, "ERP_X")


# --- progress, percent, ETA --------------------------------------------------------------


def test_progress_events_every_100_items_or_30_seconds(capture: Capture, clock: FakeClock) -> None:
    """Progress events follow seed 002's default: 100 items or 30 s, whichever comes first."""
    with job("ERP_ARTICLE_SYNC", total=1000, clock=clock) as run:
        for _ in range(99):
            run.progress(succeeded=1)
        assert not _progress_events(run)
        run.progress(succeeded=1)
        assert len(_progress_events(run)) == 1
        clock.advance(29.9)
        run.progress(failed=1)
        assert len(_progress_events(run)) == 1
        clock.advance(0.1)
        run.progress(failed=1)
        assert len(_progress_events(run)) == 2
    events = [e for e in capture.span("job ERP_ARTICLE_SYNC").events if e["name"] == "job.progress"]
    assert [e["attributes"]["job.items.processed"] for e in events] == [100, 102]
    last = events[-1]["attributes"]
    assert last["job.items.succeeded"] == 100
    assert last["job.items.failed"] == 2
    assert last["job.items.total"] == 1000
    assert last["job.progress.percent"] == 10.2


def _progress_events(run: JobRun) -> list[Any]:
    return [e for e in run.span.events if e.name == "job.progress"]  # type: ignore[attr-defined]


def test_progress_throttle_is_configurable(
    capture: Capture, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Arguments beat APPVITALS_JOB_PROGRESS_ITEMS/_SECONDS, which beat the defaults; 0 disables."""
    monkeypatch.setenv("APPVITALS_JOB_PROGRESS_ITEMS", "10")
    monkeypatch.setenv("APPVITALS_JOB_PROGRESS_SECONDS", "0")
    with job("FROM_ENV", clock=clock) as from_env:
        for _ in range(25):
            from_env.progress(succeeded=1)
        clock.advance(3600)
        from_env.progress(processed=0)
        assert len(_progress_events(from_env)) == 2
    with job("FROM_ARGS", clock=clock, progress_every_items=0, progress_every_seconds=5) as args:
        args.progress(succeeded=1000)
        clock.advance(5)
        args.progress(succeeded=1)
        assert len(_progress_events(args)) == 1


def test_invalid_progress_environment_warns_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A typo in the environment falls back to the default with one warning."""
    monkeypatch.setenv("APPVITALS_JOB_PROGRESS_ITEMS", "lots")
    assert JobRun("T")._every_items == 100
    assert JobRun("T")._every_items == 100
    warnings = [r for r in caplog.records if "APPVITALS_JOB_PROGRESS_ITEMS" in r.getMessage()]
    assert len(warnings) == 1


def test_percent_rate_and_eta_from_smoothed_rate(capture: Capture, clock: FakeClock) -> None:
    """ETA comes from the exponentially smoothed rate; None until a second of data exists."""
    with job("ERP_PRICE_UPDATE", total=1000, clock=clock, progress_every_items=0) as run:
        assert (run.percent, run.rate, run.eta_seconds) == (0.0, None, None)
        clock.advance(0.5)
        run.progress(succeeded=50)
        assert run.eta_seconds is None, "less than a second observed"
        clock.advance(0.5)
        run.progress(succeeded=50)
        assert run.rate == 100.0
        assert run.eta_seconds == 9.0
        assert run.percent == 10.0
        clock.advance(1.0)
        run.progress(succeeded=300)
        assert run.rate == pytest.approx(0.3 * 300 + 0.7 * 100)
        assert run.eta_seconds == pytest.approx(600 / 160)
        clock.advance(30)
        run.progress(processed=0)
        run.progress(succeeded=600, total=1000)
        assert run.eta_seconds == 0.0
        assert run.percent == 100.0
    (event,) = _progress_events(run)
    assert event.attributes["job.progress.percent"] == 40.0
    assert event.attributes["job.progress.eta_seconds"] > 0
    assert "job.progress.rate" in event.attributes


def test_percent_is_none_without_total() -> None:
    """Without a total there is no percent or ETA, but counts still add up."""
    with job("OPEN_ENDED") as run:
        run.progress(7)
        assert (run.percent, run.eta_seconds) == (None, None)
    assert run.counts.processed == 7


def test_progress_is_thread_safe() -> None:
    """Progress from several threads adds up exactly."""
    with job("PARALLEL", progress_every_items=50) as run:
        threads = [
            threading.Thread(target=lambda: [run.progress(succeeded=1) for _ in range(1000)])
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert run.counts == jobs.ItemCounts(None, 4000, 4000, 0)


# --- steps ---------------------------------------------------------------------------------


def test_steps_are_events_and_child_spans(capture: Capture) -> None:
    """step() adds an event; with step() adds a child span that records its error."""
    with job("PIM_IMPORT", progress_every_items=1) as run:
        run.step("download")
        with run.step("upload") as step:
            assert step.name == "upload"
            run.progress(succeeded=1)
        with pytest.raises(KeyError), run.step("index"):
            raise KeyError("sku")
    root = capture.span("job PIM_IMPORT")
    steps = [e["attributes"]["job.step.name"] for e in root.events if e["name"] == "job.step"]
    assert steps == ["download", "upload", "index"]
    (progress,) = [e for e in root.events if e["name"] == "job.progress"]
    assert progress["attributes"]["job.step.name"] == "upload"
    upload, index = capture.span("step upload"), capture.span("step index")
    assert upload.parent_span_id == index.parent_span_id == root.span_id
    assert upload.attributes["job.run_id"] == run.run_id
    assert index.status_code == ERROR
    assert index.attributes["error.type"] == "KeyError"
    assert run.current_step is None


# --- cancellation and timeouts -----------------------------------------------------------


def test_cancel_from_another_thread_stops_cooperative_run(capture: Capture) -> None:
    """cancel() from another thread ends a cooperative run as cancelled, not failed."""
    started = threading.Event()
    runs: list[JobRun] = []

    def work() -> None:
        with job("ERP_ARTICLE_SYNC") as run:
            runs.append(run)
            started.set()
            for _ in range(1000):  # bounded: the cancel arrives long before
                run.raise_if_cancelled()
                run.progress(succeeded=1)
                run.cancellation.wait(5.0)

    worker = threading.Thread(target=work)
    worker.start()
    assert started.wait(5.0)
    runs[0].cancel("operator request")
    worker.join(5.0)
    assert not worker.is_alive()
    (run,) = runs
    assert run.outcome == "cancelled"
    assert run.cancelled
    assert run.cancellation.reason == "operator request"
    span = capture.span("job ERP_ARTICLE_SYNC")
    assert span.status_code == UNSET
    assert span.attributes["job.outcome"] == "cancelled"
    assert span.attributes["job.cancel.reason"] == "operator request"
    assert "error.type" not in span.attributes
    assert value(capture, "appvitals.job.runs", job__type="ERP_ARTICLE_SYNC") == 1
    assert points(capture, "appvitals.job.runs", outcome="cancelled")


def test_cancelled_run_that_returns_is_cancelled() -> None:
    """Code that checks run.cancelled and stops normally also ends the run cancelled."""
    with job("POLITE") as run:
        run.cancel()
        assert run.cancelled
    assert run.outcome == "cancelled"


def test_cancelling_a_queued_run_ends_it_at_once(capture: Capture) -> None:
    """A queued run that is cancelled never starts; it is counted and has a span."""
    run = JobRun("NEVER_STARTED")
    run.cancel()
    assert run.outcome == "cancelled"
    assert run.start().state == "cancelled"
    assert capture.span("job NEVER_STARTED").attributes["job.outcome"] == "cancelled"
    assert value(capture, "appvitals.job.runs", outcome="cancelled") == 1
    assert not capture.metric("appvitals.job.duration")


def test_foreign_job_cancelled_propagates() -> None:
    """An outer run's cancellation passes through the inner block and stops at its own."""
    reached = []
    with job("OUTER") as outer:
        with job("INNER") as inner:
            outer.cancel()
            outer.raise_if_cancelled()
        reached.append("after inner")  # pragma: no cover - skipped by the cancellation
    assert not reached
    assert (inner.outcome, outer.outcome) == ("cancelled", "cancelled")


def test_max_runtime_times_out_with_injected_clock(capture: Capture, clock: FakeClock) -> None:
    """Past max_runtime the token says "timeout" and the run ends timed_out."""
    with job("ERP_CUSTOMER_SYNC", max_runtime=60, clock=clock) as run:
        clock.advance(59)
        run.raise_if_cancelled()
        clock.advance(1)
        assert run.cancelled
        run.raise_if_cancelled()
        pytest.fail("raise_if_cancelled() did not raise")  # pragma: no cover
    assert run.outcome == "timed_out"
    assert run.cancellation.reason == "timeout"
    span = capture.span("job ERP_CUSTOMER_SYNC")
    assert span.status_code == ERROR
    assert span.attributes["error.type"] == "timeout"
    assert span.attributes["job.max_runtime"] == 60
    assert value(capture, "appvitals.job.runs", outcome="timed_out") == 1


def test_overrunning_job_that_never_checks_is_timed_out(clock: FakeClock) -> None:
    """A job that ignores its token but ends after the deadline is timed_out all the same."""
    with job("STUBBORN", max_runtime=10, clock=clock) as run:
        run.progress(succeeded=5)
        clock.advance(11)
    assert run.outcome == "timed_out"


def test_failure_after_timeout_is_timed_out_with_error(clock: FakeClock) -> None:
    """Once the token is set, it decides the outcome; the error is still recorded."""
    run = job("ERP_STOCK_SYNC", max_runtime=1, clock=clock)

    def overrun_then_fail() -> None:
        with run:
            clock.advance(2)
            raise OSError("socket closed while stopping")

    with pytest.raises(OSError):
        overrun_then_fail()
    assert run.outcome == "timed_out"
    assert isinstance(run.error, OSError)


def test_watchdog_sets_token_of_blocked_run() -> None:
    """The watchdog thread sets the token of a run that never checks, then exits."""
    run = JobRun("BLOCKED", max_runtime=0.05).start()
    # The raw event: unlike wait()/is_set(), it does not check the deadline by itself.
    assert run.cancellation._event.wait(5.0), "the watchdog set the token"
    run.finish()
    assert run.outcome == "timed_out"
    assert watchdog.watching() == 0
    for thread in threading.enumerate():
        if thread.name == "appvitals-job-watchdog":
            thread.join(5.0)
            assert not thread.is_alive()


def test_token_wait_returns_at_deadline(clock: FakeClock) -> None:
    """wait() is a cancellable sleep: at once when set, and no longer than the deadline."""
    run = JobRun("SLEEPER", max_runtime=5, clock=clock).start()
    assert run.cancellation.wait(0.0) is False
    clock.advance(5)
    assert run.cancellation.wait(60.0) is True
    run.finish()
    assert repr(run.cancellation) == "<CancellationToken set, reason='timeout'>"


def test_keyboard_interrupt_cancels_and_propagates() -> None:
    """Ctrl-C inside a run ends it cancelled and keeps propagating."""
    with pytest.raises(KeyboardInterrupt), job("INTERRUPTED") as run:
        raise KeyboardInterrupt
    assert run.outcome == "cancelled"
    assert run.cancellation.reason == "KeyboardInterrupt"


# --- decorators and async ----------------------------------------------------------------


def test_monitored_job_sync(capture: Capture) -> None:
    """@monitored_job runs each call as a run, keeps signature and result, fails on errors."""

    @monitored_job("ERP_PRICE_UPDATE", tenant="t-7")
    def update_prices(prices: list[float], *, currency: str = "EUR") -> int:
        """Import a price list."""
        run = current_run()
        assert run is not None
        run.progress(succeeded=len(prices))
        if currency != "EUR":
            raise ValueError(currency)
        return len(prices)

    assert update_prices([1.0, 2.0]) == 2
    assert update_prices.__name__ == "update_prices"
    assert update_prices.__doc__ == "Import a price list."
    assert list(inspect.signature(update_prices).parameters) == ["prices", "currency"]
    with pytest.raises(ValueError, match="USD"):
        update_prices([1.0], currency="USD")
    spans = [s for s in capture.spans() if s.name == "job ERP_PRICE_UPDATE"]
    assert [s.attributes["job.outcome"] for s in spans] == ["completed", "failed"]
    assert {s.attributes["job.tenant"] for s in spans} == {"t-7"}
    assert spans[0].attributes["job.items.succeeded"] == 2


def test_monitored_job_bare_and_checks(capture: Capture) -> None:
    """Bare @monitored_job names the job after the function; bad uses fail at decoration."""

    @monitored_job
    def nightly_cleanup() -> str:
        return "ok"

    assert nightly_cleanup() == "ok"
    capture.span("job test_monitored_job_bare_and_checks.<locals>.nightly_cleanup")

    def rows() -> Iterator[int]:
        yield 1

    with pytest.raises(TypeError):
        monitored_job("ROWS")(rows)
    with pytest.raises(ValueError):
        monitored_job("BAD", max_runtime=-1)


def test_monitored_job_async_and_cancellation(capture: Capture) -> None:
    """Coroutine functions are runs too; a cancellation is re-raised to the caller."""

    @monitored_job("ERP_ORDER_EXPORT")
    async def export(orders: int) -> int:
        run = current_run()
        assert run is not None
        await asyncio.sleep(0)
        run.progress(succeeded=orders)
        if orders == 0:
            run.cancel("nothing to export")
            run.raise_if_cancelled()
        return orders

    assert inspect.iscoroutinefunction(export)
    assert asyncio.run(export(3)) == 3
    with pytest.raises(JobCancelled, match="nothing to export"):
        asyncio.run(export(0))
    outcomes = [s.attributes["job.outcome"] for s in capture.spans()]
    assert outcomes == ["completed", "cancelled"]


def test_async_with_block(capture: Capture) -> None:
    """async with works like with, and the span is current across awaits."""

    async def main() -> JobRun:
        async with job("ASYNC_SYNC") as run:
            await asyncio.sleep(0)
            async with run.step("fetch"):
                await asyncio.sleep(0)
        return run

    run = asyncio.run(main())
    assert run.outcome == "completed"
    assert capture.span("step fetch").parent_span_id == capture.span("job ASYNC_SYNC").span_id


# --- retries -----------------------------------------------------------------------------


def test_retry_records_attempts_on_current_run(capture: Capture) -> None:
    """Retried attempts are recorded in run.attempts, as job.retry events and in the metric."""
    sleeps: list[float] = []
    calls = iter([TimeoutError("slow"), ConnectionResetError(), "page-1"])

    @retry(attempts=3, backoff=0.5, jitter=0.0, sleep=sleeps.append)
    def fetch() -> str:
        outcome = next(calls)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    with job("ERP_ARTICLE_SYNC") as run:
        assert fetch() == "page-1"
    assert sleeps == [0.5, 1.0]
    assert [(a.number, a.error_type, a.delay) for a in run.attempts] == [
        (1, "TimeoutError", 0.5),
        (2, "ConnectionResetError", 1.0),
    ]
    assert run.attempts[0].operation.endswith("fetch")
    span = capture.span("job ERP_ARTICLE_SYNC")
    retries = [e["attributes"] for e in span.events if e["name"] == "job.retry"]
    assert [(r["job.retry.attempt"], r["job.retry.delay_seconds"]) for r in retries] == [
        (1, 0.5),
        (2, 1.0),
    ]
    assert retries[0]["error.type"] == "TimeoutError"
    assert span.attributes["job.retries"] == 2
    assert value(capture, "appvitals.job.retries", job__type="ERP_ARTICLE_SYNC") == 2


def test_retry_gives_up_and_run_fails(capture: Capture) -> None:
    """After the last attempt the error propagates and the run fails with its attempts."""
    sleeps: list[float] = []

    def always_down() -> None:
        raise JobError("503 from ERP", transient=True, category="ERP_CONNECTION_FAILED")

    with pytest.raises(JobError), job("ERP_STOCK_SYNC") as run:
        retry(always_down, attempts=3, backoff=1, jitter=0, sleep=sleeps.append, run=run)()
    assert sleeps == [1.0, 2.0]
    assert [a.delay for a in run.attempts] == [1.0, 2.0, None]
    assert run.outcome == "failed"
    assert run.error_category == "ERP_CONNECTION_FAILED"
    span = capture.span("job ERP_STOCK_SYNC")
    assert span.attributes["job.retries"] == 2
    assert span.attributes["job.error.transient"] is True


def test_retry_on_types_and_predicates() -> None:
    """retry_on picks what is retried; permanent errors and cancellations are not."""
    sleeps: list[float] = []
    with job("T") as run:
        with pytest.raises(ValueError):
            run.retry(_raise, ValueError("bad EAN"))  # permanent by default: no retry
        assert [a.delay for a in run.attempts] == [None]
        flaky = retry(_raise, attempts=2, backoff=0, retry_on=ValueError, sleep=sleeps.append)
        with pytest.raises(ValueError):
            flaky(ValueError("again"))
        predicate = retry(
            _raise, attempts=2, backoff=0, retry_on=lambda e: "lock" in str(e), sleep=sleeps.append
        )
        with pytest.raises(RuntimeError):
            predicate(RuntimeError("row lock"))
        with pytest.raises(JobCancelled):
            retry(_raise, retry_on=Exception, sleep=sleeps.append)(JobCancelled())
    assert sleeps == [0.0, 0.0]
    assert run.outcome == "completed", "errors caught inside the block do not fail the run"
    assert run.retry(lambda x: x * 2, 21) == 42
    with pytest.raises(TypeError):
        retry(retry_on="ValueError")  # type: ignore[call-overload]
    with pytest.raises(ValueError):
        retry(attempts=0)


def _raise(error: BaseException) -> None:
    raise error


def test_retry_backoff_is_interrupted_by_cancel(capture: Capture) -> None:
    """Waiting between attempts ends as soon as the run is cancelled."""

    def fetch() -> None:
        run = current_run()
        assert run is not None
        run.cancel("shutdown")
        raise TimeoutError("slow")

    started = time.monotonic()
    with job("CANCEL_DURING_BACKOFF") as run:
        retry(fetch, attempts=5, backoff=30.0)()
    assert time.monotonic() - started < 5.0, "the 30 s backoff was not waited out"
    assert run.outcome == "cancelled"
    assert len(run.attempts) == 1


def test_retry_async_and_without_run() -> None:
    """Coroutine functions are retried with asyncio.sleep; no run is needed."""
    calls: list[int] = []

    @retry(attempts=3, backoff=0.0)
    async def flaky() -> int:
        calls.append(1)
        if len(calls) < 3:
            raise TimeoutError
        return len(calls)

    assert asyncio.run(flaky()) == 3
    awaited: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        awaited.append(seconds)

    async def run_in_job() -> None:
        async with job("ASYNC_RETRY") as run:
            with pytest.raises(TimeoutError):
                await retry(_async_timeout, attempts=2, backoff=0.25, jitter=0, sleep=fake_sleep)()
        assert [a.delay for a in run.attempts] == [0.25, None]

    asyncio.run(run_in_job())
    assert awaited == [0.25]


async def _async_timeout() -> None:
    raise TimeoutError


def test_retry_policy_backoff_jitter_and_retry_after() -> None:
    """Delays double up to max_backoff, jitter stays within its fraction, retry_after wins."""
    policy = RetryPolicy(attempts=6, backoff=1.0, max_backoff=5.0, jitter=0.0)
    assert [policy.delay(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert policy.delay(1, retry_after=60) == 5.0
    low = RetryPolicy(backoff=2.0, jitter=0.5, rng=lambda: 0.0)
    high = RetryPolicy(backoff=2.0, jitter=0.5, rng=lambda: 1.0)
    assert (low.delay(1), high.delay(1)) == (1.0, 3.0)
    with pytest.raises(ValueError):
        RetryPolicy(jitter=2.0)


# --- metrics -------------------------------------------------------------------------------


def test_run_metrics_counts_durations_items_and_active(capture: Capture, clock: FakeClock) -> None:
    """Runs, durations, items by result and active runs are exported with job.type."""
    with job("ERP_ARTICLE_SYNC", clock=clock, progress_every_items=100) as run:
        run.progress(processed=100, succeeded=98, failed=2)
        assert value(capture, "appvitals.job.active", job__type="ERP_ARTICLE_SYNC") == 1
        run.progress(succeeded=5)  # below the throttle: flushed at the end
        clock.advance(12.5)
    assert value(capture, "appvitals.job.active", job__type="ERP_ARTICLE_SYNC") == 0
    assert value(capture, "appvitals.job.runs", job__type="ERP_ARTICLE_SYNC") == 1
    (duration,) = points(capture, "appvitals.job.duration", outcome="completed")
    assert (duration.value, duration.sum, duration.unit) == (1, 12.5, "s")
    assert 10.0 in duration.explicit_bounds
    assert value(capture, "appvitals.job.items", result="succeeded") == 103
    assert value(capture, "appvitals.job.items", result="failed") == 2
    assert {p.attributes["outcome"] for p in capture.metric("appvitals.job.runs")} == {"completed"}


def test_last_success_gauge(capture: Capture) -> None:
    """last_success reports the Unix time of each type's last completed run only."""
    before = time.time()
    with job("ERP_STOCK_SYNC"):
        pass
    with pytest.raises(RuntimeError), job("ERP_ORDER_EXPORT"):
        raise RuntimeError("down")
    (point,) = capture.metric("appvitals.job.last_success")
    assert point.attributes == {"job.type": "ERP_STOCK_SYNC"}
    assert point.unit == "s"
    assert before <= point.value <= time.time()
    assert jobs.last_success("ERP_STOCK_SYNC") == point.value
    assert jobs.last_success("ERP_ORDER_EXPORT") is None


def test_progress_gauge_is_bounded(capture: Capture, monkeypatch: pytest.MonkeyPatch) -> None:
    """At most APPVITALS_JOB_PROGRESS_SERIES runs get a series; the rest are averaged."""
    monkeypatch.setenv("APPVITALS_JOB_PROGRESS_SERIES", "3")
    runs = [JobRun("BULK", total=100).start() for _ in range(5)]
    for index, run in enumerate(runs):
        run.progress(succeeded=10 * (index + 1))
    untracked = JobRun("UNKNOWN_TOTAL").start()
    untracked.progress(succeeded=5)
    gauge = {p.attributes["job.run_id"]: p.value for p in capture.metric("appvitals.job.progress")}
    assert gauge == {
        runs[0].run_id: 0.1,
        runs[1].run_id: 0.2,
        runs[2].run_id: 0.3,
        "other": pytest.approx(0.45),
    }
    for run in [*runs, untracked]:
        run.finish()
    assert not capture.metric("appvitals.job.progress"), "only active runs are reported"


def test_progress_gauge_never_overflows(capture: Capture) -> None:
    """Thousands of run ids over time do not trip the cardinality guard."""
    for _ in range(3):
        runs = [JobRun("CHURN", total=10).start() for _ in range(400)]
        for run in runs:
            run.progress(succeeded=5)
        series = capture.metric("appvitals.job.progress")
        for run in runs:
            run.finish()
    assert len(series) == 101
    assert not any("otel.metric.overflow" in p.attributes for p in series)
    assert {p.value for p in series} == {0.5}


# --- logs ------------------------------------------------------------------------------------


def test_log_lines_carry_job_id_and_type(
    capture: Capture, caplog: pytest.LogCaptureFixture
) -> None:
    """Log lines inside a run carry job_id, job_type, tenant_id and the run's trace."""
    caplog.set_level(logging.INFO)
    logger = logging.getLogger("erp.sync")
    with job("ERP_ARTICLE_SYNC", tenant="t-123") as run:
        logger.info("synced page %d", 1)
    logger.info("after the run")
    explicit = JobRun("CRM_EXPORT").start()
    with explicit.bound():
        logger.warning("CRM slow")
    explicit.finish()
    by_body = {record.body: record for record in capture.logs()}
    inside = by_body["synced page 1"]
    assert inside.attributes["job_id"] == run.run_id
    assert inside.attributes["job_type"] == "ERP_ARTICLE_SYNC"
    assert inside.attributes["tenant_id"] == "t-123"
    assert inside.trace_id == capture.span("job ERP_ARTICLE_SYNC").trace_id
    assert "job_id" not in by_body["after the run"].attributes
    assert by_body["CRM slow"].attributes["job_id"] == explicit.run_id
    assert by_body["CRM slow"].span_id == capture.span("job CRM_EXPORT").span_id


# --- pings ---------------------------------------------------------------------------------


class PingServer:
    """A Healthchecks stand-in on 127.0.0.1 that records every request."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str]] = []
        received = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length).decode()
                received.append((self.command, self.path, body))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # A short poll interval: shutdown() waits for the next poll.
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/ping/{uuid.uuid4()}"

    def __enter__(self) -> PingServer:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5.0)

    def paths(self) -> list[str]:
        """The paths requested, without the base and the query."""
        base = self.url.split("127.0.0.1", 1)[1].split("/", 1)[1]
        return [p.split("?")[0].removeprefix("/" + base) for _, p, _ in self.requests]


@pytest.fixture
def ping_server() -> Iterator[PingServer]:
    """A local ping endpoint, shut down after the test."""
    with PingServer() as server:
        yield server


def test_pings_start_and_success_with_last_log_lines(
    ping_server: PingServer, caplog: pytest.LogCaptureFixture
) -> None:
    """/start then the base URL, with the run id and the last 20 log lines in the body."""
    caplog.set_level(logging.INFO)
    logger = logging.getLogger("erp.sync")
    with job("ERP_ARTICLE_SYNC", pings=ping_server.url + "/") as run:
        for page in range(25):
            logger.info("page %d synced", page)
        run.progress(succeeded=25)
    logger.info("not part of the run")
    assert _jobs_pings.flush(5.0)
    assert ping_server.paths() == ["/start", ""]
    rid = f"rid={uuid.UUID(hex=run.run_id)}"
    assert all(method == "POST" and path.endswith(rid) for method, path, _ in ping_server.requests)
    body = ping_server.requests[1][2]
    lines = body.splitlines()
    assert lines[0].startswith(f"ERP_ARTICLE_SYNC run {run.run_id} completed after")
    assert "25 processed, 25 succeeded, 0 failed" in lines[0]
    assert len(lines) == 21
    assert "page 5 synced" in lines[1]
    assert "page 24 synced" in lines[-1]
    assert "not part of the run" not in body
    assert _jobs_pings._handler is None, "the log handler leaves with the last run"


@pytest.mark.parametrize(
    ("outcome", "suffix"), [("failed", "/fail"), ("cancelled", "/130"), ("timed_out", "/124")]
)
def test_pings_for_each_outcome(
    ping_server: PingServer, clock: FakeClock, outcome: str, suffix: str
) -> None:
    """Failures ping /fail; cancellations and timeouts their exit statuses."""
    with pytest.raises(RuntimeError) if outcome == "failed" else _no_error():
        with job("PINGED", pings=ping_server.url, max_runtime=10, clock=clock) as run:
            if outcome == "failed":
                raise RuntimeError("ERP down")
            if outcome == "cancelled":
                run.cancel()
            else:
                clock.advance(10)
            run.raise_if_cancelled()
    assert run.outcome == outcome
    assert _jobs_pings.flush(5.0)
    assert ping_server.paths() == ["/start", suffix]
    if outcome == "failed":
        assert "RuntimeError: ERP down" in ping_server.requests[1][2]


class _no_error:  # noqa: N801 - used like pytest.raises
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        return None


def test_ping_failures_never_reach_the_job() -> None:
    """An unreachable ping endpoint is counted as an internal error; the job completes."""
    with ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler) as closed:
        port = closed.server_address[1]
    with job("UNPINGED", pings=f"http://127.0.0.1:{port}/ping/x") as run:
        pass
    assert _jobs_pings.flush(10.0)
    assert run.outcome == "completed"
    assert internal_error_counts()["job ping"] == 2


def test_ping_queue_is_bounded() -> None:
    """A full queue drops pings instead of growing."""
    pinger = _jobs_pings.Pinger(max_queue=0)
    assert pinger.send("http://127.0.0.1:9/ping") is False
    assert pinger.dropped == 1
    assert pinger.flush(0.1)


# --- the ERP example (seed 002) ------------------------------------------------------------

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def erp_example() -> ModuleType:
    """examples/erp_sync_job.py, imported from its path."""
    spec = importlib.util.spec_from_file_location("erp_sync_job", EXAMPLES / "erp_sync_job.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_erp_example_exports_run_progress_metrics_and_logs(
    erp_example: ModuleType, capture: Capture, caplog: pytest.LogCaptureFixture
) -> None:
    """The article sync exports its run span, progress events, metrics and correlated logs."""
    caplog.set_level(logging.INFO)
    sleeps: list[float] = []
    with erp_example.FakeErp(1000) as erp:
        run = erp_example.sync_articles(erp.url, sleep=sleeps.append)
    assert run.outcome == "completed"
    assert run.counts == jobs.ItemCounts(1000, 1000, 980, 20)
    retried = [a for a in run.attempts if a.delay is not None]
    assert retried, "the fake ERP answers every 4th request with 503"
    assert {a.error_type for a in retried} == {"ErpUnavailable"}
    assert sleeps == [a.delay for a in retried]

    span = capture.span("job ERP_ARTICLE_SYNC")
    assert span.attributes["job.tenant"] == "t-123"
    assert span.attributes["job.metadata.erp.system"] == "enventa Trade"
    assert span.attributes["job.retries"] == len(retried)
    progress = [e["attributes"] for e in span.events if e["name"] == "job.progress"]
    assert [p["job.items.processed"] for p in progress] == list(range(100, 1001, 100))
    assert progress[-1]["job.progress.percent"] == 100.0
    assert all(p["job.step.name"] == "download" for p in progress)
    steps = [e["attributes"]["job.step.name"] for e in span.events if e["name"] == "job.step"]
    assert steps == ["download", "publish"]
    assert capture.span("step download").parent_span_id == span.span_id

    assert value(capture, "appvitals.job.runs", outcome="completed") == 1
    assert value(capture, "appvitals.job.items", result="succeeded") == 980
    assert value(capture, "appvitals.job.items", result="failed") == 20
    assert value(capture, "appvitals.job.retries") == len(retried)
    assert value(capture, "appvitals.job.duration") == 1
    assert value(capture, "appvitals.job.last_success") == pytest.approx(run.ended_at)

    warnings = [log for log in capture.logs() if "without EAN" in str(log.body)]
    assert len(warnings) == 10
    for log in warnings:
        assert log.attributes["job_id"] == run.run_id
        assert log.attributes["job_type"] == "ERP_ARTICLE_SYNC"
        assert log.attributes["tenant_id"] == "t-123"
        assert log.trace_id == span.trace_id


def test_erp_example_failing_run_is_classified_with_attempts(
    erp_example: ModuleType, capture: Capture, caplog: pytest.LogCaptureFixture
) -> None:
    """An ERP that stops answering fails the run: transient, ERP_CONNECTION_FAILED, 3 attempts."""
    caplog.set_level(logging.INFO)
    with erp_example.FakeErp(1000, flaky_every=0, down_from=500) as erp:
        run = erp_example.sync_articles(erp.url, sleep=lambda _: None)
    assert run.outcome == "failed"
    assert type(run.error).__name__ == "ErpUnavailable"
    assert (run.error_transient, run.error_category) == (True, "ERP_CONNECTION_FAILED")
    assert [(a.number, a.error_type) for a in run.attempts] == [
        (1, "ErpUnavailable"),
        (2, "ErpUnavailable"),
        (3, "ErpUnavailable"),
    ]
    assert run.attempts[-1].delay is None
    assert run.counts.processed == 500
    span = capture.span("job ERP_ARTICLE_SYNC")
    assert span.status_code == ERROR
    assert span.attributes["error.type"] == "ErpUnavailable"
    assert span.attributes["job.error.category"] == "ERP_CONNECTION_FAILED"
    assert span.attributes["job.retries"] == 2
    assert capture.span("step download").status_code == ERROR
    assert value(capture, "appvitals.job.runs", outcome="failed") == 1
    assert not capture.metric("appvitals.job.last_success")
    (log,) = [r for r in capture.logs() if str(r.body).startswith("giving up")]
    assert log.attributes["job_id"] == run.run_id
    assert log.attributes["exception.type"] == "ErpUnavailable"


@pytest.fixture
def _empty_health_registry() -> Iterator[None]:
    """The example registers its ERP check in the default registry: start and end empty."""
    from appvitals import health

    health.reset()
    yield
    health.reset()


@pytest.mark.usefixtures("_empty_health_registry")
def test_erp_example_preflight_reports_a_connected_erp(
    erp_example: ModuleType, capture: Capture
) -> None:
    """The preflight's ERP check reads "connected", its connection test passes, neither is flaky."""
    with erp_example.FakeErp(100) as erp:
        ready, line = erp_example.preflight(erp.url)
        assert erp.requests == 0, "health and connection-test requests are not counted as pages"
    assert ready is True
    assert line.startswith("ERP connected; connection ")
    assert line.endswith(" ms")
    assert value(capture, "appvitals.health.check.status", check__name="erp") == 1


@pytest.mark.usefixtures("_empty_health_registry")
def test_erp_example_preflight_stops_on_an_unreachable_erp(
    erp_example: ModuleType, capture: Capture
) -> None:
    """An ERP that is gone is "disconnected", its test requests are refused: no run starts."""
    with erp_example.FakeErp(100) as erp:
        url = erp.url
    ready, line = erp_example.preflight(url)
    assert ready is False
    assert line == "ERP disconnected; connection failed: Network/ConnectionRefused"
    assert value(capture, "appvitals.health.check.status", check__name="erp") == 0
    assert not capture.metric("appvitals.job.runs")


def test_erp_example_script_exit_status_and_jsonl(tmp_path: Path) -> None:
    """The script as shipped: exit status 1 for a failed run, the run in traces.jsonl."""
    result = run_example(
        "erp_sync_job.py",
        tmp_path,
        "--articles",
        "300",
        "--down",
        APPVITALS_EXPORTER="jsonl",
        APPVITALS_JSONL_DIR=str(tmp_path / "data"),
    )
    assert result.returncode == 1, result.stderr
    assert result.stdout.startswith("ERP connected; connection "), "the preflight ran first"
    assert "ERP_ARTICLE_SYNC" in result.stdout
    assert "failed" in result.stdout
    (span,) = [s for s in read_spans(tmp_path / "data") if s.name == "job ERP_ARTICLE_SYNC"]
    assert span.attributes["job.outcome"] == "failed"
    assert span.attributes["job.items.total"] == 300
