"""Structured logging: structlog and stdlib ``logging`` in one pipeline.

``configure_logging()`` (run by :func:`appvitals.configure` unless ``structlog=False``)
routes structlog loggers through stdlib ``logging`` and puts one handler on the root logger,
so both kinds of call produce the same line: JSON (or a console rendering on a terminal) with
``timestamp``, ``level``, ``logger``, ``event``, ``service``, ``environment``,
``correlation_id``, ``trace_id``, ``span_id`` and every bound field, masked, with exceptions
as structured fields. The same records go to OpenTelemetry logs exactly once, through the
bridge handler ``configure()`` installs. See ``docs/logging.md``.

Examples:
    >>> import io, json, logging
    >>> import appvitals
    >>> from appvitals import logs
    >>> stream = io.StringIO()
    >>> logs.configure_logging(renderer="json", stream=stream)
    >>> logs.get_logger("shop").info("order placed", order_id=7)
    >>> logging.getLogger("shop").warning("stock low: %d left", 2)
    >>> [json.loads(line)["event"] for line in stream.getvalue().splitlines()]
    ['order placed', 'stock low: 2 left']
    >>> appvitals.shutdown()
    True
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Optional, TextIO, Union

if TYPE_CHECKING:
    import structlog.stdlib

    from appvitals._config import Config
    from appvitals._logs_console import ConsoleHandler
    from appvitals._logs_pipeline import Pipeline, RandomSource

__all__ = ["configure_logging", "get_logger"]

_logger = logging.getLogger("appvitals")
_RENDERERS = ("json", "console", "auto")
_SAMPLE_KEYS = ("debug", "info", "warning", "error", "critical")
_lock = threading.RLock()
_fork_hook_registered = False


@dataclasses.dataclass
class _Installed:
    arguments: dict[str, Any]  # those given to configure_logging(), kept by configure()
    pipeline: Pipeline
    handler: ConsoleHandler
    root_level: int
    structlog_config: Optional[dict[str, Any]]


_installed: Optional[_Installed] = None
_SILENT = logging.CRITICAL + 10  # a console level no record reaches


def get_logger(name: Optional[str] = None, **initial_values: Any) -> structlog.stdlib.BoundLogger:
    """A structlog logger that goes through appvitals' pipeline once logging is configured.

    The logger is a lazy proxy, as :func:`structlog.get_logger` returns: creating it at
    module level, before :func:`configure_logging` or :func:`appvitals.configure` ran, is
    safe; each call uses the configuration in effect when it is made.

    Args:
        name: the stdlib logger name (the ``logger`` field and the OpenTelemetry scope);
            by default the calling module's ``__name__``.
        **initial_values: fields bound to every line of this logger.

    Returns:
        A :class:`structlog.stdlib.BoundLogger` (``log.info("event", key=value)``,
        ``log.exception(...)``, ``log.bind(...)``).

    Examples:
        >>> import io, json
        >>> import appvitals
        >>> from appvitals.logs import configure_logging, get_logger
        >>> log = get_logger("billing", component="invoices")
        >>> stream = io.StringIO()
        >>> configure_logging(renderer="json", stream=stream)
        >>> log.info("invoice sent", invoice_id="inv-1")
        >>> line = json.loads(stream.getvalue())
        >>> line["logger"], line["component"], line["invoice_id"]
        ('billing', 'invoices', 'inv-1')
        >>> appvitals.shutdown()
        True
    """
    import structlog

    if name is None:
        # The caller's module, as logging.getLogger(__name__) would name it.
        name = str(sys._getframe(1).f_globals.get("__name__", "root"))
    return structlog.stdlib.get_logger(name, **initial_values)


def configure_logging(
    *,
    renderer: Optional[str] = None,
    level: Union[str, int, None] = None,
    masking: Optional[bool] = None,
    stream: Optional[TextIO] = None,
    sample_rates: Optional[Mapping[str, float]] = None,
    dedupe_window: Optional[float] = None,
    otlp_level: Union[str, int, None] = None,
    console_level: Union[str, int, None] = None,
    rng: Optional[RandomSource] = None,
    clock: Optional[Callable[[], float]] = None,
) -> None:
    """Route structlog and stdlib ``logging`` through one pipeline (JSON or console lines).

    :func:`appvitals.configure` calls this with the settings of the environment; call it
    yourself to change them (after ``configure()``, or on its own for logging without
    telemetry). Each call replaces the previous appvitals logging configuration — never a
    second line per record — and a later ``configure()`` keeps its arguments;
    :func:`appvitals.shutdown` undoes it. The application's own
    handlers on the root logger are kept. ``None`` means "not given": the environment
    (``docs/configuration.md``) or the default applies; an argument that cannot be used is
    logged as a warning and ignored.

    Args:
        renderer: ``"json"`` (one object per line), ``"console"`` (aligned, colored on a
            terminal) or ``"auto"``: console when the stream is a terminal, JSON otherwise
            (``APPVITALS_LOG_RENDERER``, default ``auto``).
        level: the lowest level logged, as a name or a number (``APPVITALS_LOG_LEVEL``,
            default ``INFO``); the default of ``otlp_level`` and ``console_level``.
        masking: mask secrets and personal data in every field (``APPVITALS_LOG_MASKING``,
            default on), with :mod:`appvitals.masking`.
        stream: where lines are written (default: the current ``sys.stderr``).
        sample_rates: share of records kept per level, e.g. ``{"debug": 0.1}``
            (``APPVITALS_LOG_SAMPLE_DEBUG``, ``APPVITALS_LOG_SAMPLE_INFO``; default 1.0).
        dedupe_window: seconds during which repeats of the same logger, level and event
            template are suppressed, then summarised in one line (``APPVITALS_LOG_DEDUPE_WINDOW``;
            default 0, off).
        otlp_level: the lowest level exported as OpenTelemetry logs (default ``level``).
        console_level: the lowest level written to ``stream`` (default ``level``).
        rng: the random source of sampling decisions (tests inject a seeded one).
        clock: monotonic seconds for the dedupe windows (tests inject a fake one).

    Examples:
        >>> import io
        >>> import appvitals
        >>> from appvitals.logs import configure_logging, get_logger
        >>> stream = io.StringIO()
        >>> configure_logging(renderer="console", stream=stream, level="DEBUG")
        >>> get_logger("shop").debug("line\\nbreak", user_id="u-1")
        >>> "line\\\\nbreak" in stream.getvalue(), stream.getvalue().count("\\n")
        (True, 1)
        >>> appvitals.shutdown()
        True
    """
    from appvitals._setup import get_config

    config = get_config()
    if config is None:
        from appvitals._setup import _resolve_leniently

        config = _resolve_leniently({})
    given = {
        "renderer": renderer,
        "level": level,
        "masking": masking,
        "stream": stream,
        "sample_rates": sample_rates,
        "dedupe_window": dedupe_window,
        "otlp_level": otlp_level,
        "console_level": console_level,
        "rng": rng,
        "clock": clock,
    }
    _apply(config, {key: value for key, value in given.items() if value is not None})


def _configure_logging(config: Config) -> None:
    """What ``configure()`` calls: the settings of ``config`` under the arguments of an
    earlier ``configure_logging()`` call, which stay in effect (its stream, its renderer)."""
    from appvitals._logbridge import OTelLogHandler

    with _lock:
        previous = _installed
        arguments = dict(previous.arguments) if previous is not None else {}
        foreign = [
            handler
            for handler in logging.getLogger().handlers
            if not isinstance(handler, OTelLogHandler)
            and type(handler).__name__ != "ConsoleHandler"
        ]
        if foreign and previous is None:
            # The application configured logging itself: its handlers keep writing and its
            # root level stays; appvitals adds fields, masking and export, but no second
            # console output. An explicit configure_logging() call overrides this.
            arguments = {"console_level": _SILENT, "_keep_root_level": True}
        _apply(config, arguments)


def _apply(config: Config, arguments: dict[str, Any]) -> None:  # noqa: PLR0915 - one pass
    """Install the pipeline: ``arguments`` (those given) over the settings of ``config``."""
    global _installed, _fork_hook_registered  # noqa: PLW0603 - logging is process-wide
    try:
        import structlog
    except ImportError:
        _logger.warning(
            "appvitals: structured logging needs structlog (pip install structlog); logging is "
            "left as it is (APPVITALS_STRUCTLOG=false silences this)"
        )
        return

    from appvitals import _logs_pipeline as pipelines
    from appvitals._logbridge import OTelLogHandler
    from appvitals._logs_console import ConsoleHandler, PipelineFormatter, renderer_processors

    given = arguments.get
    base_level = _level("level", given("level"), _level_number(config.log_level))
    levels = (
        _level("console_level", given("console_level"), base_level),
        _level("otlp_level", given("otlp_level"), base_level),
    )
    stream: Optional[TextIO] = given("stream")
    tty = _isatty(sys.stderr if stream is None else stream)
    chosen = (
        _checked("renderer", given("renderer"), lambda v: v in _RENDERERS, " | ".join(_RENDERERS))
        or config.log_renderer
    )
    if chosen == "auto":
        chosen = "console" if tty else "json"
    rates = _checked("sample_rates", given("sample_rates"), _valid_rates, "{level name: 0..1}")
    window = _checked("dedupe_window", given("dedupe_window"), _valid_window, "seconds >= 0")
    use_masking = _checked(
        "masking", given("masking"), lambda v: isinstance(v, bool), "True or False"
    )
    if use_masking is None:
        use_masking = config.log_masking

    noise = pipelines.NoiseControl(
        {key.lower(): float(rate) for key, rate in rates.items()}
        if rates is not None
        else {"debug": config.log_sample_debug, "info": config.log_sample_info},
        float(window) if window is not None else config.log_dedupe_window,
        given("rng") or pipelines.default_rng(),
        given("clock") or pipelines.default_clock,
    )
    masker: Optional[Callable[[], Any]] = None
    if use_masking:
        from appvitals import masking as masking_module

        masker = masking_module.default_masker
    shared, summary_chain = _shared_processors(config, masker)
    pipeline = pipelines.Pipeline(shared, summary_chain, noise, masker)
    formatter = PipelineFormatter(
        pipeline,
        renderer_processors(str(chosen), colors=tty and "NO_COLOR" not in os.environ),
        shared,
    )
    console = ConsoleHandler(pipeline, formatter, stream)
    console.setLevel(levels[0])

    with _lock:
        root = logging.getLogger()
        previous = _installed
        if previous is not None:
            _retire(previous)
        for handler in list(root.handlers):
            # Ours from an earlier configuration that was not undone: never two lines.
            if isinstance(handler, ConsoleHandler):
                root.removeHandler(handler)
        pipeline.register(console)
        for handler in root.handlers:
            if isinstance(handler, OTelLogHandler):
                handler.setLevel(levels[1])
                pipeline.register(handler)
        root.addHandler(console)
        _installed = _Installed(
            arguments=arguments,
            pipeline=pipeline,
            handler=console,
            root_level=previous.root_level if previous is not None else root.level,
            structlog_config=previous.structlog_config
            if previous is not None
            else (structlog.get_config() if structlog.is_configured() else None),
        )
        if not given("_keep_root_level"):
            root.setLevel(min(levels))
        structlog.configure(
            processors=_structlog_processors(pipeline, shared),
            logger_factory=structlog.stdlib.LoggerFactory(),
            wrapper_class=structlog.stdlib.BoundLogger,
            context_class=dict,
            # Cached loggers would keep this configuration's processors after shutdown().
            cache_logger_on_first_use=False,
        )
        pipelines.activate(pipeline)
        if not _fork_hook_registered and hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_after_fork_in_child)
            _fork_hook_registered = True


def _shared_processors(
    config: Config, masker: Optional[Callable[[], Any]]
) -> tuple[list[Any], list[Any]]:
    """The processors both structlog calls and stdlib records go through, in order; and
    those of a summary line, which belongs to no request (no context, no trace)."""
    import structlog

    from appvitals import _logs_fields as fields

    service = fields.service_fields(config.service_name, config.environment)
    masks = [fields.masking_processor(masker)] if masker is not None else []
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        fields.add_bound_fields,
        fields.add_level,
        fields.add_logger_name,
        fields.add_timestamp,
        service,
        fields.add_trace_context,
        fields.add_exception,
        *masks,
        fields.reorder,
    ]
    return shared, [service, *masks]


def _structlog_processors(pipeline: Pipeline, shared: list[Any]) -> list[Any]:
    import structlog
    from structlog.processors import CallsiteParameter

    from appvitals._logs_console import wrap_for_formatter
    from appvitals._logs_fields import move_callsite

    def sample(_logger: Any, method: str, event_dict: Any) -> Any:
        if pipeline.sample_structlog(method):
            raise structlog.DropEvent
        return event_dict

    processors: list[Any] = [structlog.stdlib.filter_by_level]
    if pipeline.noise is not None and pipeline.noise.rates:
        # Before any work: a sampled-out call costs a level check and one random draw.
        processors.append(sample)
    processors += [
        structlog.stdlib.PositionalArgumentsFormatter(),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.CallsiteParameterAdder(
            {CallsiteParameter.PATHNAME, CallsiteParameter.FUNC_NAME, CallsiteParameter.LINENO}
        ),
        move_callsite,
        *shared,
        wrap_for_formatter,
    ]
    return processors


def _after_fork_in_child() -> None:
    """New locks in a forked child (gunicorn workers): a parent thread may have held one."""
    global _lock  # noqa: PLW0603 - replacing the lock is the point
    _lock = threading.RLock()
    installed = _installed
    if installed is not None:
        installed.pipeline.at_fork_reinit()


def _retire(installed: _Installed) -> None:
    """Write the pending summaries of a configuration and take its handler off the root."""
    installed.pipeline.close()
    for handler in installed.pipeline.handlers():
        emit_pending = getattr(handler, "emit_pending", None)
        if emit_pending is not None:
            emit_pending(installed.pipeline)
    logging.getLogger().removeHandler(installed.handler)
    installed.handler.close()


def _unconfigure_logging() -> None:
    """Undo :func:`configure_logging`: our handler off, root level and structlog restored."""
    global _installed
    with _lock:
        installed, _installed = _installed, None
        if installed is None:
            return
        import structlog

        from appvitals import _logs_pipeline

        try:
            _retire(installed)
        finally:
            _logs_pipeline.activate(None)
            logging.getLogger().setLevel(installed.root_level)
            if installed.structlog_config is not None:
                structlog.configure(**installed.structlog_config)
            else:
                structlog.reset_defaults()


# --- argument checks (warn and ignore, as configure() does) ---------------------------------


def _warn_ignored(name: str, value: Any, expected: str) -> None:
    _logger.warning(
        "appvitals: configure_logging(%s=%r): expected %s; ignoring it", name, value, expected
    )


def _checked(name: str, value: Any, check: Callable[[Any], bool], expected: str) -> Any:
    if value is None:
        return None
    try:
        valid = check(value)
    except Exception:
        valid = False
    if not valid:
        _warn_ignored(name, value, expected)
        return None
    return value


def _level_number(value: Union[str, int]) -> int:
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int):
        if value < 0:
            raise ValueError(value)
        return value
    number = logging.getLevelName(str(value).strip().upper())
    if not isinstance(number, int):
        raise ValueError(value)
    return number


def _level(name: str, value: Union[str, int, None], default: int) -> int:
    if value is None:
        return default
    try:
        return _level_number(value)
    except (TypeError, ValueError):
        _warn_ignored(name, value, "a level name or number")
        return default


def _valid_rates(rates: Any) -> bool:
    return isinstance(rates, Mapping) and all(
        isinstance(key, str)
        and key.lower() in _SAMPLE_KEYS
        and isinstance(rate, (int, float))
        and not isinstance(rate, bool)
        and 0.0 <= rate <= 1.0
        for key, rate in rates.items()
    )


def _valid_window(window: Any) -> bool:
    return (
        isinstance(window, (int, float))
        and not isinstance(window, bool)
        and 0 <= window < float("inf")
    )


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except Exception:
        return False
