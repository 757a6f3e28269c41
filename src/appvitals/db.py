"""Database calls: CLIENT spans, ``db.client.operation.duration`` and slow-query reports.

:func:`query` wraps one call of any DB-API driver (or any database client) in a CLIENT span
and records its duration; :mod:`appvitals.integrations.sqlalchemy` does the same for every
statement of a SQLAlchemy engine, through the helpers here. Both follow OpenTelemetry's
database semantic conventions:

* span ``{db.operation.name} {db.collection.name}`` (e.g. ``SELECT users``), kind CLIENT,
  with ``db.system.name``, ``db.operation.name``, ``db.collection.name``, ``db.namespace``,
  ``server.address``/``server.port``, ``peer.service`` (see ``APPVITALS_PEER_SERVICES``) and
  ``db.query.text`` — the statement with its literals replaced by ``?``, at most 2048
  characters, so values typed into SQL never leave the process;
* histogram ``db.client.operation.duration`` (s) by ``db.system.name``,
  ``db.operation.name``, ``db.collection.name`` and, on failure, ``error.type``;
* a call slower than ``slow_query_threshold`` seconds adds the span event ``slow query``
  and logs ``slow query`` at WARNING on the ``appvitals.db`` logger (with the trace ids).

Examples:
    >>> import sqlite3
    >>> import appvitals.db
    >>> connection = sqlite3.connect(":memory:")
    >>> with appvitals.db.query("SELECT sqlite_master", system="sqlite", operation="SELECT"):
    ...     rows = connection.execute("SELECT name FROM sqlite_master").fetchall()
    >>> connection.close()
"""

from __future__ import annotations

import functools
import logging
import re
import time
import weakref
from typing import Any, Optional

from opentelemetry import metrics, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from appvitals._peers import peer_service
from appvitals._safety import report_internal_error
from appvitals._version import __version__

__all__ = [
    "DURATION_BUCKETS",
    "MAX_QUERY_TEXT",
    "collection_name",
    "operation_name",
    "query",
    "sanitize",
]

DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)
"""The semantic conventions' advised buckets for ``db.client.operation.duration`` (s)."""

MAX_QUERY_TEXT = 2048
"""``db.query.text`` is cut to this many characters (plus ``…``)."""

_logger = logging.getLogger("appvitals.db")

# Literals: '…' strings (with '' escapes), then numbers not part of an identifier or of a
# placeholder ($1, :1, ?1). Identifiers in "…" or `…` are left alone.
_STRING = re.compile(r"'(?:[^']|'')*'")
_NUMBER = re.compile(r"(?<![\w$:?.])-?\b\d+(?:\.\d+)?(?:[eE][-+]?\d+)?\b")
_HEX = re.compile(r"\b0[xX][0-9a-fA-F]+\b")
_COMMENT = re.compile(r"--[^\n]*|/\*.*?\*/", re.DOTALL)
_IDENTIFIER = (
    r"((?:[\w$]+|\"[^\"]+\"|`[^`]+`|\[[^\]]+\])(?:\.(?:[\w$]+|\"[^\"]+\"|`[^`]+`|\[[^\]]+\]))*)"
)
_COLLECTION = {
    "SELECT": re.compile(r"\bFROM\s+" + _IDENTIFIER, re.IGNORECASE),
    "DELETE": re.compile(r"\bFROM\s+" + _IDENTIFIER, re.IGNORECASE),
    "INSERT": re.compile(r"\bINTO\s+" + _IDENTIFIER, re.IGNORECASE),
    "REPLACE": re.compile(r"\bINTO\s+" + _IDENTIFIER, re.IGNORECASE),
    "UPDATE": re.compile(r"^\s*UPDATE\s+(?:OR\s+\w+\s+)?" + _IDENTIFIER, re.IGNORECASE),
}


@functools.lru_cache(maxsize=512)
def sanitize(statement: str) -> str:
    """The statement with comments dropped and literals replaced by ``?``, cut to 2048.

    SQLAlchemy and DB-API statements are parameterised already; this catches the literals
    written into SQL by hand, which may be personal data.

    Args:
        statement: The SQL text.

    Returns:
        Text safe for ``db.query.text``.

    Examples:
        >>> sanitize("SELECT * FROM users WHERE name = 'O''Brien' AND age > 42 LIMIT $1")
        'SELECT * FROM users WHERE name = ? AND age > ? LIMIT $1'
    """
    text = _COMMENT.sub(" ", statement)
    text = _NUMBER.sub("?", _HEX.sub("?", _STRING.sub("?", text)))
    text = " ".join(text.split())
    return text if len(text) <= MAX_QUERY_TEXT else text[:MAX_QUERY_TEXT] + "…"


