"""OTLP/JSON: the JSON mapping of OTLP protobuf messages.

One function turns an OTLP protobuf message (an ``Export*ServiceRequest``) into the JSON
shape the OpenTelemetry Collector's file exporter writes and its OTLP/HTTP receiver accepts:
lowerCamelCase field names, enums as integers, 64-bit integers as decimal strings, and trace
and span ids as lowercase hex (the one place OTLP/JSON departs from the protobuf JSON mapping,
which would give base64).

Both the ``jsonl`` exporter and the test receiver use it, so what a test reads from a file and
what it reads from the wire have one shape.
"""

from __future__ import annotations

import base64
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

# Fields that OTLP/JSON encodes as hex instead of base64.
_HEX_ID_FIELDS = frozenset({"traceId", "spanId", "parentSpanId"})


def to_otlp_json(message: Message) -> dict[str, Any]:
    """Return the OTLP/JSON form of an OTLP protobuf message."""
    as_dict: dict[str, Any] = MessageToDict(message, use_integers_for_enums=True)
    _hex_ids(as_dict)
    return as_dict


def _hex_ids(node: Any) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _HEX_ID_FIELDS and isinstance(value, str):
                node[key] = base64.b64decode(value).hex()
            else:
                _hex_ids(value)
    elif isinstance(node, list):
        for item in node:
            _hex_ids(item)
