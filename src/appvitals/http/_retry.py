"""httpx transports that retry transient failures, keeping the history of every attempt.

The history is a list of :class:`~appvitals.http.Attempt` in
``request.extensions["appvitals.attempts"]``, so it is there for whoever holds the request:
the instrumented transport above (which puts it in the capture and counts
``http.request.resend_count``), and the caller through ``response.request`` or an httpx
exception's ``.request``. Each retry is also an ``appvitals.http.retry`` event on the
current span — the call's CLIENT span when the client is instrumented.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Optional, Union

import httpx
from opentelemetry import trace

from appvitals.http._policy import (
    IDEMPOTENT_METHODS,
    TRANSIENT,
    Attempt,
    RetryPolicy,
    iso_timestamp,
    parse_retry_after,
)
from appvitals.http._taxonomy import ErrorClass, classify, error_message

ATTEMPTS_KEY = "appvitals.attempts"
PHASES_KEY = "appvitals.phases"


class _Retrying:
    """What the sync and async transports share: the policy and the bookkeeping."""

    def __init__(
        self,
        policy: Optional[RetryPolicy],
        attempts: int,
        backoff: float,
        max_backoff: float,
        jitter: Union[bool, float],
        retry_on: Iterable[str],
        methods: Iterable[str],
        respect_retry_after: bool,
    ) -> None:
        self.policy = policy or RetryPolicy(
            attempts=attempts,
            backoff=backoff,
            max_backoff=max_backoff,
            jitter=jitter,
            retry_on=frozenset(retry_on),
            methods=frozenset(methods),
            respect_retry_after=respect_retry_after,
        )

    def begin(self, request: httpx.Request) -> tuple[list[Attempt], Any, bool]:
        history: list[Attempt] = []
        request.extensions[ATTEMPTS_KEY] = history
        # A body sent from a generator cannot be sent twice; bytes, JSON and forms can.
        replayable = isinstance(request.stream, httpx.ByteStream)
        return history, request.extensions.get(PHASES_KEY), replayable

    def decide(
        self,
        request: httpx.Request,
        number: int,
        started: float,
        began: float,
        recorder: Any,
        replayable: bool,
        response: Optional[httpx.Response],
        error: Optional[BaseException],
    ) -> tuple[Attempt, Optional[float]]:
        """The attempt's record, and the delay before the next one (``None``: stop)."""
        duration = time.perf_counter() - began
        status = None if response is None else response.status_code
        found: Optional[ErrorClass] = (
            classify(error) if error is not None else classify(response=response)
        )
        delay = None
        if (
            replayable
            and (error is None or isinstance(error, Exception))
            and self.policy.should_retry(found, request.method, attempt=number)
        ):
            retry_after = None
            if response is not None and self.policy.respect_retry_after:
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
            delay = self.policy.delay(number, retry_after)
        attempt = Attempt(
            number=number,
            started_at=iso_timestamp(started),
            duration_ms=round(duration * 1000.0, 3),
            status=status,
            error_category=None if found is None else found.category,
            error_type=None if found is None else found.type,
            error_message=None if found is None else _masked(error_message(error, status)),
            delay_ms=None if delay is None else round(delay * 1000.0, 3),
            phases=recorder.phases_ms() if recorder is not None else {},
        )
        if delay is not None:
            _retry_event(attempt)
        return attempt, delay


def _masked(text: str) -> str:
    from appvitals.masking import mask_text

    return str(mask_text(text))


def _retry_event(attempt: Attempt) -> None:
    span = trace.get_current_span()
    if span.is_recording():
        attributes: dict[str, Any] = {
            "appvitals.http.attempt": attempt.number,
            "appvitals.http.attempt.duration_ms": attempt.duration_ms,
            "appvitals.http.retry.delay_ms": attempt.delay_ms or 0.0,
        }
        if attempt.status is not None:
            attributes["http.response.status_code"] = attempt.status
        if attempt.error_type is not None:
            attributes["error.type"] = attempt.error_type
        span.add_event("appvitals.http.retry", attributes)


