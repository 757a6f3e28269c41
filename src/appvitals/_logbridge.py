"""The bridge from stdlib ``logging`` (and structlog through it) to OpenTelemetry logs.

The SDK's own ``LoggingHandler`` is deprecated since 1.39 (it warns on construction and
points to a contrib package); this lean handler does the same translation plus what
appvitals adds: the fields bound with :func:`appvitals.bind` (correlation id, user, tenant,
job) become log attributes, and the trace context of the current span links the record to
its trace.

When :func:`appvitals.logs.configure_logging` is active, the handler takes each record's
event dict from the shared pipeline — the fields of the JSON line, masked, with the
exception in structured form — so the console line and the OpenTelemetry record agree and
the record is exported once: body = ``event``, attributes = the other fields, flattened.
Without it, stdlib records are translated directly, and a structlog event dict (a record
whose ``msg`` is a dict, as ``ProcessorFormatter.wrap_for_formatter`` leaves it) still
becomes body and attributes rather than a dict's repr.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Mapping
from typing import Any, Optional

from opentelemetry._logs import SeverityNumber, get_logger
from opentelemetry.context import Context, get_current
from opentelemetry.sdk._logs import LogRecordProcessor
from opentelemetry.trace import INVALID_SPAN, set_span_in_context

from appvitals import _logs_pipeline
from appvitals._context import bound_fields
from appvitals._logs_fields import CODE_KEY, mask_fields, otel_attributes
from appvitals._safety import report_internal_error

# Python level → OpenTelemetry severity (logs data model, "Mapping of SeverityNumber").
_SEVERITY = {
    logging.DEBUG: SeverityNumber.DEBUG,
    logging.INFO: SeverityNumber.INFO,
    logging.WARNING: SeverityNumber.WARN,
    logging.ERROR: SeverityNumber.ERROR,
    logging.CRITICAL: SeverityNumber.FATAL,
}
_SEVERITY_TEXT = {"WARNING": "WARN", "CRITICAL": "FATAL"}
# A summary of suppressed repeats belongs to no request: it must not join the current trace.
# (An empty Context would not do: the SDK treats it as "none given" and uses the current one.)
_NO_TRACE = set_span_in_context(INVALID_SPAN, Context())


def _severity(levelno: int) -> SeverityNumber:
    if levelno in _SEVERITY:
        return _SEVERITY[levelno]
    for level in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO):
        if levelno > level:
            return _SEVERITY[level]
    return SeverityNumber.TRACE


def _attribute_value(value: Any) -> Any:
    return value if isinstance(value, (str, bool, int, float)) else str(value)


class OTelLogHandler(logging.Handler):
    """A ``logging`` handler that emits each record to an OpenTelemetry logger provider.

    Args:
        logger_provider: the provider records are emitted to.
        level: the lowest level emitted.
        masking: mask the body and attributes with :mod:`appvitals.masking` when no
            logging pipeline does it already.
    """

    def __init__(
        self, logger_provider: Any, level: int = logging.NOTSET, *, masking: bool = False
    ) -> None:
        super().__init__(level=level)
        self._provider = logger_provider
        self._loggers: dict[str, Any] = {}
        self._masking = masking

    def emit(self, record: logging.LogRecord) -> None:
        try:
            pipeline = _logs_pipeline.active()
            if pipeline is None:
                self._emit_plain(record)
                return
            event = pipeline.prepare(record)
            for summary in pipeline.take(self):
                self._emit_event(summary.record, summary.event, _NO_TRACE)
            if event is not None:
                self._emit_event(record, event, None)
        except Exception as error:
            report_internal_error("log handler", error)

    def emit_pending(self, pipeline: _logs_pipeline.Pipeline) -> None:
        """Emit the summaries of suppressed repeats ``pipeline`` still queues (at shutdown)."""
        try:
            for summary in pipeline.take(self):
                self._emit_event(summary.record, summary.event, _NO_TRACE)
        except Exception as error:
            report_internal_error("log handler", error)

    def _logger(self, name: str) -> Any:
        logger = self._loggers.get(name)
        if logger is None:
            logger = get_logger(name, logger_provider=self._provider)
            self._loggers[name] = logger
        return logger

    def _emit_event(
        self, record: logging.LogRecord, event: Mapping[str, Any], context: Optional[Context]
    ) -> None:
        """Emit the pipeline's event dict: body = ``event``, attributes = the other fields."""
        attributes: dict[str, Any] = {}
        code = event.get(CODE_KEY)
        if code is not None:  # a structlog call: the record's location is structlog's own
            attributes["code.file.path"], attributes["code.function.name"] = code[0], code[1]
            attributes["code.line.number"] = code[2]
        elif record.pathname:
            attributes["code.file.path"] = record.pathname
            attributes["code.function.name"] = record.funcName
            attributes["code.line.number"] = record.lineno
        attributes.update(otel_attributes(event))
        body = event.get("event")
        self._logger(record.name).emit(
            timestamp=int(record.created * 1e9),
            context=get_current() if context is None else context,
            severity_number=_severity(record.levelno),
            severity_text=_SEVERITY_TEXT.get(record.levelname, record.levelname),
            body=body if isinstance(body, str) else str(body),
            attributes={k: v for k, v in attributes.items() if v is not None},
        )

    def _emit_plain(self, record: logging.LogRecord) -> None:
        """Translate a record without the pipeline (``configure(structlog=False)``)."""
        attributes: dict[str, Any] = {
            "code.file.path": record.pathname,
            "code.function.name": record.funcName,
            "code.line.number": record.lineno,
        }
        for key, value in bound_fields().items():
            attributes[key] = _attribute_value(value)
        if isinstance(record.msg, Mapping):
            # A structlog event dict handed over by ProcessorFormatter.wrap_for_formatter.
            body: Any = record.msg.get("event", "")
            attributes.update(otel_attributes(record.msg))
        else:
            body = record.getMessage()
        if record.exc_info and record.exc_info[0] is not None:
            exc_type, exc, tb = record.exc_info
            attributes["exception.type"] = exc_type.__qualname__
            attributes["exception.message"] = str(exc)
            attributes["exception.stacktrace"] = "".join(
                traceback.format_exception(exc_type, exc, tb)
            )
        body = body if isinstance(body, str) else str(body)
        if self._masking:
            from appvitals.masking import default_masker

            masker = default_masker()
            body = masker.mask_text(body)
            attributes = mask_fields(masker, attributes)
        self._logger(record.name).emit(
            timestamp=int(record.created * 1e9),
            context=get_current(),
            severity_number=_severity(record.levelno),
            severity_text=_SEVERITY_TEXT.get(record.levelname, record.levelname),
            body=body,
            attributes=attributes,
        )


class BoundFieldsProcessor(LogRecordProcessor):
    """A log record processor that adds the bound fields to every OpenTelemetry log record.

    Records the ``logging`` bridge creates carry them already; this covers records emitted
    straight through the OpenTelemetry API (FastAPI's native exception logs, libraries).
    Their values are masked when the logging pipeline masks.
    """

    def on_emit(self, log_record: Any) -> None:
        fields = bound_fields()
        if not fields:
            return
        try:
            attributes = log_record.log_record.attributes
            missing = {key: value for key, value in fields.items() if key not in attributes}
            if not missing:
                return
            pipeline = _logs_pipeline.active()
            if pipeline is not None and pipeline.masker is not None:
                missing = mask_fields(pipeline.masker(), missing)
            for key, value in missing.items():
                attributes[key] = _attribute_value(value)
        except Exception as error:
            report_internal_error("log fields processor", error)

    def shutdown(self) -> None:
        """Nothing to release."""

    def force_flush(self, timeout_millis: int = 30000) -> bool:  # noqa: ARG002
        """Nothing buffered."""
        return True
