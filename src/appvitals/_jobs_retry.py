"""Retries for job code: error classification, a backoff policy and attempt records.

The backoff (delays, jitter, ``Retry-After``) is ``appvitals.http.RetryPolicy``'s, with the
same parameter names; what is retried is decided on the exception (:func:`is_transient` or
``retry_on``), since job code fails with any exception, not only HTTP ones.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Protocol, TypeVar, Union, cast

import wrapt

from appvitals._jobs_cancel import CancellationToken, JobCancelled

if TYPE_CHECKING:
    from collections.abc import Awaitable

F = TypeVar("F", bound=Callable[..., Any])
RetryOn = Union[
    type[BaseException],
    tuple[type[BaseException], ...],
    Callable[[BaseException], bool],
    None,
]

# Statuses that say "try again later" (RFC 9110 and common practice): timeouts, too early,
# rate limits and the gateway/availability family. 501 and 505 will not get better.
_TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
# Class names of the transient errors of httpx, requests and urllib3, matched by name so
# that none of them needs to be imported.
_TRANSIENT_NAMES = frozenset(
    {
        "ConnectError",
        "ConnectTimeout",
        "ConnectTimeoutError",
        "NetworkError",
        "PoolTimeout",
        "ProtocolError",
        "ReadError",
        "ReadTimeout",
        "ReadTimeoutError",
        "RemoteProtocolError",
        "Timeout",
        "TimeoutException",
        "WriteError",
        "WriteTimeout",
    }
)


class JobError(Exception):
    """A job failure that says whether it is worth retrying and which category it is.

    Any exception with boolean ``transient`` and string ``category`` attributes is read the
    same way; this class is the ready-made one.

    Examples:
        >>> from appvitals.jobs import JobError, is_transient
        >>> error = JobError("ERP down", transient=True, category="ERP_CONNECTION_FAILED")
        >>> is_transient(error), error.category
        (True, 'ERP_CONNECTION_FAILED')
    """

    def __init__(
        self,
        message: str = "job failed",
        *,
        transient: bool = False,
        category: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.transient = transient
        self.category = category


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` is worth retrying: a timeout, a lost connection, a 429 or a 5xx.

    An exception may decide for itself with a boolean ``transient`` attribute (as
    :class:`appvitals.jobs.JobError` has). Otherwise timeouts and connection errors of the
    standard library, httpx, requests and urllib3 are transient, an HTTP error is transient
    for 408, 425, 429, 500, 502, 503 and 504, and everything else is permanent.

    Examples:
        >>> from appvitals.jobs import is_transient
        >>> is_transient(TimeoutError()), is_transient(ConnectionResetError())
        (True, True)
        >>> is_transient(ValueError("bad article number"))
        False
    """
    return _is_transient(error, depth=0)


def _is_transient(error: BaseException, depth: int) -> bool:
    flag = getattr(error, "transient", None)
    if isinstance(flag, bool):
        return flag
    if isinstance(error, JobCancelled) or not isinstance(error, Exception):
        return False
    status = _status_of(error)
    if status is not None:
        return status in _TRANSIENT_STATUSES
    # urllib's URLError wraps the socket error that caused it in .reason.
    reason = getattr(error, "reason", None)
    return (
        isinstance(error, (TimeoutError, ConnectionError))
        or any(cls.__name__ in _TRANSIENT_NAMES for cls in type(error).__mro__)
        or (depth < 2 and isinstance(reason, BaseException) and _is_transient(reason, depth + 1))
    )


def _status_of(error: BaseException) -> Optional[int]:
    for candidate in (
        getattr(error, "status_code", None),
        getattr(getattr(error, "response", None), "status_code", None),
        getattr(error, "code", None) if hasattr(error, "headers") else None,  # urllib HTTPError
    ):
        if isinstance(candidate, int) and not isinstance(candidate, bool):
            return candidate
    return None


def category_of(error: BaseException) -> Optional[str]:
    """The error's own ``category`` code (``"ERP_CONNECTION_FAILED"``), if it has one."""
    category = getattr(error, "category", None)
    return category if isinstance(category, str) and category else None


def error_type(error: BaseException) -> str:
    """The ``error.type`` of an exception: its qualified class name."""
    return type(error).__qualname__


@dataclass(frozen=True)
class RetryAttempt:
    """One failed attempt of a retried call.

    Attributes:
        number: which attempt failed, from 1.
        error_type: the class name of the error it raised.
        delay: seconds waited before the next attempt; ``None`` when it was not retried
            (the last attempt, or an error not worth retrying).
        operation: the qualified name of the function retried.
    """

    number: int
    error_type: str
    delay: Optional[float]
    operation: str


