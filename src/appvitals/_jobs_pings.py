"""Healthchecks-compatible pings for job runs, sent off the hot path.

A run created with ``pings="https://hc.example/ping/<uuid>"`` sends ``<url>/start`` when it
starts and, when it ends, ``<url>`` (completed), ``<url>/fail`` (failed) or
``<url>/<exit-status>`` (124 timed out, 130 cancelled — the exit statuses of ``timeout(1)``
and of Ctrl-C), each with ``?rid=<run id>`` so Healthchecks pairs start and end. The end
ping's body is a summary line and the run's last log lines.

Pings go through one daemon thread and a bounded queue (a full queue drops the ping and
counts an internal error); each request has a timeout; nothing here raises into the job.
Queued pings are flushed at interpreter exit, within the request timeout, so the final
ping of a cron-style script is not lost.
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import threading
import time
import urllib.request
import uuid
from typing import Optional
from urllib.parse import urlsplit, urlunsplit

from appvitals import _inline
from appvitals._jobs_registry import current_run
from appvitals._safety import report_internal_error
from appvitals._version import __version__

LOG_LINES_KEPT = 20
_MAX_LINE = 1000  # characters of one captured log line
_MAX_BODY = 10_000  # bytes: Healthchecks keeps the first 10 kB of a ping body by default
_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def validate_ping_url(url: str) -> str:
    """``url`` without a trailing slash; ``ValueError`` unless it is an http(s) URL."""
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"pings must be an http:// or https:// URL, not {url!r}")
    return url.rstrip("/")


def ping_url(base: str, suffix: str, run_id: str) -> str:
    """``base/suffix?rid=<run id as a UUID>``; an empty ``suffix`` pings ``base`` itself."""
    parts = urlsplit(base)
    path = parts.path.rstrip("/") + (f"/{suffix}" if suffix else "")
    rid = f"rid={uuid.UUID(hex=run_id)}"
    query = f"{parts.query}&{rid}" if parts.query else rid
    return urlunsplit((parts.scheme, parts.netloc, path, query, ""))


class Pinger:
    """Sends queued pings from one daemon thread, which exits when idle."""

    def __init__(
        self, *, timeout: float = 5.0, max_queue: int = 256, idle_seconds: float = 0.25
    ) -> None:
        self.timeout = timeout
        self._max_queue = max_queue
        self._idle = idle_seconds
        self._condition = threading.Condition()
        self._queue: collections.deque[tuple[str, bytes]] = collections.deque()
        self._in_flight = 0
        self._thread: Optional[threading.Thread] = None
        self._exit_hook = False
        self.sent = 0
        self.dropped = 0

    def send(self, url: str, body: bytes = b"") -> bool:
        """Queue a POST of ``body`` to ``url``; ``False`` when the queue was full."""
        with self._condition:
            if len(self._queue) >= self._max_queue:
                self.dropped += 1
                report_internal_error("job ping queue full", RuntimeError("ping dropped"))
                return False
            self._queue.append((url, body))
            if self._thread is None:
                self._start()
            self._condition.notify()
            return True

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Wait until every queued ping was sent (or failed); ``False`` on timeout."""
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        with self._condition:
            while self._queue or self._in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._condition.wait(remaining)
            return True

    def _start(self) -> None:
        if not self._exit_hook:
            atexit.register(self.flush)
            if hasattr(os, "register_at_fork"):
                os.register_at_fork(after_in_child=self._at_fork_reinit)
            self._exit_hook = True
        self._thread = threading.Thread(target=self._loop, name="appvitals-job-pings", daemon=True)
        self._thread.start()
        _inline.threads_started()  # export_mode="auto": the exports get their thread too

    def _loop(self) -> None:
        while True:  # ends when idle: the only way out is the return below
            with self._condition:
                if not self._queue:
                    self._condition.wait(self._idle)
                if not self._queue:
                    self._thread = None
                    self._condition.notify_all()
                    return
                url, body = self._queue.popleft()
                self._in_flight += 1
            try:
                self._post(url, body)
            finally:
                with self._condition:
                    self._in_flight -= 1
                    self.sent += 1
                    self._condition.notify_all()

    def _post(self, url: str, body: bytes) -> None:
        request = urllib.request.Request(  # noqa: S310 - scheme checked by validate_ping_url
            url,
            data=body,
            method="POST",
            headers={
                "User-Agent": f"appvitals/{__version__}",
                "Content-Type": "text/plain; charset=utf-8",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                response.read(1024)
        except Exception as error:
            report_internal_error("job ping", error)

    def _at_fork_reinit(self) -> None:
        # The parent's worker thread and queued pings stay with the parent.
        self._condition = threading.Condition()
        self._queue = collections.deque()
        self._in_flight = 0
        self._thread = None


pinger = Pinger()


def body(summary: str, lines: Optional[collections.deque[str]]) -> bytes:
    """The end ping's body: the summary, then the run's last log lines, at most 10 kB."""
    text = "\n".join([summary, *(lines or ())]) + "\n"
    data = text.encode("utf-8", "replace")
    return data if len(data) <= _MAX_BODY else data[-_MAX_BODY:]


class _RunLogHandler(logging.Handler):
    """Keeps the log lines emitted inside a run with pings in that run's bounded buffer."""

    def emit(self, record: logging.LogRecord) -> None:
        run = current_run.get()
        lines = None if run is None else run._log_lines
        if lines is None:
            return
        try:
            lines.append(self.format(record)[:_MAX_LINE])
        except Exception as error:
            report_internal_error("job ping log capture", error)


_handler_lock = threading.Lock()
_handler: Optional[_RunLogHandler] = None
_handler_users = 0


def capture_logs() -> None:
    """Install the log handler on the root logger while at least one run with pings runs."""
    global _handler, _handler_users  # noqa: PLW0603 - one handler for all runs
    with _handler_lock:
        _handler_users += 1
        if _handler is None:
            _handler = _RunLogHandler()
            _handler.setFormatter(logging.Formatter(_LOG_FORMAT))
            logging.getLogger().addHandler(_handler)


def release_logs() -> None:
    """Remove the handler when the last run with pings ended."""
    global _handler, _handler_users  # noqa: PLW0603
    with _handler_lock:
        _handler_users = max(0, _handler_users - 1)
        if _handler_users == 0 and _handler is not None:
            logging.getLogger().removeHandler(_handler)
            _handler = None


def new_log_buffer() -> collections.deque[str]:
    """A buffer of the last ``LOG_LINES_KEPT`` lines."""
    return collections.deque(maxlen=LOG_LINES_KEPT)


def flush(timeout: Optional[float] = None) -> bool:
    """Wait for queued pings (tests, and before a script exits on its own terms)."""
    return pinger.flush(timeout)
