"""APScheduler 3: scheduled executions become job runs through the listener alone."""

from __future__ import annotations

import datetime
import logging
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("apscheduler")

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    EVENT_JOB_SUBMITTED,
    JobExecutionEvent,
    JobSubmissionEvent,
)
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from appvitals import _jobs_registry
from appvitals.integrations import apscheduler as integration
from appvitals.jobs import current_run, monitored_job
from appvitals.testing import Capture

ERROR = 2
UTC = datetime.timezone.utc


# The job functions know nothing about appvitals.
def sync_stock() -> int:
    logging.getLogger("erp.stock").info("stock levels synced")
    return 42


def export_orders() -> None:
    raise ConnectionResetError("ERP closed the connection")


@monitored_job("ERP_PRICE_UPDATE")
def update_prices() -> None:
    run = current_run()
    assert run is not None
    run.progress(succeeded=7)


@pytest.fixture
def scheduler() -> Iterator[BackgroundScheduler]:
    """A background scheduler with a thread pool, shut down and uninstrumented afterwards."""
    _jobs_registry.reset()
    scheduler = BackgroundScheduler(executors={"default": ThreadPoolExecutor(2)}, timezone=UTC)
    yield scheduler
    if scheduler.running:
        scheduler.shutdown(wait=True)
    integration.uninstrument(scheduler)


def outcomes(scheduler: BackgroundScheduler, expected: int) -> threading.Event:
    """An event set once ``expected`` executions ended (this listener runs after appvitals')."""
    done = threading.Event()
    seen: list[int] = []

    def listener(event: Any) -> None:
        seen.append(event.code)
        if len(seen) >= expected:
            done.set()

    scheduler.add_listener(listener, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED)
    return done


def test_executed_and_failed_jobs_become_runs(
    capture: Capture, scheduler: BackgroundScheduler
) -> None:
    """A job that returns completes; one that raises fails with its error class."""
    integration.instrument(scheduler)
    integration.instrument(scheduler)  # idempotent: one listener
    done = outcomes(scheduler, 2)
    scheduler.add_job(sync_stock, "date", id="stock", name="ERP_STOCK_SYNC")
    scheduler.add_job(export_orders, "date", id="orders", name="ERP_ORDER_EXPORT")
    scheduler.start()
    assert done.wait(10.0)
    scheduler.shutdown(wait=True)
    stock = capture.span("job ERP_STOCK_SYNC")
    assert stock.attributes["job.outcome"] == "completed"
    assert stock.attributes["job.metadata.apscheduler.job_id"] == "stock"
    assert "job.metadata.apscheduler.scheduled_time" in stock.attributes
    orders = capture.span("job ERP_ORDER_EXPORT")
    assert orders.attributes["job.outcome"] == "failed"
    assert orders.attributes["error.type"] == "ConnectionResetError"
    assert orders.attributes["job.error.transient"] is True
    assert orders.status_code == ERROR
    runs = {
        (p.attributes["job.type"], p.attributes["outcome"]): p.value
        for p in capture.metric("appvitals.job.runs")
    }
    assert runs == {("ERP_STOCK_SYNC", "completed"): 1, ("ERP_ORDER_EXPORT", "failed"): 1}
    durations = capture.metric("appvitals.job.duration")
    assert {p.attributes["job.type"] for p in durations} == {"ERP_STOCK_SYNC", "ERP_ORDER_EXPORT"}
    assert all(p.sum is not None and p.sum >= 0 for p in durations)
    active = {p.attributes["job.type"]: p.value for p in capture.metric("appvitals.job.active")}
    assert active == {"ERP_STOCK_SYNC": 0, "ERP_ORDER_EXPORT": 0}


