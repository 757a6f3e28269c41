"""The fields of a log line: processors shared by structlog calls and stdlib ``logging`` records.

Each processor has structlog's signature ``(logger, method_name, event_dict) -> event_dict``,
so the same list runs as structlog's chain and as the ``foreign_pre_chain`` that turns a
stdlib record into an event dict. Nothing here imports structlog: the OpenTelemetry bridge
uses these helpers even when structlog is not installed.

Keys starting with ``_`` are private to the pipeline (the stdlib record, the code location,
the original exception) and never rendered.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from types import TracebackType
from typing import Any, Optional

from opentelemetry import trace

from appvitals._context import bound_fields

EventDict = MutableMapping[str, Any]
Processor = Callable[[Any, str, EventDict], EventDict]

RECORD_KEY = "_record"
CODE_KEY = "_code"
EXC_INFO_KEY = "_exc_info"

# The order of the first keys of every line; the other fields follow in the order they were
# bound or passed, and the bulky ones close the line.
HEAD_KEYS = (
    "timestamp",
    "level",
    "logger",
    "event",
    "service",
    "environment",
    "correlation_id",
    "trace_id",
    "span_id",
)
TAIL_KEYS = ("exception", "stack")
# Fields that are OpenTelemetry log-record properties or resource attributes, not attributes.
NOT_ATTRIBUTES = frozenset(
    {"event", "level", "timestamp", "logger", "service", "environment", "trace_id", "span_id"}
)
# Fields appvitals computes (or validates) itself, which masking must leave intact: a run of
# digits in a hex trace or correlation id can pass for a card number.
UNMASKED = frozenset(
    {
        "timestamp",
        "level",
        "logger",
        "service",
        "environment",
        "trace_id",
        "span_id",
        "correlation_id",
    }
)

_METHOD_LEVELS = {"warn": "warning", "exception": "error", "fatal": "critical"}
_MAX_FRAMES = 100
_MAX_CAUSES = 5
_MAX_DEPTH = 4
_INT64 = (-(2**63), 2**63 - 1)


# --- the processors -------------------------------------------------------------------------


def add_bound_fields(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    """Add the fields bound with :func:`appvitals.bind`; the call's own keywords win.

    The bound (request-wide) fields come first, before those of the call.
    """
    bound = bound_fields()
    if not bound:
        return event_dict
    merged = {key: value for key, value in bound.items() if key not in event_dict}
    merged.update(event_dict)
    return merged


def add_level(_logger: Any, method: str, event_dict: EventDict) -> EventDict:
    """``level``: the lowercase level name (``warn`` and ``exception`` normalised)."""
    event_dict["level"] = _METHOD_LEVELS.get(method, method)
    return event_dict


def add_logger_name(logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    """``logger``: the stdlib logger's name (the record's for stdlib records)."""
    record = event_dict.get(RECORD_KEY)
    name = record.name if record is not None else getattr(logger, "name", None)
    if name is not None:
        event_dict["logger"] = name
    return event_dict


def add_timestamp(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    """``timestamp``: ISO 8601 in UTC with milliseconds and ``Z``; a record's creation time."""
    record = event_dict.get(RECORD_KEY)
    event_dict["timestamp"] = iso_timestamp(record.created if record is not None else time.time())
    return event_dict


_second_cache: tuple[int, str] = (-1, "")


def iso_timestamp(seconds: float) -> str:
    """Format a Unix time as ``2024-05-01T12:00:00.123Z``.

    Examples:
        >>> iso_timestamp(0.5)
        '1970-01-01T00:00:00.500Z'
    """
    global _second_cache  # noqa: PLW0603 - a one-entry cache; the assignment is atomic
    whole = int(seconds)
    cached_second, prefix = _second_cache
    if whole != cached_second:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        _second_cache = (whole, prefix)
    return f"{prefix}.{int((seconds - whole) * 1000):03d}Z"


