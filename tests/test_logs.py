"""Structured logging: structlog and stdlib in one pipeline, fields, masking, OTLP, noise."""

from __future__ import annotations

import calendar
import io
import json
import logging
import random
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import structlog
from flask import Flask

import appvitals
from appvitals import logs as logs_module
from appvitals._logs_console import ConsoleHandler
from appvitals.logs import configure_logging, get_logger
from appvitals.testing import Capture, LogRecord, OTLPReceiver

# Created at import time, before anything is configured: the lazy proxy must still work.
module_log = get_logger()

ISO_MS_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
SECRETS = ("ada@example.com", "hunter2", "s3cr3t-t0ken-0123456789")


@dataclass
class Logged:
    """What a test reads back: the JSON lines written to the stream and the OTel records."""

    capture: Capture
    stream: io.StringIO

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]

    def line(self, event: str) -> dict[str, Any]:
        (found,) = [line for line in self.lines() if line["event"] == event]
        return found

    def record(self, body: str) -> LogRecord:
        (found,) = [record for record in self.capture.logs() if record.body == body]
        return found


@pytest.fixture
def logged() -> Iterator[Logged]:
    """appvitals captured in memory, logging JSON lines at DEBUG into a StringIO."""
    with Capture(service_name="shop", environment="test") as capture:
        stream = io.StringIO()
        configure_logging(stream=stream, renderer="json", level="DEBUG")
        yield Logged(capture, stream)


def make_app() -> Flask:
    app = Flask("shop")
    log = get_logger("shop.views")

    @app.get("/orders/<int:order_id>")
    def order(order_id: int) -> dict[str, int]:
        log.info("order viewed", order_id=order_id)
        logging.getLogger("shop.db").info("query took %d ms", 3)
        return {"id": order_id}

    appvitals.instrument_flask(app)
    return app


def test_flask_request_structlog_and_stdlib_share_fields_and_reach_otel_once(
    logged: Logged,
) -> None:
    """In a Flask request both kinds of call carry the request's ids, in JSON and OTel, once."""
    response = make_app().test_client().get("/orders/7", headers={"X-Correlation-ID": "req-7"})
    assert response.status_code == 200
    span = logged.capture.span("GET /orders/<int:order_id>")
    for event, logger in (("order viewed", "shop.views"), ("query took 3 ms", "shop.db")):
        line = logged.line(event)
        assert line["logger"] == logger
        assert line["correlation_id"] == "req-7"
        assert (line["trace_id"], line["span_id"]) == (span.trace_id, span.span_id)
        assert (line["service"], line["environment"], line["level"]) == ("shop", "test", "info")
        assert ISO_MS_UTC.fullmatch(line["timestamp"])
        record = logged.record(event)  # exactly one record per call
        assert (record.trace_id, record.span_id) == (span.trace_id, span.span_id)
        assert record.attributes["correlation_id"] == "req-7"
        assert record.scope == logger
        assert record.severity_text == "INFO"
    assert logged.line("order viewed")["order_id"] == 7
    assert logged.record("order viewed").attributes["order_id"] == 7
    assert len(logged.capture.logs()) == 2


def test_line_field_order_and_bound_fields(logged: Logged) -> None:
    """Standard fields first; appvitals.bind and structlog contextvars fields on every line."""
    with (
        appvitals.bind(user_id="u-1", tenant_id="t-1", job_id="j-1"),
        structlog.contextvars.bound_contextvars(action="refund"),
    ):
        get_logger("billing").warning("refund issued", error_code="E42", duration_ms=12.5)
    line = logged.line("refund issued")
    assert list(line)[:5] == ["timestamp", "level", "logger", "event", "service"]
    expected = {"user_id": "u-1", "tenant_id": "t-1", "job_id": "j-1", "action": "refund"}
    assert expected.items() <= line.items()
    assert (line["error_code"], line["duration_ms"], line["level"]) == ("E42", 12.5, "warning")
    assert "trace_id" not in line, "no span, no trace id"
    assert abs(time.time() - _epoch(line["timestamp"])) < 60
    record = logged.record("refund issued")
    assert expected.items() <= record.attributes.items()
    assert record.trace_id is None


