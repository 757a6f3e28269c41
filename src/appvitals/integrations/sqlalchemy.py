"""SQLAlchemy: a CLIENT span and a duration point per statement, and the pool's vital signs.

``instrument(engine)`` listens to the engine's own events — no contrib package, no patching
of SQLAlchemy's classes:

* ``before_cursor_execute`` / ``after_cursor_execute`` / ``handle_error``: one CLIENT span
  and one ``db.client.operation.duration`` point per statement, with the attributes and the
  slow-query report described in :mod:`appvitals.db`;
* pool events ``checkout`` / ``checkin`` (and ``connect`` / ``close`` for pools that cannot
  be inspected): observable ``db.client.connection.count`` (``db.client.connection.state``
  ``idle`` | ``used``), ``db.client.connection.idle.max`` (SQLAlchemy's ``pool_size``),
  ``db.client.connection.max`` (``pool_size + max_overflow``),
  ``db.client.connection.pending_requests`` and the histogram
  ``db.client.connection.use_time``, all by ``db.client.connection.pool.name``;
* the time ``engine.pool.connect()`` takes — waiting for a free connection, or opening
  one — is ``db.client.connection.wait_time``, and a pool ``TimeoutError`` counts in
  ``db.client.connection.timeouts``. SQLAlchemy has no "checkout started" event, so this one
  measurement wraps ``connect`` on the engine's pool *instance* (re-wrapped after
  ``engine.dispose()``; :func:`uninstrument` restores it).

Observable instruments are read only when metrics are collected; every hook is fail-open.

Examples:
    >>> import sqlalchemy
    >>> from appvitals.integrations import sqlalchemy as appvitals_sqlalchemy
    >>> engine = sqlalchemy.create_engine("sqlite://")
    >>> appvitals_sqlalchemy.instrument(engine, slow_query_threshold=0.5)
    >>> with engine.connect() as connection:
    ...     connection.execute(sqlalchemy.text("SELECT 1")).scalar()
    1
    >>> appvitals_sqlalchemy.uninstrument(engine)
    >>> engine.dispose()
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Optional

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from appvitals import db
from appvitals._safety import internal_errors, report_internal_error
from appvitals._version import __version__

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

__all__ = ["instrument", "is_instrumented", "uninstrument"]

# SQLAlchemy dialect names → the semantic conventions' db.system.name.
_SYSTEMS = {
    "postgresql": "postgresql",
    "mysql": "mysql",
    "mariadb": "mariadb",
    "sqlite": "sqlite",
    "mssql": "microsoft.sql_server",
    "oracle": "oracle.db",
}
_OPERATION_KEY = "_appvitals_operation"
_STACK_KEY = "appvitals.operations"
_CHECKOUT_KEY = "appvitals.checkout"


def _require_sqlalchemy() -> Any:
    try:
        import sqlalchemy
    except ImportError as error:  # pragma: no cover - depends on the environment
        msg = (
            "appvitals.integrations.sqlalchemy needs SQLAlchemy: "
            "pip install 'appvitals[sqlalchemy]'"
        )
        raise ImportError(msg) from error
    return sqlalchemy


class _EngineState:
    """What appvitals keeps for one instrumented engine."""

    def __init__(
        self, engine: Engine, slow_query_threshold: Optional[float], pool_name: Optional[str]
    ) -> None:
        url = engine.url
        dialect = engine.dialect.name
        self.system = _SYSTEMS.get(dialect, dialect)
        self.namespace = url.database if dialect != "sqlite" else None
        self.address: Optional[str] = url.host or None
        self.port: Optional[int] = url.port if url.host else None
        self.pool_name = pool_name or _default_pool_name(self.system, url)
        self.pool_attributes = {"db.client.connection.pool.name": self.pool_name}
        self.slow_query_threshold = slow_query_threshold
        self.engine = weakref.ref(engine)
        self.listeners: list[tuple[Any, str, Any]] = []
        self.lock = threading.Lock()
        self.pending = 0
        # For pools without checkedin()/checkedout(): counted from their events.
        self.opened = 0
        self.used = 0
        self.wrapped_pool: Optional[weakref.ref[Any]] = None


def _default_pool_name(system: str, url: Any) -> str:
    """``server.address:server.port/db.namespace``, as the conventions suggest."""
    if url.host:
        port = f":{url.port}" if url.port else ""
        return f"{url.host}{port}/{url.database or ''}"
    return f"{system}:{url.database or 'memory'}"


_states: weakref.WeakKeyDictionary[Any, _EngineState] = weakref.WeakKeyDictionary()
_states_lock = threading.Lock()


# --- pool instruments, one set per meter provider ----------------------------------------------


class _PoolInstruments:
    def __init__(self, provider: Any) -> None:
        meter = provider.get_meter("appvitals.db", __version__)
        self.provider = provider
        self.wait_time = meter.create_histogram(
            "db.client.connection.wait_time",
            unit="s",
            description="The time it took to obtain an open connection from the pool.",
            explicit_bucket_boundaries_advisory=list(db.DURATION_BUCKETS),
        )
        self.use_time = meter.create_histogram(
            "db.client.connection.use_time",
            unit="s",
            description="The time between borrowing a connection and returning it to the pool.",
            explicit_bucket_boundaries_advisory=list(db.DURATION_BUCKETS),
        )
        self.timeouts = meter.create_counter(
            "db.client.connection.timeouts",
            unit="{timeout}",
            description="The number of connection timeouts while waiting for the pool.",
        )
        for name, unit, description, callback in (
            (
                "db.client.connection.count",
                "{connection}",
                "The number of connections in the state given by db.client.connection.state.",
                _observe_counts,
            ),
            (
                "db.client.connection.idle.max",
                "{connection}",
                "The maximum number of idle open connections allowed (pool_size).",
                _observe_idle_max,
            ),
            (
                "db.client.connection.max",
                "{connection}",
                "The maximum number of open connections allowed (pool_size + max_overflow).",
                _observe_max,
            ),
            (
                "db.client.connection.pending_requests",
                "{request}",
                "The number of pending requests for an open connection.",
                _observe_pending,
            ),
        ):
            meter.create_observable_up_down_counter(
                name, callbacks=[callback], unit=unit, description=description
            )


_pool_instruments_by_provider: weakref.WeakKeyDictionary[Any, _PoolInstruments] = (
    weakref.WeakKeyDictionary()
)
_last_pool_instruments: Optional[_PoolInstruments] = None
_pool_instruments_lock = threading.Lock()


def _pool_instruments() -> _PoolInstruments:
    """The pool instruments of the current global meter provider, created on first use."""
    global _last_pool_instruments  # noqa: PLW0603 - a one-entry cache before the weak dict
    provider = metrics.get_meter_provider()
    last = _last_pool_instruments
    if last is not None and last.provider is provider:
        return last
    with _pool_instruments_lock:
        found = _pool_instruments_by_provider.get(provider)
        if found is None:
            found = _pool_instruments_by_provider[provider] = _PoolInstruments(provider)
        _last_pool_instruments = found
    return found


def _live_states() -> list[tuple[_EngineState, Any]]:
    pairs = []
    for state in list(_states.values()):
        engine = state.engine()
        if engine is not None:
            pairs.append((state, engine.pool))
    return pairs


def _observe_counts(_options: CallbackOptions) -> Iterable[Observation]:
    observations = []
    with internal_errors("sqlalchemy pool gauges"):
        for state, pool in _live_states():
            if hasattr(pool, "checkedin") and hasattr(pool, "checkedout"):
                idle, used = int(pool.checkedin()), int(pool.checkedout())
            else:
                with state.lock:
                    used = max(state.used, 0)
                    idle = max(state.opened - used, 0)
            for value, connection_state in ((idle, "idle"), (used, "used")):
                attributes = {
                    **state.pool_attributes,
                    "db.client.connection.state": connection_state,
                }
                observations.append(Observation(value, attributes))
    return observations


def _observe_idle_max(_options: CallbackOptions) -> Iterable[Observation]:
    observations = []
    with internal_errors("sqlalchemy pool gauges"):
        for state, pool in _live_states():
            if hasattr(pool, "checkedin") and hasattr(pool, "size"):
                observations.append(Observation(int(pool.size()), state.pool_attributes))
    return observations


def _observe_max(_options: CallbackOptions) -> Iterable[Observation]:
    observations = []
    with internal_errors("sqlalchemy pool gauges"):
        for state, pool in _live_states():
            overflow = getattr(pool, "_max_overflow", None)
            # A negative max_overflow means unbounded: there is no maximum to report.
            if hasattr(pool, "size") and isinstance(overflow, int) and overflow >= 0:
                observations.append(Observation(int(pool.size()) + overflow, state.pool_attributes))
    return observations


def _observe_pending(_options: CallbackOptions) -> Iterable[Observation]:
    observations = []
    with internal_errors("sqlalchemy pool gauges"):
        for state, _pool in _live_states():
            observations.append(Observation(state.pending, state.pool_attributes))
    return observations


# --- statement events --------------------------------------------------------------------------


def _before_cursor_execute(
    state: _EngineState,
    conn: Any,
    _cursor: Any,
    statement: str,
    parameters: Any,
    context: Any,
    executemany: bool,
) -> None:
    try:
        operation = db.operation_name(statement)
        extra = None
        if executemany and isinstance(parameters, (list, tuple)) and len(parameters) > 1:
            extra = {"db.operation.batch.size": len(parameters)}
        started = db.Operation.start(
            None,
            system=state.system,
            operation=operation,
            collection=db.collection_name(statement),
            statement=statement,
            namespace=state.namespace,
            server_address=state.address,
            server_port=state.port,
            slow_query_threshold=state.slow_query_threshold,
            extra=extra,
        )
        if context is not None:
            setattr(context, _OPERATION_KEY, started)
        else:
            conn.info.setdefault(_STACK_KEY, []).append(started)
    except Exception as error:
        report_internal_error("sqlalchemy before_cursor_execute", error)


def _pop_operation(conn: Any, context: Any) -> Optional[db.Operation]:
    if context is not None:
        operation: Optional[db.Operation] = getattr(context, _OPERATION_KEY, None)
        if operation is not None:
            setattr(context, _OPERATION_KEY, None)
            return operation
    stack = conn.info.get(_STACK_KEY) if conn is not None else None
    return stack.pop() if stack else None


def _after_cursor_execute(
    conn: Any, _cursor: Any, _statement: str, _parameters: Any, context: Any, _many: bool
) -> None:
    try:
        operation = _pop_operation(conn, context)
        if operation is not None:
            operation.finish()
    except Exception as error:
        report_internal_error("sqlalchemy after_cursor_execute", error)


def _handle_error(exception_context: Any) -> None:
    try:
        operation = _pop_operation(
            exception_context.connection, exception_context.execution_context
        )
        if operation is not None:
            operation.finish(exception_context.original_exception)
    except Exception as error:
        report_internal_error("sqlalchemy handle_error", error)


# --- pool events and the connect wrapper -------------------------------------------------------


def _on_checkout(state: _EngineState, _dbapi: Any, record: Any, _proxy: Any) -> None:
    with internal_errors("sqlalchemy checkout"):
        with state.lock:
            state.used += 1
        if record is not None:
            record.info[_CHECKOUT_KEY] = time.perf_counter()


def _on_checkin(state: _EngineState, _dbapi: Any, record: Any) -> None:
    with internal_errors("sqlalchemy checkin"):
        with state.lock:
            state.used -= 1
        started = record.info.pop(_CHECKOUT_KEY, None) if record is not None else None
        if started is not None:
            _pool_instruments().use_time.record(
                time.perf_counter() - started, state.pool_attributes
            )


def _on_connect(state: _EngineState, _dbapi: Any, _record: Any) -> None:
    with state.lock:
        state.opened += 1


def _on_close(state: _EngineState, _dbapi: Any, _record: Any) -> None:
    with state.lock:
        state.opened -= 1


def _wrap_pool(state: _EngineState, pool: Any) -> None:
    """Time ``pool.connect()`` (the checkout) on this pool instance."""
    if "connect" in vars(pool):
        return  # already wrapped (by us: the engine is instrumented once)
    original = pool.connect
    timeout_error = _require_sqlalchemy().exc.TimeoutError

    def connect() -> Any:
        with state.lock:
            state.pending += 1
        started = time.perf_counter()
        failed: Optional[BaseException] = None
        try:
            return original()
        except timeout_error as error:
            failed = error
            raise
        finally:
            with state.lock:
                state.pending -= 1
            try:
                instruments = _pool_instruments()
                instruments.wait_time.record(time.perf_counter() - started, state.pool_attributes)
                if failed is not None:
                    instruments.timeouts.add(1, state.pool_attributes)
            except Exception as error:
                report_internal_error("sqlalchemy pool connect", error)

    pool.connect = connect
    state.wrapped_pool = weakref.ref(pool)


def _unwrap_pool(state: _EngineState) -> None:
    pool = state.wrapped_pool() if state.wrapped_pool is not None else None
    if pool is not None and "connect" in vars(pool):
        del pool.connect
    state.wrapped_pool = None


def _on_dispose(state: _EngineState, engine: Any) -> None:
    with internal_errors("sqlalchemy engine_disposed"):
        # dispose() replaced the pool: the old one keeps no checked-out connections of ours.
        _unwrap_pool(state)
        with state.lock:
            state.opened = state.used = 0
        _wrap_pool(state, engine.pool)


# --- public API --------------------------------------------------------------------------------


def instrument(
    engine: Any,
    *,
    slow_query_threshold: Optional[float] = 0.5,
    pool_name: Optional[str] = None,
) -> None:
    """Trace and measure every statement and the connection pool of ``engine``.

    Idempotent: instrumenting an engine twice keeps the first listeners (and updates the
    threshold). An ``AsyncEngine`` is instrumented through its ``sync_engine``.

    Args:
        engine: A SQLAlchemy ``Engine`` or ``AsyncEngine``.
        slow_query_threshold: Seconds above which a statement is reported as a slow query
            (span event and WARNING log); ``None`` never reports.
        pool_name: ``db.client.connection.pool.name``; default
            ``host:port/database`` (``sqlite:<file>`` for SQLite).

    Raises:
        ImportError: SQLAlchemy is not installed.
    """
    sqlalchemy = _require_sqlalchemy()
    engine = getattr(engine, "sync_engine", engine)
    with _states_lock:
        existing = _states.get(engine)
        if existing is not None:
            existing.slow_query_threshold = slow_query_threshold
            return
        state = _EngineState(engine, slow_query_threshold, pool_name)
        _states[engine] = state

    def listen(target: Any, name: str, function: Any) -> None:
        sqlalchemy.event.listen(target, name, function)
        state.listeners.append((target, name, function))

    def before(*args: Any) -> None:
        _before_cursor_execute(state, *args)

    listen(engine, "before_cursor_execute", before)
    listen(engine, "after_cursor_execute", _after_cursor_execute)
    listen(engine, "handle_error", _handle_error)
    # Pool events registered on the engine follow it to the pools dispose() creates.
    listen(engine, "checkout", lambda *args: _on_checkout(state, *args))
    listen(engine, "checkin", lambda *args: _on_checkin(state, *args))
    listen(engine, "connect", lambda *args: _on_connect(state, *args))
    listen(engine, "close", lambda *args: _on_close(state, *args))
    listen(engine, "engine_disposed", lambda target: _on_dispose(state, target))
    _wrap_pool(state, engine.pool)
    with internal_errors("sqlalchemy instruments"):
        _pool_instruments()
        db.instruments()


def uninstrument(engine: Any) -> None:
    """Remove appvitals' listeners from ``engine`` (nothing happens if it was not instrumented).

    Args:
        engine: A SQLAlchemy ``Engine`` or ``AsyncEngine``.
    """
    sqlalchemy = _require_sqlalchemy()
    engine = getattr(engine, "sync_engine", engine)
    with _states_lock:
        state = _states.pop(engine, None)
    if state is None:
        return
    for target, name, function in state.listeners:
        with internal_errors("sqlalchemy uninstrument"):
            sqlalchemy.event.remove(target, name, function)
    _unwrap_pool(state)


def is_instrumented(engine: Any) -> bool:
    """Whether :func:`instrument` was called for ``engine`` (and not undone)."""
    return getattr(engine, "sync_engine", engine) in _states
