"""The bridge from stdlib ``logging`` to OpenTelemetry logs.

The SDK's own ``LoggingHandler`` is deprecated since 1.39 (it warns on construction and
points to a contrib package); this lean handler does the same translation plus what
appvitals adds: the fields bound with :func:`appvitals.bind` (correlation id, user, tenant,
job) become log attributes, and the trace context of the current span links the record to
its trace.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

from opentelemetry._logs import SeverityNumber, get_logger
from opentelemetry.context import get_current
from opentelemetry.sdk._logs import LogRecordProcessor

from appvitals._context import bound_fields
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


def _severity(levelno: int) -> SeverityNumber:
    if levelno in _SEVERITY:
        return _SEVERITY[levelno]
    for level in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO):
        if levelno > level:
            return _SEVERITY[level]
    return SeverityNumber.TRACE


class OTelLogHandler(logging.Handler):
    """A ``logging`` handler that emits each record to an OpenTelemetry logger provider."""

    def __init__(self, logger_provider: Any, level: int = logging.NOTSET) -> None:
        super().__init__(level=level)
        self._provider = logger_provider
        self._loggers: dict[str, Any] = {}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            logger = self._loggers.get(record.name)
            if logger is None:
                logger = get_logger(record.name, logger_provider=self._provider)
                self._loggers[record.name] = logger
            attributes: dict[str, Any] = {
                "code.file.path": record.pathname,
                "code.function.name": record.funcName,
                "code.line.number": record.lineno,
            }
            for key, value in bound_fields().items():
                attributes[key] = (
                    value if isinstance(value, (str, bool, int, float)) else str(value)
                )
            if record.exc_info and record.exc_info[0] is not None:
                exc_type, exc, tb = record.exc_info
                attributes["exception.type"] = exc_type.__qualname__
                attributes["exception.message"] = str(exc)
                attributes["exception.stacktrace"] = "".join(
                    traceback.format_exception(exc_type, exc, tb)
                )
            logger.emit(
                timestamp=int(record.created * 1e9),
                context=get_current(),
                severity_number=_severity(record.levelno),
                severity_text=_SEVERITY_TEXT.get(record.levelname, record.levelname),
                body=record.getMessage(),
                attributes=attributes,
            )
        except Exception as error:
            report_internal_error("log handler", error)


class BoundFieldsProcessor(LogRecordProcessor):
    """A log record processor that adds the bound fields to every OpenTelemetry log record.

    Records the ``logging`` bridge creates carry them already; this covers records emitted
    straight through the OpenTelemetry API (FastAPI's native exception logs, libraries).
    """

    def on_emit(self, log_record: Any) -> None:
        fields = bound_fields()
        if not fields:
            return
        try:
            attributes = log_record.log_record.attributes
            for key, value in fields.items():
                if key not in attributes:
                    attributes[key] = (
                        value if isinstance(value, (str, bool, int, float)) else str(value)
                    )
        except Exception as error:
            report_internal_error("log fields processor", error)

    def shutdown(self) -> None:
        """Nothing to release."""

    def force_flush(self, timeout_millis: int = 30000) -> bool:  # noqa: ARG002
        """Nothing buffered."""
        return True