@functools.lru_cache(maxsize=512)
def operation_name(statement: str) -> Optional[str]:
    """The SQL command of a statement, upper-cased (``SELECT``, ``INSERT`` …), else ``None``.

    Examples:
        >>> operation_name("  select 1"), operation_name("/* x */ UPDATE t SET a = 1")
        ('SELECT', 'UPDATE')
    """
    words = _COMMENT.sub(" ", statement).split(None, 1)
    if not words:
        return None
    word = words[0].strip("(").upper()
    return word if word.isalpha() else None


@functools.lru_cache(maxsize=512)
def collection_name(statement: str) -> Optional[str]:
    """The table of ``SELECT … FROM x``, ``INSERT INTO x``, ``UPDATE x``, ``DELETE FROM x``.

    Quotes around identifiers are removed; anything harder to read (joins count as their
    first table, sub-queries as their first ``FROM``) is a best effort, and ``None`` when no
    table is found.

    Examples:
        >>> collection_name('SELECT id FROM "public"."users" WHERE id = ?')
        'public.users'
        >>> collection_name("INSERT INTO orders (id) VALUES (?)"), collection_name("COMMIT")
        ('orders', None)
    """
    operation = operation_name(statement)
    pattern = _COLLECTION.get(operation or "")
    if pattern is None:
        return None
    match = pattern.search(_COMMENT.sub(" ", statement))
    if match is None:
        return None
    name = re.sub(r"[\"`\[\]]", "", match.group(1))
    return name if name.upper() not in ("SELECT", "(") else None


# --- instruments, one set per meter provider -------------------------------------------------


class _Instruments:
    """The database instruments of one meter provider (created on first use)."""

    def __init__(self, provider: Any) -> None:
        meter = provider.get_meter("appvitals.db", __version__)
        self.duration = meter.create_histogram(
            "db.client.operation.duration",
            unit="s",
            description="Duration of database client operations.",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
        )
        self.provider = provider
        self.meter = meter


_by_provider: weakref.WeakKeyDictionary[Any, _Instruments] = weakref.WeakKeyDictionary()
_last: Optional[_Instruments] = None


def instruments() -> _Instruments:
    """The instruments of the current global meter provider (a new provider gets new ones)."""
    global _last  # noqa: PLW0603 - a one-entry cache in front of the weak dictionary
    provider = metrics.get_meter_provider()
    last = _last
    if last is not None and last.provider is provider:
        return last
    found = _by_provider.get(provider)
    if found is None:
        found = _by_provider[provider] = _Instruments(provider)
    _last = found
    return found


def _tracer() -> trace.Tracer:
    return trace.get_tracer("appvitals.db", __version__)


# --- one operation -----------------------------------------------------------------------------


class Operation:
    """One database call in flight: its span, start time and metric attributes.

    Integrations create it with :meth:`start` and end it with :meth:`finish` exactly once.
    """

    __slots__ = ("_start", "metric_attributes", "slow_query_threshold", "span", "statement")

    def __init__(
        self,
        span: Span,
        metric_attributes: dict[str, Any],
        statement: Optional[str],
        slow_query_threshold: Optional[float],
    ) -> None:
        self.span = span
        self.metric_attributes = metric_attributes
        self.statement = statement
        self.slow_query_threshold = slow_query_threshold
        self._start = time.perf_counter()

    @classmethod
    def start(
        cls,
        name: Optional[str],
        *,
        system: str,
        operation: Optional[str] = None,
        collection: Optional[str] = None,
        statement: Optional[str] = None,
        namespace: Optional[str] = None,
        server_address: Optional[str] = None,
        server_port: Optional[int] = None,
        slow_query_threshold: Optional[float] = None,
        extra: Optional[dict[str, Any]] = None,
    ) -> Operation:
        """Start the CLIENT span (a child of the current span) and the clock."""
        metric_attributes: dict[str, Any] = {"db.system.name": system}
        if operation:
            metric_attributes["db.operation.name"] = operation
        if collection:
            metric_attributes["db.collection.name"] = collection
        span_name = name or " ".join(filter(None, (operation, collection))) or system
        span = _tracer().start_span(span_name, kind=SpanKind.CLIENT)
        if span.is_recording():
            attributes = dict(metric_attributes)
            if statement:
                attributes["db.query.text"] = sanitize(statement)
            if namespace:
                attributes["db.namespace"] = namespace
            if server_address:
                attributes["server.address"] = server_address
                if server_port:
                    attributes["server.port"] = server_port
                peer = peer_service(server_address, server_port)
                if peer:
                    attributes["peer.service"] = peer
            if extra:
                attributes.update(extra)
            span.set_attributes(attributes)
        return cls(span, metric_attributes, statement, slow_query_threshold)

    def finish(self, error: Optional[BaseException] = None) -> float:
        """End the span, record the duration, report a slow call; returns the seconds taken."""
        elapsed = time.perf_counter() - self._start
        span = self.span
        try:
            attributes = self.metric_attributes
            if error is not None:
                attributes = {**attributes, "error.type": type(error).__qualname__}
                if span.is_recording():
                    span.set_attribute("error.type", type(error).__qualname__)
                    span.record_exception(error)
                    span.set_status(Status(StatusCode.ERROR, type(error).__qualname__))
            # Recorded in the span's own context, so an exemplar points at this query.
            instruments().duration.record(
                elapsed, attributes, context=trace.set_span_in_context(span)
            )
            threshold = self.slow_query_threshold
            if threshold is not None and elapsed > threshold:
                self._report_slow(elapsed, threshold)
            span.end()
        except Exception as internal:
            report_internal_error("db operation", internal)
        return elapsed

    def _report_slow(self, elapsed: float, threshold: float) -> None:
        span = self.span
        text = sanitize(self.statement) if self.statement else None
        summary = text or getattr(span, "name", "")
        event: dict[str, Any] = {"db.duration_s": round(elapsed, 6), "db.threshold_s": threshold}
        if text:
            event["db.query.text"] = text
        span.add_event("slow query", event)
        # Logged with the query's span current, so the record carries its trace and span ids.
        with trace.use_span(span, end_on_exit=False):
            _logger.warning(
                "slow query: %.3f s (threshold %.3f s) %s",
                elapsed,
                threshold,
                summary,
                extra={
                    "db.system.name": self.metric_attributes.get("db.system.name"),
                    "db.operation.name": self.metric_attributes.get("db.operation.name"),
                    "db.duration_s": round(elapsed, 6),
                },
            )


