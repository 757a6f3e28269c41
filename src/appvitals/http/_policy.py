"""The retry policy (backoff, jitter, ``Retry-After``, what to retry) and attempt records.

Nothing here imports httpx: the policy is shared with retries of other work (jobs, queue
consumers), which call :meth:`RetryPolicy.should_retry` and :meth:`RetryPolicy.delay`
with an :class:`~appvitals.http.ErrorClass` of their own failures.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Optional, Union

from appvitals.http._taxonomy import NETWORK, SERVICE, TIMEOUT, ErrorClass, classify

#: RFC 9110 idempotent methods: repeating them has the effect of sending them once.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
#: Transient failures worth another attempt.
TRANSIENT = frozenset({NETWORK, TIMEOUT, SERVICE})

# Jitter spreads clients apart; it needs no cryptographic randomness.
_random = random.Random()  # noqa: S311


@dataclass(frozen=True)
class RetryPolicy:
    """When to retry and how long to wait: exponential backoff with full jitter.

    Attributes:
        attempts: Attempts in all, the first one included (1 = never retry).
        backoff: Seconds of the first delay; each further delay doubles it.
        max_backoff: Upper bound of any delay, ``Retry-After`` included.
        jitter: ``True``: wait a random time between 0 and the backoff ("full jitter"), so
            clients that failed together do not retry together; a number between 0 and 1:
            spread the backoff by that fraction either way (``0.1``: ±10 %); ``False``: wait
            the backoff exactly.
        retry_on: Categories (``"Network"``) and/or types (``"RateLimited"``) to retry.
        methods: HTTP methods that may be retried (by default the idempotent ones).
        respect_retry_after: Wait what a ``Retry-After`` header asks (capped by
            ``max_backoff``) instead of the backoff.
        random: A function returning a float in [0, 1) for the jitter (tests).

    Examples:
        >>> from appvitals.http import ErrorClass, RetryPolicy
        >>> policy = RetryPolicy(attempts=4, backoff=0.5, jitter=False)
        >>> [policy.delay(attempt) for attempt in (1, 2, 3)]
        [0.5, 1.0, 2.0]
        >>> policy.delay(1, retry_after=7)
        7.0
        >>> policy.should_retry(ErrorClass("Service", "RateLimited"), "GET")
        True
        >>> policy.should_retry(ErrorClass("Service", "RateLimited"), "POST")
        False
        >>> policy.should_retry(ErrorClass("Auth", "PermissionDenied"), "GET")
        False
    """

    attempts: int = 3
    backoff: float = 0.5
    max_backoff: float = 30.0
    jitter: Union[bool, float] = True
    retry_on: Collection[str] = TRANSIENT
    methods: Collection[str] = IDEMPOTENT_METHODS
    respect_retry_after: bool = True
    random: Callable[[], float] = field(default=_random.random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            msg = f"attempts must be at least 1, not {self.attempts}"
            raise ValueError(msg)
        if self.backoff < 0 or self.max_backoff < 0:
            msg = "backoff and max_backoff must not be negative"
            raise ValueError(msg)
        if not isinstance(self.jitter, bool) and not 0.0 <= self.jitter <= 1.0:
            msg = f"jitter is True, False or a fraction from 0 to 1, not {self.jitter!r}"
            raise ValueError(msg)
        # Accept any iterable (a list, a tuple, a single string) and normalise it.
        object.__setattr__(self, "retry_on", _names(self.retry_on))
        object.__setattr__(
            self, "methods", frozenset(method.upper() for method in _names(self.methods))
        )

    def delay(self, attempt: int, retry_after: Optional[float] = None) -> float:
        """Seconds to wait after the failed attempt number ``attempt`` (1-based).

        Args:
            attempt: The number of the attempt that just failed.
            retry_after: Seconds the server asked for (``Retry-After``), if any.

        Returns:
            ``retry_after`` when given and respected, otherwise a backoff of
            ``backoff * 2 ** (attempt - 1)`` (a random part of it with ``jitter``); at most
            ``max_backoff`` either way.
        """
        if retry_after is not None and self.respect_retry_after:
            return float(min(self.max_backoff, max(0.0, retry_after)))
        ceiling = min(self.max_backoff, self.backoff * 2.0 ** max(0, attempt - 1))
        if self.jitter is True:
            return ceiling * self.random()
        if not self.jitter:
            return ceiling
        spread = ceiling * (1.0 + float(self.jitter) * (2.0 * self.random() - 1.0))
        return max(0.0, min(self.max_backoff, spread))

    def should_retry(
        self,
        error_class: Union[ErrorClass, BaseException, None],
        method: Optional[str] = None,
        attempt: Optional[int] = None,
    ) -> bool:
        """Whether a failure of this class (of a request with ``method``) is retried.

        Args:
            error_class: The failure's class, or the exception itself (classified with
                :func:`~appvitals.http.classify`); ``None`` (a success) is never retried,
                nor is a ``BaseException`` that is not an ``Exception`` (a cancellation).
            method: The HTTP method; ``None`` (not an HTTP call) skips the method rule.
            attempt: The number of the attempt that failed; when given, ``False`` once it
                is the last allowed attempt.
        """
        if isinstance(error_class, BaseException):
            if not isinstance(error_class, Exception):
                return False
            error_class = classify(error_class)
        if error_class is None:
            return False
        if attempt is not None and attempt >= self.attempts:
            return False
        if method is not None and method.upper() not in self.methods:
            return False
        return error_class.category in self.retry_on or error_class.type in self.retry_on


def _names(value: Iterable[str]) -> frozenset[str]:
    return frozenset((value,) if isinstance(value, str) else value)


def parse_retry_after(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """Seconds a ``Retry-After`` header value asks to wait (delay-seconds or an HTTP date).

    Examples:
        >>> parse_retry_after("120")
        120.0
        >>> parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0)
        10.0
        >>> parse_retry_after("soon") is None
        True
    """
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def iso_timestamp(seconds: float) -> str:
    """``2024-05-01T12:00:00.123Z``: UTC with milliseconds, as the health payloads use."""
    moment = datetime.fromtimestamp(seconds, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Attempt:
    """One attempt of a call made through a retry transport.

    Attributes:
        number: 1 for the first attempt.
        started_at: When it started (ISO 8601 UTC, milliseconds).
        duration_ms: How long it took.
        status: The response status, or ``None`` when it raised.
        error_category: The failure's category, or ``None`` when it succeeded.
        error_type: The failure's type, or ``None``.
        error_message: What went wrong, in one line (``None`` on success).
        delay_ms: How long the transport waited before the next attempt (``None`` for the
            last one).
        phases: Phase timings of this attempt in milliseconds (when instrumented).
    """

    number: int
    started_at: str
    duration_ms: float
    status: Optional[int] = None
    error_category: Optional[str] = None
    error_type: Optional[str] = None
    error_message: Optional[str] = None
    delay_ms: Optional[float] = None
    phases: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The attempt as a JSON-compatible dict."""
        return {
            "number": self.number,
            "started_at": self.started_at,
            "duration_ms": self.duration_ms,
            "status": self.status,
            "error_category": self.error_category,
            "error_type": self.error_type,
            "error_message": self.error_message,
            "delay_ms": self.delay_ms,
            "phases": dict(self.phases),
        }
