"""export_mode="inline": no export thread, exports run by the application's own requests."""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry.sdk.trace.export import SpanExportResult

import appvitals
from appvitals import Config, _inline, _setup
from appvitals.testing import OTLPReceiver

# A Flask app in its own process: the test process runs the receiver's threads, and glibc's
# single-threaded flag, once cleared, stays cleared for the life of a process.
CHILD = textwrap.dedent(
    """
    import ctypes, json, logging, os, sys, threading, time

    import flask

    import appvitals

    appvitals.configure(
        service_name="inline-app",
        exporter="otlp",
        otlp_endpoint=os.environ["ENDPOINT"],
        otlp_protocol="http/protobuf",
        sampler_ratio=1.0,
        metric_export_interval=0.3,
    )
    app = flask.Flask("inline")

    @app.get("/hello")
    def hello():
        logging.getLogger("inline").warning("hello from a request")
        return "hi"

    appvitals.instrument_flask(app)
    client = app.test_client()
    for _ in range(3):
        client.get("/hello")
    time.sleep(0.6)  # past every delay: the next request runs the exports
    client.get("/hello")
    flag = ctypes.c_char.in_dll(ctypes.CDLL(None), "__libc_single_threaded").value
    result = {
        "single_threaded": flag == b"\\x01",
        "threads": sorted(thread.name for thread in threading.enumerate()),
    }
    print("RESULT " + json.dumps(result), flush=True)
    os._exit(0)  # no exit hook: what the receiver has was exported while the app ran
    """
)


