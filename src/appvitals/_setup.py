"""configure() and shutdown(): providers, exporters, resource, sampling, fork and exit.

Nothing here runs at import time. ``configure()`` builds the tracer, meter and logger
providers once per process and installs them as OpenTelemetry's global providers — unless
the application already installed its own, which appvitals then uses as it is.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import importlib
import logging
import math
import os
import platform
import socket
import sys
import threading
import time
from typing import Any, Optional

from opentelemetry import _logs, metrics, trace
from opentelemetry.sdk.resources import Resource

from appvitals import _durations, _inline, _safety, _spans
from appvitals._config import Config, ConfigurationError, resolve
from appvitals._exporters import build_exporter
from appvitals._version import __version__

_logger = logging.getLogger("appvitals")
_lock = threading.RLock()
_fork_hook_registered = False
_atexit_registered = False


@dataclasses.dataclass
class _State:
    config: Config
    tracer_provider: Any = None
    meter_provider: Any = None
    logger_provider: Any = None
    log_handler: Optional[logging.Handler] = None
    root_level: Optional[int] = None
    quieted: tuple[str, ...] = ()
    owned: tuple[str, ...] = ()
    extras: Optional[Extras] = None
    # The OTLP metric export when it shares the Prometheus reader (not on the provider).
    shared_export: Any = None
    # export_mode="inline"/"auto": the exports the application's requests (or, in auto
    # mode once the process has threads, one export thread) run.
    schedule: Optional[_inline.Schedule] = None


@dataclasses.dataclass(frozen=True)
class Extras:
    """Processors and readers added beside the configured exporters (``appvitals.testing``)."""

    span_processors: tuple[Any, ...] = ()
    metric_readers: tuple[Any, ...] = ()
    log_processors: tuple[Any, ...] = ()


_state: Optional[_State] = None


def configure(
    *,
    service_name: Optional[str] = None,
    service_version: Optional[str] = None,
    service_namespace: Optional[str] = None,
    environment: Optional[str] = None,
    resource_attributes: Optional[dict[str, str]] = None,
    exporter: Optional[str] = None,
    export_mode: Optional[str] = None,
    jsonl_dir: Optional[str] = None,
    otlp_endpoint: Optional[str] = None,
    otlp_protocol: Optional[str] = None,
    otlp_headers: Optional[dict[str, str]] = None,
    otlp_timeout: Optional[float] = None,
    sampler_ratio: Optional[float] = None,
    traces: Optional[bool] = None,
    metrics: Optional[bool] = None,
    logs: Optional[bool] = None,
    prometheus: Optional[bool] = None,
    log_level: Optional[str] = None,
    structlog: Optional[bool] = None,
    metric_export_interval: Optional[float] = None,
    metric_export_timeout: Optional[float] = None,
    shutdown_timeout: Optional[float] = None,
    cardinality_limit: Optional[int] = None,
    disabled: Optional[bool] = None,
) -> Config:
    """Set up OpenTelemetry traces, metrics and logs for this process.

    Every argument is optional: ``None`` means "not given", so the environment
    (``OTEL_*`` and ``APPVITALS_*`` variables, see ``docs/configuration.md``) or the default
    applies. The first call wins; later calls return the active configuration unchanged
    (call :func:`shutdown` first to start over). An argument appvitals cannot use is
    logged as a warning and ignored — ``configure()`` never raises into the application.

    Args:
        service_name: ``service.name`` of every signal (``OTEL_SERVICE_NAME``).
        service_version: ``service.version`` (``APPVITALS_SERVICE_VERSION``).
        service_namespace: ``service.namespace`` (``APPVITALS_SERVICE_NAMESPACE``).
        environment: ``deployment.environment.name`` (``APPVITALS_ENVIRONMENT``).
        resource_attributes: extra resource attributes, merged over
            ``OTEL_RESOURCE_ATTRIBUTES``.
        exporter: ``"otlp"``, ``"console"``, ``"jsonl"`` or ``"none"``
            (``APPVITALS_EXPORTER``; default ``jsonl``, or ``otlp`` when an
            ``OTEL_EXPORTER_OTLP_*ENDPOINT`` is set).
        export_mode: ``"auto"`` (the default): no thread while the process has none and
            every destination is on this machine — the application's requests run the
            exports that are due — and one export thread once the process has other
            threads; ``"inline"``: never a thread; ``"background"``: the SDK's export
            threads (``APPVITALS_EXPORT_MODE``; see ``docs/configuration.md``).
        jsonl_dir: folder of the ``jsonl`` files (``APPVITALS_JSONL_DIR``,
            default ``./appvitals-data``).
        otlp_endpoint: base URL of the OTLP receiver (``OTEL_EXPORTER_OTLP_ENDPOINT``).
        otlp_protocol: ``"grpc"`` or ``"http/protobuf"`` (``OTEL_EXPORTER_OTLP_PROTOCOL``).
        otlp_headers: headers sent with every export (``OTEL_EXPORTER_OTLP_HEADERS``).
        otlp_timeout: seconds one export may take (``OTEL_EXPORTER_OTLP_TIMEOUT``, in ms).
        sampler_ratio: share of traces sampled, parent-based (default 0.1;
            ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``).
        traces: export traces (``APPVITALS_TRACES``).
        metrics: export metrics (``APPVITALS_METRICS``).
        logs: export ``logging`` records as OpenTelemetry logs (``APPVITALS_LOGS``).
        prometheus: keep the metrics readable in Prometheus format for ``/metrics``
            (``APPVITALS_PROMETHEUS``).
        log_level: lowest level logged and exported as OpenTelemetry logs
            (``APPVITALS_LOG_LEVEL``).
        structlog: route structlog and stdlib ``logging`` through appvitals' pipeline of
            JSON/console lines (:func:`appvitals.logs.configure_logging`;
            ``APPVITALS_STRUCTLOG``, default on). ``False`` leaves the application's logging
            as it is and only exports its records.
        metric_export_interval: seconds between metric exports
            (``OTEL_METRIC_EXPORT_INTERVAL``, in ms).
        metric_export_timeout: seconds one metric export may take
            (``OTEL_METRIC_EXPORT_TIMEOUT``, in ms).
        shutdown_timeout: seconds :func:`shutdown` and the exit hook may take to flush
            (``APPVITALS_SHUTDOWN_TIMEOUT``).
        cardinality_limit: distinct attribute sets per instrument created with the metric
            helpers before overflow (``APPVITALS_CARDINALITY_LIMIT``).
        disabled: turn everything off (``OTEL_SDK_DISABLED``).

    Returns:
        The effective :class:`Config`.

    Examples:
        >>> import appvitals
        >>> config = appvitals.configure(service_name="checkout", exporter="none")
        >>> config.service_name
        'checkout'
        >>> appvitals.shutdown()
        True
    """
    arguments = {key: value for key, value in locals().items() if value is not None}
    return _configure(arguments)


def _configure(arguments: dict[str, Any], extras: Optional[Extras] = None) -> Config:
    global _state  # noqa: PLW0603 - the process-wide configuration is the point of this module
    with _lock:
        if _state is not None:
            if arguments:
                _logger.debug("appvitals: already configured; configure() arguments ignored")
            return _state.config
        config = _resolve_leniently(arguments)
        state = _State(config=config, extras=extras or Extras())
        if not config.disabled:
            try:
                _install(state)
            except Exception as error:
                _safety.report_internal_error("configure", error)
            _import_client_instrumentation()
        _state = state
        _register_process_hooks()
        return config


def _resolve_leniently(arguments: dict[str, Any]) -> Config:
    """Resolve, dropping (with a warning) each argument that cannot be used."""
    while True:
        try:
            return resolve(arguments)
        except ConfigurationError as error:  # noqa: PERF203 - runs once per bad argument
            _logger.warning("appvitals: %s; ignoring it", error)
            arguments = {key: value for key, value in arguments.items() if key != error.argument}
        except (TypeError, ValueError) as error:
            _logger.warning("appvitals: invalid configure() arguments (%s); using defaults", error)
            return resolve({})


def _import_client_instrumentation() -> None:
    """Import what ``appvitals.http.instrument_client()`` needs, if the app uses httpx.

    An application typically calls ``instrument_client()`` after it opened its database
    and built its clients; the module it imports on its first call then allocated its
    objects among the application's buffers, and on the benchmark's ``/work`` (SQLite and
    JSON, which grow buffers with ``realloc``) that cost 80 to 115 µs per request for a
    client the request never used (``docs/benchmarks.md``). ``configure()`` usually runs
    earlier. Only when httpx is already imported: an application without it pays nothing.
    """
    if "httpx" in sys.modules:
        with contextlib.suppress(Exception):  # instrument_client() reports it, if called
            importlib.import_module("appvitals.http._instrument")


def _install(state: _State) -> None:
    config = state.config
    extras = state.extras or Extras()
    resource = build_resource(config)
    config = _start_schedule(state, config)
    owned: list[str] = []
    if config.traces:
        if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            state.tracer_provider, root_sampling = _tracer_provider(
                config, resource, extras, state.schedule
            )
            trace.set_tracer_provider(state.tracer_provider)
            owned.append("traces")
            _spans.current = root_sampling
        else:
            state.tracer_provider = trace.get_tracer_provider()
    if config.metrics:
        from opentelemetry.metrics._internal import _ProxyMeterProvider

        if isinstance(metrics.get_meter_provider(), _ProxyMeterProvider):
            state.meter_provider, state.shared_export, direct = _meter_provider(
                config, resource, extras, state.schedule
            )
            metrics.set_meter_provider(state.meter_provider)
            owned.append("metrics")
            _durations.current = direct
        else:
            state.meter_provider = metrics.get_meter_provider()
        from appvitals.metrics import register_self_metrics

        register_self_metrics(state.meter_provider)
        from appvitals.resources import register_from_environment

        register_from_environment(state.meter_provider)  # APPVITALS_RESOURCE_METRICS
    if config.logs:
        from opentelemetry._logs._internal import ProxyLoggerProvider

        if isinstance(_logs.get_logger_provider(), ProxyLoggerProvider):
            state.logger_provider = _logger_provider(config, resource, extras, state.schedule)
            _logs.set_logger_provider(state.logger_provider)
            owned.append("logs")
        else:
            state.logger_provider = _logs.get_logger_provider()
        state.root_level = logging.getLogger().level
        state.log_handler = _install_log_handler(config, state.logger_provider)
    state.owned = tuple(owned)
    if config.structlog:
        # After the bridge handler exists, so the pipeline feeds it; a failure here must not
        # undo the providers, which are installed and owned by now.
        with _safety.internal_errors("logging configuration"):
            from appvitals.logs import _configure_logging

            _configure_logging(config)
    if config.logs or config.structlog:
        state.quieted = _quiet_per_request_loggers()


def build_resource(config: Config) -> Resource:
    """The resource describing this service, host and process on every signal."""
    attributes: dict[str, Any] = {
        "host.name": socket.gethostname(),
        "host.arch": platform.machine().lower(),
        "os.type": sys.platform,
        "process.pid": os.getpid(),
        "process.executable.name": os.path.basename(sys.executable),  # noqa: PTH119
        "process.runtime.name": sys.implementation.name,
        "process.runtime.version": platform.python_version(),
        "telemetry.distro.name": "appvitals",
        "telemetry.distro.version": __version__,
    }
    attributes.update(config.resource_attributes)
    attributes["service.name"] = config.service_name
    optional = {
        "service.version": config.service_version,
        "service.namespace": config.service_namespace,
        "deployment.environment.name": config.environment,
    }
    attributes.update({key: value for key, value in optional.items() if value})
    # Resource.create adds telemetry.sdk.* and reads OTEL_RESOURCE_ATTRIBUTES; ours win.
    return Resource.create(attributes)


def _tracer_provider(
    config: Config, resource: Resource, extras: Extras, schedule: Optional[_inline.Schedule]
) -> tuple[Any, Optional[_spans.RootSampling]]:
    """The provider, and the fast start of its unsampled root spans (``None`` if none)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import (
        ALWAYS_OFF,
        ALWAYS_ON,
        ParentBased,
        Sampler,
        TraceIdRatioBased,
    )

    from appvitals._exporters import CountingBatchSpanProcessor

    root: Sampler
    if config.sampler.endswith("always_on"):
        root = ALWAYS_ON
    elif config.sampler.endswith("always_off"):
        root = ALWAYS_OFF
    else:
        root = TraceIdRatioBased(config.sampler_ratio)
    sampler = ParentBased(root) if config.sampler.startswith("parentbased") else root
    ids = _spans.PresetIdGenerator()
    # shutdown_on_exit=False: our own exit hook flushes with a deadline instead.
    provider = TracerProvider(
        resource=resource, sampler=sampler, id_generator=ids, shutdown_on_exit=False
    )
    bound = _spans.root_bound(root)
    exporter = build_exporter(config, "traces")
    if exporter is not None:
        processor = _batch_processor(CountingBatchSpanProcessor, "traces", exporter, schedule)
        provider.add_span_processor(processor)
    for processor in extras.span_processors:
        provider.add_span_processor(processor)
    return provider, None if bound is None else _spans.RootSampling(ids, bound)