def test_module_level_logger_created_before_configuration(logged: Logged) -> None:
    """A get_logger() proxy created at import time uses the configuration made later."""
    module_log.info("from module level")
    assert logged.line("from module level")["logger"] == __name__
    assert logged.record("from module level").scope == __name__


def test_secrets_masked_in_json_and_otlp(logged: Logged) -> None:
    """An e-mail in the message, a bearer token and a password= field are masked everywhere."""
    get_logger("auth").info(
        "login for ada@example.com",
        password="hunter2",
        note="sent Bearer s3cr3t-t0ken-0123456789",
    )
    logging.getLogger("auth").warning(
        "retry for %s with Bearer %s", "ada@example.com", "s3cr3t-t0ken-0123456789"
    )
    line = logged.line("login for ***")
    assert (line["password"], line["note"]) == ("***", "sent Bearer ***")
    assert logged.line("retry for *** with Bearer ***")["level"] == "warning"
    record = logged.record("login for ***")
    assert (record.attributes["password"], record.attributes["note"]) == ("***", "sent Bearer ***")
    assert logged.record("retry for *** with Bearer ***").severity_text == "WARN"
    exported = repr(logged.capture.logs())
    for secret in SECRETS:
        assert secret not in logged.stream.getvalue()
        assert secret not in exported


def test_masking_can_be_turned_off(logged: Logged) -> None:
    """masking=False leaves the values as logged."""
    configure_logging(stream=logged.stream, renderer="json", masking=False)
    get_logger("dev").info("plain", password="hunter2")
    assert logged.line("plain")["password"] == "hunter2"


def _fail() -> None:
    try:
        {}["sku"]
    except KeyError as error:
        raise ValueError("charge failed for ada@example.com") from error


def test_exceptions_are_structured_on_one_json_line(logged: Logged) -> None:
    """log.exception, exc_info=True and logging.exception give one line with frames and cause."""
    try:
        _fail()
    except ValueError:
        get_logger("pay").exception("structlog exception")
        get_logger("pay").error("structlog exc_info", exc_info=True)
        logging.getLogger("pay").exception("stdlib exception")
    text = logged.stream.getvalue()
    assert text.count("\n") == 3, "one line per record"
    for event in ("structlog exception", "structlog exc_info", "stdlib exception"):
        line = logged.line(event)
        assert line["level"] == "error"
        exception = line["exception"]
        assert (exception["type"], exception["message"]) == ("ValueError", "charge failed for ***")
        assert exception["frames"][-1]["name"] == "_fail"
        assert set(exception["frames"][-1]) == {"filename", "lineno", "name"}
        assert exception["frames"][-1]["filename"].endswith("test_logs.py")
        assert exception["cause"]["type"] == "KeyError"
        attributes = logged.record(event).attributes
        assert attributes["exception.type"] == "ValueError"
        assert "in _fail" in attributes["exception.stacktrace"]
        assert "ada@example.com" not in attributes["exception.stacktrace"]


def test_structlog_exception_still_reaches_other_handlers(logged: Logged) -> None:
    """An application handler sees a readable message and the exc_info of a structlog call."""
    seen: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = seen.append  # type: ignore[method-assign]
    logging.getLogger("pay").addHandler(handler)
    try:
        try:
            _fail()
        except ValueError:
            get_logger("pay").exception("payment failed", order_id=3)
    finally:
        logging.getLogger("pay").removeHandler(handler)
    (record,) = seen
    assert record.getMessage() == "payment failed order_id=3"
    assert record.exc_info is not None
    assert record.exc_info[0] is ValueError


def test_stdlib_dict_message_is_a_message(logged: Logged) -> None:
    """A dict passed to stdlib logging is the message text, not mistaken for structlog's."""
    logging.getLogger("odd").info({"sku": 1})
    line = logged.line("{'sku': 1}")
    assert (line["logger"], line["service"]) == ("odd", "shop")


def test_forked_child_gets_new_locks(logged: Logged) -> None:
    """After fork the child replaces the locks a parent thread may have held, and logs on."""
    before = logs_module._lock
    logs_module._after_fork_in_child()
    assert logs_module._lock is not before
    get_logger("child").info("after fork")
    assert logged.line("after fork")["logger"] == "child"