def run_python(code: str, **variables: str) -> subprocess.CompletedProcess[str]:
    """``python -c code`` in a clean environment (no OTEL_/APPVITALS_) plus ``variables``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "APPVITALS_"))}
    env.update(variables)
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def run_child(receiver: OTLPReceiver, mode: str) -> dict[str, Any]:
    completed = run_python(
        CHILD,
        ENDPOINT=receiver.http_endpoint,
        APPVITALS_EXPORT_MODE=mode,
        OTEL_BSP_SCHEDULE_DELAY="200",
        OTEL_BLRP_SCHEDULE_DELAY="200",
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, completed.stdout + completed.stderr
    return dict(json.loads(lines[-1].removeprefix("RESULT ")))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads glibc's flag")
@pytest.mark.parametrize("mode", ["auto", "inline", "background"])
def test_inline_mode_keeps_the_process_single_threaded(
    otlp_receiver: OTLPReceiver, mode: str
) -> None:
    """Inline and auto: one thread, and spans, metrics and logs reach the collector in life.

    auto is the default; the collector is on loopback, so the requests run the exports.
    The background mode shows what the assertion tells apart: the SDK's three export
    threads, and glibc's single-threaded fast path gone.
    """
    result = run_child(otlp_receiver, mode)
    if mode in ("auto", "inline"):
        assert result == {"single_threaded": True, "threads": ["MainThread"]}
    else:
        assert result["single_threaded"] is False
        assert any(name.startswith("OtelBatch") for name in result["threads"])
    # The first three requests' spans; the fourth's waits for the next export (or the exit).
    spans = otlp_receiver.wait_for_spans(lambda s: s.name == "GET /hello", count=3)
    assert len(spans) >= 3
    assert otlp_receiver.wait_for_logs(lambda r: r.body == "hello from a request", count=3)
    assert otlp_receiver.wait_for_metrics(lambda p: p.name == "http.server.request.duration")


def test_shutdown_exports_everything_buffered(
    otlp_receiver: OTLPReceiver, configure_otlp: Callable[..., Config]
) -> None:
    """No request ever ran an export: shutdown() sends the spans, metrics and logs."""
    configure_otlp("inline-shutdown", export_mode="inline")
    with appvitals.span("inline.work"):
        appvitals.counter("inline.items").add(2)
        logging.getLogger("inline").warning("buffered")
    assert otlp_receiver.spans() == []  # 5 s / 1 s / 60 s away, and nothing ticked
    assert appvitals.shutdown(timeout=10)
    assert _inline.current is None
    assert otlp_receiver.wait_for_spans(lambda s: s.name == "inline.work")
    (point,) = otlp_receiver.wait_for_metrics(lambda p: p.name == "inline.items")
    assert point.value == 2
    assert otlp_receiver.wait_for_logs(lambda r: r.body == "buffered")


def test_inline_timeouts_are_capped_and_the_configuration_says_so() -> None:
    """The effective export timeouts are capped; get_config() keeps what was asked for."""
    config = appvitals.configure(exporter="none", export_mode="inline", otlp_timeout=30)
    assert (config.export_mode, config.otlp_timeout) == ("inline", 30)
    state = _setup._state
    assert state is not None
    assert isinstance(state.schedule, _inline.Schedule)
    assert _inline.current is state.schedule


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_a_refused_export_fails_without_a_retry_pause(
    protocol: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The capped timeout is shorter than the exporter's first pause: it gives up at once.

    With the SDK's own timeout (10 s) the OTLP exporters log "retrying in 1.0s" and sleep,
    in the request that runs the export; in inline mode they log the failure only.
    """
    import socket

    with socket.socket() as probe:  # a port nothing listens on: connections are refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    appvitals.configure(
        service_name="inline-refused",
        exporter="otlp",
        otlp_endpoint=f"http://127.0.0.1:{port}",
        otlp_protocol=protocol,
        sampler_ratio=1.0,
        metrics=False,
        logs=False,
        export_mode="inline",
    )
    with caplog.at_level(logging.INFO, logger="opentelemetry"):
        with appvitals.span("inline.refused"):
            pass
        appvitals.force_flush()
    exporter_messages = [
        record.getMessage()
        for record in caplog.records
        if record.name.startswith("opentelemetry.exporter")
    ]
    assert exporter_messages, "the export was attempted and its failure logged"
    assert not [message for message in exporter_messages if "retrying in" in message]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    """A span exporter recording its batches; fails while ``failing``."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []
        self.failing = False
        self.shut = False

    def export(self, batch: list[Any]) -> SpanExportResult:
        self.batches.append(list(batch))
        return SpanExportResult.FAILURE if self.failing else SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.shut = True


_real_monotonic = time.monotonic


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(_inline, "_monotonic", fake)
    return fake


def make_batch(
    monkeypatch: pytest.MonkeyPatch,
    *,
    max_batch: int = 3,
    max_queue: int = 5,
    promote: bool = False,
) -> tuple[_inline.Schedule, _inline.InlineBatch, Recorder]:
    schedule = _inline.Schedule(promote=promote)
    recorder = Recorder()
    batch = _inline.InlineBatch("traces", recorder, schedule, 5.0, max_batch, max_queue)
    monkeypatch.setattr(_inline, "current", schedule)
    return schedule, batch, recorder


def test_a_batch_exports_when_due_or_full(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing runs before the delay; a full batch runs at once; the rest waits its turn."""
    schedule, batch, recorder = make_batch(monkeypatch)
    batch.emit("a")
    batch.emit("b")
    _inline.tick()
    assert recorder.batches == []
    clock.now += 5.0
    _inline.tick()
    assert recorder.batches == [["a", "b"]]
    assert schedule.next_due == clock.now + 5.0
    for item in "cde":  # the third fills a batch: its emit runs the export
        batch.emit(item)
    assert recorder.batches[-1] == ["c", "d", "e"]


