"""appvitals.db and the SQLAlchemy integration: query spans, durations, slow queries, pools."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from flask import Flask
from sqlalchemy import event, text
from sqlalchemy.pool import QueuePool

import appvitals
import appvitals.db
from appvitals.db import collection_name, operation_name, sanitize
from appvitals.integrations import sqlalchemy as appvitals_sqlalchemy
from appvitals.testing import Capture, SpanRecord

CLIENT, SERVER = 3, 2
ERROR = 2


def with_pause_function(engine: sqlalchemy.Engine) -> None:
    """Give every SQLite connection ``pause(ms)``: a query as slow as we want it."""

    @event.listens_for(engine, "connect")
    def add_function(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        dbapi_connection.create_function("pause", 1, lambda ms: time.sleep(ms / 1000) or 1)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sqlalchemy.Engine]:
    """A file-backed SQLite engine (a QueuePool) with a users table, instrumented."""
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'shop.db'}", pool_size=3)
    with_pause_function(engine)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)"))
    appvitals_sqlalchemy.instrument(engine, slow_query_threshold=0.02, pool_name="shop")
    yield engine
    appvitals_sqlalchemy.uninstrument(engine)
    engine.dispose()


def client_spans(capture: Capture) -> list[SpanRecord]:
    """The CLIENT (database) spans captured so far."""
    return [span for span in capture.spans() if span.kind == CLIENT]


def by_state(capture: Capture) -> dict[str, int]:
    """db.client.connection.count by state for the pool named ``shop``."""
    return {
        p.attributes["db.client.connection.state"]: p.value
        for p in capture.metric("db.client.connection.count")
        if p.attributes["db.client.connection.pool.name"] == "shop"
    }


def test_flask_request_exports_query_spans_durations_and_pool_gauges(
    capture: Capture, engine: sqlalchemy.Engine
) -> None:
    """Each statement is a CLIENT child of the request span; durations and pool gauges export."""
    app = Flask("shop")

    @app.post("/users/<name>")
    def add(name: str) -> dict[str, Any]:
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO users (name) VALUES (:name)"), {"name": name})
            count = connection.execute(text("SELECT count(*) FROM users")).scalar()
        return {"users": count}

    appvitals.instrument_flask(app)
    assert app.test_client().post("/users/ada").json == {"users": 1}
    server = capture.span("POST /users/<name>")
    insert, select = (capture.span(name) for name in ("INSERT users", "SELECT users"))
    for span in (insert, select):
        assert span.kind == CLIENT
        assert span.parent_span_id == server.span_id
        assert span.trace_id == server.trace_id
        assert span.attributes["db.system.name"] == "sqlite"
        assert span.attributes["db.collection.name"] == "users"
    assert insert.attributes["db.operation.name"] == "INSERT"
    assert insert.attributes["db.query.text"] == "INSERT INTO users (name) VALUES (?)"
    assert "ada" not in str(insert.attributes)
    durations = {
        p.attributes["db.operation.name"]: p for p in capture.metric("db.client.operation.duration")
    }
    assert durations["SELECT"].unit == "s"
    assert durations["SELECT"].attributes == {
        "db.system.name": "sqlite",
        "db.operation.name": "SELECT",
        "db.collection.name": "users",
    }
    assert durations["INSERT"].value == 1
    # The request returned its connection: one idle, none used; pool_size 3 + overflow 10.
    assert by_state(capture) == {"idle": 1, "used": 0}
    pool = {"db.client.connection.pool.name": "shop"}
    assert [(p.value, p.attributes) for p in capture.metric("db.client.connection.max")] == [
        (13, pool)
    ]
    assert [p.value for p in capture.metric("db.client.connection.idle.max")] == [3]
    assert [p.value for p in capture.metric("db.client.connection.pending_requests")] == [0]
    (wait,) = capture.metric("db.client.connection.wait_time")
    assert wait.value >= 1
    assert wait.unit == "s"
    (use,) = capture.metric("db.client.connection.use_time")
    assert use.value >= 1


def test_used_connections_are_counted_while_checked_out(
    capture: Capture, engine: sqlalchemy.Engine
) -> None:
    """Two open connections read as used; returned, they read as idle."""
    with engine.connect(), engine.connect():
        assert by_state(capture) == {"idle": 0, "used": 2}
    assert by_state(capture) == {"idle": 2, "used": 0}


def test_slow_query_adds_a_span_event_and_a_warning_log_in_its_span(
    capture: Capture, engine: sqlalchemy.Engine
) -> None:
    """A statement over the threshold: event "slow query" and a WARNING carrying its ids."""
    with engine.connect() as connection:
        connection.execute(text("SELECT pause(40)")).scalar()
        connection.execute(text("SELECT 1")).scalar()
    slow, fast = client_spans(capture)
    assert [event["name"] for event in slow.events] == ["slow query"]
    details = slow.events[0]["attributes"]
    assert details["db.duration_s"] >= 0.04
    assert details["db.threshold_s"] == 0.02
    assert details["db.query.text"] == "SELECT pause(?)"
    assert fast.events == []
    (log,) = [record for record in capture.logs() if record.scope == "appvitals.db"]
    assert log.severity_number == 13
    assert "slow query" in str(log.body)
    assert (log.trace_id, log.span_id) == (slow.trace_id, slow.span_id)


def test_failed_statement_is_an_error_span_and_a_duration_with_error_type(
    capture: Capture, engine: sqlalchemy.Engine
) -> None:
    """A driver error ends the span in error and records error.type; the exception propagates."""
    with pytest.raises(sqlalchemy.exc.OperationalError), engine.connect() as connection:
        connection.execute(text("SELECT * FROM missing"))
    (span,) = client_spans(capture)
    assert span.name == "SELECT missing"
    assert span.status_code == ERROR
    assert span.attributes["error.type"] == "OperationalError"
    assert [event["name"] for event in span.events] == ["exception"]
    (point,) = capture.metric("db.client.operation.duration")
    assert point.attributes["error.type"] == "OperationalError"


def test_literals_written_into_sql_are_not_recorded(
    capture: Capture, engine: sqlalchemy.Engine
) -> None:
    """Hand-written literals are replaced by ? in db.query.text."""
    with engine.connect() as connection:
        connection.execute(text("SELECT id FROM users WHERE name = 'grace' AND id > 41"))
    (span,) = client_spans(capture)
    assert span.attributes["db.query.text"] == "SELECT id FROM users WHERE name = ? AND id > ?"


def test_executemany_records_the_batch_size(capture: Capture, engine: sqlalchemy.Engine) -> None:
    """An INSERT of several rows in one call is one span with db.operation.batch.size."""
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO users (name) VALUES (:name)"), [{"name": "a"}, {"name": "b"}]
        )
    (span,) = client_spans(capture)
    assert span.attributes["db.operation.batch.size"] == 2


def test_instrument_is_idempotent_and_uninstrument_stops_everything(
    capture: Capture, engine: sqlalchemy.Engine
) -> None:
    """Instrumenting twice traces once; after uninstrument nothing is traced or wrapped."""
    appvitals_sqlalchemy.instrument(engine)
    assert appvitals_sqlalchemy.is_instrumented(engine)
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    assert len(client_spans(capture)) == 1
    appvitals_sqlalchemy.uninstrument(engine)
    assert not appvitals_sqlalchemy.is_instrumented(engine)
    assert "connect" not in vars(engine.pool)
    with engine.connect() as connection:
        connection.execute(text("SELECT 2"))
    assert len(client_spans(capture)) == 1


def test_dispose_rewraps_the_new_pool(capture: Capture, engine: sqlalchemy.Engine) -> None:
    """engine.dispose() makes a new pool; its checkouts are still timed."""
    old_pool = engine.pool
    engine.dispose()
    assert engine.pool is not old_pool
    assert "connect" in vars(engine.pool)
    assert "connect" not in vars(old_pool)
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    (wait,) = capture.metric("db.client.connection.wait_time")
    assert wait.value == 1


def test_pool_timeout_is_counted(capture: Capture, tmp_path: Path) -> None:
    """A checkout that times out counts in db.client.connection.timeouts; pending returns to 0."""
    engine = sqlalchemy.create_engine(
        f"sqlite:///{tmp_path / 'tiny.db'}",
        poolclass=QueuePool,
        pool_size=1,
        max_overflow=0,
        pool_timeout=0.05,
    )
    appvitals_sqlalchemy.instrument(engine, pool_name="tiny")
    try:
        with engine.connect(), pytest.raises(sqlalchemy.exc.TimeoutError):
            engine.connect()
        (timeouts,) = capture.metric("db.client.connection.timeouts")
        assert (timeouts.value, timeouts.attributes) == (
            1,
            {"db.client.connection.pool.name": "tiny"},
        )
        pending = capture.metric("db.client.connection.pending_requests")
        assert [p.value for p in pending if p.attributes == timeouts.attributes] == [0]
    finally:
        appvitals_sqlalchemy.uninstrument(engine)
        engine.dispose()


def test_pools_without_introspection_are_counted_from_events(capture: Capture) -> None:
    """An in-memory SQLite engine (SingletonThreadPool) still reports used and idle."""
    engine = sqlalchemy.create_engine("sqlite://")
    appvitals_sqlalchemy.instrument(engine)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
            counts = {
                p.attributes["db.client.connection.state"]: p.value
                for p in capture.metric("db.client.connection.count")
            }
            assert counts == {"idle": 0, "used": 1}
        (span,) = client_spans(capture)
        assert span.attributes["db.system.name"] == "sqlite"
        pool_names = {
            p.attributes["db.client.connection.pool.name"]
            for p in capture.metric("db.client.connection.count")
        }
        assert pool_names == {"sqlite:memory"}
    finally:
        appvitals_sqlalchemy.uninstrument(engine)
        engine.dispose()


def test_dbapi_helper_traces_and_measures_one_call(
    capture: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """db.query() around a sqlite3 call: CLIENT span with the given names and a duration point."""
    monkeypatch.setenv("APPVITALS_PEER_SERVICES", "db.internal:5432=orders-db")
    connection = sqlite3.connect(":memory:")
    try:
        with (
            appvitals.span("heartbeat.process"),
            appvitals.db.query(
                "select users",
                system="postgresql",
                operation="SELECT",
                collection="users",
                statement="SELECT * FROM users WHERE email = 'x@example.com'",
                namespace="orders",
                server_address="db.internal",
                server_port=5432,
            ) as span,
        ):
            connection.execute("SELECT 1").fetchall()
            span.set_attribute("db.response.returned_rows", 1)
    finally:
        connection.close()
    query = capture.span("select users")
    assert query.kind == CLIENT
    assert query.parent_span_id == capture.span("heartbeat.process").span_id
    assert query.attributes == {
        "db.system.name": "postgresql",
        "db.operation.name": "SELECT",
        "db.collection.name": "users",
        "db.query.text": "SELECT * FROM users WHERE email = ?",
        "db.namespace": "orders",
        "server.address": "db.internal",
        "server.port": 5432,
        "peer.service": "orders-db",
        "db.response.returned_rows": 1,
    }
    (point,) = capture.metric("db.client.operation.duration")
    assert point.attributes == {
        "db.system.name": "postgresql",
        "db.operation.name": "SELECT",
        "db.collection.name": "users",
    }


def test_dbapi_helper_records_errors_and_works_with_async_with(capture: Capture) -> None:
    """An exception is recorded and re-raised; async with and statement parsing work too."""
    with pytest.raises(sqlite3.OperationalError), appvitals.db.query(system="sqlite"):
        raise sqlite3.OperationalError("database is locked")

    async def fetch() -> None:
        async with appvitals.db.query(system="sqlite", statement="DELETE FROM sessions"):
            await asyncio.sleep(0)

    asyncio.run(fetch())
    failed, deleted = (capture.span(name) for name in ("sqlite", "DELETE sessions"))
    assert failed.status_code == ERROR
    assert failed.attributes["error.type"] == "OperationalError"
    assert deleted.attributes["db.operation.name"] == "DELETE"
    assert deleted.attributes["db.collection.name"] == "sessions"


def test_dbapi_helper_reports_slow_calls(capture: Capture) -> None:
    """slow_query_threshold=0 reports every call as slow."""
    with appvitals.db.query("ping", system="redis", slow_query_threshold=0):
        pass
    assert [event["name"] for event in capture.span("ping").events] == ["slow query"]


@pytest.mark.parametrize(
    ("statement", "operation", "collection"),
    [
        ("SELECT a FROM users WHERE id = ?", "SELECT", "users"),
        ("select a from public.users u join orders o on o.u = u.id", "SELECT", "public.users"),
        ('SELECT a FROM "Order Items"', "SELECT", "Order Items"),
        ("INSERT INTO orders (id) VALUES (?)", "INSERT", "orders"),
        ("INSERT OR REPLACE INTO kv VALUES (?, ?)", "INSERT", "kv"),
        ("UPDATE `users` SET name = ?", "UPDATE", "users"),
        ("DELETE FROM sessions WHERE expires < ?", "DELETE", "sessions"),
        ("/* app=shop */ SELECT 1", "SELECT", None),
        ("SELECT (SELECT max(id) FROM users)", "SELECT", "users"),
        ("COMMIT", "COMMIT", None),
        ("", None, None),
    ],
)
def test_operation_and_collection_names(
    statement: str, operation: str | None, collection: str | None
) -> None:
    """The command and the first table of simple statements; None when there is none."""
    assert operation_name(statement) == operation
    assert collection_name(statement) == collection


@pytest.mark.parametrize(
    ("statement", "sanitized"),
    [
        ("SELECT * FROM t WHERE a = 'x' AND b = 3.5", "SELECT * FROM t WHERE a = ? AND b = ?"),
        (
            "SELECT * FROM t2 WHERE c = $1 AND d = :name",
            "SELECT * FROM t2 WHERE c = $1 AND d = :name",
        ),
        ("SELECT 'it''s' -- secret\n, 0xFF", "SELECT ? , ?"),
        ("INSERT INTO t VALUES (-12, 1e5)", "INSERT INTO t VALUES (?, ?)"),
    ],
)
def test_sanitize_replaces_literals(statement: str, sanitized: str) -> None:
    """Strings, numbers and hex literals become ?; placeholders and identifiers stay."""
    assert sanitize(statement) == sanitized


def test_sanitize_truncates_long_statements() -> None:
    """db.query.text is at most 2048 characters plus an ellipsis."""
    text_ = sanitize("SELECT " + ", ".join(f"column_{i}" for i in range(1000)) + " FROM t")
    assert len(text_) == 2049
    assert text_.endswith("…")
