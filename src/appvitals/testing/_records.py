"""Plain-data views of OTLP/JSON requests, for tests to assert on.

OTLP/JSON nests every span, metric point and log record three levels deep (resource, scope,
item) and wraps every attribute value in a typed ``AnyValue`` object. The readers here flatten
that into one record per span, metric data point or log record, with attributes, resources and
bodies as plain Python values, so a test can write ``span.attributes["http.route"] == "/"``.

They read the same shape from both places appvitals writes it: the test receiver (requests
converted by :func:`appvitals._otlp_json.to_otlp_json`) and the ``jsonl`` exporter's files.
Only the standard library is used, so importing this module costs nothing.
"""

from __future__ import annotations

import base64
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

Signal = Literal["traces", "metrics", "logs"]
MetricKind = Literal["sum", "gauge", "histogram", "exponential_histogram", "summary"]

_SIGNALS: tuple[Signal, ...] = ("traces", "metrics", "logs")

# Proto3 JSON writes non-finite doubles as these strings rather than as JSON numbers.
_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


@dataclass(frozen=True)
class SpanRecord:
    """One span, flattened out of an OTLP/JSON trace request.

    Attributes:
        name: The span name.
        trace_id: The trace id as 32 lowercase hex digits.
        span_id: The span id as 16 lowercase hex digits.
        parent_span_id: The parent's span id in hex, or ``None`` for a root span.
        kind: The OTLP ``SpanKind`` number (1 internal, 2 server, 3 client, 4 producer,
            5 consumer; 0 when unspecified).
        attributes: The span attributes as plain Python values.
        status_code: The OTLP ``StatusCode`` number (0 unset, 1 ok, 2 error).
        status_message: The status description, empty when there is none.
        events: One ``{"name": ..., "attributes": {...}}`` dict per span event, in order.
        resource: The resource attributes as plain Python values.
        scope: The instrumentation scope name.
        start_time_unix_nano: The start time in nanoseconds since the Unix epoch.
        end_time_unix_nano: The end time in nanoseconds since the Unix epoch.
    """

    name: str
    trace_id: str
    span_id: str
    parent_span_id: Optional[str]
    kind: int
    attributes: dict[str, Any]
    status_code: int
    status_message: str
    events: list[dict[str, Any]]
    resource: dict[str, Any]
    scope: str
    start_time_unix_nano: int
    end_time_unix_nano: int

    @property
    def duration_s(self) -> float:
        """The span's duration in seconds."""
        return (self.end_time_unix_nano - self.start_time_unix_nano) / 1e9


@dataclass(frozen=True)
class MetricPoint:
    """One metric data point, flattened out of an OTLP/JSON metrics request.

    Attributes:
        name: The metric (instrument) name.
        unit: The metric unit, empty when there is none.
        description: The metric description, empty when there is none.
        kind: Which OTLP data type the point came from.
        attributes: The point's attributes as plain Python values.
        value: For sums and gauges the number (``int`` or ``float`` as sent); for histograms
            and summaries the count of recorded measurements.
        resource: The resource attributes as plain Python values.
        scope: The instrumentation scope name.
        time_unix_nano: The point's timestamp in nanoseconds since the Unix epoch.
        is_monotonic: For sums, whether the sum only goes up; ``None`` for other kinds.
        aggregation_temporality: For sums and histograms, the OTLP ``AggregationTemporality``
            number (1 delta, 2 cumulative); ``None`` for other kinds.
        sum: For histograms and summaries, the sum of recorded measurements (``None`` when
            the sender left it out).
        bucket_counts: For explicit-bucket histograms, the count in each bucket.
        explicit_bounds: For explicit-bucket histograms, the bucket upper bounds; there is one
            bucket more than there are bounds.
        min: For histograms, the smallest recorded measurement, when sent.
        max: For histograms, the largest recorded measurement, when sent.
    """

    name: str
    unit: str
    description: str
    kind: MetricKind
    attributes: dict[str, Any]
    value: Union[int, float]
    resource: dict[str, Any]
    scope: str
    time_unix_nano: int = 0
    is_monotonic: Optional[bool] = None
    aggregation_temporality: Optional[int] = None
    sum: Optional[float] = None
    bucket_counts: list[int] = field(default_factory=list)
    explicit_bounds: list[float] = field(default_factory=list)
    min: Optional[float] = None
    max: Optional[float] = None