def _meter_provider(
    config: Config, resource: Resource, extras: Extras, schedule: Optional[_inline.Schedule]
) -> tuple[Any, Any, Optional[_durations.DirectHistogram]]:
    """The provider, the export that shares its Prometheus reader, and the direct durations.

    The last two are ``None`` when they do not apply. The request durations are aggregated
    by appvitals (:mod:`appvitals._durations`) only when the Prometheus reader is the only
    reader on the provider, so that every collection merges them.
    """
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    from appvitals._exporters import SharedExportReader

    readers = list(extras.metric_readers)
    source = None
    if config.prometheus:
        from appvitals import prometheus

        source = prometheus.reader()
        readers.append(source)
    exporter = build_exporter(config, "metrics")
    shared = None
    periodic: Any = None
    if exporter is not None:
        # math.inf: a reader without its thread; the inline schedule collects it.
        interval = math.inf if schedule is not None else config.metric_export_interval * 1000
        timeout = config.metric_export_timeout * 1000
        if source is not None and SharedExportReader.can_share(exporter):
            periodic = shared = SharedExportReader(exporter, source, interval, timeout)
        else:
            periodic = PeriodicExportingMetricReader(exporter, interval, timeout)
            readers.append(periodic)
    provider = MeterProvider(resource=resource, metric_readers=readers, shutdown_on_exit=False)
    if schedule is not None and periodic is not None:
        _inline.collect_every(
            schedule, periodic, config.metric_export_interval, config.metric_export_timeout
        )
    direct = None
    exemplars = _durations.exemplar_filter()
    if source is not None and readers == [source] and exemplars is not None:
        direct = _durations.request_duration(exemplars)
        source.add_direct(direct)
    return provider, shared, direct