def test_json_is_one_line_per_record_whatever_the_values(logged: Logged) -> None:
    """Newlines, CR, U+2028 and control characters in values never split a JSON line."""
    get_logger("x").info("multi\nline", value="a\r\nb\u2028c\x85d\x1b", nested={"k": "v\nw"})
    logging.getLogger("x").warning("stdlib\nforged %s", "\n{}")
    raw = logged.stream.getvalue()
    assert raw.count("\n") == 2
    assert len(raw.splitlines()) == 2, "str.splitlines() splits on U+2028 and U+0085 too"
    first = logged.line("multi\nline")
    assert first["value"] == "a\r\nb\u2028c\x85d\x1b"
    assert first["nested"] == {"k": "v\nw"}
    assert logged.line("stdlib\nforged \n{}")["level"] == "warning"


def test_console_renderer_escapes_newlines_and_control_characters(logged: Logged) -> None:
    """The console renderer writes \\n for a newline and escapes control characters."""
    stream = io.StringIO()
    configure_logging(stream=stream, renderer="console")
    get_logger("x").info("first\nlevel=critical forged", detail="a\r\nb\x1b[2J\x00", sep="x\u2028y")
    logging.getLogger("x").warning("second\nline")
    out = stream.getvalue()
    assert out.count("\n") == 2
    assert "first\\nlevel=critical forged" in out
    assert "second\\nline" in out
    assert "detail=a\\r\\nb\\x1b[2J\\x00 " in out
    assert "sep=x\\u2028y" in out
    for raw in ("\r", "\x1b", "\x00", "\u2028"):
        assert raw not in out, "no raw control character, and no colors off a terminal"


def test_console_traceback_escapes_the_message(logged: Logged) -> None:
    """A console traceback spans lines, but an exception message cannot forge one."""
    stream = io.StringIO()
    configure_logging(stream=stream, renderer="console")
    try:
        raise RuntimeError("bad\nFAKE LINE")
    except RuntimeError:
        logging.getLogger("x").exception("failed")
    lines = stream.getvalue().splitlines()
    assert lines[1] == "Traceback (most recent call last):"
    assert lines[-1] == "RuntimeError: bad\\nFAKE LINE"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_auto_renderer_console_with_colors_on_a_terminal_json_otherwise(
    logged: Logged, monkeypatch: pytest.MonkeyPatch
) -> None:
    """renderer=None (auto): colored console lines on a TTY, JSON on anything else."""
    monkeypatch.delenv("NO_COLOR", raising=False)
    terminal = _Terminal()
    configure_logging(stream=terminal)
    get_logger("x").info("to a terminal")
    assert "\x1b[" in terminal.getvalue()
    assert "to a terminal" in terminal.getvalue()
    pipe = io.StringIO()
    configure_logging(stream=pipe)
    get_logger("x").info("to a pipe")
    assert json.loads(pipe.getvalue())["event"] == "to a pipe"


def test_levels_per_destination(logged: Logged) -> None:
    """console_level and otlp_level filter each destination; level is their default."""
    configure_logging(stream=logged.stream, renderer="json", console_level="WARNING", otlp_level=20)
    log = get_logger("lv")
    log.debug("debug line")
    log.info("info line")
    logging.getLogger("lv").warning("warning line")
    assert [line["event"] for line in logged.lines()] == ["warning line"]
    assert sorted(r.body for r in logged.capture.logs()) == ["info line", "warning line"]


def test_sampling_is_deterministic_with_an_injected_rng(logged: Logged) -> None:
    """sample_rates keeps the records whose draw is below the rate, and counts the others."""
    configure_logging(
        stream=logged.stream,
        renderer="json",
        level="DEBUG",
        sample_rates={"debug": 0.25, "info": 1.0},
        rng=random.Random(7),
    )
    replay = random.Random(7)
    kept = sum(replay.random() < 0.25 for _ in range(200))
    for index in range(100):
        get_logger("sampled").debug("structlog debug", index=index)
        logging.getLogger("sampled").debug("stdlib debug %d", index)
    for _ in range(5):
        get_logger("sampled").info("info is kept")
    levels = [line["level"] for line in logged.lines()]
    assert (levels.count("debug"), levels.count("info")) == (kept, 5)
    assert 0 < kept < 200
    assert sum(r.severity_text == "DEBUG" for r in logged.capture.logs()) == kept
    (dropped,) = logged.capture.metric("appvitals.logs.dropped")
    assert (dropped.attributes, dropped.value) == ({"reason": "sampled"}, 200 - kept)