@dataclass(frozen=True)
class LogRecord:
    """One log record, flattened out of an OTLP/JSON logs request.

    Attributes:
        body: The log body as a plain Python value (``None`` when there is no body).
        severity_number: The OTLP ``SeverityNumber`` (9 info, 13 warn, 17 error; 0 unset).
        severity_text: The severity name as the sender wrote it, empty when there is none.
        attributes: The record's attributes as plain Python values.
        trace_id: The trace id in hex of the span the record was emitted in, or ``None``.
        span_id: The span id in hex of the span the record was emitted in, or ``None``.
        resource: The resource attributes as plain Python values.
        scope: The instrumentation scope (logger) name.
        time_unix_nano: When the event happened, in nanoseconds since the Unix epoch (0 when
            the sender left it out).
        observed_time_unix_nano: When the SDK saw the record, in nanoseconds.
        event_name: The event name for records that are events, empty otherwise.
    """

    body: Any
    severity_number: int
    severity_text: str
    attributes: dict[str, Any]
    trace_id: Optional[str]
    span_id: Optional[str]
    resource: dict[str, Any]
    scope: str
    time_unix_nano: int = 0
    observed_time_unix_nano: int = 0
    event_name: str = ""


def any_value(value: Mapping[str, Any]) -> Any:
    """Return the plain Python value of an OTLP/JSON ``AnyValue``.

    Args:
        value: An ``AnyValue`` object such as ``{"stringValue": "x"}`` or
            ``{"intValue": "5"}``.

    Returns:
        A ``str``, ``bool``, ``int`` (OTLP/JSON sends 64-bit integers as strings), ``float``
        (``"NaN"`` and ``"±Infinity"`` become the float values), ``bytes`` (decoded from
        base64), ``list`` for ``arrayValue``, ``dict`` for ``kvlistValue``, or ``None`` for
        an empty ``AnyValue``.

    Raises:
        ValueError: If the object holds no known ``AnyValue`` field.
    """
    for key, item in value.items():
        reader = _ANY_VALUE_READERS.get(key)
        if reader is not None:
            return reader(item)
    if not value:
        return None
    raise ValueError(f"not an OTLP/JSON AnyValue: {dict(value)!r}")


def attributes(key_values: Optional[Iterable[Mapping[str, Any]]]) -> dict[str, Any]:
    """Return OTLP/JSON ``KeyValue`` objects as a plain ``dict``.

    Args:
        key_values: A list of ``{"key": ..., "value": AnyValue}`` objects, or ``None`` (which
            OTLP/JSON writers use for an empty list by leaving the field out).

    Returns:
        The attributes as ``{key: plain value}``; a key without a value maps to ``None``.
    """
    return {kv["key"]: any_value(kv.get("value") or {}) for kv in key_values or ()}


def spans_from(requests: Iterable[Mapping[str, Any]]) -> list[SpanRecord]:
    """Flatten OTLP/JSON ``ExportTraceServiceRequest`` objects into spans.

    Args:
        requests: Trace requests, as the receiver or :func:`read_jsonl` returns them.

    Returns:
        Every span of every request, in the order sent.
    """
    records: list[SpanRecord] = []
    for request in requests:
        for resource_spans in request.get("resourceSpans", ()):
            resource = _resource(resource_spans)
            for scope_spans in resource_spans.get("scopeSpans", ()):
                scope = _scope_name(scope_spans)
                records.extend(
                    _span(span, resource, scope) for span in scope_spans.get("spans", ())
                )
    return records


def metrics_from(requests: Iterable[Mapping[str, Any]]) -> list[MetricPoint]:
    """Flatten OTLP/JSON ``ExportMetricsServiceRequest`` objects into data points.

    Args:
        requests: Metrics requests, as the receiver or :func:`read_jsonl` returns them.

    Returns:
        One :class:`MetricPoint` per data point of every metric, in the order sent. A metric
        with several attribute sets gives several points; cumulative metrics exported
        repeatedly give one point per export.
    """
    points: list[MetricPoint] = []
    for request in requests:
        for resource_metrics in request.get("resourceMetrics", ()):
            resource = _resource(resource_metrics)
            for scope_metrics in resource_metrics.get("scopeMetrics", ()):
                scope = _scope_name(scope_metrics)
                for metric in scope_metrics.get("metrics", ()):
                    points.extend(_metric_points(metric, resource, scope))
    return points