def _logger_provider(
    config: Config, resource: Resource, extras: Extras, schedule: Optional[_inline.Schedule]
) -> Any:
    from opentelemetry.sdk._logs import LoggerProvider

    from appvitals._exporters import CountingBatchLogRecordProcessor
    from appvitals._logbridge import BoundFieldsProcessor

    provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
    # First, so the exporters' processors see the fields it adds.
    provider.add_log_record_processor(BoundFieldsProcessor())
    exporter = build_exporter(config, "logs")
    if exporter is not None:
        provider.add_log_record_processor(
            _batch_processor(CountingBatchLogRecordProcessor, "logs", exporter, schedule)
        )
    for processor in extras.log_processors:
        provider.add_log_record_processor(processor)
    return provider


def _start_schedule(state: _State, config: Config) -> Config:
    """Set up the export schedule of auto and inline mode; the config the exporters get."""
    mode = config.effective_export_mode()
    if mode == "background":
        return config
    # Current from here: the Prometheus reader schedules its snapshots on it.
    state.schedule = _inline.current = _inline.Schedule(promote=mode == "auto")
    if mode == "auto" and _inline.process_has_threads():
        state.schedule.start_thread()  # no single-threaded fast path left to keep
        return config
    # An export holds up the request that runs it: cap how long it may wait.
    cap = _inline.INLINE_EXPORT_TIMEOUT
    return dataclasses.replace(
        config,
        otlp_timeout=min(config.otlp_timeout, cap),
        metric_export_timeout=min(config.metric_export_timeout, cap),
    )