class RetryTransport(httpx.BaseTransport):
    """An httpx transport that retries transient failures with backoff, recording attempts.

    Args:
        wrapped_transport: The transport doing the work (default ``httpx.HTTPTransport()``).
        attempts: Attempts in all (3: the first and two retries).
        backoff: Seconds of the first delay, doubled after each failure.
        max_backoff: Longest delay, ``Retry-After`` included.
        jitter: Full jitter (``True``), a ± fraction, or none (``False``).
        retry_on: Categories and/or types to retry (default: Network, Timeout, Service).
        methods: Methods that may be retried (default: the idempotent ones).
        respect_retry_after: Wait what ``Retry-After`` asks (429, 503).
        sleep: How to wait (tests pass a function that records instead).
        policy: A ready :class:`RetryPolicy`, instead of the arguments above.

    A response that is retried is closed unread. Only a request whose body can be sent
    again (bytes, JSON, forms — not a generator) is retried. A failure while reading the
    body, after the transport returned the response, is the caller's to handle.

    Examples:
        >>> import httpx
        >>> from appvitals.http import RetryTransport
        >>> replies = iter([503, 503, 200])
        >>> upstream = httpx.MockTransport(lambda request: httpx.Response(next(replies)))
        >>> transport = RetryTransport(upstream, attempts=3, sleep=lambda seconds: None)
        >>> with httpx.Client(transport=transport) as client:
        ...     response = client.get("http://api.test/orders")
        >>> response.status_code
        200
        >>> history = response.request.extensions["appvitals.attempts"]
        >>> [(attempt.number, attempt.status, attempt.error_type) for attempt in history]
        [(1, 503, 'ServiceUnavailable'), (2, 503, 'ServiceUnavailable'), (3, 200, None)]
    """

    def __init__(
        self,
        wrapped_transport: Optional[httpx.BaseTransport] = None,
        *,
        attempts: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        jitter: Union[bool, float] = True,
        retry_on: Iterable[str] = TRANSIENT,
        methods: Iterable[str] = IDEMPOTENT_METHODS,
        respect_retry_after: bool = True,
        sleep: Callable[[float], Any] = time.sleep,
        policy: Optional[RetryPolicy] = None,
    ) -> None:
        self.wrapped = wrapped_transport if wrapped_transport is not None else httpx.HTTPTransport()
        self._retrying = _Retrying(
            policy, attempts, backoff, max_backoff, jitter, retry_on, methods, respect_retry_after
        )
        self.policy = self._retrying.policy
        self._sleep = sleep

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request``, again after each retryable failure, until the policy says stop."""
        retrying = self._retrying
        history, recorder, replayable = retrying.begin(request)
        number = 0
        while True:
            number += 1
            if recorder is not None and number > 1:
                recorder.reset()
            started, began = time.time(), time.perf_counter()
            try:
                response = self.wrapped.handle_request(request)
            except Exception as error:
                attempt, delay = retrying.decide(
                    request, number, started, began, recorder, replayable, None, error
                )
                history.append(attempt)
                if delay is None:
                    raise
                self._sleep(delay)
                continue
            attempt, delay = retrying.decide(
                request, number, started, began, recorder, replayable, response, None
            )
            history.append(attempt)
            if delay is None:
                return response
            response.close()
            self._sleep(delay)

    def close(self) -> None:
        """Close the wrapped transport."""
        self.wrapped.close()

    def __enter__(self) -> RetryTransport:
        self.wrapped.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.wrapped.__exit__(*exc_info)


class AsyncRetryTransport(httpx.AsyncBaseTransport):
    """:class:`RetryTransport` for ``httpx.AsyncClient`` (``sleep`` is ``asyncio.sleep``).

    Examples:
        >>> import asyncio, httpx
        >>> from appvitals.http import AsyncRetryTransport
        >>> replies = iter([429, 200])
        >>> upstream = httpx.MockTransport(
        ...     lambda request: httpx.Response(next(replies), headers={"Retry-After": "0"}))
        >>> async def main() -> int:
        ...     async with httpx.AsyncClient(transport=AsyncRetryTransport(upstream)) as client:
        ...         return (await client.get("http://api.test/")).status_code
        >>> asyncio.run(main())
        200
    """

    def __init__(
        self,
        wrapped_transport: Optional[httpx.AsyncBaseTransport] = None,
        *,
        attempts: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        jitter: Union[bool, float] = True,
        retry_on: Iterable[str] = TRANSIENT,
        methods: Iterable[str] = IDEMPOTENT_METHODS,
        respect_retry_after: bool = True,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        policy: Optional[RetryPolicy] = None,
    ) -> None:
        self.wrapped = (
            wrapped_transport if wrapped_transport is not None else httpx.AsyncHTTPTransport()
        )
        self._retrying = _Retrying(
            policy, attempts, backoff, max_backoff, jitter, retry_on, methods, respect_retry_after
        )
        self.policy = self._retrying.policy
        self._sleep = sleep

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request``, again after each retryable failure, until the policy says stop."""
        retrying = self._retrying
        history, recorder, replayable = retrying.begin(request)
        number = 0
        while True:
            number += 1
            if recorder is not None and number > 1:
                recorder.reset()
            started, began = time.time(), time.perf_counter()
            try:
                response = await self.wrapped.handle_async_request(request)
            except Exception as error:
                attempt, delay = retrying.decide(
                    request, number, started, began, recorder, replayable, None, error
                )
                history.append(attempt)
                if delay is None:
                    raise
                await self._sleep(delay)
                continue
            attempt, delay = retrying.decide(
                request, number, started, began, recorder, replayable, response, None
            )
            history.append(attempt)
            if delay is None:
                return response
            await response.aclose()
            await self._sleep(delay)

    async def aclose(self) -> None:
        """Close the wrapped transport."""
        await self.wrapped.aclose()

    async def __aenter__(self) -> AsyncRetryTransport:
        await self.wrapped.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.wrapped.__aexit__(*exc_info)