def logs_from(requests: Iterable[Mapping[str, Any]]) -> list[LogRecord]:
    """Flatten OTLP/JSON ``ExportLogsServiceRequest`` objects into log records.

    Args:
        requests: Logs requests, as the receiver or :func:`read_jsonl` returns them.

    Returns:
        Every log record of every request, in the order sent.
    """
    records: list[LogRecord] = []
    for request in requests:
        for resource_logs in request.get("resourceLogs", ()):
            resource = _resource(resource_logs)
            for scope_logs in resource_logs.get("scopeLogs", ()):
                scope = _scope_name(scope_logs)
                records.extend(
                    _log(log, resource, scope) for log in scope_logs.get("logRecords", ())
                )
    return records


def read_jsonl(directory: Union[str, os.PathLike[str]], signal: str) -> list[dict[str, Any]]:
    """Read the OTLP/JSON requests a ``jsonl`` exporter wrote for one signal.

    Args:
        directory: The exporter's output directory.
        signal: ``"traces"``, ``"metrics"`` or ``"logs"``; the file read is
            ``<directory>/<signal>.jsonl``.

    Returns:
        One request object per line, in file order; ``[]`` when the file does not exist.
        A last line that is not valid JSON is skipped, because a process killed (or still
        writing) mid-line leaves exactly that behind.

    Raises:
        ValueError: If ``signal`` is not one of the three signals, or a line other than the
            last is not a JSON object.
    """
    if signal not in _SIGNALS:
        raise ValueError(f"signal must be one of {', '.join(_SIGNALS)}, not {signal!r}")
    path = Path(directory) / f"{signal}.jsonl"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    # Split bytes, not text: a truncated last line may end inside a multi-byte character.
    lines = [line for line in data.split(b"\n") if line.strip()]
    requests: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        try:
            request = json.loads(line.decode("utf-8"))
        except ValueError:
            if number == len(lines):
                break
            raise ValueError(f"{path}:{number}: not valid JSON") from None
        if not isinstance(request, dict):
            raise ValueError(f"{path}:{number}: not a JSON object")
        requests.append(request)
    return requests


def read_spans(directory: Union[str, os.PathLike[str]]) -> list[SpanRecord]:
    """Return the spans in ``<directory>/traces.jsonl`` (see :func:`read_jsonl`)."""
    return spans_from(read_jsonl(directory, "traces"))


def read_metrics(directory: Union[str, os.PathLike[str]]) -> list[MetricPoint]:
    """Return the metric points in ``<directory>/metrics.jsonl`` (see :func:`read_jsonl`)."""
    return metrics_from(read_jsonl(directory, "metrics"))


def read_logs(directory: Union[str, os.PathLike[str]]) -> list[LogRecord]:
    """Return the log records in ``<directory>/logs.jsonl`` (see :func:`read_jsonl`)."""
    return logs_from(read_jsonl(directory, "logs"))


def _double(value: Any) -> float:
    if isinstance(value, str) and value in _NON_FINITE:
        return _NON_FINITE[value]
    return float(value)


def _number(value: Any) -> int:
    # Proto3 JSON leaves zero-valued fields out and writes 64-bit integers as strings.
    return 0 if value is None else int(value)


def _optional_double(value: Any) -> Optional[float]:
    return None if value is None else _double(value)


def _hex_id(value: Any) -> Optional[str]:
    # An absent id and an empty one both mean "none"; normalise both to None.
    return str(value).lower() if value else None


def _resource(resource_item: Mapping[str, Any]) -> dict[str, Any]:
    return attributes((resource_item.get("resource") or {}).get("attributes"))


def _scope_name(scope_item: Mapping[str, Any]) -> str:
    return str((scope_item.get("scope") or {}).get("name", ""))


def _span(span: Mapping[str, Any], resource: dict[str, Any], scope: str) -> SpanRecord:
    status = span.get("status") or {}
    return SpanRecord(
        name=str(span.get("name", "")),
        trace_id=_hex_id(span.get("traceId")) or "",
        span_id=_hex_id(span.get("spanId")) or "",
        parent_span_id=_hex_id(span.get("parentSpanId")),
        kind=_number(span.get("kind")),
        attributes=attributes(span.get("attributes")),
        status_code=_number(status.get("code")),
        status_message=str(status.get("message", "")),
        events=[
            {"name": str(event.get("name", "")), "attributes": attributes(event.get("attributes"))}
            for event in span.get("events", ())
        ],
        resource=resource,
        scope=scope,
        start_time_unix_nano=_number(span.get("startTimeUnixNano")),
        end_time_unix_nano=_number(span.get("endTimeUnixNano")),
    )


