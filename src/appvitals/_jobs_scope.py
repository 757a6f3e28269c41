"""Where a job run's code runs: the run made current, and steps as child spans.

:class:`RunScope` is what ``run.bound()`` returns and what ``with run:`` enters: it makes the
run's span the current span, binds ``job_id``/``job_type``/``tenant_id`` for log lines and
makes :func:`appvitals.jobs.current_run` return the run. Each scope holds its own tokens, so
several threads can work for one run at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN, Span, Status, StatusCode

from appvitals import _jobs_registry
from appvitals._context import bind
from appvitals._jobs_retry import error_type
from appvitals._safety import report_internal_error
from appvitals.decorators import _tracer

if TYPE_CHECKING:
    from appvitals._context import Bound
    from appvitals._jobs_run import JobRun


class RunScope:
    """What :meth:`JobRun.bound` returns: the run's span, fields and identity in context."""

    __slots__ = ("_bound", "_otel_token", "_run", "_run_token")

    def __init__(self, run: JobRun) -> None:
        self._run = run
        self._bound: Optional[Bound] = None
        self._otel_token: Any = None
        self._run_token: Any = None

    def __enter__(self) -> JobRun:
        run = self._run
        self._run_token = _jobs_registry.current_run.set(run)
        fields: dict[str, Any] = {"job_id": run.run_id, "job_type": run.job_type}
        if run.tenant is not None:
            fields["tenant_id"] = run.tenant
        self._bound = bind(**fields)
        if run._span is not INVALID_SPAN:
            self._otel_token = otel_context.attach(trace.set_span_in_context(run._span))
        return run

    def __exit__(self, *exc_info: object) -> None:
        if self._otel_token is not None:
            otel_context.detach(self._otel_token)
            self._otel_token = None
        if self._bound is not None:
            self._bound.reset()
            self._bound = None
        if self._run_token is not None:
            _jobs_registry.current_run.reset(self._run_token)
            self._run_token = None

    async def __aenter__(self) -> JobRun:
        return self.__enter__()

    async def __aexit__(self, *exc_info: object) -> None:
        self.__exit__(*exc_info)


class Step:
    """A step of a run (:meth:`JobRun.step`); ``with`` it for a child span around the step."""

    __slots__ = ("_name", "_run", "_span", "_token")

    def __init__(self, run: JobRun, name: str) -> None:
        self._run = run
        self._name = name
        self._span: Span = INVALID_SPAN
        self._token: Any = None

    @property
    def name(self) -> str:
        """The step's name."""
        return self._name

    def __enter__(self) -> Step:
        run = self._run
        try:
            parent = trace.set_span_in_context(run._span) if run._span is not INVALID_SPAN else None
            self._span = _tracer().start_span(
                f"step {self._name}",
                context=parent,
                attributes={
                    "job.type": run.job_type,
                    "job.run_id": run.run_id,
                    "job.step.name": self._name,
                },
            )
            self._token = otel_context.attach(trace.set_span_in_context(self._span))
        except Exception as error:
            report_internal_error("job step start", error)
        return self

    def __exit__(self, exc_type: Any, exc: Optional[BaseException], tb: Any) -> None:
        try:
            if self._token is not None:
                otel_context.detach(self._token)
                self._token = None
            span = self._span
            if exc is not None and span.is_recording():
                span.set_attribute("error.type", error_type(exc))
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
                span.record_exception(exc, escaped=True)
            span.end()
            if self._run.current_step == self._name:
                self._run.current_step = None
        except Exception as error:
            report_internal_error("job step end", error)

    async def __aenter__(self) -> Step:
        return self.__enter__()

    async def __aexit__(self, exc_type: Any, exc: Optional[BaseException], tb: Any) -> None:
        self.__exit__(exc_type, exc, tb)

    def __repr__(self) -> str:
        return f"<Step {self._name!r}>"


Step.__module__ = "appvitals.jobs"  # documented there, where it is re-exported
