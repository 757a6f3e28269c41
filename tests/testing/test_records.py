"""The OTLP/JSON readers: AnyValue conversion, flattening and jsonl files."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from appvitals.testing import (
    any_value,
    attributes,
    logs_from,
    metrics_from,
    read_jsonl,
    read_logs,
    read_metrics,
    read_spans,
    spans_from,
)


def kv(key: str, value: dict[str, Any]) -> dict[str, Any]:
    """Return an OTLP/JSON KeyValue."""
    return {"key": key, "value": value}


def trace_request(*names: str, resource: str = "svc") -> dict[str, Any]:
    """Return a minimal OTLP/JSON trace request with one span per name."""
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [kv("service.name", {"stringValue": resource})]},
                "scopeSpans": [
                    {
                        "scope": {"name": "scope"},
                        "spans": [
                            {"traceId": "ab" * 16, "spanId": "cd" * 8, "name": name}
                            for name in names
                        ],
                    }
                ],
            }
        ]
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"stringValue": "x"}, "x"),
        ({"stringValue": ""}, ""),
        ({"intValue": "5"}, 5),
        ({"intValue": "-9223372036854775808"}, -9223372036854775808),
        ({"intValue": 7}, 7),
        ({"doubleValue": 0.25}, 0.25),
        ({"doubleValue": 3}, 3.0),
        ({"doubleValue": "Infinity"}, math.inf),
        ({"doubleValue": "-Infinity"}, -math.inf),
        ({"boolValue": False}, False),
        ({"bytesValue": "AAH/"}, b"\x00\x01\xff"),
        ({"arrayValue": {}}, []),
        ({"arrayValue": {"values": [{"intValue": "1"}, {"stringValue": "a"}, {}]}}, [1, "a", None]),
        ({"kvlistValue": {}}, {}),
        (
            {
                "kvlistValue": {
                    "values": [kv("inner", {"arrayValue": {"values": [{"boolValue": True}]}})]
                }
            },
            {"inner": [True]},
        ),
        ({}, None),
    ],
)
def test_any_value(value: dict[str, Any], expected: Any) -> None:
    """Each AnyValue form becomes the plain Python value it stands for."""
    result = any_value(value)
    assert result == expected
    assert type(result) is type(expected)


def test_any_value_nan() -> None:
    """A "NaN" double becomes a float NaN (which equals nothing, so it is checked apart)."""
    assert math.isnan(any_value({"doubleValue": "NaN"}))


def test_any_value_rejects_unknown_shapes() -> None:
    """An object with no AnyValue field is an error, not a silent None."""
    with pytest.raises(ValueError, match="not an OTLP/JSON AnyValue"):
        any_value({"stringvalue": "wrong case"})


def test_attributes() -> None:
    """KeyValue lists become dicts; a missing list or value means empty or None."""
    assert attributes(None) == {}
    assert attributes([]) == {}
    assert attributes([kv("a", {"intValue": "1"}), {"key": "b"}]) == {"a": 1, "b": None}


def test_spans_from_fills_defaults_for_left_out_fields() -> None:
    """Proto3 JSON leaves zero values out; the records fill them in."""
    (span,) = spans_from([trace_request("bare")])
    assert span.name == "bare"
    assert (span.trace_id, span.span_id, span.parent_span_id) == ("ab" * 16, "cd" * 8, None)
    assert (span.kind, span.status_code, span.status_message) == (0, 0, "")
    assert (span.attributes, span.events) == ({}, [])
    assert (span.start_time_unix_nano, span.end_time_unix_nano, span.duration_s) == (0, 0, 0.0)
    assert (span.resource, span.scope) == ({"service.name": "svc"}, "scope")


def test_spans_from_keeps_order_across_requests() -> None:
    """Spans come out in request order, each with its own request's resource."""
    spans = spans_from([trace_request("a", "b", resource="one"), {}, trace_request("c")])
    assert [(span.name, span.resource["service.name"]) for span in spans] == [
        ("a", "one"),
        ("b", "one"),
        ("c", "svc"),
    ]