def _metric_points(
    metric: Mapping[str, Any], resource: dict[str, Any], scope: str
) -> list[MetricPoint]:
    common: dict[str, Any] = {
        "name": str(metric.get("name", "")),
        "unit": str(metric.get("unit", "")),
        "description": str(metric.get("description", "")),
        "resource": resource,
        "scope": scope,
    }
    if "sum" in metric:
        data = metric["sum"] or {}
        common["is_monotonic"] = bool(data.get("isMonotonic", False))
        common["aggregation_temporality"] = _number(data.get("aggregationTemporality"))
        return [_number_point(point, "sum", common) for point in data.get("dataPoints", ())]
    if "gauge" in metric:
        data = metric["gauge"] or {}
        return [_number_point(point, "gauge", common) for point in data.get("dataPoints", ())]
    for key, kind in _DISTRIBUTION_KINDS.items():
        if key in metric:
            data = metric[key] or {}
            if kind != "summary":
                common["aggregation_temporality"] = _number(data.get("aggregationTemporality"))
            return [_distribution_point(p, kind, common) for p in data.get("dataPoints", ())]
    return []


def _number_point(
    point: Mapping[str, Any], kind: MetricKind, common: Mapping[str, Any]
) -> MetricPoint:
    value: Union[int, float]
    if "asDouble" in point:
        value = _double(point["asDouble"])
    elif "asInt" in point:
        value = int(point["asInt"])
    else:
        # A point may carry no value (OTLP's "no recorded value" flag); 0 keeps it numeric.
        value = 0
    return MetricPoint(
        kind=kind,
        attributes=attributes(point.get("attributes")),
        value=value,
        time_unix_nano=_number(point.get("timeUnixNano")),
        **common,
    )


def _distribution_point(
    point: Mapping[str, Any], kind: MetricKind, common: Mapping[str, Any]
) -> MetricPoint:
    return MetricPoint(
        kind=kind,
        attributes=attributes(point.get("attributes")),
        value=_number(point.get("count")),
        time_unix_nano=_number(point.get("timeUnixNano")),
        sum=_optional_double(point.get("sum")),
        bucket_counts=[int(count) for count in point.get("bucketCounts", ())],
        explicit_bounds=[_double(bound) for bound in point.get("explicitBounds", ())],
        min=_optional_double(point.get("min")),
        max=_optional_double(point.get("max")),
        **common,
    )


def _log(log: Mapping[str, Any], resource: dict[str, Any], scope: str) -> LogRecord:
    return LogRecord(
        body=any_value(log["body"]) if "body" in log else None,
        severity_number=_number(log.get("severityNumber")),
        severity_text=str(log.get("severityText", "")),
        attributes=attributes(log.get("attributes")),
        trace_id=_hex_id(log.get("traceId")),
        span_id=_hex_id(log.get("spanId")),
        resource=resource,
        scope=scope,
        time_unix_nano=_number(log.get("timeUnixNano")),
        observed_time_unix_nano=_number(log.get("observedTimeUnixNano")),
        event_name=str(log.get("eventName", "")),
    )


def _array_value(array: Optional[Mapping[str, Any]]) -> list[Any]:
    return [any_value(item) for item in (array or {}).get("values", ())]


def _kvlist_value(kvlist: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    return attributes((kvlist or {}).get("values"))


_ANY_VALUE_READERS: dict[str, Callable[[Any], Any]] = {
    "stringValue": str,
    "boolValue": bool,
    "intValue": int,
    "doubleValue": _double,
    "arrayValue": _array_value,
    "kvlistValue": _kvlist_value,
    "bytesValue": base64.b64decode,
}

# The OTLP/JSON key of each distribution-like metric type, and the kind it becomes.
_DISTRIBUTION_KINDS: dict[str, MetricKind] = {
    "histogram": "histogram",
    "exponentialHistogram": "exponential_histogram",
    "summary": "summary",
}