def _batch_processor(
    processor_class: type[Any], signal: str, exporter: Any, schedule: Optional[_inline.Schedule]
) -> Any:
    """The SDK's batch processor, or the same processor exporting inline from ``schedule``."""
    if schedule is None:
        return processor_class(exporter)
    delay, max_batch, max_queue = _inline.batch_settings(processor_class, signal)
    batch = _inline.InlineBatch(signal, exporter, schedule, delay, max_batch, max_queue)
    return _inline.install_into(processor_class, batch)


class _NotFromExporters(logging.Filter):
    """Keep the SDK's own records out of the log pipeline: a failing export would feed itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith("opentelemetry")


def _install_log_handler(config: Config, provider: Any) -> Optional[logging.Handler]:
    from appvitals._logbridge import OTelLogHandler

    handler = OTelLogHandler(
        provider, level=getattr(logging, config.log_level), masking=config.log_masking
    )
    handler.addFilter(_NotFromExporters())
    root = logging.getLogger()
    root.addHandler(handler)
    # An application that never configured logging has the root at WARNING: lower it so
    # INFO records reach the exporter; an application that configured logging keeps its level.
    if not root.handlers[:-1] and root.level == logging.WARNING:
        root.setLevel(min(getattr(logging, config.log_level), logging.WARNING))
    return handler


# Libraries that log one INFO line per request they make. appvitals records those requests
# as spans and metrics (appvitals.http); with the root logger lowered to INFO, each line
# would also be written to the console and exported, ~50 µs a call (docs/benchmarks.md).
# httpx2: the "next generation" httpx (Starlette's TestClient uses it) logs the same line.
PER_REQUEST_LOGGERS = ("httpx", "httpx2")


def _quiet_per_request_loggers() -> tuple[str, ...]:
    """Raise :data:`PER_REQUEST_LOGGERS` to WARNING unless the application set their level."""
    quieted = []
    for name in PER_REQUEST_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)
            quieted.append(name)
    return tuple(quieted)


def is_configured() -> bool:
    """Whether :func:`configure` has run in this process (and :func:`shutdown` has not)."""
    return _state is not None


def get_config() -> Optional[Config]:
    """The active configuration, or ``None`` before :func:`configure`."""
    state = _state
    return None if state is None else state.config


def force_flush(timeout: Optional[float] = None) -> bool:
    """Export everything buffered now; ``True`` when every provider finished in time."""
    state = _state
    if state is None or state.config.disabled:
        return True
    limit = state.config.shutdown_timeout if timeout is None else timeout
    return _bounded(lambda deadline: _flush_providers(state, deadline), limit, _unthreaded(state))


def shutdown(timeout: Optional[float] = None) -> bool:
    """Flush and stop everything appvitals started, within ``timeout`` seconds.

    Safe to call more than once and from an exit hook. When a collector does not answer,
    the flush is abandoned at the deadline (default ``shutdown_timeout``, 5 s) so the process
    can still exit. Returns ``True`` when everything finished in time.
    """
    global _state
    with _lock:
        state, _state = _state, None
        _inline.current = None
        _durations.current = None
        _spans.current = None
    if state is not None:
        if state.log_handler is not None:
            logging.getLogger().removeHandler(state.log_handler)
        if state.root_level is not None:
            logging.getLogger().setLevel(state.root_level)
        for name in state.quieted:
            if logging.getLogger(name).level == logging.WARNING:  # unless changed since
                logging.getLogger(name).setLevel(logging.NOTSET)
    # After the level above: an explicit configure_logging() before configure() saved the
    # older root level, which must win.
    logs = sys.modules.get("appvitals.logs")
    if logs is not None:  # never imported: nothing to undo
        with _safety.internal_errors("logging shutdown"):
            logs._unconfigure_logging()
    if state is None:
        return True
    if state.config.disabled:
        return True
    limit = state.config.shutdown_timeout if timeout is None else timeout

    inline = _unthreaded(state)
    if state.schedule is not None:
        # The export thread of export_mode="auto" stops first; the rest is flushed below.
        state.schedule.stop_thread(min(limit, _inline.INLINE_EXPORT_TIMEOUT))

    def stop(deadline: float) -> None:
        if state.schedule is not None:
            # Readers without a thread export nothing on shutdown: collect them first.
            _flush_providers(state, deadline)
        # Shutting a provider down exports what it buffered; one the application owns is
        # only flushed, because the application may still use it.
        for signal, provider in (
            ("traces", state.tracer_provider),
            ("logs", state.logger_provider),
            ("metrics", state.meter_provider),
        ):
            if provider is None:
                continue
            remaining_ms = max(0.0, deadline - time.monotonic()) * 1000
            with _safety.internal_errors(f"{signal} shutdown"):
                if signal == "metrics" and state.shared_export is not None:
                    # First, while the Prometheus reader it collects from is attached.
                    state.shared_export.shutdown(timeout_millis=remaining_ms)
                    remaining_ms = max(0.0, deadline - time.monotonic()) * 1000
                if signal not in state.owned:
                    provider.force_flush(int(remaining_ms))
                elif signal == "metrics":
                    provider.shutdown(timeout_millis=remaining_ms)
                else:
                    provider.shutdown()

    return _bounded(stop, limit, inline)


def _unthreaded(state: _State) -> bool:
    """Whether appvitals exports without any thread (inline, or auto before promotion)."""
    return state.schedule is not None and not state.schedule.threaded


def _flush_providers(state: _State, deadline: float) -> None:
    providers = (state.tracer_provider, state.logger_provider, state.shared_export)
    for provider in (*providers, state.meter_provider):
        if provider is not None and hasattr(provider, "force_flush"):
            remaining_ms = int(max(0.0, deadline - time.monotonic()) * 1000)
            with _safety.internal_errors("flush"):
                provider.force_flush(remaining_ms)


def _bounded(work: Any, timeout: float, inline: bool = False) -> bool:
    """Run ``work(deadline)`` in a daemon thread and wait at most ``timeout`` seconds.

    A daemon thread stuck in an exporter (a dead collector, a DNS lookup) cannot keep the
    interpreter from exiting; the caller regains control at the deadline either way.
    ``inline`` (appvitals exports without a thread: ``export_mode="inline"``, or ``"auto"``
    before the export thread took over) runs it in the calling thread instead, so that a
    flush does not start the process's first thread; each export is then bounded by the
    capped exporter timeouts.
    """
    deadline = time.monotonic() + max(0.0, timeout)
    if inline:
        work(deadline)
        return time.monotonic() <= deadline
    worker = threading.Thread(target=work, args=(deadline,), name="appvitals-flush", daemon=True)
    worker.start()
    worker.join(max(0.0, timeout))
    finished = not worker.is_alive()
    if not finished:
        _logger.warning("appvitals: telemetry flush did not finish within %.1f s", timeout)
    return finished


def _register_process_hooks() -> None:
    global _fork_hook_registered, _atexit_registered  # noqa: PLW0603
    if not _atexit_registered:
        atexit.register(_shutdown_at_exit)
        _atexit_registered = True
    if not _fork_hook_registered and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)
        _fork_hook_registered = True


def _shutdown_at_exit() -> None:
    with _safety.internal_errors("exit"):
        shutdown()


def _after_fork_in_child() -> None:
    """Reset what a forked child must not share with its parent.

    The SDK (>= 1.27) restarts its own worker threads after ``fork``; appvitals' exporters
    rebuild their connections per process (see ``_exporters``); here the locks, which a
    parent thread may have held at the moment of ``fork``, are made anew.
    """
    global _lock  # noqa: PLW0603
    _lock = threading.RLock()
    _safety._at_fork_reinit()
    state = _state
    if state is not None and state.schedule is not None:
        state.schedule.at_fork_reinit()
    if state is not None:
        pid = Resource({"process.pid": os.getpid()})
        for signal in state.owned:
            provider = {
                "traces": state.tracer_provider,
                "metrics": state.meter_provider,
                "logs": state.logger_provider,
            }[signal]
            # The SDK refreshes service.instance.id after fork (its process-dependent
            # detector); process.pid is ours to refresh.
            with _safety.internal_errors("fork resource"):
                provider._update_resource(pid)
    from appvitals import metrics as _metrics

    _metrics._at_fork_reinit()
    if _durations.current is not None:  # the parent's requests are the parent's to report
        _durations.current.at_fork_reinit()
    http_server = sys.modules.get("appvitals.integrations._http_server")
    if http_server is not None:  # an instrumented app counts its requests in flight there
        http_server._at_fork_reinit()
