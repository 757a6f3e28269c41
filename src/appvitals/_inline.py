"""Thread-free export (``export_mode="auto"``, the default, and ``"inline"``).

In these modes the application's own calls run the exports, until — in ``auto`` mode — the
process has a second thread anyway, and one export thread takes them over.

The OpenTelemetry SDK exports from three background threads (batch spans, batch log
records, periodic metrics). Any second thread makes a process slower at native work it
never touches: glibc takes its locks — malloc's, SQLite's mutexes, the GIL's — with atomic
instructions once a process has started a thread, and skips them while it has one
(``docs/benchmarks.md`` measures it: 2 to 4 % of a SQLite-heavy request on gunicorn's
single-threaded sync worker). On its schedule appvitals starts no thread. Spans and log
records wait in bounded buffers, the metric readers have no schedule of their own, and
:func:`tick` — called by the HTTP middleware after each request (health and ``/metrics``
requests too) and by every queued span or log record — runs whatever export is due, in the
calling thread.

The price: the request whose end finds an export due waits for it (a few milliseconds to a
local collector; at most ``INLINE_EXPORT_TIMEOUT`` to a slow one, with no retry pause; after
a failure the next export waits longer and longer, and the failed batch is dropped, as the
SDK drops it), and a process that does nothing exports nothing until it does something
again or exits (``shutdown()`` and the exit hook flush every buffer).
"""

from __future__ import annotations

import collections
import math
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Optional

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, set_value

from appvitals._safety import report_internal_error

# Seconds one export may hold up the request that runs it (caps OTEL_EXPORTER_OTLP_TIMEOUT).
# Below the OTLP exporters' first retry pause (1 s ± 20 % jitter, HTTP and gRPC alike),
# which they only take while the pause fits in the time left: a refused connection or a
# 503 then fails the export at once instead of putting the request to sleep for a second
# before its retry. The schedule's own back-off below is the retry.
INLINE_EXPORT_TIMEOUT = 0.75
# After a failed export the next attempt waits this long, doubling per failure up to the
# longest pause: a dead collector costs one request per pause, not every request.
_FIRST_RETRY, _LONGEST_PAUSE = 5.0, 300.0

_monotonic = time.monotonic


class _Task:
    """One export on a schedule: run when due, rescheduled by its outcome."""

    __slots__ = ("due", "export", "failures", "interval", "name", "pending")

    def __init__(
        self,
        name: str,
        interval: float,
        export: Callable[[], bool],
        pending: Optional[Callable[[], bool]] = None,
    ) -> None:
        self.name = name
        self.interval = interval
        self.export = export
        # Whether a successful run left work behind: the task is then due again at once.
        self.pending = pending
        self.failures = 0
        self.due = _monotonic() + interval

    def run(self, now: float) -> None:
        try:
            succeeded = self.export()
        except Exception as error:  # an exporter bug must not reach the request
            report_internal_error(f"inline {self.name} export", error)
            succeeded = False
        if succeeded:
            self.failures = 0
            more = self.pending is not None and self.pending()
            self.due = now if more else now + self.interval
        else:
            self.failures += 1
            pause = _FIRST_RETRY * 2 ** min(self.failures - 1, 16)
            self.due = now + max(self.interval, min(pause, _LONGEST_PAUSE))


