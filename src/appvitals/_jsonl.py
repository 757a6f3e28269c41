"""The embedded default exporter: OTLP/JSON lines in local files.

With no collector configured, traces, metrics and logs go to ``traces.jsonl``,
``metrics.jsonl`` and ``logs.jsonl`` under one directory, one OTLP/JSON export request per
line. That is the format of the OpenTelemetry Collector's ``file`` exporter, so the
Collector's ``otlpjsonfile`` receiver can read the files back and forward them anywhere.

Several processes (gunicorn workers) may append to the same files. Each line is written with
one ``write()`` on a file opened with ``O_APPEND``, which the kernel applies atomically at the
end of the file, so lines from different processes never interleave.

Exporting must never break the application: every failure (disk full, permission denied,
unencodable data) turns into a ``FAILURE`` result and one warning per file on the
``appvitals`` logger.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Optional

from google.protobuf.message import Message
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    MetricsData,
)
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from appvitals._otlp_json import to_otlp_json

if TYPE_CHECKING:
    from opentelemetry.sdk._logs import ReadableLogRecord
    from opentelemetry.sdk._logs.export import LogRecordExporter as _LogExporterBase
    from opentelemetry.sdk._logs.export import LogRecordExportResult as _LogExportResult
    from opentelemetry.sdk.metrics.view import Aggregation
    from opentelemetry.sdk.trace import ReadableSpan
else:
    # Recent SDKs (opentelemetry-python#4647) renamed the log exporter base and its result
    # enum and deprecated the old names (subclassing the deprecated base warns), so prefer
    # the new names and fall back to the old ones for the older SDKs pyproject still allows.
    try:
        from opentelemetry.sdk._logs.export import LogRecordExporter as _LogExporterBase
    except ImportError:
        from opentelemetry.sdk._logs.export import LogExporter as _LogExporterBase
    try:
        from opentelemetry.sdk._logs.export import LogRecordExportResult as _LogExportResult
    except ImportError:
        from opentelemetry.sdk._logs.export import LogExportResult as _LogExportResult

__all__ = [
    "LOGS_FILE",
    "METRICS_FILE",
    "TRACES_FILE",
    "JsonlFile",
    "JsonlLogExporter",
    "JsonlMetricExporter",
    "JsonlSpanExporter",
    "jsonl_exporters",
]

TRACES_FILE = "traces.jsonl"
METRICS_FILE = "metrics.jsonl"
LOGS_FILE = "logs.jsonl"

_logger = logging.getLogger("appvitals")


class JsonlFile:
    """An append-only, process- and fork-safe writer of JSON lines to one file.

    Construction does no I/O: the parent directory is created and the file opened on the
    first write, so configuring an exporter that is never used leaves no trace on disk.

    Args:
        path: The file to append to.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._file: Optional[BinaryIO] = None
        self._closed = False
        self._warned = False

    @property
    def path(self) -> Path:
        """The file this writer appends to."""
        return self._path

    def write(self, line: bytes) -> bool:
        """Append one record as one line.

        Args:
            line: The encoded record, without the trailing newline.

        Returns:
            ``True`` if the line was written, ``False`` if it could not be (the first failure
            is logged as a warning).
        """
        self._after_fork_check()
        error: Optional[OSError] = None
        with self._lock:
            if self._closed:
                return False
            try:
                self._write_locked(line + b"\n")
            except OSError as exc:
                error = exc
                # A handle that failed once may stay broken (a deleted directory, a revoked
                # permission): reopen on the next write instead of failing forever.
                self._close_locked()
        if error is not None:
            # Logged outside the lock: a logging handler that exports logs may write to this
            # very file, and the lock is not reentrant.
            self.warn_once("write to", error)
            return False
        return True

    def warn_once(self, action: str, error: object) -> None:
        """Log a warning on the ``appvitals`` logger unless one was logged for this file.

        Args:
            action: What failed, completing "cannot ... <path>", e.g. ``"write to"``.
            error: The exception or message saying why.
        """
        self._after_fork_check()
        # Checked and set under the lock so racing threads log once, and set before logging
        # so a handler that exports back into this file cannot recurse.
        with self._lock:
            if self._warned:
                return
            self._warned = True
        _logger.warning(
            "appvitals: cannot %s %s: %s (further errors for this file are not logged)",
            action,
            self._path,
            error,
        )

    def close(self) -> None:
        """Close the file. Idempotent; later writes fail without touching the disk."""
        self._after_fork_check()
        with self._lock:
            self._closed = True
            self._close_locked()

    def _write_locked(self, data: bytes) -> None:
        if self._file is None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            # Unbuffered: every write() is one write(2) on an O_APPEND descriptor, which is
            # what keeps lines from concurrent processes whole, and it leaves no user-space
            # buffer that a forked child could write out a second time.
            self._file = self._path.open("ab", buffering=0)
        view = memoryview(data)
        while view:
            # A regular file takes the whole buffer at once; a short write only happens on
            # errors such as a full disk, and then finishing the line beats leaving half.
            written = self._file.write(view)
            if not written:
                raise OSError(f"short write to {self._path}")
            view = view[written:]

    def _close_locked(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            with contextlib.suppress(OSError):
                file.close()

    def _after_fork_check(self) -> None:
        pid = os.getpid()
        if pid == self._pid:
            return
        # We are a forked child. The inherited lock may have been held by a parent thread at
        # the moment of the fork and would never be released here, so replace it. The
        # inherited handle is unbuffered, so closing it only closes the child's copy of the
        # descriptor and cannot repeat anything the parent wrote.
        self._pid = pid
        self._lock = threading.Lock()
        self._close_locked()


def _dump(request: Message) -> bytes:
    document = to_otlp_json(request)
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _write_request(file: JsonlFile, encode: Callable[[Any], Message], batch: Any) -> bool:
    """Encode ``batch`` with ``encode`` into an OTLP request and append it as one line."""
    try:
        line = _dump(encode(batch))
    except Exception as exc:
        file.warn_once("encode telemetry for", repr(exc))
        return False
    return file.write(line)


class JsonlSpanExporter(SpanExporter):
    """A span exporter that appends OTLP/JSON trace requests to ``traces.jsonl``.

    Args:
        directory: The directory holding the file; created on the first export.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self._file = JsonlFile(Path(directory) / TRACES_FILE)

    @property
    def path(self) -> Path:
        """The file spans are written to."""
        return self._file.path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Append the spans as one export request line.

        Args:
            spans: The finished spans.

        Returns:
            ``SUCCESS`` if the line was written (or there was nothing to write), else
            ``FAILURE``.
        """
        if not spans:
            return SpanExportResult.SUCCESS
        if _write_request(self._file, encode_spans, spans):
            return SpanExportResult.SUCCESS
        return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        """Close the file."""
        self._file.close()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:  # noqa: ARG002
        """Return ``True``: every export is written through before it returns."""
        return True


class JsonlMetricExporter(MetricExporter):
    """A metric exporter that appends OTLP/JSON metric requests to ``metrics.jsonl``.

    Collections without a single data point are not written, so an idle periodic reader
    does not fill the file with empty requests.

    Args:
        directory: The directory holding the file; created on the first export.
        preferred_temporality: Passed to :class:`MetricExporter`.
        preferred_aggregation: Passed to :class:`MetricExporter`.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        preferred_temporality: Optional[dict[type, AggregationTemporality]] = None,
        preferred_aggregation: Optional[dict[type, Aggregation]] = None,
    ) -> None:
        super().__init__(
            preferred_temporality=preferred_temporality,
            preferred_aggregation=preferred_aggregation,
        )
        self._file = JsonlFile(Path(directory) / METRICS_FILE)

    @property
    def path(self) -> Path:
        """The file metrics are written to."""
        return self._file.path

    def export(
        self,
        metrics_data: MetricsData,
        timeout_millis: float = 10_000,  # noqa: ARG002
        **kwargs: Any,  # noqa: ARG002
    ) -> MetricExportResult:
        """Append the collected metrics as one export request line.

        Args:
            metrics_data: One collection from a metric reader.
            timeout_millis: Unused: a local write does not wait on anything.
            **kwargs: Accepted for forward compatibility with the SDK.

        Returns:
            ``SUCCESS`` if the line was written (or there was nothing to write), else
            ``FAILURE``.
        """
        if not _has_data_points(metrics_data):
            return MetricExportResult.SUCCESS
        if _write_request(self._file, encode_metrics, metrics_data):
            return MetricExportResult.SUCCESS
        return MetricExportResult.FAILURE

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:  # noqa: ARG002
        """Close the file."""
        self._file.close()

    def force_flush(self, timeout_millis: float = 10_000) -> bool:  # noqa: ARG002
        """Return ``True``: every export is written through before it returns."""
        return True


def _has_data_points(metrics_data: MetricsData) -> bool:
    return any(
        metric.data.data_points
        for resource_metrics in metrics_data.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
    )


class JsonlLogExporter(_LogExporterBase):
    """A log record exporter that appends OTLP/JSON log requests to ``logs.jsonl``.

    Args:
        directory: The directory holding the file; created on the first export.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self._file = JsonlFile(Path(directory) / LOGS_FILE)

    @property
    def path(self) -> Path:
        """The file log records are written to."""
        return self._file.path

    def export(self, batch: Sequence[ReadableLogRecord]) -> _LogExportResult:
        """Append the log records as one export request line.

        Args:
            batch: The log records (``ReadableLogRecord``; ``LogData`` on older SDKs, whose
                encoder takes that instead).

        Returns:
            ``SUCCESS`` if the line was written (or there was nothing to write), else
            ``FAILURE``.
        """
        if not batch:
            return _LogExportResult.SUCCESS
        if _write_request(self._file, encode_logs, batch):
            return _LogExportResult.SUCCESS
        return _LogExportResult.FAILURE

    def shutdown(self) -> None:
        """Close the file."""
        self._file.close()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:  # noqa: ARG002
        """Return ``True``: every export is written through before it returns."""
        return True


def jsonl_exporters(
    directory: str | os.PathLike[str],
) -> tuple[JsonlSpanExporter, JsonlMetricExporter, JsonlLogExporter]:
    """Create the span, metric and log exporters writing under one directory.

    Args:
        directory: The directory for ``traces.jsonl``, ``metrics.jsonl`` and ``logs.jsonl``;
            created on the first export.

    Returns:
        The span, metric and log exporters, in that order.
    """
    return (
        JsonlSpanExporter(directory),
        JsonlMetricExporter(directory),
        JsonlLogExporter(directory),
    )