def add_trace_context(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    """``trace_id`` and ``span_id`` (hex) of the current span, when there is a valid one."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        # bytes.hex(): the same lowercase, zero-padded text as format(n, "032x"), faster
        event_dict["trace_id"] = context.trace_id.to_bytes(16, "big").hex()
        event_dict["span_id"] = context.span_id.to_bytes(8, "big").hex()
    return event_dict


def service_fields(service: str, environment: Optional[str]) -> Processor:
    """A processor adding ``service`` and (when set) ``environment``."""

    def add_service(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
        event_dict["service"] = service
        if environment:
            event_dict["environment"] = environment
        return event_dict

    return add_service


def move_callsite(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    """Keep structlog's callsite parameters for the OpenTelemetry record, out of the line."""
    pathname = event_dict.pop("pathname", None)
    func_name = event_dict.pop("func_name", None)
    lineno = event_dict.pop("lineno", None)
    if pathname is not None:
        event_dict[CODE_KEY] = (pathname, func_name, lineno)
    return event_dict


def add_exception(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    """Turn ``exc_info`` into the structured ``exception`` field.

    ``exc_info`` may be ``True`` (the exception being handled), an exception or a
    ``sys.exc_info()`` tuple, as in stdlib ``logging``. The original tuple is kept under a
    private key so the stdlib record still carries it for other handlers.
    """
    exc_info = resolve_exc_info(event_dict.pop("exc_info", None))
    if exc_info is not None:
        event_dict["exception"] = exception_dict(exc_info[1])
        event_dict[EXC_INFO_KEY] = exc_info
    return event_dict


def reorder(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    """Put the standard fields first and the exception last, for people reading the lines."""
    ordered = {key: event_dict[key] for key in HEAD_KEYS if key in event_dict}
    for key, value in event_dict.items():
        if key not in ordered and key not in TAIL_KEYS:
            ordered[key] = value
    for key in TAIL_KEYS:
        if key in event_dict:
            ordered[key] = event_dict[key]
    return ordered


def masking_processor(masker: Callable[[], Any]) -> Processor:
    """A processor masking the keys and values of every field but the computed ones.

    ``masker`` returns the :class:`appvitals.masking.Masker` in effect, so a later
    ``configure_masking()`` applies to lines logged afterwards.
    """

    def mask_event(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
        return mask_fields(masker(), event_dict)

    return mask_event


def mask_fields(masker: Any, fields: Mapping[str, Any]) -> dict[str, Any]:
    """``fields`` masked by ``masker``, except the computed and the private ones (kept first).

    Examples:
        >>> from appvitals.masking import Masker
        >>> mask_fields(Masker(), {"level": "info", "password": "pw", "trace_id": "4111"})
        {'level': 'info', 'trace_id': '4111', 'password': '***'}
    """
    kept = {key for key in fields if key in UNMASKED or key.startswith("_")}
    if len(kept) == len(fields):
        return dict(fields)
    masked: dict[str, Any] = masker.mask_mapping(
        {key: value for key, value in fields.items() if key not in kept}
    )
    # The kept fields first, then the masked ones (whose keys may have been masked too).
    result = {key: fields[key] for key in fields if key in kept}
    result.update(masked)
    return result


# --- exceptions -----------------------------------------------------------------------------

ExcInfo = tuple[type[BaseException], BaseException, Optional[TracebackType]]


def resolve_exc_info(value: Any) -> Optional[ExcInfo]:
    """Normalise an ``exc_info`` value (``True``, an exception, a tuple) or return ``None``."""
    if value is None or value is False:
        return None
    if isinstance(value, BaseException):
        return (type(value), value, value.__traceback__)
    if isinstance(value, tuple):
        if len(value) == 3 and isinstance(value[1], BaseException):
            return (type(value[1]), value[1], value[2])
        return None
    current = sys.exc_info()
    if current[1] is None:
        return None
    return (type(current[1]), current[1], current[2])


def exception_dict(error: BaseException, _depth: int = 0) -> dict[str, Any]:
    """The compact, JSON-ready form of an exception and its cause chain.

    Frames keep ``filename``, ``lineno`` and ``name`` only (never local variables, which
    hold secrets); at most the innermost 100 are kept.

    Examples:
        >>> try:
        ...     raise KeyError("sku")
        ... except KeyError as error:
        ...     info = exception_dict(error)
        >>> info["type"], info["message"], info["frames"][0]["name"]
        ('KeyError', "'sku'", '<module>')
    """
    frames = [
        {"filename": frame.filename, "lineno": frame.lineno, "name": frame.name}
        for frame in traceback.extract_tb(error.__traceback__)
    ]
    result: dict[str, Any] = {
        "type": type(error).__qualname__,
        "message": _safe_str(error),
        "frames": frames[-_MAX_FRAMES:],
    }
    if len(frames) > _MAX_FRAMES:
        result["frames_omitted"] = len(frames) - _MAX_FRAMES
    cause = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    if cause is not None and cause is not error and _depth < _MAX_CAUSES:
        result["cause"] = exception_dict(cause, _depth + 1)
    return result


def exception_text(info: Mapping[str, Any]) -> str:
    """A traceback in Python's layout, rebuilt from :func:`exception_dict`'s form.

    Examples:
        >>> print(exception_text({"type": "ValueError", "message": "bad", "frames": [
        ...     {"filename": "app.py", "lineno": 3, "name": "main"}]}))
        Traceback (most recent call last):
          File "app.py", line 3, in main
        ValueError: bad
    """
    parts: list[str] = []
    cause = info.get("cause")
    if isinstance(cause, Mapping):
        parts.append(exception_text(cause))
        parts.append("\nThe above exception was the cause of this one:\n\n")
    parts.append("Traceback (most recent call last):\n")
    if info.get("frames_omitted"):
        parts.append(f"  ... {info['frames_omitted']} frames omitted\n")
    parts.extend(
        f'  File "{frame.get("filename")}", line {frame.get("lineno")}, in {frame.get("name")}\n'
        for frame in info.get("frames") or ()
    )
    message = info.get("message")
    parts.append(f"{info.get('type')}: {message}" if message else f"{info.get('type')}")
    return "".join(parts)


def _safe_str(value: object) -> str:
    try:
        return str(value)
    except Exception:
        return f"<unprintable {type(value).__qualname__}>"


# --- rendering ------------------------------------------------------------------------------

# Line breaks and control characters that could forge a log line or drive a terminal.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str) -> str:
    r"""Escape newlines and control characters, so one value cannot start a forged line.

    Examples:
        >>> print(escape("ok\nlevel=error \x1b[31m"))
        ok\nlevel=error \x1b[31m
    """
    if _CONTROL.search(text) is None:
        return text
    return _CONTROL.sub(_escape_char, text)


class _Escaped(str):
    """Text escaped already: the console renderer's ``repr()`` must only quote it."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"'{self}'"


def escape_values(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    """Escape control characters in the top-level keys and string values (console renderer).

    Containers are rendered with ``repr`` by the console renderer, which escapes already.
    """
    escaped: dict[str, Any] = {}
    for key, value in event_dict.items():
        if isinstance(value, str):
            value = _Escaped(escape(value))  # noqa: PLW2901 - the loop builds the escaped copy
        escaped[escape(key) if isinstance(key, str) else key] = value
    return escaped


def exception_for_console(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    """Replace the structured exception by an escaped traceback text, printed below the line."""
    info = event_dict.get("exception")
    if isinstance(info, Mapping):
        event_dict["exception"] = exception_text(_escaped_exception(info))
    return event_dict


def _escaped_exception(info: Mapping[str, Any]) -> dict[str, Any]:
    escaped = dict(info)
    escaped["message"] = escape(_safe_str(info.get("message", "")))
    escaped["type"] = escape(_safe_str(info.get("type", "")))
    escaped["frames"] = [
        {
            "filename": escape(_safe_str(frame.get("filename"))),
            "lineno": frame.get("lineno"),
            "name": escape(_safe_str(frame.get("name"))),
        }
        for frame in info.get("frames") or ()
        if isinstance(frame, Mapping)
    ]
    cause = info.get("cause")
    if isinstance(cause, Mapping):
        escaped["cause"] = _escaped_exception(cause)
    return escaped


def drop_private(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    """Remove the pipeline's private ``_`` keys before rendering."""
    if any(key.startswith("_") for key in event_dict):
        return {key: value for key, value in event_dict.items() if not key.startswith("_")}
    return event_dict


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return _safe_str(value)


def render_json(_logger: Any, _method: str, event_dict: EventDict) -> str:
    """One JSON object on one line (``json.dumps`` escapes newlines and control characters).

    U+2028, U+2029 and U+0085, which ``json.dumps`` leaves alone without ``ensure_ascii``
    but some readers treat as line breaks, are escaped too.

    Examples:
        >>> render_json(None, "info", {"event": "a\\nb", "_record": None})
        '{"event":"a\\\\nb"}'
    """
    line = json.dumps(
        drop_private(_logger, _method, event_dict),
        default=_json_default,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    if "\u2028" in line or "\u2029" in line or "\x85" in line:
        line = line.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
        line = line.replace("\x85", "\\u0085")
    return line


class EventMessage(dict[str, Any]):
    """The event dict of a structlog call that went through appvitals' chain, as ``msg``.

    Its type tells the pipeline the record is processed already. ``ProcessorFormatter``
    copies it into a plain dict; a plain ``logging.Formatter`` (the application's own
    handler, pytest's ``caplog``) calls ``str()`` and reads ``event key=value …`` instead of
    a dict's repr.
    """

    __slots__ = ()

    def __str__(self) -> str:
        return plain_message(self)


def plain_message(event_dict: Mapping[str, Any]) -> str:
    """``event key=value …``: how a structlog event reads in a handler that is not ours.

    Examples:
        >>> plain_message({"event": "paid", "level": "info", "order_id": 7})
        'paid order_id=7'
    """
    parts = [escape(_safe_str(event_dict.get("event", "")))]
    for key, value in event_dict.items():
        if key in NOT_ATTRIBUTES or key in TAIL_KEYS or key.startswith("_"):
            continue
        parts.append(f"{escape(str(key))}={escape(_safe_str(value))}")
    return " ".join(parts)


# --- OpenTelemetry attributes ---------------------------------------------------------------

_PRIMITIVES = (str, bool, int, float)


def otel_attributes(event_dict: Mapping[str, Any]) -> dict[str, Any]:
    """The structured fields as OpenTelemetry attributes.

    Nested mappings become dotted keys, homogeneous lists of primitives stay lists, anything
    else becomes text; the exception follows the semantic conventions (``exception.type``,
    ``exception.message``, ``exception.stacktrace``).

    Examples:
        >>> otel_attributes({"event": "x", "order": {"id": 7, "tags": ["a", "b"]}, "n": None})
        {'order.id': 7, 'order.tags': ('a', 'b')}
    """
    attributes: dict[str, Any] = {}
    for key, value in event_dict.items():
        if key in NOT_ATTRIBUTES or key.startswith("_"):
            continue
        if key == "exception" and isinstance(value, Mapping):
            attributes["exception.type"] = _safe_str(value.get("type", ""))
            attributes["exception.message"] = _safe_str(value.get("message", ""))
            attributes["exception.stacktrace"] = exception_text(value)
            continue
        _flatten(attributes, str(key), value, 0)
    return attributes


def _flatten(out: dict[str, Any], key: str, value: Any, depth: int) -> None:
    if value is None:
        return
    if isinstance(value, _PRIMITIVES):
        out[key] = _primitive(value)
    elif isinstance(value, Mapping) and depth < _MAX_DEPTH:
        for sub_key, sub_value in value.items():
            _flatten(out, f"{key}.{sub_key}", sub_value, depth + 1)
    elif isinstance(value, (list, tuple)) and _homogeneous(value):
        out[key] = tuple(_primitive(item) for item in value)
    elif isinstance(value, (Mapping, list, tuple, set, frozenset)):
        out[key] = json.dumps(value, default=_json_default, ensure_ascii=False)
    else:
        out[key] = _json_default(value)


def _primitive(value: Any) -> Any:
    # OTLP integers are 64-bit; a bigger Python int would fail the whole export.
    if isinstance(value, int) and not isinstance(value, bool):
        low, high = _INT64
        return value if low <= value <= high else str(value)
    return value


def _homogeneous(items: Iterable[Any]) -> bool:
    kinds = {type(item) for item in items}
    return len(kinds) == 1 and kinds.pop() in _PRIMITIVES


def level_name(levelno: int) -> str:
    """The lowercase stdlib level name of a level number, as the ``level`` field writes it."""
    return logging.getLevelName(levelno).lower()