class Schedule:
    """The exports of one ``configure()``, run by :func:`tick` or by one export thread.

    Without a thread nothing runs between two :meth:`run_due` calls. ``promote``
    (``export_mode="auto"``) hands the exports to a thread of their own — one, not the SDK's
    three — as soon as the process has another thread anyway (a threaded server, a thread
    pool, a health check runner): glibc's single-threaded fast path is gone then, and an
    export no longer needs to hold up a request. Once a thread runs them, :func:`tick` is a
    no-op and a full batch wakes the thread.
    """

    def __init__(self, *, promote: bool = False) -> None:
        self._tasks: list[_Task] = []
        self.batches: list[InlineBatch] = []
        self._lock = threading.Lock()
        # The earliest due time of any task: tick() compares one float per call
        # (math.inf while the export thread runs the tasks).
        self.next_due = math.inf
        self.promote = promote
        self._thread: Optional[threading.Thread] = None
        self._wake = threading.Event()
        self._stopping = False

    @property
    def threaded(self) -> bool:
        """Whether the export thread runs the tasks (else the application's calls do)."""
        return self._thread is not None

    def every(
        self,
        name: str,
        interval: float,
        export: Callable[[], bool],
        pending: Optional[Callable[[], bool]] = None,
    ) -> _Task:
        task = _Task(name, interval, export, pending)
        self._tasks.append(task)
        if self._thread is None:
            self.next_due = min(self.next_due, task.due)
        else:
            self._wake.set()
        return task

    def hurry(self, task: _Task) -> None:
        """Make ``task`` due now (a full batch), unless it is pausing after a failure."""
        if task.failures == 0:
            task.due = -math.inf
            if self._thread is None:
                self.next_due = -math.inf
            else:
                self._wake.set()

    def run_due(self) -> None:
        """Run the due exports in the calling thread (or hand them to the export thread)."""
        if self._thread is not None:
            return
        if self.promote and process_has_threads():
            self.start_thread()
            return
        self._run_tasks()

    def _run_tasks(self) -> float:
        """Run every due task; the next due time (math.inf when there is no task)."""
        # Non-blocking: in a threaded server a second thread finding the same export due
        # goes on with its request instead of waiting for the first one's export.
        if not self._lock.acquire(blocking=False):
            return _monotonic() + 0.05
        try:
            now = _monotonic()
            for task in self._tasks:
                if now >= task.due:
                    task.run(now)
            next_due = min((task.due for task in self._tasks), default=math.inf)
            if self._thread is None:
                self.next_due = next_due
            return next_due
        finally:
            self._lock.release()

    def start_thread(self) -> None:
        """Run the exports from now on in the ``appvitals-export`` thread (idempotent).

        When the thread cannot start (the interpreter is shutting down, a thread limit), the
        error is counted and the application's calls go on running the exports.
        """
        with self._lock:
            if self._thread is not None:
                return
            self.next_due = math.inf  # tick() runs nothing from here on
            self._stopping = False
            thread = threading.Thread(target=self._loop, name="appvitals-export", daemon=True)
            self._thread = thread
        try:
            thread.start()
        except RuntimeError as error:
            report_internal_error("export thread", error)
            with self._lock:
                self._thread = None
                self.next_due = min((task.due for task in self._tasks), default=math.inf)

    def _loop(self) -> None:
        while not self._stopping:
            self._wake.clear()  # before running: a hurry() from here on wakes the next wait
            try:
                next_due = self._run_tasks()
            except Exception as error:  # pragma: no cover - task.run catches exporter errors
                report_internal_error("export thread", error)
                next_due = _monotonic() + _FIRST_RETRY
            self._wake.wait(min(max(next_due - _monotonic(), 0.0), _LONGEST_PAUSE))

    def stop_thread(self, timeout: float) -> None:
        """Stop the export thread (the caller then exports what is left itself)."""
        thread = self._thread
        if thread is None:
            return
        self._stopping = True
        self._wake.set()
        if thread is not threading.current_thread():
            thread.join(timeout)
        self._thread = None

    def at_fork_reinit(self) -> None:
        """In a forked child: no thread, a new lock, no copy of what the parent buffered."""
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread = None
        self._stopping = False
        for batch in self.batches:
            batch.clear()
        self.next_due = min((task.due for task in self._tasks), default=math.inf)


_single_threaded_flag: Any = None


def process_has_threads() -> bool:
    """Whether this process has, or has had, a second thread (Python's or native).

    glibc keeps ``__libc_single_threaded`` set until the first thread starts — a native one
    too, such as gRPC's — and never sets it again: it is exactly the fast path appvitals
    protects. Elsewhere only Python threads can be counted.
    """
    global _single_threaded_flag  # noqa: PLW0603 - looked up once
    if threading.active_count() > 1:
        return True
    if _single_threaded_flag is None:
        try:
            import ctypes

            _single_threaded_flag = ctypes.c_char.in_dll(
                ctypes.CDLL(None), "__libc_single_threaded"
            )
        except (OSError, ValueError, AttributeError):  # not glibc ≥ 2.32
            _single_threaded_flag = False
    return _single_threaded_flag is not False and _single_threaded_flag.value == b"\x00"


# The schedule of the active configure() in auto or inline mode, else None (background).
current: Optional[Schedule] = None


def tick() -> None:
    """Run the exports that are due, if the application's calls run them; cheap when none is."""
    schedule = current
    if schedule is not None and _monotonic() >= schedule.next_due:
        schedule.run_due()


def threads_started() -> None:
    """appvitals just started a thread of its own: in auto mode, exports move to theirs."""
    schedule = current
    if schedule is not None and schedule.promote:
        schedule.start_thread()


def _succeeded(result: Any) -> bool:
    # SpanExportResult and LogRecordExportResult are distinct enums with a SUCCESS member.
    return getattr(result, "name", None) == "SUCCESS"