def test_duplicates_suppressed_then_summarised(logged: Logged) -> None:
    """Repeats within the window are dropped and counted; the next record after it summarises."""
    now = [1000.0]
    configure_logging(stream=logged.stream, renderer="json", dedupe_window=10, clock=lambda: now[0])
    for host in ("db1", "db2", "db1", "db3", "db1"):
        logging.getLogger("db").warning("connection lost to %s", host)
    get_logger("cache").info("cache miss", key="a")
    get_logger("cache").info("cache miss", key="b")
    get_logger("cache").warning("cache miss", key="c")  # another level: another message
    now[0] += 5
    logging.getLogger("db").warning("connection lost to %s", "db9")  # still in the window
    now[0] += 6
    with appvitals.bind(correlation_id="cid-after"), appvitals.span("after"):
        get_logger("cache").info("after the window")
    events = [line["event"] for line in logged.lines()]
    assert events == [
        "connection lost to db1",
        "cache miss",
        "cache miss",
        "connection lost to %s (suppressed 5 repeats)",
        "cache miss (suppressed 1 repeats)",
        "after the window",
    ]
    summary = logged.line("connection lost to %s (suppressed 5 repeats)")
    assert (summary["suppressed"], summary["level"], summary["logger"]) == (5, "warning", "db")
    assert "trace_id" not in summary, "a summary belongs to no request"
    assert "correlation_id" not in summary
    assert logged.line("after the window")["correlation_id"] == "cid-after"
    record = logged.record("connection lost to %s (suppressed 5 repeats)")
    assert (record.attributes["suppressed"], record.trace_id) == (5, None)
    (dropped,) = logged.capture.metric("appvitals.logs.dropped")
    assert (dropped.attributes, dropped.value) == ({"reason": "duplicate"}, 6)


def test_pending_summary_written_at_shutdown() -> None:
    """Repeats still in their window at shutdown() are summarised, not lost."""
    stream = io.StringIO()
    configure_logging(stream=stream, renderer="json", dedupe_window=60)
    for _ in range(3):
        logging.getLogger("jobs").warning("queue full")
    appvitals.shutdown()
    events = [json.loads(line)["event"] for line in stream.getvalue().splitlines()]
    assert events == ["queue full", "queue full (suppressed 2 repeats)"]


def test_reconfigure_keeps_one_handler_and_the_applications_own(logged: Logged) -> None:
    """configure_logging() twice: one appvitals line per record; the app's handler stays."""
    app_stream = io.StringIO()
    app_handler = logging.StreamHandler(app_stream)
    logging.getLogger().addHandler(app_handler)
    try:
        configure_logging(stream=logged.stream, renderer="json")
        configure_logging(stream=logged.stream, renderer="json")
        get_logger("shop").info("order placed", order_id=7)
        consoles = [h for h in logging.getLogger().handlers if isinstance(h, ConsoleHandler)]
        assert len(consoles) == 1
        assert [line["event"] for line in logged.lines()] == ["order placed"]
        assert app_stream.getvalue() == "order placed order_id=7\n"
        assert len(logged.capture.logs()) == 1
    finally:
        logging.getLogger().removeHandler(app_handler)


def test_configure_after_configure_logging_keeps_its_arguments() -> None:
    """configure() after configure_logging() keeps the stream and renderer chosen there."""
    stream = io.StringIO()
    configure_logging(stream=stream, renderer="json")
    get_logger("early").info("before configure")
    appvitals.configure(exporter="none", service_name="late")
    get_logger("early").info("after configure")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["event"], line["service"]) for line in lines] == [
        ("before configure", "unknown_service"),
        ("after configure", "late"),
    ]
    consoles = [h for h in logging.getLogger().handlers if isinstance(h, ConsoleHandler)]
    assert len(consoles) == 1


