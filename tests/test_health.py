"""appvitals.health: registry, runner, payloads, metrics, built-in checks and fork safety."""

from __future__ import annotations

import asyncio
import datetime
import http.server
import json
import os
import re
import socket
import socketserver
import sqlite3
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Optional

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appvitals import health
from appvitals.health import CheckOutcome, CheckResult, HealthRegistry, checks
from appvitals.testing import Capture

ISO_MS_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@pytest.fixture(autouse=True)
def _reset_health() -> Iterator[None]:
    """Every test starts and ends with an empty default registry and no runner."""
    health.reset()
    yield
    health.reset()


@pytest.fixture
def make_registry() -> Iterator[Callable[..., HealthRegistry]]:
    """Registries built by the test, stopped and cleared after it."""
    made: list[HealthRegistry] = []

    def make(interval: float = 3600.0) -> HealthRegistry:
        registry = HealthRegistry(interval=interval)
        made.append(registry)
        return registry

    yield make
    for registry in made:
        registry.reset()


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` passes (a bound, not a sleep)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return condition()


def runner_threads() -> list[threading.Thread]:
    """The live background runner threads."""
    return [t for t in threading.enumerate() if t.name == "appvitals-health-runner"]


# -- registration ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "a" * 65, "has space", "slash/name", "ü", None, 3])
def test_register_rejects_invalid_names(name: Any) -> None:
    """Names must be 1-64 characters of A-Z a-z 0-9 _ . -."""
    with pytest.raises(ValueError, match="invalid check name"):
        health.register(name, lambda: True)


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf"), "2", True])
def test_register_rejects_invalid_timeouts(timeout: Any) -> None:
    """The timeout must be a finite number of seconds > 0."""
    with pytest.raises(ValueError, match="timeout"):
        health.register("db", lambda: True, timeout=timeout)


def test_register_rejects_non_callables() -> None:
    """A check must be callable."""
    with pytest.raises(TypeError, match="callable"):
        health.register("db", "SELECT 1")  # type: ignore[arg-type]


@given(st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True))
def test_register_accepts_every_valid_name(name: str) -> None:
    """Every name of the documented alphabet and length is accepted."""
    registry = HealthRegistry(interval=3600.0)
    registry.register(name, lambda: True)
    assert registry.names == [name]


def test_invalid_interval_is_rejected() -> None:
    """An explicit interval must be > 0."""
    with pytest.raises(ValueError, match="interval"):
        HealthRegistry(interval=0)


def test_register_replaces_and_unregister_removes(
    make_registry: Callable[..., HealthRegistry],
) -> None:
    """Re-registering a name replaces the check and its result; unregister removes both."""
    registry = make_registry()
    registry.register("db", lambda: False)
    assert not registry.run_now()["db"].healthy
    registry.register("db", lambda: True)
    assert registry.results() == {}
    assert registry.run_now()["db"].healthy
    assert registry.unregister("db") is True
    assert registry.unregister("db") is False
    assert registry.results() == {}
    assert registry.ready_payload() == (200, {"status": "ready", "services": {}})


# -- what checks return ------------------------------------------------------------------------


def test_return_values_and_exceptions(make_registry: Callable[..., HealthRegistry]) -> None:
    """None/True/dict are healthy; False, exceptions and other types are unhealthy."""
    registry = make_registry()

    def raises() -> None:
        raise ConnectionError("refused")

    def raises_bare() -> None:
        raise ConnectionError

    registry.register("none", lambda: None)
    registry.register("true", lambda: True)
    registry.register("dict", lambda: {"rows": 1})
    registry.register("false", lambda: False)
    registry.register("raises", raises)
    registry.register("bare", raises_bare)
    registry.register("number", lambda: 42)
    registry.register("outcome", lambda: CheckOutcome(False, {"lag_seconds": 9}, "replica lagging"))
    results = registry.run_now()
    assert list(results) == [
        "none",
        "true",
        "dict",
        "false",
        "raises",
        "bare",
        "number",
        "outcome",
    ]
    assert [results[n].status for n in ("none", "true", "dict")] == ["healthy"] * 3
    assert results["dict"].details == {"rows": 1}
    assert results["none"].error is None
    assert results["false"].status == "unhealthy"
    assert results["false"].error == "check returned False"
    assert results["raises"].error == "ConnectionError: refused"
    assert results["bare"].error == "ConnectionError"
    assert results["number"].error is not None
    assert results["number"].error.startswith("TypeError: check returned int")
    assert results["outcome"].details == {"lag_seconds": 9}
    assert results["outcome"].error == "replica lagging"


def test_base_exceptions_are_contained(make_registry: Callable[..., HealthRegistry]) -> None:
    """Even SystemExit from a check is a result, never raised into the application."""
    registry = make_registry()

    def exits() -> None:
        raise SystemExit(3)

    registry.register("exits", exits)
    assert registry.ready_payload()[0] == 503
    assert registry.results()["exits"].error == "SystemExit: 3"


def test_async_checks_run_on_their_own_loop(make_registry: Callable[..., HealthRegistry]) -> None:
    """async def checks are awaited (healthy with details, or raising)."""
    registry = make_registry()

    async def pool() -> dict[str, int]:
        await asyncio.sleep(0)
        return {"free": 4}

    async def broken() -> None:
        await asyncio.sleep(0)
        raise RuntimeError("pool exhausted")

    registry.register("pool", pool)
    registry.register("broken", broken, critical=False)
    results = registry.run_now()
    assert results["pool"].healthy
    assert results["pool"].details == {"free": 4}
    assert results["broken"].error == "RuntimeError: pool exhausted"


def test_result_fields_and_to_dict(make_registry: Callable[..., HealthRegistry]) -> None:
    """CheckResult carries rounded latency, an ISO UTC timestamp and JSON-safe details."""
    registry = make_registry()
    registry.register("cache", lambda: {"at": datetime.date(2024, 5, 1), "n": [1, 2]})
    result = registry.run_now()["cache"]
    assert isinstance(result, CheckResult)
    assert result.latency_ms == round(result.latency_ms, 2) >= 0
    assert ISO_MS_UTC.fullmatch(result.last_checked)
    assert result.to_dict() == {
        "name": "cache",
        "status": "healthy",
        "latency_ms": result.latency_ms,
        "last_checked": result.last_checked,
        "critical": True,
        "details": {"at": "2024-05-01", "n": [1, 2]},
        "error": None,
    }
    json.dumps(registry.detailed_payload()[1])


# -- timeouts -------------------------------------------------------------------------------


def test_timeout_abandons_the_thread_and_never_piles_up(
    make_registry: Callable[..., HealthRegistry],
) -> None:
    """A stuck check times out; while stuck it is not started again."""
    registry = make_registry()
    release = threading.Event()
    calls: list[int] = []

    def stuck() -> bool:
        calls.append(1)
        return release.wait(30)

    registry.register("stuck", stuck, timeout=0.1)
    registry.register("fine", lambda: True)
    try:
        first = registry.run_now()
        assert first["stuck"].error == "timed out after 0.1s"
        assert first["stuck"].latency_ms == 100.0
        assert first["fine"].healthy
        second = registry.run_now()
        assert second["stuck"].error == "timed out after 0.1s"
        assert len(calls) == 1
        workers = [t for t in threading.enumerate() if t.name == "appvitals-health-stuck"]
        assert len(workers) == 1
    finally:
        release.set()
    assert wait_for(lambda: registry.run_now()["stuck"].healthy)
    assert len(calls) >= 2


def test_async_check_times_out(make_registry: Callable[..., HealthRegistry]) -> None:
    """An async check that does not finish in time is unhealthy too."""
    registry = make_registry()
    release = threading.Event()

    async def slow() -> None:
        while not release.is_set():
            await asyncio.sleep(0.005)

    registry.register("slow", slow, timeout=0.05)
    try:
        assert registry.run_now()["slow"].error == "timed out after 0.05s"
    finally:
        release.set()
    assert wait_for(lambda: registry.run_now()["slow"].healthy)


# -- runner and cache -----------------------------------------------------------------------


def test_ready_flips_within_one_interval(make_registry: Callable[..., HealthRegistry]) -> None:
    """The runner notices a critical check that starts failing and ready turns 503."""
    registry = make_registry(interval=0.05)
    up = threading.Event()
    up.set()
    registry.register("database", up.is_set)
    registry.register("search", lambda: True, critical=False)
    assert registry.ready_payload() == (
        200,
        {"status": "ready", "services": {"database": "connected", "search": "connected"}},
    )
    up.clear()
    assert wait_for(lambda: registry.ready_payload()[0] == 503)
    assert registry.ready_payload() == (
        503,
        {
            "status": "not_ready",
            "services": {"database": "disconnected", "search": "connected"},
            "failing": ["database"],
        },
    )
    up.set()
    assert wait_for(lambda: registry.ready_payload()[0] == 200)


def test_detailed_statuses(make_registry: Callable[..., HealthRegistry]) -> None:
    """healthy, degraded (non-critical failure) and unhealthy (critical failure)."""
    registry = make_registry()
    registry.register("database", lambda: True)
    status, payload = registry.detailed_payload()
    assert (status, payload["status"]) == (200, "healthy")
    assert isinstance(payload["uptime_seconds"], float)

    def search() -> None:
        raise TimeoutError("search cluster slow")

    registry.register("search", search, critical=False)
    status, payload = registry.detailed_payload()
    assert (status, payload["status"]) == (200, "degraded")
    assert payload["checks"]["search"]["error"] == "TimeoutError: search cluster slow"
    assert payload["checks"]["search"]["critical"] is False
    assert registry.ready_payload()[0] == 200

    registry.register("database", lambda: False)
    status, payload = registry.detailed_payload()
    assert (status, payload["status"]) == (503, "unhealthy")
    assert payload["checks"]["database"]["status"] == "unhealthy"


def test_no_checks_is_ready(make_registry: Callable[..., HealthRegistry]) -> None:
    """Without checks the service is ready and healthy."""
    registry = make_registry()
    assert registry.ready_payload() == (200, {"status": "ready", "services": {}})
    status, payload = registry.detailed_payload()
    assert (status, payload["status"], payload["checks"]) == (200, "healthy", {})


def test_payloads_answer_from_the_cache(make_registry: Callable[..., HealthRegistry]) -> None:
    """The first payload runs the checks once; later payloads only read the cache."""
    registry = make_registry(interval=3600.0)
    calls: list[int] = []

    def counted() -> bool:
        calls.append(1)
        return True

    registry.register("counted", counted)
    assert registry.ready_payload()[0] == 200
    assert len(calls) == 1
    for _ in range(50):
        registry.ready_payload()
        registry.detailed_payload()
        registry.live_payload()
    assert len(calls) == 1
    registry.run_now()
    assert len(calls) == 2


def test_new_check_gets_a_real_first_answer(make_registry: Callable[..., HealthRegistry]) -> None:
    """A check registered after the cache is warm runs before the next payload answers."""
    registry = make_registry()
    registry.register("database", lambda: True)
    assert registry.ready_payload()[0] == 200
    registry.register("queue", lambda: False)
    assert registry.ready_payload()[1]["failing"] == ["queue"]


def test_live_payload_never_runs_checks(make_registry: Callable[..., HealthRegistry]) -> None:
    """live reports uptime and memory, and leaves the checks alone."""
    registry = make_registry()
    calls: list[int] = []
    registry.register("counted", lambda: calls.append(1))
    payload = registry.live_payload()
    assert payload["status"] == "alive"
    assert isinstance(payload["uptime_seconds"], float)
    assert payload["memory_usage_mb"] > 0
    assert payload["memory_usage_mb"] == round(payload["memory_usage_mb"], 1)
    assert calls == []


def test_injected_clock_drives_uptime() -> None:
    """uptime_seconds comes from the registry's clock, rounded to 1 decimal."""
    now = [100.0]
    registry = HealthRegistry(interval=60.0, clock=lambda: now[0])
    now[0] = 112.345
    assert registry.live_payload()["uptime_seconds"] == 12.3


def test_default_registry_runner_starts_lazily_and_stops() -> None:
    """The first payload starts the default runner; stop() and reset() end it."""
    assert runner_threads() == []
    health.register("database", lambda: True)
    assert health.ready_payload()[0] == 200
    assert len(runner_threads()) == 1
    health.ensure_running()
    assert len(runner_threads()) == 1
    health.stop()
    assert runner_threads() == []
    assert health.results()["database"].healthy
    health.reset()
    assert health.results() == {}
    assert health.get_registry().names == []


def test_runner_waits_for_the_first_check() -> None:
    """Served endpoints without checks start no thread; the first check starts the runner."""
    health.ensure_running()  # what an ASGI app's lifespan start-up does
    assert health.live_payload()["status"] == "alive"
    assert health.ready_payload()[0] == 200
    assert runner_threads() == []
    health.register("database", lambda: True)
    assert len(runner_threads()) == 1
    health.stop()
    health.register("cache", lambda: True)  # stopped: registering does not restart it
    assert runner_threads() == []


def test_default_registry_payloads() -> None:
    """The module-level functions work on the default registry."""
    health.register("database", lambda: True)
    health.register("disk", lambda: False, critical=False)
    assert health.live_payload()["status"] == "alive"
    assert health.ready_payload() == (
        200,
        {"status": "ready", "services": {"database": "connected", "disk": "disconnected"}},
    )
    status, payload = health.detailed_payload()
    assert (status, payload["status"]) == (200, "degraded")
    assert health.run_now()["disk"].error == "check returned False"
    assert health.unregister("disk") is True
    assert health.detailed_payload()[1]["status"] == "healthy"


def test_interval_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """APPVITALS_HEALTH_INTERVAL sets the default registry's interval."""
    monkeypatch.setenv("APPVITALS_HEALTH_INTERVAL", "0.05")
    assert HealthRegistry().interval == 0.05
    assert health.get_registry().interval == 0.05
    calls: list[int] = []
    health.register("counted", lambda: calls.append(1))
    health.ready_payload()
    assert wait_for(lambda: len(calls) >= 3)


@pytest.mark.parametrize("value", ["soon", "0", "-5", "nan"])
def test_invalid_interval_env_warns_and_uses_default(
    value: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An unusable APPVITALS_HEALTH_INTERVAL is logged and 30 s applies."""
    monkeypatch.setenv("APPVITALS_HEALTH_INTERVAL", value)
    with caplog.at_level("WARNING", logger="appvitals"):
        assert HealthRegistry().interval == 30.0
    assert "APPVITALS_HEALTH_INTERVAL" in caplog.text


def test_stop_is_immediate(make_registry: Callable[..., HealthRegistry]) -> None:
    """stop() wakes the runner out of its wait instead of waiting out the interval."""
    registry = make_registry(interval=3600.0)
    registry.register("database", lambda: True)
    registry.start()
    assert wait_for(lambda: "database" in registry.results())
    registry.stop(timeout=5.0)  # the join gives up after 5 s if stop waited for the interval
    assert runner_threads() == []


# -- metrics -----------------------------------------------------------------------------------


def test_metrics_are_recorded(
    capture: Capture, make_registry: Callable[..., HealthRegistry]
) -> None:
    """Status gauge (1/0 with name and criticality) and duration histogram per check."""
    registry = make_registry()
    registry.register("metrics-db", lambda: True)
    registry.register("metrics-search", lambda: False, critical=False)
    registry.run_now()
    status = {
        p.attributes["check.name"]: p
        for p in capture.metric("appvitals.health.check.status")
        if p.attributes["check.name"].startswith("metrics-")
    }
    assert status["metrics-db"].value == 1
    assert status["metrics-db"].attributes["check.critical"] is True
    assert status["metrics-search"].value == 0
    assert status["metrics-search"].attributes["check.critical"] is False
    durations = {
        p.attributes["check.name"]: p
        for p in capture.metric("appvitals.health.check.duration")
        if p.attributes["check.name"].startswith("metrics-")
    }
    assert durations["metrics-db"].unit == "s"
    assert durations["metrics-db"].value == 1
    assert durations["metrics-db"].attributes["check.status"] == "healthy"
    assert durations["metrics-search"].attributes["check.status"] == "unhealthy"
    registry.register("metrics-search", lambda: True, critical=False)
    registry.run_now()
    values = {
        p.attributes["check.name"]: p.value
        for p in capture.metric("appvitals.health.check.status")
        if p.attributes["check.name"].startswith("metrics-")
    }
    assert values == {"metrics-db": 1, "metrics-search": 1}


# -- built-in checks: sql ----------------------------------------------------------------------


def test_sql_check_with_dbapi_connect(make_registry: Callable[..., HealthRegistry]) -> None:
    """A DB-API connect function: healthy with the query, unhealthy on a failing query."""
    registry = make_registry()
    registry.register("sqlite", checks.sql(lambda: sqlite3.connect(":memory:")))
    registry.register(
        "missing", checks.sql(lambda: sqlite3.connect(":memory:"), "SELECT * FROM missing")
    )
    results = registry.run_now()
    assert results["sqlite"].healthy
    assert results["sqlite"].details == {"query": "SELECT 1"}
    assert results["missing"].error == "OperationalError: no such table: missing"


class _SQLiteEngine:
    """The engine protocol sql() relies on (connect() as a context manager), over sqlite3."""

    def __init__(self) -> None:
        self.statements: list[Any] = []

    @contextmanager
    def connect(self) -> Iterator[_SQLiteEngine._Connection]:
        connection = sqlite3.connect(":memory:")
        try:
            yield self._Connection(self, connection)
        finally:
            connection.close()

    class _Connection:
        def __init__(self, engine: _SQLiteEngine, connection: sqlite3.Connection) -> None:
            self._engine = engine
            self._connection = connection

        def execute(self, statement: Any) -> sqlite3.Cursor:
            self._engine.statements.append(statement)
            return self._connection.execute(str(statement))


def test_sql_check_with_engine_protocol(make_registry: Callable[..., HealthRegistry]) -> None:
    """An object with connect() is used as an engine, connection by connection."""
    engine = _SQLiteEngine()
    registry = make_registry()
    registry.register("engine", checks.sql(engine, "SELECT 2"))
    result = registry.run_now()["engine"]
    assert result.healthy, result.error
    assert result.details == {"query": "SELECT 2"}
    assert [str(s) for s in engine.statements] == ["SELECT 2"]


def test_sql_check_with_sqlalchemy_engine(make_registry: Callable[..., HealthRegistry]) -> None:
    """A real SQLAlchemy engine (when SQLAlchemy is installed)."""
    sqlalchemy = pytest.importorskip("sqlalchemy")
    engine = sqlalchemy.create_engine("sqlite://")
    try:
        registry = make_registry()
        registry.register("database", checks.sql(engine))
        registry.register("broken", checks.sql(engine, "SELECT * FROM missing"))
        results = registry.run_now()
        assert results["database"].healthy, results["database"].error
        assert results["broken"].error is not None
        assert results["broken"].error.startswith("OperationalError")
    finally:
        engine.dispose()


def test_sql_rejects_bad_arguments() -> None:
    """sql() needs an engine or a callable, and a query."""
    with pytest.raises(TypeError):
        checks.sql("sqlite:///db")
    with pytest.raises(ValueError):
        checks.sql(lambda: sqlite3.connect(":memory:"), " ")


# -- built-in checks: redis --------------------------------------------------------------------


class _ThreadingTCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@contextmanager
def resp_server(ping_reply: bytes, password: Optional[str] = None) -> Iterator[tuple[int, list]]:
    """A tiny RESP server on 127.0.0.1 answering PING (and AUTH); yields port and commands."""
    received: list[list[str]] = []

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            while True:
                line = self.rfile.readline().rstrip(b"\r\n")
                if not line:
                    return
                if line.startswith(b"*"):
                    parts = []
                    for _ in range(int(line[1:])):
                        size = int(self.rfile.readline()[1:])
                        parts.append(self.rfile.read(size + 2)[:-2].decode())
                else:
                    parts = line.decode().split()
                received.append(parts)
                if parts[0].upper() == "AUTH":
                    accepted = password is not None and parts[-1] == password
                    self.wfile.write(b"+OK\r\n" if accepted else b"-WRONGPASS invalid password\r\n")
                elif parts[0].upper() == "PING":
                    self.wfile.write(ping_reply)

    server = _ThreadingTCPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1], received
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_redis_check_pong(make_registry: Callable[..., HealthRegistry]) -> None:
    """+PONG is healthy."""
    with resp_server(b"+PONG\r\n") as (port, received):
        registry = make_registry()
        registry.register("redis", checks.redis(f"redis://127.0.0.1:{port}/0"))
        result = registry.run_now()["redis"]
        assert result.healthy, result.error
    assert received == [["PING"]]


def test_redis_check_error_reply(make_registry: Callable[..., HealthRegistry]) -> None:
    """An error reply to PING is unhealthy and quoted."""
    with resp_server(b"-ERR loading dataset\r\n") as (port, _):
        registry = make_registry()
        registry.register("redis", checks.redis(f"redis://127.0.0.1:{port}"))
        result = registry.run_now()["redis"]
    assert result.error == "ConnectionError: unexpected reply to PING: -ERR loading dataset"


def test_redis_check_auth(make_registry: Callable[..., HealthRegistry]) -> None:
    """A password in the URL is sent with AUTH; a wrong one is unhealthy."""
    with resp_server(b"+PONG\r\n", password="s3cret pw") as (port, received):
        registry = make_registry()
        registry.register("good", checks.redis(f"redis://:s3cret%20pw@127.0.0.1:{port}"))
        registry.register("acl", checks.redis(f"redis://app:s3cret%20pw@127.0.0.1:{port}"))
        registry.register("bad", checks.redis(f"redis://:wrong@127.0.0.1:{port}"))
        results = registry.run_now()
    assert results["good"].healthy, results["good"].error
    assert results["acl"].healthy, results["acl"].error
    assert results["bad"].error == "ConnectionError: AUTH failed: -WRONGPASS invalid password"
    assert ["AUTH", "app", "s3cret pw"] in received


def test_redis_check_closed_port(make_registry: Callable[..., HealthRegistry]) -> None:
    """Nothing listening is unhealthy (connection refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    registry = make_registry()
    registry.register("redis", checks.redis(f"redis://127.0.0.1:{port}", timeout=1.0))
    result = registry.run_now()["redis"]
    assert result.error is not None
    assert result.error.startswith("ConnectionRefusedError")


def test_redis_rejects_bad_urls() -> None:
    """Only redis:// and rediss:// URLs with a valid port."""
    with pytest.raises(ValueError):
        checks.redis("http://localhost:6379")
    with pytest.raises(ValueError):
        checks.redis("redis://localhost:99999")
    with pytest.raises(ValueError):
        checks.redis(timeout=0)


# -- built-in checks: http ---------------------------------------------------------------------


@contextmanager
def http_server() -> Iterator[str]:
    """An HTTP server on 127.0.0.1 with /ok (200), /fail (500), /moved (302) and /auth."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/ok":
                self.send_response(200)
            elif self.path == "/moved":
                self.send_response(302)
                self.send_header("Location", "http://elsewhere.invalid/")
            elif self.path == "/auth":
                self.send_response(204 if self.headers.get("X-Token") == "t" else 401)
            else:
                self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep the test output clean

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_http_check(make_registry: Callable[..., HealthRegistry]) -> None:
    """Expected statuses are healthy; others (and redirects when not expected) are not."""
    with http_server() as base:
        registry = make_registry()
        registry.register("ok", checks.http(f"{base}/ok"))
        registry.register("fail", checks.http(f"{base}/fail"))
        registry.register("moved", checks.http(f"{base}/moved"))
        registry.register("moved-strict", checks.http(f"{base}/moved", expect_status=200))
        registry.register("auth", checks.http(f"{base}/auth", headers={"X-Token": "t"}))
        registry.register("fail-ok", checks.http(f"{base}/fail", expect_status=[500]))
        results = registry.run_now()
    assert results["ok"].healthy
    assert results["ok"].details == {"status_code": 200}
    assert results["fail"].error == "unexpected status 500"
    assert results["fail"].details == {"status_code": 500}
    assert results["moved"].healthy
    assert results["moved"].details == {"status_code": 302}
    assert results["moved-strict"].error == "unexpected status 302"
    assert results["auth"].details == {"status_code": 204}
    assert results["fail-ok"].healthy


def test_http_check_unreachable(make_registry: Callable[..., HealthRegistry]) -> None:
    """A connection error is unhealthy."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    registry = make_registry()
    registry.register("down", checks.http(f"http://127.0.0.1:{port}/", timeout=1.0))
    result = registry.run_now()["down"]
    assert result.error is not None
    assert result.error.startswith("URLError")


def test_http_rejects_bad_urls() -> None:
    """Only http(s) URLs."""
    with pytest.raises(ValueError):
        checks.http("file:///etc/passwd")


# -- built-in checks: disk and memory ----------------------------------------------------------


def test_disk_check(make_registry: Callable[..., HealthRegistry], tmp_path: Any) -> None:
    """Free space above the threshold is healthy, below it unhealthy, with details."""
    registry = make_registry()
    registry.register("disk", checks.disk(str(tmp_path), min_free_ratio=0.0))
    registry.register("full", checks.disk(str(tmp_path), min_free_ratio=1.0))
    results = registry.run_now()
    details = results["disk"].details
    assert results["disk"].healthy
    assert set(details) == {"free_gb", "total_gb", "free_ratio"}
    assert 0 <= details["free_ratio"] <= 1
    assert details["total_gb"] >= details["free_gb"] >= 0
    assert results["full"].status == "unhealthy"
    assert "below 100.0%" in (results["full"].error or "")
    with pytest.raises(ValueError):
        checks.disk(min_free_ratio=1.5)


def test_memory_check(make_registry: Callable[..., HealthRegistry]) -> None:
    """Used memory at or under the threshold is healthy, above it unhealthy."""
    registry = make_registry()
    registry.register("memory", checks.memory(max_used_ratio=1.0))
    registry.register("tight", checks.memory(max_used_ratio=0.0))
    results = registry.run_now()
    assert results["memory"].healthy
    assert 0 < results["memory"].details["used_ratio"] <= 1
    assert results["tight"].status == "unhealthy"
    with pytest.raises(ValueError):
        checks.memory(max_used_ratio=-0.1)


# -- fork ----------------------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_gets_results_and_a_new_runner(
    make_registry: Callable[..., HealthRegistry],
) -> None:
    """After fork the child answers from the inherited cache and restarts the runner."""
    registry = make_registry(interval=0.05)
    calls: list[int] = []

    def counted() -> bool:
        calls.append(1)
        return True

    registry.register("database", counted)
    assert registry.ready_payload()[0] == 200
    with warnings.catch_warnings():
        # Python 3.12+ warns about forking a process with threads; that is the point here.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        code = 1
        try:
            status, payload = registry.ready_payload()
            before = len(calls)
            refreshed = wait_for(lambda: len(calls) >= before + 2)
            alive = any(t.name == "appvitals-health-runner" for t in threading.enumerate())
            ok = status == 200 and payload["services"] == {"database": "connected"}
            code = 0 if ok and refreshed and alive else 2
        finally:
            os._exit(code)
    _, wait_status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(wait_status) == 0
