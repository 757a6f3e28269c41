"""Retries: the policy, and the retry transports against real failing servers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import httpx
import pytest
from http_servers import SECRET, Upstream

from appvitals import http
from appvitals.http import (
    AsyncRetryTransport,
    Attempt,
    Capture,
    ErrorClass,
    RetryPolicy,
    RetryTransport,
    parse_retry_after,
)
from appvitals.testing import Capture as Telemetry


class Sleeps(list[float]):
    """A sleep that records how long it was asked to wait, and does not wait."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    """The delays the retry transport asked for."""
    return Sleeps()


@pytest.fixture
def captures() -> list[Capture]:
    """The captures delivered to ``on_capture``."""
    return []


@pytest.fixture
def client(sleeps: Sleeps, captures: list[Capture]) -> Iterator[httpx.Client]:
    """An instrumented client over a retry transport (3 attempts, 0.5 s doubling, no jitter)."""
    transport = RetryTransport(attempts=3, backoff=0.5, jitter=False, sleep=sleeps)
    with http.instrument_client(
        httpx.Client(transport=transport, timeout=2), on_capture=captures.append, capture_log=False
    ) as instrumented:
        yield instrumented


def _history(response_or_error: httpx.Response | httpx.HTTPError) -> list[Attempt]:
    history: list[Attempt] = response_or_error.request.extensions["appvitals.attempts"]
    return history


def test_policy_backoff_doubles_up_to_the_cap() -> None:
    """Delays double from backoff and stop at max_backoff."""
    policy = RetryPolicy(attempts=10, backoff=0.5, max_backoff=3, jitter=False)
    assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_policy_full_jitter_stays_below_the_backoff() -> None:
    """Full jitter picks a delay between 0 and the backoff."""
    values = iter([0.0, 0.5, 0.999])
    policy = RetryPolicy(backoff=1.0, random=lambda: next(values))
    assert [policy.delay(2) for _ in range(3)] == [0.0, 1.0, 1.998]


def test_policy_fractional_jitter() -> None:
    """A jitter fraction spreads the delay either way (the job retry helper's form)."""
    policy = RetryPolicy(backoff=1.0, jitter=0.25, random=lambda: 1.0)
    assert policy.delay(1) == 1.25
    with pytest.raises(ValueError, match="jitter"):
        RetryPolicy(jitter=1.5)


def test_policy_retry_after_wins_but_is_capped() -> None:
    """Retry-After replaces the backoff, never beyond max_backoff; unless not respected."""
    policy = RetryPolicy(max_backoff=10, jitter=False)
    assert policy.delay(1, retry_after=4) == 4.0
    assert policy.delay(1, retry_after=600) == 10.0
    assert RetryPolicy(respect_retry_after=False, jitter=False).delay(1, retry_after=4) == 0.5


def test_policy_what_is_retried() -> None:
    """Categories and types in retry_on, idempotent methods only, until the last attempt."""
    policy = RetryPolicy(attempts=3, retry_on=("Network", "RateLimited"))
    refused = ErrorClass("Network", "ConnectionRefused")
    assert policy.should_retry(refused, "GET")
    assert policy.should_retry(ErrorClass("Service", "RateLimited"), "get")
    assert not policy.should_retry(ErrorClass("Service", "ServiceUnavailable"), "GET")
    assert not policy.should_retry(refused, "POST")
    assert policy.should_retry(refused, None)  # a job: no method rule
    assert policy.should_retry(refused, "GET", attempt=2)
    assert not policy.should_retry(refused, "GET", attempt=3)
    assert not policy.should_retry(None, "GET")
    assert policy.should_retry(ConnectionRefusedError(), None)  # an exception is classified
    assert not policy.should_retry(KeyboardInterrupt(), None)
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)


def test_retry_after_forms() -> None:
    """Retry-After as seconds or as an HTTP date; anything else is ignored."""
    assert parse_retry_after("3") == 3.0
    later = datetime.now(timezone.utc) + timedelta(seconds=30)
    seconds = parse_retry_after(format_datetime(later, usegmt=True))
    assert seconds is not None
    assert 25 < seconds <= 30
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert parse_retry_after("") is None
    assert parse_retry_after("-1") is None


def test_retries_until_success(
    capture: Telemetry, client: httpx.Client, upstream: Upstream, sleeps: Sleeps
) -> None:
    """503, 503, 200: three attempts, backoff 0.5 then 1.0, no capture, resend_count 2."""
    response = client.get(upstream.url("/flaky/2"))
    assert response.json() == {"attempt": 3}
    assert sleeps == [0.5, 1.0]
    history = _history(response)
    assert [(a.number, a.status, a.error_type) for a in history] == [
        (1, 503, "ServiceUnavailable"),
        (2, 503, "ServiceUnavailable"),
        (3, 200, None),
    ]
    assert [a.delay_ms for a in history] == [500.0, 1000.0, None]
    assert all(a.duration_ms > 0 and a.started_at.endswith("Z") for a in history)
    assert {"dns", "connect", "first_byte"} <= set(history[0].phases)
    span = capture.span("GET")
    assert span.attributes["http.request.resend_count"] == 2
    assert span.attributes["http.response.status_code"] == 200
    retries = [event for event in span.events if event["name"] == "appvitals.http.retry"]
    assert [event["attributes"]["appvitals.http.attempt"] for event in retries] == [1, 2]


