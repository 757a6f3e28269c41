"""The console side of the log pipeline: the root handler and its structlog formatter.

:class:`PipelineFormatter` is a :class:`structlog.stdlib.ProcessorFormatter` whose
``foreign_pre_chain`` is the shared processor list; it takes each record's event dict from
the :class:`~appvitals._logs_pipeline.Pipeline`, so a stdlib record is processed once even
though the OpenTelemetry bridge needs the same fields.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any, Optional, TextIO

import structlog

from appvitals._logs_fields import (
    EXC_INFO_KEY,
    EventDict,
    EventMessage,
    Processor,
    drop_private,
    escape_values,
    exception_for_console,
    render_json,
)
from appvitals._logs_pipeline import Pipeline
from appvitals._safety import report_internal_error


def wrap_for_formatter(
    logger: Any, name: str, event_dict: EventDict
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """structlog's last processor: hand the event dict to stdlib ``logging``.

    :meth:`structlog.stdlib.ProcessorFormatter.wrap_for_formatter`, plus the original
    exception passed as the record's ``exc_info`` so other handlers (Sentry, ``caplog``)
    still see it.
    """
    exc_info = event_dict.pop(EXC_INFO_KEY, None)
    args, kwargs = structlog.stdlib.ProcessorFormatter.wrap_for_formatter(
        logger, name, EventMessage(event_dict)
    )
    if exc_info is not None:
        kwargs["exc_info"] = exc_info
    return args, kwargs


def renderer_processors(renderer: str, colors: bool) -> list[Any]:
    """The processors that turn a finished event dict into a ``json`` or ``console`` line."""
    if renderer == "json":
        return [render_json]
    console = structlog.dev.ConsoleRenderer(colors=colors)
    return [drop_private, escape_values, exception_for_console, console]


class PipelineFormatter(structlog.stdlib.ProcessorFormatter):
    """Render the pipeline's event dict of a record with the configured renderer."""

    def __init__(
        self,
        pipeline: Pipeline,
        processors: Sequence[Processor],
        foreign_pre_chain: Sequence[Processor],
    ) -> None:
        super().__init__(processors=processors, foreign_pre_chain=foreign_pre_chain)
        self.pipeline = pipeline

    def format(self, record: logging.LogRecord) -> str:
        event = self.pipeline.prepare(record)
        if event is None:  # dropped: the handler does not call format() then
            return ""
        return self.render(event, record.levelname.lower())

    def render(self, event: EventDict, method: str) -> str:
        """Run the renderer processors on a copy of ``event``."""
        rendered: Any = dict(event)
        for processor in self.processors:
            rendered = processor(self.logger, method, rendered)
        return rendered if isinstance(rendered, str) else str(rendered)


class ConsoleHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The root handler writing one rendered line per record (and the pending summaries).

    Without an explicit stream it writes to the current ``sys.stderr``, looked up on each
    record, so a replaced ``sys.stderr`` (pytest's capture, a daemon's redirection) is used.
    """

    def __init__(
        self, pipeline: Pipeline, formatter: PipelineFormatter, stream: Optional[TextIO] = None
    ) -> None:
        super().__init__(sys.stderr if stream is None else stream)
        self.pipeline = pipeline
        self.follow_stderr = stream is None
        self.setFormatter(formatter)
        self.renderer = formatter

    def emit(self, record: logging.LogRecord) -> None:
        try:
            event = self.pipeline.prepare(record)
            pending = self.pipeline.take(self)
        except Exception as error:
            report_internal_error("console log handler", error)
            return
        if self.follow_stderr:
            self.stream = sys.stderr
        for summary in pending:
            self._write_summary(summary.record, summary.event)
        if event is not None:
            super().emit(record)

    def emit_pending(self, pipeline: Pipeline) -> None:
        """Write the summaries ``pipeline`` still queues for this handler (at shutdown)."""
        self.acquire()
        try:
            if self.follow_stderr:
                self.stream = sys.stderr
            for summary in pipeline.take(self):
                self._write_summary(summary.record, summary.event)
        finally:
            self.release()

    def _write_summary(self, record: logging.LogRecord, event: EventDict) -> None:
        try:
            self.stream.write(self.renderer.render(event, record.levelname.lower()))
            self.stream.write(self.terminator)
            self.flush()
        except Exception:
            self.handleError(record)