# --- the DB-API helper ---------------------------------------------------------------------------


class query:  # noqa: N801 - used like a function: `with appvitals.db.query(...):`
    """A CLIENT span and a ``db.client.operation.duration`` point around one database call.

    Works with ``with`` and ``async with``; an exception leaving the block is recorded
    (``error.type``, error status) and propagates unchanged. Nothing here ever raises into
    the block.

    Args:
        name: The span name; ``None`` builds ``{operation} {collection}``.
        system: ``db.system.name`` (``postgresql``, ``mysql``, ``sqlite``, …).
        operation: ``db.operation.name`` (``SELECT``); read from ``statement`` when omitted.
        collection: ``db.collection.name`` (the table); read from ``statement`` when omitted.
        statement: The SQL text, recorded sanitised as ``db.query.text``.
        namespace: ``db.namespace`` (the database name).
        server_address: ``server.address``; also looked up for ``peer.service``.
        server_port: ``server.port``.
        slow_query_threshold: Seconds above which the call is reported as slow
            (``None`` never).
        **attributes: More span attributes.

    Examples:
        >>> import appvitals.db
        >>> with appvitals.db.query(
        ...     "select users", system="postgresql", operation="SELECT", collection="users"
        ... ) as span:
        ...     span.set_attribute("db.response.returned_rows", 3)
    """

    __slots__ = ("_arguments", "_attributes", "_name", "_operation", "_token")

    def __init__(
        self,
        name: Optional[str] = None,
        *,
        system: str,
        operation: Optional[str] = None,
        collection: Optional[str] = None,
        statement: Optional[str] = None,
        namespace: Optional[str] = None,
        server_address: Optional[str] = None,
        server_port: Optional[int] = None,
        slow_query_threshold: Optional[float] = 0.5,
        **attributes: Any,
    ) -> None:
        self._name = name
        self._arguments: dict[str, Any] = {
            "system": system,
            "operation": operation,
            "collection": collection,
            "statement": statement,
            "namespace": namespace,
            "server_address": server_address,
            "server_port": server_port,
            "slow_query_threshold": slow_query_threshold,
        }
        self._attributes = attributes
        self._operation: Optional[Operation] = None
        self._token: Any = None

    def __enter__(self) -> Span:
        from opentelemetry import context

        try:
            arguments = dict(self._arguments)
            statement = arguments["statement"]
            if statement and not arguments["operation"]:
                arguments["operation"] = operation_name(statement)
            if statement and not arguments["collection"]:
                arguments["collection"] = collection_name(statement)
            operation = Operation.start(self._name, extra=self._attributes or None, **arguments)
            self._operation = operation
            # Current inside the block: the driver's own spans and logs nest under it.
            self._token = context.attach(trace.set_span_in_context(operation.span))
            return operation.span
        except Exception as error:
            report_internal_error("db query start", error)
            return trace.INVALID_SPAN

    def __exit__(self, exc_type: Any, exc: Optional[BaseException], tb: Any) -> None:
        from opentelemetry import context

        operation, token = self._operation, self._token
        self._operation = self._token = None
        try:
            if token is not None:
                context.detach(token)
        except Exception as error:
            report_internal_error("db query context", error)
        if operation is not None:
            operation.finish(exc)

    async def __aenter__(self) -> Span:
        return self.__enter__()

    async def __aexit__(self, exc_type: Any, exc: Optional[BaseException], tb: Any) -> None:
        self.__exit__(exc_type, exc, tb)