def test_shutdown_restores_root_logger_and_structlog() -> None:
    """shutdown() removes appvitals' handlers, restores the root level and structlog's config."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    own_processors = [structlog.processors.JSONRenderer()]
    structlog.configure(processors=own_processors)
    try:
        # Explicitly, since pytest's own root handlers make configure() keep the root level.
        configure_logging(level="DEBUG")
        appvitals.configure(exporter="none", log_level="DEBUG")
        assert any(isinstance(h, ConsoleHandler) for h in root.handlers)
        assert root.level == logging.DEBUG
        assert structlog.get_config()["processors"] is not own_processors
        appvitals.shutdown()
        assert (root.handlers, root.level) == (handlers, level)
        assert structlog.get_config()["processors"] is own_processors
    finally:
        structlog.reset_defaults()
    appvitals.configure(exporter="none")
    appvitals.shutdown()
    assert not structlog.is_configured()


def test_configure_respects_an_application_that_configured_logging() -> None:
    """With the app's own root handlers, configure() adds no console output, keeps the level."""
    root = logging.getLogger()
    level = root.level
    appvitals.configure(exporter="none", log_level="DEBUG")
    consoles = [h for h in root.handlers if isinstance(h, ConsoleHandler)]
    assert all(h.level > logging.CRITICAL for h in consoles), "no second console output"
    assert root.level == level


