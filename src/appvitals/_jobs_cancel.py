"""Cooperative cancellation of job runs: the token, ``JobCancelled`` and the watchdog.

Nothing here stops a thread. A run's :class:`CancellationToken` is *set* — by
``run.cancel()`` from any thread, or with the reason ``"timeout"`` once ``max_runtime`` has
passed — and the job's own code notices it at its next ``raise_if_cancelled()``,
``cancelled`` or ``wait()``. The deadline is checked lazily against the run's clock by every
one of those calls, so an injected clock drives timeouts in tests; one shared watchdog thread
sets the tokens of runs that are blocked in ``wait()`` or not checking at all, so the
outcome is decided even when the code never looks.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Optional

from appvitals import _inline

Clock = Callable[[], float]

TIMEOUT = "timeout"
"""The reason a token carries when ``max_runtime`` has passed."""

CANCELLED = "cancelled"
"""The reason a token carries by default when ``cancel()`` was called."""

# The watchdog never sleeps longer than this: a deadline measured by a clock other than
# time.monotonic cannot be turned into an exact wait, so it is looked at again regularly.
_MAX_WATCHDOG_WAIT = 1.0


class JobCancelled(Exception):  # noqa: N818 - named like asyncio.CancelledError's job
    """Raised by :meth:`CancellationToken.raise_if_cancelled` once the run was cancelled.

    Raised inside ``with appvitals.job(...)``, it ends the run as ``cancelled`` (or
    ``timed_out`` when ``reason == "timeout"``) instead of ``failed``.

    Attributes:
        reason: why: ``"cancelled"``, ``"timeout"`` or what ``cancel(reason)`` said.
        token: the token that was set (``None`` when raised by hand).
    """

    def __init__(self, reason: str = CANCELLED, token: Optional[CancellationToken] = None) -> None:
        super().__init__(f"job run cancelled ({reason})")
        self.reason = reason
        self.token = token

    def __reduce__(self) -> tuple[type[JobCancelled], tuple[str]]:
        # Task queues (Celery) pickle exceptions; the token holds a lock and stays behind.
        return (type(self), (self.reason,))


class CancellationToken:
    """A thread-safe flag a job checks to stop early; set once, with a reason.

    Examples:
        >>> token = CancellationToken()
        >>> token.is_set()
        False
        >>> token.set("operator request")
        True
        >>> token.is_set(), token.reason
        (True, 'operator request')
        >>> token.raise_if_cancelled()
        Traceback (most recent call last):
        ...
        appvitals.jobs.JobCancelled: job run cancelled (operator request)
    """

    __slots__ = ("__weakref__", "_clock", "_deadline", "_event", "_lock", "_reason")

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._deadline: Optional[float] = None
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._reason: Optional[str] = None

    @property
    def reason(self) -> Optional[str]:
        """Why the token was set, or ``None`` while it is not."""
        return self._reason

    @property
    def deadline(self) -> Optional[float]:
        """The clock reading at which the token sets itself with ``"timeout"``, if any."""
        return self._deadline

    def set(self, reason: str = CANCELLED) -> bool:
        """Set the token; ``True`` if this call set it (the first reason is kept)."""
        with self._lock:
            if self._reason is not None:
                return False
            self._reason = reason
        self._event.set()
        return True

    def is_set(self) -> bool:
        """Whether the job should stop (checks the deadline too)."""
        if self._event.is_set():
            return True
        deadline = self._deadline
        if deadline is not None and self._clock() >= deadline:
            self.set(TIMEOUT)
            return True
        return False

    def raise_if_cancelled(self) -> None:
        """Raise :class:`JobCancelled` if the token is set; the cheap check for loops."""
        if self.is_set():
            raise JobCancelled(self._reason or CANCELLED, self)

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block up to ``timeout`` seconds (or until the deadline) for the token; its state.

        A cancellable replacement for ``time.sleep`` inside a job.
        """
        if self.is_set():
            return True
        remaining = timeout
        deadline = self._deadline
        if deadline is not None:
            until_deadline = max(0.0, deadline - self._clock())
            remaining = until_deadline if remaining is None else min(remaining, until_deadline)
        self._event.wait(remaining)
        return self.is_set()

    def _arm(self, deadline: float) -> None:
        self._deadline = deadline

    def __repr__(self) -> str:
        state = f"set, reason={self._reason!r}" if self._event.is_set() else "not set"
        return f"<CancellationToken {state}>"


# Both are documented as appvitals.jobs.*, where they are re-exported.
JobCancelled.__module__ = "appvitals.jobs"
CancellationToken.__module__ = "appvitals.jobs"


class _Watchdog:
    """One daemon thread for all runs with a deadline; it exits when none is left."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._tokens: set[CancellationToken] = set()
        self._thread: Optional[threading.Thread] = None

    def watch(self, token: CancellationToken) -> None:
        with self._condition:
            self._tokens.add(token)
            if self._thread is None:
                _register_fork_hook()
                self._thread = threading.Thread(
                    target=self._loop, name="appvitals-job-watchdog", daemon=True
                )
                self._thread.start()
                _inline.threads_started()  # export_mode="auto": the exports get theirs too
            self._condition.notify()

    def unwatch(self, token: CancellationToken) -> None:
        with self._condition:
            if token in self._tokens:
                self._tokens.discard(token)
                self._condition.notify()

    def watching(self) -> int:
        with self._condition:
            return len(self._tokens)

    def _loop(self) -> None:
        with self._condition:
            try:
                while self._tokens:
                    wait = _MAX_WATCHDOG_WAIT
                    for token in list(self._tokens):
                        # is_set() compares the deadline with the run's own clock and sets
                        # the token with "timeout" when it has passed.
                        if token.is_set() or token.deadline is None:
                            self._tokens.discard(token)
                            continue
                        wait = min(wait, max(0.0, token.deadline - token._clock()))
                    if self._tokens:
                        self._condition.wait(wait)
            finally:
                self._thread = None

    def _at_fork_reinit(self) -> None:
        # The thread does not exist in the child; the runs it watched belong to the parent.
        self._condition = threading.Condition()
        self._tokens = set()
        self._thread = None


watchdog = _Watchdog()
_fork_hook_registered = False


def _register_fork_hook() -> None:
    global _fork_hook_registered  # noqa: PLW0603 - registered once, when first needed
    if not _fork_hook_registered and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=watchdog._at_fork_reinit)
        _fork_hook_registered = True
