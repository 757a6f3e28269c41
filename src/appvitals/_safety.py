"""The fail-open boundary: errors inside appvitals never reach the host application.

Every hook that runs inside application code (decorators, metric helpers, exporters,
callbacks) catches its own exceptions through :func:`internal_errors` or
:func:`report_internal_error`. Each error is counted by the place it happened (exported as
``appvitals.internal.errors``) and logged once per place, with its traceback, to the
``appvitals`` logger — a broken exporter must not produce one log line per request.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_logger = logging.getLogger("appvitals")
_lock = threading.Lock()
_counts: dict[str, int] = {}


def report_internal_error(where: str, error: BaseException) -> None:
    """Count an error raised inside appvitals and log it the first time ``where`` fails."""
    try:
        with _lock:
            first = where not in _counts
            _counts[where] = _counts.get(where, 0) + 1
        if first:
            _logger.warning(
                "appvitals: internal error in %s (the application is not affected; "
                "further errors here are only counted)",
                where,
                exc_info=(type(error), error, error.__traceback__),
            )
    except Exception:  # noqa: S110 - the last line of defence must not raise itself
        pass


@contextmanager
def internal_errors(where: str) -> Iterator[None]:
    """Swallow, count and log once any exception raised inside the block.

    Examples:
        >>> with internal_errors("example"):
        ...     raise RuntimeError("boom")
        >>> internal_error_counts()["example"] >= 1
        True
    """
    try:
        yield
    except Exception as error:
        report_internal_error(where, error)


def internal_error_counts() -> dict[str, int]:
    """A snapshot of internal errors counted so far, by place."""
    with _lock:
        return dict(_counts)


def reset_internal_errors() -> None:
    """Forget the counts (tests and ``shutdown()``)."""
    with _lock:
        _counts.clear()


def _at_fork_reinit() -> None:
    global _lock  # noqa: PLW0603 - a lock held by a thread of the parent would never be released
    _lock = threading.Lock()