class RetryPolicy:
    """The backoff of :class:`appvitals.http.RetryPolicy`, with a predicate on exceptions.

    Delays are ``backoff * 2 ** (attempt - 1)``, at most ``max_backoff``; ``jitter=True``
    waits a random part of that ("full jitter"), a fraction spreads it by that much either
    way, ``False`` waits it exactly. Which errors are retried is decided here, on the
    exception itself, because job code fails with any exception, not only HTTP ones.

    Examples:
        >>> policy = RetryPolicy(attempts=4, backoff=0.5, max_backoff=3.0, jitter=False)
        >>> [policy.delay(attempt) for attempt in (1, 2, 3, 4)]
        [0.5, 1.0, 2.0, 3.0]
        >>> policy.delay(1, retry_after=2.5)
        2.5
    """

    __slots__ = ("_backoff", "_predicate", "attempts")

    def __init__(
        self,
        attempts: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        jitter: Union[bool, float] = True,
        retry_on: RetryOn = None,
        *,
        rng: Optional[Callable[[], float]] = None,
    ) -> None:
        # One backoff for the whole library: the HTTP retry policy's (no httpx needed).
        from appvitals.http import RetryPolicy as BackoffPolicy

        if not isinstance(attempts, int) or isinstance(attempts, bool):
            raise ValueError(f"attempts must be an int >= 1, not {attempts!r}")
        options: dict[str, Any] = {} if rng is None else {"random": rng}
        self._backoff = BackoffPolicy(
            attempts=attempts, backoff=backoff, max_backoff=max_backoff, jitter=jitter, **options
        )
        self.attempts = attempts
        self._predicate = _predicate(retry_on)

    def delay(self, attempt: int, retry_after: Optional[float] = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (from 1).

        A ``retry_after`` the failed call asked for wins (still capped by ``max_backoff``).
        """
        return self._backoff.delay(attempt, retry_after)

    def should_retry(self, error: BaseException) -> bool:
        """Whether ``error`` may be retried (never a cancellation or a ``BaseException``)."""
        if isinstance(error, JobCancelled) or not isinstance(error, Exception):
            return False
        return self._predicate(error)


def _predicate(retry_on: RetryOn) -> Callable[[BaseException], bool]:
    if retry_on is None:
        return is_transient
    if isinstance(retry_on, type) and issubclass(retry_on, BaseException):
        kinds: tuple[type[BaseException], ...] = (retry_on,)
        return lambda error: isinstance(error, kinds)
    if isinstance(retry_on, tuple):
        if not all(isinstance(k, type) and issubclass(k, BaseException) for k in retry_on):
            raise TypeError("retry_on must be exception types, a tuple of them or a predicate")
        kinds = retry_on
        return lambda error: isinstance(error, kinds)
    if callable(retry_on):
        return cast("Callable[[BaseException], bool]", retry_on)
    raise TypeError("retry_on must be exception types, a tuple of them or a predicate")


class AttemptRecorder(Protocol):
    """What a retried call reports its failed attempts to (a job run)."""

    @property
    def cancellation(self) -> CancellationToken: ...

    def _record_attempt(self, attempt: RetryAttempt) -> None: ...


def _retry_after(error: BaseException) -> Optional[float]:
    value = getattr(error, "retry_after", None)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def retrying(
    fn: F,
    policy: RetryPolicy,
    sleep: Callable[[float], object],
    recorder: Callable[[], Optional[AttemptRecorder]],
) -> F:
    """``fn`` wrapped to run up to ``policy.attempts`` times (sync or ``async def``)."""
    operation = getattr(fn, "__qualname__", repr(fn))

    def failed(attempt: int, error: Exception) -> tuple[Optional[float], Optional[AttemptRecorder]]:
        again = attempt < policy.attempts and policy.should_retry(error)
        delay = policy.delay(attempt, _retry_after(error)) if again else None
        run = recorder()
        if run is not None:
            run._record_attempt(RetryAttempt(attempt, error_type(error), delay, operation))
        return delay, run

    if inspect.iscoroutinefunction(fn):
        async_sleep: Callable[[float], object] = asyncio.sleep if sleep is time.sleep else sleep

        @wrapt.decorator
        async def async_wrapper(wrapped: Any, _instance: Any, args: Any, kwargs: Any) -> Any:
            for attempt in range(1, policy.attempts + 1):  # bounded: every path below exits
                try:
                    return await wrapped(*args, **kwargs)
                except Exception as error:
                    delay, run = failed(attempt, error)
                    if delay is None:
                        raise
                pending = async_sleep(delay)
                if inspect.isawaitable(pending):
                    await cast("Awaitable[object]", pending)
                if run is not None:
                    run.cancellation.raise_if_cancelled()
            raise AssertionError("unreachable: the last attempt returns or raises")

        return cast(F, async_wrapper(fn))

    @wrapt.decorator
    def wrapper(wrapped: Any, _instance: Any, args: Any, kwargs: Any) -> Any:
        for attempt in range(1, policy.attempts + 1):  # bounded: every path below exits
            try:
                return wrapped(*args, **kwargs)
            except Exception as error:
                delay, run = failed(attempt, error)
                if delay is None:
                    raise
            if run is not None and sleep is time.sleep:
                # Waiting on the run's token instead of sleeping lets cancel() and
                # max_runtime interrupt the backoff.
                run.cancellation.wait(delay)
            else:
                sleep(delay)
            if run is not None:
                run.cancellation.raise_if_cancelled()
        raise AssertionError("unreachable: the last attempt returns or raises")

    return cast(F, wrapper(fn))


# Documented (and pickled, by task queues) as appvitals.jobs.*, where they are re-exported.
JobError.__module__ = RetryAttempt.__module__ = "appvitals.jobs"