def test_structlog_false_leaves_logging_alone_and_still_exports() -> None:
    """configure(structlog=False): no console handler, structlog untouched, records exported."""
    with Capture(structlog=False) as capture:
        assert not any(isinstance(h, ConsoleHandler) for h in logging.getLogger().handlers)
        assert not structlog.is_configured()
        # An application wiring structlog to logging itself: its event dicts become records.
        structlog.configure(
            processors=[structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
            logger_factory=structlog.stdlib.LoggerFactory(),
            wrapper_class=structlog.stdlib.BoundLogger,
        )
        try:
            logging.getLogger().setLevel(logging.INFO)
            structlog.stdlib.get_logger("own").info("own structlog", password="hunter2", n=1)
            logging.getLogger("own").info("plain %s", "stdlib")
        finally:
            structlog.reset_defaults()
        record = next(r for r in capture.logs() if r.body == "own structlog")
        assert (record.attributes["n"], record.attributes["password"]) == (1, "***")
        assert any(r.body == "plain stdlib" for r in capture.logs())


def test_without_structlog_configure_warns_and_leaves_logging_alone(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """structlog not installed: one clear warning, no pipeline, telemetry still configured."""
    monkeypatch.setitem(sys.modules, "structlog", None)  # makes `import structlog` fail
    with caplog.at_level(logging.WARNING, logger="appvitals"):
        appvitals.configure(exporter="none")
    assert appvitals.is_configured()
    assert "needs structlog" in caplog.text
    assert not any(isinstance(h, ConsoleHandler) for h in logging.getLogger().handlers)


def test_environment_settings_apply_through_configure(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """APPVITALS_LOG_* variables choose the renderer, level, masking and sampling."""
    # An application that did not configure logging (pytest's own root handlers removed).
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    monkeypatch.setenv("APPVITALS_LOG_RENDERER", "console")
    monkeypatch.setenv("APPVITALS_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("APPVITALS_LOG_MASKING", "false")
    monkeypatch.setenv("APPVITALS_LOG_SAMPLE_DEBUG", "0")
    appvitals.configure(exporter="none")
    get_logger("env").debug("sampled away")
    get_logger("env").info("shown", password="visible")
    err = capsys.readouterr().err
    assert "sampled away" not in err
    assert "shown" in err
    assert "password=visible" in err
    assert not err.lstrip().startswith("{")


def test_structlog_env_false_skips_the_pipeline(monkeypatch: pytest.MonkeyPatch) -> None:
    """APPVITALS_STRUCTLOG=false: configure() installs no console handler."""
    monkeypatch.setenv("APPVITALS_STRUCTLOG", "false")
    config = appvitals.configure(exporter="none")
    assert config.structlog is False
    assert not any(isinstance(h, ConsoleHandler) for h in logging.getLogger().handlers)


@pytest.mark.parametrize(
    ("variable", "value", "field", "default"),
    [
        ("APPVITALS_LOG_RENDERER", "xml", "log_renderer", "auto"),
        ("APPVITALS_LOG_MASKING", "maybe", "log_masking", True),
        ("APPVITALS_LOG_SAMPLE_DEBUG", "1.5", "log_sample_debug", 1.0),
        ("APPVITALS_LOG_SAMPLE_INFO", "half", "log_sample_info", 1.0),
        ("APPVITALS_LOG_DEDUPE_WINDOW", "-1", "log_dedupe_window", 0.0),
        ("APPVITALS_STRUCTLOG", "perhaps", "structlog", True),
    ],
)
def test_invalid_environment_warns_once_and_falls_back(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    variable: str,
    value: str,
    field: str,
    default: object,
) -> None:
    """A value that cannot be parsed gives one warning naming the variable; the default applies."""
    monkeypatch.setenv(variable, value)
    with caplog.at_level(logging.WARNING, logger="appvitals"):
        config = appvitals.configure(exporter="none")
    warnings = [r for r in caplog.records if variable in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert getattr(config, field) == default


def test_invalid_arguments_warn_and_are_ignored(
    logged: Logged, caplog: pytest.LogCaptureFixture
) -> None:
    """configure_logging() never raises: a bad argument is named in a warning and ignored."""
    with caplog.at_level(logging.WARNING, logger="appvitals"):
        configure_logging(
            stream=logged.stream,
            renderer="xml",
            level="LOUD",
            sample_rates={"debug": 2},
            dedupe_window=-1,
        )
    messages = " ".join(r.getMessage() for r in caplog.records)
    for name in ("renderer='xml'", "level='LOUD'", "sample_rates=", "dedupe_window=-1"):
        assert name in messages
    get_logger("x").info("still json")
    assert logged.line("still json")["level"] == "info"


def test_otlp_end_to_end_to_a_real_receiver(otlp_receiver: OTLPReceiver) -> None:
    """Records reach a real OTLP/HTTP receiver once, masked, linked to their span."""
    appvitals.configure(
        service_name="e2e-logs",
        exporter="otlp",
        otlp_endpoint=otlp_receiver.http_endpoint,
        sampler_ratio=1.0,
        metrics=False,
    )
    configure_logging(stream=io.StringIO(), renderer="json")
    with appvitals.bind(correlation_id="cid-e2e"), appvitals.span("e2e.logs") as span:
        get_logger("e2e").info("paid by ada@example.com", amount=12)
        logging.getLogger("e2e").warning("stdlib inside", extra={"ignored": True})
        trace_id = format(span.get_span_context().trace_id, "032x")
    assert appvitals.shutdown(timeout=10)
    records = otlp_receiver.wait_for_logs(lambda r: r.scope == "e2e", count=2)
    assert sorted(r.body for r in records) == ["paid by ***", "stdlib inside"]
    for record in records:
        assert record.trace_id == trace_id
        assert record.attributes["correlation_id"] == "cid-e2e"
        assert record.resource["service.name"] == "e2e-logs"
    (paid,) = [r for r in records if r.body == "paid by ***"]
    assert (paid.attributes["amount"], paid.severity_text) == (12, "INFO")
    assert paid.attributes["code.function.name"] == "test_otlp_end_to_end_to_a_real_receiver"


def _epoch(timestamp: str) -> float:
    return calendar.timegm(time.strptime(timestamp[:19], "%Y-%m-%dT%H:%M:%S"))


def test_httpx_request_lines_are_quieted_unless_the_app_chose(logged: Logged) -> None:
    """httpx's INFO line per request is raised to WARNING; an explicit level is kept.

    appvitals.http records every call as a span and metrics; the line would cost a console
    write and an exported record per call (issue 9's /call benchmark).
    """
    httpx_logger = logging.getLogger("httpx")
    assert httpx_logger.level == logging.WARNING  # configured by the fixture
    assert logging.getLogger("httpx2").level == logging.WARNING  # its successor's name
    httpx_logger.info('HTTP Request: GET http://shop.internal/ "HTTP/1.1 200 OK"')
    httpx_logger.warning("retrying")
    assert [line["event"] for line in logged.lines()] == ["retrying"]
    appvitals.shutdown()
    assert httpx_logger.level == logging.NOTSET
    httpx_logger.setLevel(logging.INFO)
    try:
        appvitals.configure(exporter="none")
        assert httpx_logger.level == logging.INFO
        appvitals.shutdown()
        assert httpx_logger.level == logging.INFO
    finally:
        httpx_logger.setLevel(logging.NOTSET)
