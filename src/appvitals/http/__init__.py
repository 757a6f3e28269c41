"""Outgoing HTTP: httpx spans and metrics, phase timings, error taxonomy, captures, retries.

* :func:`instrument_httpx` / :func:`instrument_client`: a CLIENT span per call (stable HTTP
  semantic conventions), ``http.client.request.duration``, phase timings (``dns``,
  ``connect``, ``tls``, ``send``, ``first_byte``, ``download``, ``total``), W3C trace
  context and the correlation id on the request, and a masked :class:`Capture` of every
  failed call.
* :func:`classify`: the :class:`ErrorClass` (category and type) of any failure.
* :class:`RetryTransport` / :class:`AsyncRetryTransport` and :class:`RetryPolicy`: retries
  with backoff, jitter and ``Retry-After``, each attempt recorded.
* :func:`test_connection`: a phase-by-phase connection test (``appvitals test URL``).

Importing this module does not import httpx: the taxonomy and the retry policy work
without it, and the instrumentation imports it when called. See ``docs/http.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Optional, Union

from appvitals.http._capture import PHASES, BodySummary, Capture
from appvitals.http._connection_test import (
    ConnectionTestResult,
    PhaseStats,
    TestError,
    Thresholds,
    TlsDetails,
)
from appvitals.http._policy import IDEMPOTENT_METHODS, Attempt, RetryPolicy, parse_retry_after
from appvitals.http._taxonomy import TAXONOMY, ErrorClass, classify

if TYPE_CHECKING:
    import ssl

    import httpx

    from appvitals.http._retry import AsyncRetryTransport, RetryTransport

__all__ = [
    "IDEMPOTENT_METHODS",
    "PHASES",
    "TAXONOMY",
    "AsyncRetryTransport",
    "Attempt",
    "BodySummary",
    "Capture",
    "ConnectionTestResult",
    "ErrorClass",
    "PhaseStats",
    "RetryPolicy",
    "RetryTransport",
    "TestError",
    "Thresholds",
    "TlsDetails",
    "classify",
    "instrument_client",
    "instrument_httpx",
    "parse_json",
    "parse_retry_after",
    "report_decode_error",
    "test_connection",
    "uninstrument_client",
    "uninstrument_httpx",
]


def instrument_httpx(
    *,
    on_capture: Optional[Callable[[Capture], Any]] = None,
    failure_status: Any = None,
    capture_body_bytes: int = 1024,
    capture_log: bool = True,
    split_dns: bool = True,
) -> None:
    """Instrument every ``httpx.Client`` and ``httpx.AsyncClient`` created from now on.

    Args:
        on_capture: Called with the :class:`Capture` of each failed call; an exception in
            it is counted and logged once, never raised.
        failure_status: Which statuses make a call failed: a collection of statuses or a
            function ``status -> bool`` (default: 400 and above).
        capture_body_bytes: Bytes of each body kept in a capture (default 1024).
        capture_log: Also log each capture as an ERROR on the ``appvitals.http`` logger.
        split_dns: Resolve names in appvitals' network backend so that ``dns`` and
            ``connect`` are timed apart (otherwise ``connect`` includes the lookup).

    Calling it again changes nothing; :func:`uninstrument_httpx` undoes it. Spans and
    metrics go wherever :func:`appvitals.configure` sends them (nowhere before it).

    Examples:
        >>> import httpx
        >>> from appvitals import http
        >>> captures = []
        >>> http.instrument_httpx(on_capture=captures.append, capture_log=False)
        >>> upstream = httpx.MockTransport(lambda request: httpx.Response(503))
        >>> with httpx.Client(transport=upstream) as client:
        ...     client.get("https://api.test/orders?api_key=s3cr3t").status_code
        503
        >>> captures[0].error_type, "s3cr3t" in captures[0].url
        ('ServiceUnavailable', False)
        >>> http.uninstrument_httpx()
    """
    from appvitals.http import _instrument

    _instrument.instrument_httpx(
        _options(on_capture, failure_status, capture_body_bytes, capture_log, split_dns)
    )


def uninstrument_httpx() -> None:
    """Undo :func:`instrument_httpx`, on the clients it instrumented too."""
    from appvitals.http import _instrument

    _instrument.uninstrument_httpx()


def instrument_client(
    client: Any,
    *,
    on_capture: Optional[Callable[[Capture], Any]] = None,
    failure_status: Any = None,
    capture_body_bytes: int = 1024,
    capture_log: bool = True,
    split_dns: bool = True,
) -> Any:
    """Instrument one ``httpx.Client`` or ``httpx.AsyncClient``; returns it.

    The options are those of :func:`instrument_httpx`. Wrap a
    :class:`RetryTransport` in the client first, so that the span and the capture cover
    every attempt.

    Examples:
        >>> import httpx
        >>> from appvitals.http import RetryTransport, instrument_client
        >>> replies = iter([503, 200])
        >>> upstream = httpx.MockTransport(lambda request: httpx.Response(next(replies)))
        >>> transport = RetryTransport(upstream, sleep=lambda seconds: None)
        >>> with instrument_client(httpx.Client(transport=transport)) as client:
        ...     client.get("https://api.test/orders").status_code
        200
    """
    from appvitals.http import _instrument

    options = _options(on_capture, failure_status, capture_body_bytes, capture_log, split_dns)
    _instrument.instrument_client(client, options)
    return client


def uninstrument_client(client: Any) -> bool:
    """Give ``client`` its own transports back; ``False`` when it was not instrumented."""
    from appvitals.http import _instrument

    return _instrument.uninstrument_client(client)


def _options(
    on_capture: Optional[Callable[[Capture], Any]],
    failure_status: Any,
    capture_body_bytes: int,
    capture_log: bool,
    split_dns: bool,
) -> Any:
    from appvitals.http._instrument import ClientOptions

    options: dict[str, Any] = {
        "on_capture": on_capture,
        "capture_body_bytes": capture_body_bytes,
        "capture_log": capture_log,
        "split_dns": split_dns,
    }
    if failure_status is not None:
        options["failure_status"] = failure_status
    return ClientOptions.from_kwargs(options)


def parse_json(response: httpx.Response) -> Any:
    """``response.json()``, recording a ``Data`` failure (capture, counter) if it fails.

    The decode error is classified ``DeserializationFailed`` (``EncodingError`` for bytes
    that are not text), captured with the response, and raised again unchanged.

    Examples:
        >>> import httpx
        >>> from appvitals.http import parse_json
        >>> request = httpx.Request("GET", "https://api.test/orders")
        >>> parse_json(httpx.Response(200, json={"id": 1}, request=request))
        {'id': 1}
    """
    try:
        return response.json()
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        report_decode_error(response, error)
        raise


def report_decode_error(response: httpx.Response, error: BaseException) -> ErrorClass:
    """Record that ``response`` could not be decoded (for callers with their own parser).

    Returns:
        The error's class (``Data/DeserializationFailed`` for a JSON error).
    """
    from appvitals.http import _instrument

    return _instrument.report_decode_error(response, error)


def test_connection(
    url: str,
    *,
    # PT028: ruff takes test_* for a pytest test; this is the library's own function.
    requests: int = 5,  # noqa: PT028
    timeout: float = 5.0,  # noqa: PT028
    thresholds: Optional[Thresholds] = None,  # noqa: PT028
    verify: Union[bool, str, ssl.SSLContext] = True,  # noqa: PT028
) -> ConnectionTestResult:
    """Measure ``requests`` GETs of ``url``, each on a new connection, phase by phase.

    Args:
        url: An ``http://`` or ``https://`` URL.
        requests: How many requests (each through a fresh client, so that DNS, TCP and TLS
            are measured every time).
        timeout: Seconds each phase may take (httpx's connect/read/write/pool timeout).
        thresholds: What counts as Fast, Normal, Slow (default 200 ms / 1000 ms).
        verify: Verify the TLS certificate: ``True`` (the default CA bundle), ``False``, a
            CA bundle file or an ``ssl.SSLContext`` (a private CA).

    Returns:
        Per-phase min/median/max, TLS details, throughput, a speed rating, classified
        errors and recommendations. It raises only for invalid arguments (``ValueError``).

    Examples:
        >>> from appvitals.http import test_connection
        >>> result = test_connection("https://example.com", requests=3)  # doctest: +SKIP
        >>> result.passed, result.rating, result.median_ms("tls")  # doctest: +SKIP
        (True, 'Fast', 21.4)
    """
    from appvitals.http._connection_test import run

    return run(url, requests=requests, timeout=timeout, thresholds=thresholds, verify=verify)


# pytest collects module-level functions named test_*; this one is a library function.
test_connection.__test__ = False  # type: ignore[attr-defined]


def __getattr__(name: str) -> Any:
    # The retry transports subclass httpx's: httpx is imported when they are first used.
    if name in ("RetryTransport", "AsyncRetryTransport"):
        from appvitals.http import _retry

        return getattr(_retry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
