"""Job runs as OpenTelemetry signals: lifecycle, progress, ETA, steps, retries, cancellation.

A *run* is one execution of a job type (``ERP_ARTICLE_SYNC``). It is ``queued`` when
created, ``running`` once started, and ends ``completed``, ``failed``, ``cancelled`` or
``timed_out``. Each run is one span (``job {TYPE}``) with events for its steps, retries and
throttled progress; the ``appvitals.job.*`` metrics count runs, items, durations, active
runs, progress and the last success of each type; log lines emitted inside the run carry
``job_id`` and ``job_type``. See ``docs/jobs.md``.

Examples:
    >>> from appvitals.jobs import job
    >>> with job("ERP_ARTICLE_SYNC", total=200, tenant="t-123") as run:
    ...     for _ in range(2):
    ...         run.progress(processed=100, succeeded=98, failed=2)
    ...     run.percent
    100.0
    >>> run.outcome, run.counts.failed
    ('completed', 4)
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Mapping
from typing import Any, Optional, TypeVar, Union, cast, overload

import wrapt

from appvitals import _jobs_registry
from appvitals._jobs_cancel import CancellationToken, Clock, JobCancelled
from appvitals._jobs_retry import (
    JobError,
    RetryAttempt,
    RetryOn,
    RetryPolicy,
    is_transient,
    retrying,
)
from appvitals._jobs_run import ItemCounts, JobRun, Outcome, State
from appvitals._jobs_scope import RunScope, Step

__all__ = [
    "CancellationToken",
    "ItemCounts",
    "JobCancelled",
    "JobError",
    "JobRun",
    "Outcome",
    "RetryAttempt",
    "State",
    "Step",
    "current_run",
    "is_transient",
    "job",
    "last_success",
    "monitored_job",
    "retry",
]

F = TypeVar("F", bound=Callable[..., Any])


def job(
    job_type: str,
    *,
    total: Optional[int] = None,
    tenant: Optional[str] = None,
    metadata: Optional[Mapping[str, Any]] = None,
    max_runtime: Optional[float] = None,
    progress_every_items: Optional[int] = None,
    progress_every_seconds: Optional[float] = None,
    clock: Optional[Clock] = None,
    pings: Optional[str] = None,
) -> JobRun:
    """A new run of ``job_type`` for ``with``/``async with`` (arguments as :class:`JobRun`).

    Examples:
        >>> from appvitals.jobs import job
        >>> with job("ERP_STOCK_SYNC", metadata={"erp.system": "enventa"}) as run:
        ...     with run.step("fetch"):
        ...         run.progress(succeeded=10)
        >>> run.outcome
        'completed'
    """
    return JobRun(
        job_type,
        total=total,
        tenant=tenant,
        metadata=metadata,
        max_runtime=max_runtime,
        progress_every_items=progress_every_items,
        progress_every_seconds=progress_every_seconds,
        clock=clock,
        pings=pings,
    )


def current_run() -> Optional[JobRun]:
    """The run whose code is running in this context, or ``None``.

    Examples:
        >>> from appvitals.jobs import current_run, job
        >>> with job("ERP_PRICE_UPDATE") as run:
        ...     current_run() is run
        True
        >>> current_run() is None
        True
    """
    return _jobs_registry.current_run.get()


def last_success(job_type: str) -> Optional[float]:
    """The Unix time of the last completed run of ``job_type`` in this process, if any."""
    return _jobs_registry.last_success(job_type)


@overload
def monitored_job(job_type: F, /) -> F: ...


@overload
def monitored_job(
    job_type: Optional[str] = None,
    /,
    *,
    total: Optional[int] = None,
    tenant: Optional[str] = None,
    metadata: Optional[Mapping[str, Any]] = None,
    max_runtime: Optional[float] = None,
    progress_every_items: Optional[int] = None,
    progress_every_seconds: Optional[float] = None,
    clock: Optional[Clock] = None,
    pings: Optional[str] = None,
) -> Callable[[F], F]: ...


def monitored_job(
    job_type: Union[str, F, None] = None,
    /,
    *,
    total: Optional[int] = None,
    tenant: Optional[str] = None,
    metadata: Optional[Mapping[str, Any]] = None,
    max_runtime: Optional[float] = None,
    progress_every_items: Optional[int] = None,
    progress_every_seconds: Optional[float] = None,
    clock: Optional[Clock] = None,
    pings: Optional[str] = None,
) -> Union[F, Callable[[F], F]]:
    """Run every call of a function or coroutine function as a job run.

    The job type defaults to the function's qualified name; the other arguments are those
    of :class:`JobRun` and are checked when decorating. Inside, :func:`current_run` returns
    the run. Unlike the ``with`` form, a :class:`JobCancelled` is re-raised after the run
    ended ``cancelled``, so the caller knows the call did not complete.

    Raises:
        TypeError: for generator functions (wrap their loop in ``with job(...)``).

    Examples:
        >>> from appvitals.jobs import current_run, monitored_job
        >>> @monitored_job("ERP_PRICE_UPDATE", tenant="t-1")
        ... def update_prices(prices: list) -> int:
        ...     current_run().progress(succeeded=len(prices))
        ...     return len(prices)
        >>> update_prices([9.5, 12.0])
        2
    """
    options: dict[str, Any] = {
        "total": total,
        "tenant": tenant,
        "metadata": metadata,
        "max_runtime": max_runtime,
        "progress_every_items": progress_every_items,
        "progress_every_seconds": progress_every_seconds,
        "clock": clock,
        "pings": pings,
    }

    def decorate(fn: F) -> F:
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            msg = "monitored_job decorates functions and coroutine functions, not generators"
            raise TypeError(msg)
        name = job_type if isinstance(job_type, str) else fn.__qualname__

        if inspect.iscoroutinefunction(fn):

            @wrapt.decorator
            async def async_wrapper(wrapped: Any, _instance: Any, args: Any, kwargs: Any) -> Any:
                run = JobRun(name, **options).start()
                scope = RunScope(run)
                scope.__enter__()
                try:
                    result = await wrapped(*args, **kwargs)
                except BaseException as error:
                    scope.__exit__()
                    run._conclude(error, suppress=False)
                    raise
                scope.__exit__()
                run._conclude(None, suppress=False)
                return result

            return cast(F, _mark(async_wrapper(fn), name))

        @wrapt.decorator
        def wrapper(wrapped: Any, _instance: Any, args: Any, kwargs: Any) -> Any:
            run = JobRun(name, **options).start()
            scope = RunScope(run)
            scope.__enter__()
            try:
                result = wrapped(*args, **kwargs)
            except BaseException as error:
                scope.__exit__()
                run._conclude(error, suppress=False)
                raise
            scope.__exit__()
            run._conclude(None, suppress=False)
            return result

        return cast(F, _mark(wrapper(fn), name))

    # Checked now rather than at the first call (the type name is checked here too).
    JobRun(job_type if isinstance(job_type, str) else "job", **options)
    if callable(job_type):
        return decorate(job_type)
    return decorate


def _mark(wrapper: Any, job_type: str) -> Any:
    # Lets scheduler integrations recognise a function that reports its own runs, so that
    # they do not count them twice (wrapt keeps _self_* attributes on the wrapper).
    wrapper._self_appvitals_job_type = job_type
    return wrapper


@overload
def retry(fn: F, /) -> F: ...


@overload
def retry(
    fn: None = None,
    /,
    *,
    attempts: int = 3,
    backoff: float = 0.5,
    max_backoff: float = 30.0,
    jitter: Union[bool, float] = True,
    retry_on: RetryOn = None,
    sleep: Callable[[float], object] = time.sleep,
    run: Optional[JobRun] = None,
) -> Callable[[F], F]: ...


@overload
def retry(
    fn: F,
    /,
    *,
    attempts: int = 3,
    backoff: float = 0.5,
    max_backoff: float = 30.0,
    jitter: Union[bool, float] = True,
    retry_on: RetryOn = None,
    sleep: Callable[[float], object] = time.sleep,
    run: Optional[JobRun] = None,
) -> F: ...


def retry(
    fn: Optional[F] = None,
    /,
    *,
    attempts: int = 3,
    backoff: float = 0.5,
    max_backoff: float = 30.0,
    jitter: Union[bool, float] = True,
    retry_on: RetryOn = None,
    sleep: Callable[[float], object] = time.sleep,
    run: Optional[JobRun] = None,
) -> Union[F, Callable[[F], F]]:
    """Retry a function (or coroutine function) with exponential backoff and jitter.

    Each failed attempt is recorded on ``run`` (default: the current run, if any) in
    ``run.attempts``, and each retry as a ``job.retry`` span event and in
    ``appvitals.job.retries``. While a run is current, its cancellation stops the retries.

    Args:
        fn: the function; without it, ``retry(...)`` returns a decorator.
        attempts: calls in all, the first included.
        backoff: seconds before the first retry; doubled for each further one.
        max_backoff: the longest wait, in seconds.
        jitter: ``True`` waits a random part of each delay ("full jitter"), so runs that
            failed together do not retry together; a fraction spreads the delay by that
            much either way; ``False`` waits it exactly.
        retry_on: exception types, or a predicate on the exception, that may be retried
            (default :func:`is_transient`); a cancellation is never retried.
        sleep: how to wait (coroutine functions: ``asyncio.sleep`` unless given).
        run: the run to record attempts on.

    Examples:
        >>> from appvitals.jobs import retry
        >>> calls = []
        >>> @retry(attempts=3, backoff=0.5, jitter=0.0, sleep=calls.append)
        ... def fetch_page() -> str:
        ...     if len(calls) < 2:
        ...         raise TimeoutError("ERP slow")
        ...     return "page"
        >>> fetch_page(), calls
        ('page', [0.5, 1.0])
    """
    policy = RetryPolicy(attempts, backoff, max_backoff, jitter, retry_on)

    def recorder() -> Optional[JobRun]:
        return run if run is not None else _jobs_registry.current_run.get()

    def decorate(f: F) -> F:
        return retrying(f, policy, sleep, recorder)

    return decorate if fn is None else decorate(fn)