def test_metrics_from_every_kind() -> None:
    """Sums, gauges, both histogram kinds and summaries each flatten to points."""
    request = {
        "resourceMetrics": [
            {
                "scopeMetrics": [
                    {
                        "scope": {"name": "m"},
                        "metrics": [
                            {
                                "name": "up_down",
                                "sum": {
                                    "aggregationTemporality": 1,
                                    "dataPoints": [
                                        {
                                            "asInt": "-3",
                                            "attributes": [kv("k", {"stringValue": "v"})],
                                        },
                                        {"asInt": "4"},
                                    ],
                                },
                            },
                            {"name": "g", "gauge": {"dataPoints": [{"asDouble": 1.5}, {}]}},
                            {
                                "name": "exp",
                                "exponentialHistogram": {
                                    "dataPoints": [{"count": "3", "sum": 6.0, "scale": 2}]
                                },
                            },
                            {"name": "h", "histogram": {"dataPoints": [{"count": "0"}]}},
                            {"name": "s", "summary": {"dataPoints": [{"count": "2", "sum": 1}]}},
                        ],
                    }
                ]
            }
        ]
    }
    points = metrics_from([request])
    assert [(p.name, p.kind, p.value) for p in points] == [
        ("up_down", "sum", -3),
        ("up_down", "sum", 4),
        ("g", "gauge", 1.5),
        ("g", "gauge", 0),
        ("exp", "exponential_histogram", 3),
        ("h", "histogram", 0),
        ("s", "summary", 2),
    ]
    up_down = points[0]
    assert (up_down.is_monotonic, up_down.aggregation_temporality) == (False, 1)
    assert up_down.attributes == {"k": "v"}
    assert (points[2].is_monotonic, points[2].aggregation_temporality) == (None, None)
    assert (points[4].sum, points[4].bucket_counts, points[4].explicit_bounds) == (6.0, [], [])
    assert (points[5].sum, points[5].min, points[5].max) == (None, None, None)
    assert points[6].sum == 1.0


def test_logs_from_without_trace_context() -> None:
    """A log record with no body and no ids reads as None for both."""
    request = {
        "resourceLogs": [
            {
                "scopeLogs": [
                    {
                        "logRecords": [
                            {"severityNumber": 17, "traceId": "", "eventName": "boot"},
                        ]
                    }
                ]
            }
        ]
    }
    (log,) = logs_from([request])
    assert (log.body, log.trace_id, log.span_id) == (None, None, None)
    assert (log.severity_number, log.severity_text, log.event_name) == (17, "", "boot")
    assert (log.scope, log.resource) == ("", {})


def test_read_jsonl_skips_a_truncated_last_line(tmp_path: Path) -> None:
    """A last line cut off mid-write (even mid-character) is skipped."""
    complete = [trace_request("one"), trace_request("two")]
    cut = json.dumps(trace_request("caf\u00e9"), ensure_ascii=False).encode()
    cut = cut[: cut.index("\u00e9".encode()) + 1]
    lines = b"".join(json.dumps(request).encode() + b"\n" for request in complete)
    (tmp_path / "traces.jsonl").write_bytes(lines + b"\n" + cut)

    assert read_jsonl(tmp_path, "traces") == complete
    assert [span.name for span in read_spans(str(tmp_path))] == ["one", "two"]


def test_read_jsonl_refuses_a_corrupt_middle_line(tmp_path: Path) -> None:
    """Only the last line may be broken; a broken earlier line is an error."""
    (tmp_path / "logs.jsonl").write_text('{"resourceLogs": []}\n{broken\n{}\n')
    with pytest.raises(ValueError, match=r"logs\.jsonl:2"):
        read_jsonl(tmp_path, "logs")
    (tmp_path / "logs.jsonl").write_text("[]\n{}\n")
    with pytest.raises(ValueError, match="not a JSON object"):
        read_jsonl(tmp_path, "logs")


def test_read_jsonl_missing_file_and_bad_signal(tmp_path: Path) -> None:
    """A missing file reads as no requests; an unknown signal is an error."""
    assert read_jsonl(tmp_path, "metrics") == []
    assert read_metrics(tmp_path) == []
    assert read_logs(tmp_path / "does-not-exist") == []
    with pytest.raises(ValueError, match="traces, metrics, logs"):
        read_jsonl(tmp_path, "spans")