def test_exhausted_retries_are_captured_with_history(
    client: httpx.Client, upstream: Upstream, sleeps: Sleeps, captures: list[Capture]
) -> None:
    """A service that stays down: three attempts, then one capture holding all of them."""
    response = client.get(upstream.url(f"/status/503?api_key={SECRET}"))
    assert response.status_code == 503
    assert sleeps == [0.5, 1.0]
    (found,) = captures
    assert found.error_type == "ServiceUnavailable"
    assert [a.status for a in found.attempts] == [503, 503, 503]
    assert [a.delay_ms for a in found.attempts] == [500.0, 1000.0, None]
    assert found.to_dict()["attempts"][0]["error_type"] == "ServiceUnavailable"
    assert "after 3 attempts" in found.message()
    assert SECRET not in str(found.to_dict())


def test_rate_limit_honours_retry_after(
    upstream: Upstream, sleeps: Sleeps, captures: list[Capture]
) -> None:
    """429 with Retry-After: the delay is the server's, capped by max_backoff."""
    transport = RetryTransport(attempts=3, max_backoff=5, sleep=sleeps)
    with httpx.Client(transport=transport) as client:
        client.get(upstream.url("/status/429?retry_after=2"))
        client.get(upstream.url("/status/429?retry_after=60"))
    assert sleeps == [2.0, 2.0, 5.0, 5.0]


def test_network_errors_are_retried_then_raised(
    client: httpx.Client, refused_url: str, sleeps: Sleeps, captures: list[Capture]
) -> None:
    """A refused port: every attempt recorded on the exception's request, then raised."""
    with pytest.raises(httpx.ConnectError) as raised:
        client.get(refused_url)
    assert sleeps == [0.5, 1.0]
    history = _history(raised.value)
    assert [a.error_type for a in history] == ["ConnectionRefused"] * 3
    assert all(a.status is None for a in history)
    assert "Connection refused" in (history[0].error_message or "")
    assert [a.error_type for a in captures[0].attempts] == ["ConnectionRefused"] * 3


def test_timeouts_are_retried(upstream: Upstream, sleeps: Sleeps) -> None:
    """A read timeout is transient: retried."""
    transport = RetryTransport(attempts=2, jitter=False, sleep=sleeps)
    with httpx.Client(transport=transport, timeout=0.2) as client:
        with pytest.raises(httpx.ReadTimeout) as raised:
            client.get(upstream.url("/sleep?seconds=0.5"))
    assert [a.error_type for a in _history(raised.value)] == ["ReadTimeout", "ReadTimeout"]


def test_what_is_not_retried(upstream: Upstream, sleeps: Sleeps) -> None:
    """POST (not idempotent), auth failures and streamed bodies are sent once."""
    transport = RetryTransport(attempts=3, sleep=sleeps)
    with httpx.Client(transport=transport) as client:
        assert len(_history(client.post(upstream.url("/status/503"), json={}))) == 1
        assert len(_history(client.get(upstream.url("/status/403")))) == 1

        def chunks() -> Iterator[bytes]:
            yield b"streamed"

        response = client.put(upstream.url("/status/503"), content=chunks())
        assert len(_history(response)) == 1
    assert sleeps == []


def test_custom_retry_on_and_methods(upstream: Upstream, sleeps: Sleeps) -> None:
    """retry_on and methods widen or narrow what is retried."""
    transport = RetryTransport(
        attempts=2, retry_on={"Auth"}, methods={"POST"}, jitter=False, sleep=sleeps
    )
    with httpx.Client(transport=transport) as client:
        assert len(_history(client.post(upstream.url("/status/401"), json={}))) == 2
        assert len(_history(client.get(upstream.url("/status/401")))) == 1


def test_policy_object_can_be_shared(upstream: Upstream, sleeps: Sleeps) -> None:
    """A ready RetryPolicy is used as given."""
    policy = RetryPolicy(attempts=2, backoff=0.1, jitter=False)
    transport = RetryTransport(policy=policy, sleep=sleeps)
    assert transport.policy is policy
    with httpx.Client(transport=transport) as client:
        client.get(upstream.url("/status/503"))
    assert sleeps == [0.1]


def test_async_retry_transport(capture: Telemetry, upstream: Upstream) -> None:
    """AsyncRetryTransport retries with an awaitable sleep and records the attempts."""
    waited: list[float] = []
    captures: list[Capture] = []

    async def sleep(seconds: float) -> None:
        waited.append(seconds)

    async def main() -> tuple[httpx.Response, httpx.Response]:
        transport = AsyncRetryTransport(attempts=3, backoff=0.25, jitter=False, sleep=sleep)
        async with http.instrument_client(
            httpx.AsyncClient(transport=transport), on_capture=captures.append, capture_log=False
        ) as client:
            recovered = await client.get(upstream.url("/flaky/1?key=async"))
            down = await client.get(upstream.url("/status/503"))
            return recovered, down

    recovered, down = asyncio.run(main())
    assert recovered.status_code == 200
    assert [a.status for a in _history(recovered)] == [503, 200]
    assert down.status_code == 503
    assert waited == [0.25, 0.25, 0.5]
    assert [a.status for a in captures[0].attempts] == [503, 503, 503]
    first = capture.spans()[0]
    assert first.attributes["http.request.resend_count"] == 1