def test_missed_run_is_counted(capture: Capture, scheduler: BackgroundScheduler) -> None:
    """A run past its misfire grace time is counted in appvitals.job.missed, never completed."""
    integration.instrument(scheduler)
    done = outcomes(scheduler, 1)
    scheduler.start()
    scheduler.add_job(
        sync_stock,
        "date",
        run_date=datetime.datetime.now(UTC) - datetime.timedelta(seconds=30),
        misfire_grace_time=1,
        name="ERP_STOCK_SYNC",
    )
    assert done.wait(10.0)
    scheduler.shutdown(wait=True)
    (missed,) = capture.metric("appvitals.job.missed")
    assert missed.attributes == {"job.type": "ERP_STOCK_SYNC", "job.missed.reason": "misfire"}
    assert missed.value == 1
    outcomes_seen = {p.attributes["outcome"] for p in capture.metric("appvitals.job.runs")}
    assert outcomes_seen <= {"cancelled"}, "a submitted run that was missed ends cancelled"


def test_monitored_job_functions_are_not_counted_twice(
    capture: Capture, scheduler: BackgroundScheduler
) -> None:
    """A function that reports its own runs is left to its decorator."""
    integration.instrument(scheduler)
    done = outcomes(scheduler, 1)
    scheduler.add_job(update_prices, "date", name="prices-job")
    scheduler.start()
    assert done.wait(10.0)
    scheduler.shutdown(wait=True)
    assert [s.name for s in capture.spans()] == ["job ERP_PRICE_UPDATE"]
    assert capture.span("job ERP_PRICE_UPDATE").attributes["job.items.succeeded"] == 7


def test_events_in_any_order(capture: Capture, scheduler: BackgroundScheduler) -> None:
    """An outcome dispatched before its submission, and max_instances skips, are handled."""
    integration.instrument(scheduler)
    scheduler.add_job(sync_stock, "interval", minutes=5, id="stock", name="ERP_STOCK_SYNC")
    listener = integration._instrumented[scheduler]
    when = datetime.datetime(2026, 1, 2, 14, 0, tzinfo=UTC)
    listener(JobExecutionEvent(EVENT_JOB_EXECUTED, "stock", "default", when, retval=42))
    listener(JobSubmissionEvent(EVENT_JOB_SUBMITTED, "stock", "default", [when]))
    listener(JobSubmissionEvent(EVENT_JOB_MAX_INSTANCES, "stock", "default", [when, when]))
    listener(JobExecutionEvent(EVENT_JOB_EXECUTED, "unknown-id", "default", when))
    spans = capture.spans()
    assert [s.attributes["job.type"] for s in spans] == ["ERP_STOCK_SYNC", "unknown-id"]
    assert {s.attributes["job.outcome"] for s in spans} == {"completed"}
    (missed,) = capture.metric("appvitals.job.missed")
    assert missed.attributes["job.missed.reason"] == "max_instances"
    assert missed.value == 2
    assert not _jobs_registry.active_runs(), "the late submission opened no run"


def test_uninstrument_ends_pending_runs(capture: Capture, scheduler: BackgroundScheduler) -> None:
    """Runs still waiting for their outcome end cancelled when the listener is removed."""
    integration.instrument(scheduler)
    scheduler.add_job(sync_stock, "interval", minutes=5, id="stock", name="ERP_STOCK_SYNC")
    listener = integration._instrumented[scheduler]
    when = datetime.datetime(2026, 1, 2, 14, 0, tzinfo=UTC)
    listener(JobSubmissionEvent(EVENT_JOB_SUBMITTED, "stock", "default", [when]))
    assert integration.uninstrument(scheduler) is True
    assert integration.uninstrument(scheduler) is False
    span = capture.span("job ERP_STOCK_SYNC")
    assert span.attributes["job.outcome"] == "cancelled"
    assert span.attributes["job.cancel.reason"] == "uninstrumented"


def test_missing_apscheduler_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without APScheduler, instrument() says which extra to install."""
    monkeypatch.setitem(sys.modules, "apscheduler", None)
    with pytest.raises(ImportError, match=r"pip install 'appvitals\[apscheduler\]'"):
        integration.instrument(object())