def test_a_full_buffer_drops_the_oldest(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    """Like the SDK's queue: bounded, the oldest evicted, exported in batches when due."""
    _, batch, recorder = make_batch(monkeypatch, max_batch=10, max_queue=3)
    for item in "abcde":
        batch.emit(item)
    clock.now += 5.0
    _inline.tick()
    assert recorder.batches == [["c", "d", "e"]]


def test_failures_back_off_and_success_resets(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dead collector is tried after 5 s, 10 s, 20 s …, not on every request."""
    schedule, batch, recorder = make_batch(monkeypatch, max_batch=100, max_queue=300)
    recorder.failing = True
    pauses = []
    for _ in range(4):
        batch.emit("x")
        clock.now = schedule.next_due
        _inline.tick()
        pauses.append(schedule.next_due - clock.now)
    assert pauses == [5.0, 10.0, 20.0, 40.0]
    for _ in range(200):  # a full batch does not cut a pause short
        batch.emit("y")
    assert len(recorder.batches) == 4
    recorder.failing = False
    clock.now = schedule.next_due
    _inline.tick()
    assert len(recorder.batches[-1]) == 100  # one batch per run: one request waits for one
    assert schedule.next_due == clock.now  # the rest is due at once: the next request's
    _inline.tick()
    assert len(recorder.batches[-1]) == 100
    assert len(recorder.batches) == 6
    assert schedule.next_due - clock.now == 5.0


def test_an_exporter_that_raises_is_a_failed_export(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception inside an export never reaches the request that ran it."""
    schedule, batch, recorder = make_batch(monkeypatch)

    def explode(_batch: list[Any]) -> SpanExportResult:
        raise RuntimeError("exporter bug")

    monkeypatch.setattr(recorder, "export", explode)
    batch.emit("a")
    clock.now += 5.0
    _inline.tick()  # does not raise
    assert schedule.next_due == clock.now + 5.0


def test_shutdown_flushes_and_fork_forgets(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    """shutdown() exports what is left; a forked child drops the parent's buffer."""
    schedule, batch, recorder = make_batch(monkeypatch)
    batch.emit("parent")
    schedule.at_fork_reinit()
    batch.emit("child")
    batch.shutdown()
    assert recorder.batches == [["child"]]
    assert recorder.shut
    batch.emit("late")  # after shutdown: ignored
    assert batch.force_flush()
    assert recorder.batches == [["child"]]


def test_tick_without_inline_mode_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The middleware calls tick() on every request; in background mode it is a no-op."""
    monkeypatch.setattr(_inline, "current", None)
    _inline.tick()
    schedule = _inline.Schedule()
    assert schedule.next_due == math.inf


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads glibc's flag")
def test_importing_appvitals_starts_no_thread() -> None:
    """The SDK's resource detection ran in a thread pool at import; appvitals' runs inline."""
    code = (
        "import ctypes, appvitals, opentelemetry.sdk._logs;"
        "appvitals.configure(exporter='none', export_mode='inline');"
        "print(ctypes.c_char.in_dll(ctypes.CDLL(None), '__libc_single_threaded').value)"
    )
    completed = run_python(code)
    assert completed.stdout.strip().splitlines()[-1] == r"b'\x01'", completed.stderr


def test_inline_batches_are_smaller_unless_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    """128 spans per inline export (about 4 ms of encoding), or what OTEL_BSP_* sets."""
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    monkeypatch.delenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", raising=False)
    assert _inline.batch_settings(BatchSpanProcessor, "traces")[1] == 128
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "300")
    assert _inline.batch_settings(BatchSpanProcessor, "traces")[1] == 300


@pytest.mark.parametrize(
    ("exporter", "endpoint", "expected"),
    [
        ("jsonl", None, "auto"),
        ("console", None, "auto"),
        ("otlp", None, "auto"),  # the exporters' default: localhost
        ("otlp", "http://127.0.0.1:4318", "auto"),
        ("otlp", "http://localhost:4318/", "auto"),
        ("otlp", "localhost:4317", "auto"),  # gRPC's host:port form
        ("otlp", "http://[::1]:4318", "auto"),
        ("otlp", "unix:///run/otel.sock", "auto"),
        ("otlp", "http://otel-collector:4318", "background"),
        ("otlp", "https://api.example.com", "background"),
        ("otlp", "http://10.0.0.7:4318", "background"),
        ("otlp", "http://[bad", "background"),
    ],
)
def test_auto_mode_keeps_remote_collectors_in_background(
    exporter: str, endpoint: str | None, expected: str
) -> None:
    """auto runs the exports on the schedule only when every destination is on this machine."""
    from appvitals._config import resolve

    endpoints = {"otlp_endpoint": endpoint} if endpoint else {}
    config = resolve({"exporter": exporter, **endpoints}, environ={})
    assert config.export_mode == "auto"
    assert config.effective_export_mode() == expected


def test_auto_mode_moves_exports_to_one_thread_once_the_process_has_threads(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Promotion: at the first due tick in a threaded process, one export thread takes over."""
    threaded = False
    monkeypatch.setattr(_inline, "process_has_threads", lambda: threaded)
    schedule, batch, recorder = make_batch(monkeypatch, max_batch=100, max_queue=100, promote=True)
    batch.emit("first")
    clock.now += 5.0
    _inline.tick()  # single-threaded: the export runs here
    assert recorder.batches == [["first"]]
    assert not schedule.threaded
    threaded = True
    batch.emit("second")
    clock.now += 5.0
    _inline.tick()  # the process has threads now: the schedule gets its own
    try:
        assert schedule.threaded
        assert schedule.next_due == math.inf  # tick() no longer runs anything
        names = [thread.name for thread in threading.enumerate()]
        assert names.count("appvitals-export") == 1
        deadline = _real_monotonic() + 10
        while recorder.batches == [["first"]] and _real_monotonic() < deadline:
            time.sleep(0.01)
        assert recorder.batches == [["first"], ["second"]]
    finally:
        schedule.stop_thread(5.0)
    assert "appvitals-export" not in [thread.name for thread in threading.enumerate()]


def test_an_export_thread_that_cannot_start_leaves_the_exports_inline(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fail open: a thread that cannot start is counted; the requests keep exporting."""
    from appvitals._safety import internal_error_counts

    monkeypatch.setattr(_inline, "process_has_threads", lambda: True)

    def refuse(_thread: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    schedule, batch, recorder = make_batch(monkeypatch, max_batch=100, max_queue=100, promote=True)
    batch.emit("a")
    clock.now += 5.0
    _inline.tick()  # promotion fails: no exception reaches the caller
    assert not schedule.threaded
    assert internal_error_counts().get("export thread") == 1
    monkeypatch.setattr(_inline, "process_has_threads", lambda: False)
    _inline.tick()
    assert recorder.batches == [["a"]]


def test_auto_mode_in_a_threaded_process_exports_from_its_thread(
    otlp_receiver: OTLPReceiver,
    configure_otlp: Callable[..., Config],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """This test process has threads (the receiver's): no request needs to run an export."""
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    configure_otlp("auto-threaded")
    state = _setup._state
    assert state is not None
    assert state.schedule is not None
    assert state.schedule.threaded
    with appvitals.span("auto.threaded"):
        pass
    assert otlp_receiver.wait_for_spans(lambda s: s.name == "auto.threaded", timeout=10)
    assert appvitals.shutdown(timeout=10)
    assert "appvitals-export" not in [thread.name for thread in threading.enumerate()]


def test_an_asgi_server_loop_exports_while_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    """The lifespan's loop timer runs the due exports when no request comes."""
    import asyncio

    from appvitals.integrations import asgi

    schedule = _inline.Schedule()
    runs: list[float] = []
    schedule.every("probe", 0.2, lambda: runs.append(1.0) or True)
    monkeypatch.setattr(_inline, "current", schedule)
    monkeypatch.setattr(asgi, "IDLE_TICK_SECONDS", 0.05)

    async def idle_server() -> None:
        asgi._export_while_idle()
        asgi._export_while_idle()  # a second lifespan on the same loop: still one timer
        deadline = asyncio.get_running_loop().time() + 10
        while not runs and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)

    asyncio.run(idle_server())
    assert runs