class InlineBatch:
    """The SDK batch processor's interface (``emit``, ``force_flush``, ``shutdown``), no thread.

    It takes the place of ``BatchSpanProcessor._batch_processor`` and
    ``BatchLogRecordProcessor._batch_processor`` (see :func:`install_into`), so the SDK's
    own ``on_end``/``on_emit`` — which filter unsampled spans and copy log records — still
    run. Like the SDK's, the buffer is a bounded deque that evicts the oldest item when
    full (appvitals counts those in ``appvitals.telemetry.dropped``).
    """

    def __init__(
        self,
        name: str,
        exporter: Any,
        schedule: Schedule,
        delay_seconds: float,
        max_batch: int,
        max_queue: int,
    ) -> None:
        self._exporter = exporter
        self._queue: collections.deque[Any] = collections.deque(maxlen=max(1, max_queue))
        # One export at a time: force_flush() may run while a tick or the export thread does.
        self._export_lock = threading.Lock()
        self._max_batch = max(1, max_batch)
        self._schedule = schedule
        self._shutdown = False
        self._task = schedule.every(
            name, delay_seconds, self._export_one_batch, pending=self._has_pending
        )
        schedule.batches.append(self)

    def emit(self, item: Any) -> None:
        if self._shutdown:
            return
        queue = self._queue
        queue.append(item)
        if len(queue) >= self._max_batch:
            self._schedule.hurry(self._task)
        tick()  # a process without HTTP middleware (a worker, a script) exports from here

    def _has_pending(self) -> bool:
        return bool(self._queue)

    def _export_one_batch(self) -> bool:
        """The scheduled export: one batch per run, so one request waits for one batch.

        What is left is due again at once: the next request (or the export thread's next
        turn) sends the next batch.
        """
        with self._export_lock:
            return self._export_batch()

    def _export_pending(self) -> bool:
        """Everything buffered, batch after batch (force_flush, shutdown)."""
        with self._export_lock:
            while self._queue:
                if not self._export_batch():
                    return False
            return True

    def _export_batch(self) -> bool:
        queue = self._queue
        batch = [queue.popleft() for _ in range(min(self._max_batch, len(queue)))]
        if not batch:
            return True
        token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            result = self._exporter.export(batch)
        finally:
            detach(token)
        return _succeeded(result)

    def force_flush(self, timeout_millis: Optional[float] = None) -> bool:
        del timeout_millis  # bounded by the exporter's own timeout
        return self._shutdown or self._export_pending()

    def shutdown(self, timeout_millis: float = 30_000) -> None:
        del timeout_millis
        if self._shutdown:
            return
        try:
            self._export_pending()
        finally:
            self._shutdown = True
            self._exporter.shutdown()

    def clear(self) -> None:
        """Forget what the parent process buffered (after ``fork``; the parent exports it)."""
        self._export_lock = threading.Lock()
        self._queue.clear()


def install_into(processor_class: type[Any], batch: InlineBatch) -> Any:
    """A ``processor_class`` (a subclass of the SDK's batch processor) running on ``batch``.

    ``__init__`` is skipped on purpose: it would start the SDK's worker thread.
    """
    processor = object.__new__(processor_class)
    processor._batch_processor = batch
    return processor


# Spans or log records per export when the application's calls run the exports, unless
# OTEL_BSP_MAX_EXPORT_BATCH_SIZE / OTEL_BLRP_MAX_EXPORT_BATCH_SIZE say otherwise. Encoding
# costs ~32 µs per span: the SDK's 512 would hold one request up ~17 ms, 128 about 4 ms,
# for nearly the same total (docs/benchmarks.md).
INLINE_MAX_BATCH = 128
_BATCH_SIZE_VARIABLES = {
    "traces": "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    "logs": "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE",
}


def batch_settings(processor_class: type[Any], signal: str) -> tuple[float, int, int]:
    """(delay seconds, max batch, max queue) from the SDK's ``OTEL_BSP_*``/``OTEL_BLRP_*``."""
    max_batch = processor_class._default_max_export_batch_size()
    if not os.environ.get(_BATCH_SIZE_VARIABLES.get(signal, ""), "").strip():
        max_batch = min(max_batch, INLINE_MAX_BATCH)
    return (
        processor_class._default_schedule_delay_millis() / 1000,
        max_batch,
        processor_class._default_max_queue_size(),
    )


def collect_every(schedule: Schedule, reader: Any, interval: float, timeout: float) -> None:
    """Export ``reader`` (a periodic reader without a thread) every ``interval`` seconds."""

    def export() -> bool:
        reader.collect(timeout_millis=timeout * 1000)
        return True  # the SDK reader logs and swallows an export's failure

    schedule.every("metrics", interval, export)
