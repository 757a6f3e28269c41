"""Celery: task executions become job runs through signals alone (eager and a worker thread)."""

from __future__ import annotations

import datetime
import logging
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("celery")

from celery import Celery, _state
from celery.contrib.testing import worker as testing_worker
from celery.contrib.testing.worker import start_worker
from celery.signals import task_revoked
from kombu import Connection

from appvitals import _jobs_registry
from appvitals.integrations import celery as integration
from appvitals.testing import Capture

ERROR = 2


@pytest.fixture
def app() -> Iterator[Celery]:
    """A Celery app on the in-memory broker with tasks that know nothing about appvitals.

    Tasks are not shared: every test builds its own app with the same task names.
    """
    _jobs_registry.reset()
    app = Celery("appvitals-test", broker="memory://", backend="cache+memory://")
    app.conf.task_always_eager = True

    @app.task(name="erp.sync_prices", shared=False)
    def sync_prices(count: int) -> int:
        logging.getLogger("erp.prices").info("synced %d prices", count)
        return count

    @app.task(name="erp.export_orders", shared=False)
    def export_orders() -> None:
        raise ValueError("order 17 has no customer number")

    @app.task(name="erp.sync_stock", bind=True, max_retries=3, shared=False)
    def sync_stock(self: Any) -> str:
        if self.request.retries < 1:
            raise self.retry(exc=TimeoutError("ERP slow"), countdown=5)
        return "synced"

    integration.instrument()
    yield app
    integration.uninstrument()
    app.close()


def test_successful_task_is_a_completed_run_with_logs(
    app: Celery, capture: Capture, caplog: pytest.LogCaptureFixture
) -> None:
    """task_prerun/postrun make a run whose span is current for the task's log lines."""
    caplog.set_level(logging.INFO)
    result = app.tasks["erp.sync_prices"].apply(args=(3,))
    assert result.get() == 3
    span = capture.span("job erp.sync_prices")
    assert span.attributes["job.outcome"] == "completed"
    assert span.attributes["job.metadata.celery.task_id"] == result.id
    (log,) = [r for r in capture.logs() if r.body == "synced 3 prices"]
    assert log.attributes["job_type"] == "erp.sync_prices"
    assert log.attributes["job_id"] == span.attributes["job.run_id"]
    assert log.span_id == span.span_id
    assert capture.metric("appvitals.job.runs")[0].attributes == {
        "job.type": "erp.sync_prices",
        "outcome": "completed",
    }


def test_failing_task_is_a_failed_run(app: Celery, capture: Capture) -> None:
    """task_failure gives the run its exception and error class."""
    result = app.tasks["erp.export_orders"].apply()
    assert result.state == "FAILURE"
    span = capture.span("job erp.export_orders")
    assert span.attributes["job.outcome"] == "failed"
    assert span.attributes["error.type"] == "ValueError"
    assert span.attributes["job.error.transient"] is False
    assert span.status_code == ERROR


def test_retried_task_is_one_run_per_attempt(app: Celery, capture: Capture) -> None:
    """A retry ends its attempt as a transient failure with a job.retry event."""
    result = app.tasks["erp.sync_stock"].apply()
    assert result.get() == "synced"
    first, second = [s for s in capture.spans() if s.name == "job erp.sync_stock"]
    assert first.attributes["job.outcome"] == "failed"
    assert first.attributes["job.error.category"] == "celery.retry"
    assert first.attributes["job.error.transient"] is True
    assert first.attributes["error.type"] == "TimeoutError"
    (retry,) = [e for e in first.events if e["name"] == "job.retry"]
    assert retry["attributes"]["job.retry.delay_seconds"] == 5.0
    assert second.attributes["job.outcome"] == "completed"
    assert second.attributes["job.metadata.celery.retries"] == 1


def test_worker_thread_runs_and_revoked_tasks(
    app: Celery, capture: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real worker (solo pool, in a thread) reports runs; an expired task is cancelled."""
    app.conf.task_always_eager = False
    drain_events = Connection.drain_events

    def drain_briefly(self: Connection, **kwargs: Any) -> Any:
        # The worker's loop waits up to 2 s per cycle for a message and its shutdown waits
        # for the cycle to end: short cycles keep the test at a fraction of a second.
        kwargs["timeout"] = min(kwargs.get("timeout") or 0.05, 0.05)
        return drain_events(self, **kwargs)

    monkeypatch.setattr(Connection, "drain_events", drain_briefly)

    def setup_without_logging(app: Celery, loglevel: Any, logfile: Any) -> None:
        # Celery's worker logging setup replaces the root logger's handlers (pytest's and
        # appvitals'), turns on logging.captureWarnings and writes CELERY_LOG_* into the
        # environment, for the rest of the test session: the embedded worker needs none of it.
        app.finalize()
        app.set_current()
        app.set_default()

    monkeypatch.setattr(testing_worker, "setup_app_for_worker", setup_without_logging)
    monkeypatch.setattr(_state, "default_app", _state.default_app)
    monkeypatch.setattr(_state._tls, "current_app", getattr(_state._tls, "current_app", None))
    revoked = threading.Event()

    def on_revoked(**_: Any) -> None:
        revoked.set()

    task_revoked.connect(on_revoked, weak=False)
    try:
        with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
            assert app.tasks["erp.sync_prices"].delay(5).get(timeout=10, interval=0.01) == 5
            expired = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=1)
            app.tasks["erp.sync_prices"].apply_async(args=(1,), expires=expired)
            assert revoked.wait(10)
    finally:
        task_revoked.disconnect(on_revoked)
    spans = [s for s in capture.spans() if s.name == "job erp.sync_prices"]
    assert [s.attributes["job.outcome"] for s in spans] == ["completed", "cancelled"]
    assert spans[1].attributes["job.cancel.reason"] == "expired"


def test_instrument_is_idempotent_and_missing_celery_is_explained(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """instrument() twice connects once; without Celery the error names the extra."""
    integration.instrument()
    integration.instrument()
    assert integration.uninstrument() is True
    assert integration.uninstrument() is False
    monkeypatch.setitem(sys.modules, "celery.signals", None)
    with pytest.raises(ImportError, match=r"pip install 'appvitals\[celery\]'"):
        integration.instrument()
