"""Settings: defaults, then environment, then ``configure()`` arguments.

Every environment variable appvitals reads is a documented constant below (the
OpenTelemetry ones keep their specified names). A value that cannot be parsed is never an
exception: it produces one warning naming the variable and the default takes its place,
because a typo in a deployment manifest must not take the application down.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any, Optional, TypeVar
from urllib.parse import SplitResult, unquote, urlsplit

_logger = logging.getLogger("appvitals")

# --- OpenTelemetry's variables (https://opentelemetry.io/docs/specs/otel/configuration/) ---
OTEL_SDK_DISABLED = "OTEL_SDK_DISABLED"
OTEL_SERVICE_NAME = "OTEL_SERVICE_NAME"
OTEL_RESOURCE_ATTRIBUTES = "OTEL_RESOURCE_ATTRIBUTES"
OTEL_TRACES_SAMPLER = "OTEL_TRACES_SAMPLER"
OTEL_TRACES_SAMPLER_ARG = "OTEL_TRACES_SAMPLER_ARG"
OTEL_EXPORTER_OTLP_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
OTEL_EXPORTER_OTLP_PROTOCOL = "OTEL_EXPORTER_OTLP_PROTOCOL"
OTEL_EXPORTER_OTLP_HEADERS = "OTEL_EXPORTER_OTLP_HEADERS"
OTEL_EXPORTER_OTLP_TIMEOUT = "OTEL_EXPORTER_OTLP_TIMEOUT"
OTEL_METRIC_EXPORT_INTERVAL = "OTEL_METRIC_EXPORT_INTERVAL"
OTEL_METRIC_EXPORT_TIMEOUT = "OTEL_METRIC_EXPORT_TIMEOUT"

# --- appvitals' own variables ---
APPVITALS_EXPORTER = "APPVITALS_EXPORTER"
APPVITALS_EXPORT_MODE = "APPVITALS_EXPORT_MODE"
APPVITALS_JSONL_DIR = "APPVITALS_JSONL_DIR"
APPVITALS_SERVICE_VERSION = "APPVITALS_SERVICE_VERSION"
APPVITALS_SERVICE_NAMESPACE = "APPVITALS_SERVICE_NAMESPACE"
APPVITALS_ENVIRONMENT = "APPVITALS_ENVIRONMENT"
APPVITALS_TRACES = "APPVITALS_TRACES"
APPVITALS_METRICS = "APPVITALS_METRICS"
APPVITALS_LOGS = "APPVITALS_LOGS"
APPVITALS_LOG_LEVEL = "APPVITALS_LOG_LEVEL"
APPVITALS_SHUTDOWN_TIMEOUT = "APPVITALS_SHUTDOWN_TIMEOUT"
APPVITALS_CARDINALITY_LIMIT = "APPVITALS_CARDINALITY_LIMIT"
APPVITALS_PROMETHEUS = "APPVITALS_PROMETHEUS"
APPVITALS_STRUCTLOG = "APPVITALS_STRUCTLOG"
APPVITALS_LOG_RENDERER = "APPVITALS_LOG_RENDERER"
APPVITALS_LOG_MASKING = "APPVITALS_LOG_MASKING"
APPVITALS_LOG_SAMPLE_DEBUG = "APPVITALS_LOG_SAMPLE_DEBUG"
APPVITALS_LOG_SAMPLE_INFO = "APPVITALS_LOG_SAMPLE_INFO"
APPVITALS_LOG_DEDUPE_WINDOW = "APPVITALS_LOG_DEDUPE_WINDOW"

SIGNALS = ("traces", "metrics", "logs")
EXPORTERS = ("otlp", "console", "jsonl", "none")
EXPORT_MODES = ("auto", "background", "inline")
PROTOCOLS = ("grpc", "http/protobuf")
SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_RENDERERS = ("json", "console", "auto")
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off", ""})

T = TypeVar("T")


class ConfigurationError(ValueError):
    """A ``configure()`` argument has a value appvitals cannot use."""

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(message)
        self.argument = argument


@dataclasses.dataclass(frozen=True)
class Config:
    """The effective configuration, as resolved by :func:`appvitals.configure`.

    Attributes mirror the keyword arguments of ``configure()``; ``otlp_endpoints`` and
    ``otlp_protocols`` hold the per-signal values after the OpenTelemetry rules for
    ``OTEL_EXPORTER_OTLP_<SIGNAL>_*`` variables were applied (``None`` endpoint: the exporter's
    own default, ``http://localhost:4318`` or ``localhost:4317``).
    """

    disabled: bool = False
    service_name: str = "unknown_service"
    service_version: Optional[str] = None
    service_namespace: Optional[str] = None
    environment: Optional[str] = None
    resource_attributes: Mapping[str, str] = dataclasses.field(default_factory=dict)
    exporter: str = "jsonl"
    export_mode: str = "auto"
    jsonl_dir: str = "appvitals-data"
    otlp_endpoints: Mapping[str, Optional[str]] = dataclasses.field(default_factory=dict)
    otlp_protocols: Mapping[str, str] = dataclasses.field(default_factory=dict)
    otlp_headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    otlp_timeout: float = 10.0
    sampler: str = "parentbased_traceidratio"
    sampler_ratio: float = 0.1
    traces: bool = True
    metrics: bool = True
    logs: bool = True
    prometheus: bool = True
    log_level: str = "INFO"
    metric_export_interval: float = 60.0
    metric_export_timeout: float = 30.0
    shutdown_timeout: float = 5.0
    cardinality_limit: int = 1000
    # Structured logging (appvitals.logs); only structlog is a configure() argument.
    structlog: bool = True
    log_renderer: str = "auto"
    log_masking: bool = True
    log_sample_debug: float = 1.0
    log_sample_info: float = 1.0
    log_dedupe_window: float = 0.0

    def enabled_signals(self) -> tuple[str, ...]:
        """The signals switched on, in ``traces``, ``metrics``, ``logs`` order.

        Examples:
            >>> Config(metrics=False).enabled_signals()
            ('traces', 'logs')
        """
        switches = {"traces": self.traces, "metrics": self.metrics, "logs": self.logs}
        return tuple(signal for signal in SIGNALS if switches[signal])

    def effective_export_mode(self) -> str:
        """``export_mode`` with ``auto`` resolved: ``"auto"``, ``"inline"`` or ``"background"``.

        ``auto`` stays ``auto`` (the application's calls export while the process has a
        single thread) when every destination is on this machine — files, the console, an
        OTLP endpoint on a loopback address — where an export takes a few milliseconds; a
        remote collector gets ``background``, the SDK's threads, so that its round trips
        never hold up a request.

        Examples:
            >>> local = Config(exporter="otlp", otlp_endpoints={"traces": "http://127.0.0.1:4318"})
            >>> local.effective_export_mode()
            'auto'
            >>> remote = Config(exporter="otlp", otlp_endpoints={"logs": "https://otel.example"})
            >>> remote.effective_export_mode()
            'background'
        """
        if self.export_mode != "auto" or self.exporter != "otlp":
            return self.export_mode
        signals = self.enabled_signals()
        if all(_is_loopback(self.otlp_endpoints.get(signal)) for signal in signals):
            return "auto"
        return "background"

    def describe(self) -> dict[str, Any]:
        """Return the configuration as plain data with header values masked (for ``doctor``)."""
        data = dataclasses.asdict(self)
        data["otlp_headers"] = dict.fromkeys(self.otlp_headers, "***")
        data["resource_attributes"] = dict(self.resource_attributes)
        return data


def split_endpoint(endpoint: str) -> SplitResult:
    """An OTLP endpoint's parts; gRPC's ``host:port`` without a scheme is read as such."""
    return urlsplit(endpoint if "://" in endpoint else f"//{endpoint}")


_LOOPBACK_HOSTS = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "::1"})


def _is_loopback(endpoint: Optional[str]) -> bool:
    """Whether an OTLP endpoint is on this machine (``None``: the exporter's localhost)."""
    if endpoint is None or endpoint.strip().startswith("unix:"):
        return True
    try:
        host = split_endpoint(endpoint.strip()).hostname
    except ValueError:
        return False
    if host is None or host in _LOOPBACK_HOSTS:
        return host is not None
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: it may resolve anywhere
        return False


def _warn_invalid(variable: str, raw: str, expected: str, default: object) -> None:
    _logger.warning(
        "appvitals: ignoring %s=%r: expected %s; using the default %r",
        variable,
        raw,
        expected,
        default,
    )


def _env(environ: Mapping[str, str], name: str) -> Optional[str]:
    value = environ.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def _parse_env(
    environ: Mapping[str, str],
    name: str,
    parse: Callable[[str], T],
    expected: str,
    default: T,
) -> T:
    raw = _env(environ, name)
    if raw is None:
        return default
    try:
        return parse(raw)
    except ValueError:
        _warn_invalid(name, raw, expected, default)
        return default


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(raw)


def _choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        lowered = raw.strip().lower()
        if lowered not in {option.lower() for option in options}:
            raise ValueError(raw)
        return next(option for option in options if option.lower() == lowered)

    return parse


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0 or value == float("inf"):
        raise ValueError(raw)
    return value


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError(raw)
    return value


def _non_negative_float(raw: str) -> float:
    value = float(raw)
    if not 0 <= value < float("inf"):
        raise ValueError(raw)
    return value


def _ratio(raw: str) -> float:
    value = float(raw)
    if not 0.0 <= value <= 1.0:
        raise ValueError(raw)
    return value


def parse_key_values(raw: str) -> dict[str, str]:
    """Parse the W3C-baggage-like ``key=value,key2=value2`` lists of OTEL_* variables.

    Raises:
        ValueError: an entry has no ``=`` or an empty key.
    """
    result: dict[str, str] = {}
    for entry in raw.split(","):
        if not entry.strip():
            continue
        key, sep, value = entry.partition("=")
        key = unquote(key.strip())
        if not sep or not key:
            raise ValueError(entry)
        result[key] = unquote(value.strip())
    return result


def _signal_env(environ: Mapping[str, str], signal: str, suffix: str) -> Optional[str]:
    """Per-signal variable first (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), then the generic one."""
    return _env(environ, f"OTEL_EXPORTER_OTLP_{signal.upper()}_{suffix}") or _env(
        environ, f"OTEL_EXPORTER_OTLP_{suffix}"
    )


def _as_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        msg = f"configure({name}={value!r}): expected a number"
        raise ConfigurationError(name, msg)
    return float(value)


def _check_argument(name: str, value: T, check: Callable[[T], bool], expected: str) -> T:
    if not check(value):
        msg = f"configure({name}={value!r}): expected {expected}"
        raise ConfigurationError(name, msg)
    return value


def resolve(  # noqa: PLR0915 - one readable pass over every setting
    arguments: Mapping[str, Any], environ: Optional[Mapping[str, str]] = None
) -> Config:
    """Resolve defaults → environment → arguments into a :class:`Config`.

    ``arguments`` holds the keyword arguments given to ``configure()``; ``None`` means "not
    given". Invalid arguments raise :class:`ConfigurationError` (a programming error, seen
    at start-up); invalid environment values warn and fall back.
    """
    env = os.environ if environ is None else environ
    given = {key: value for key, value in arguments.items() if value is not None}
    default = Config()

    resource_attributes: dict[str, str] = {}
    raw_attributes = _env(env, OTEL_RESOURCE_ATTRIBUTES)
    if raw_attributes is not None:
        try:
            resource_attributes = parse_key_values(raw_attributes)
        except ValueError:
            _warn_invalid(OTEL_RESOURCE_ATTRIBUTES, raw_attributes, "key=value,key=value", {})
    resource_attributes.update(given.get("resource_attributes", {}))

    service_name = (
        given.get("service_name")
        or _env(env, OTEL_SERVICE_NAME)
        or resource_attributes.get("service.name")
        or default.service_name
    )

    exporter_default = "otlp" if _any_otlp_endpoint(env) else default.exporter
    exporter = given.get("exporter") or _parse_env(
        env, APPVITALS_EXPORTER, _choice(EXPORTERS), " | ".join(EXPORTERS), exporter_default
    )
    _check_argument("exporter", exporter, lambda value: value in EXPORTERS, " | ".join(EXPORTERS))

    export_mode = given.get("export_mode") or _parse_env(
        env,
        APPVITALS_EXPORT_MODE,
        _choice(EXPORT_MODES),
        " | ".join(EXPORT_MODES),
        default.export_mode,
    )
    _check_argument(
        "export_mode", export_mode, lambda value: value in EXPORT_MODES, " | ".join(EXPORT_MODES)
    )

    endpoints: dict[str, Optional[str]] = {}
    protocols: dict[str, str] = {}
    for signal in SIGNALS:
        raw_protocol = _signal_env(env, signal, "PROTOCOL")
        protocol = "http/protobuf"
        if raw_protocol is not None:
            try:
                protocol = _choice(PROTOCOLS)(raw_protocol)
            except ValueError:
                _warn_invalid(
                    f"OTEL_EXPORTER_OTLP_[{signal.upper()}_]PROTOCOL",
                    raw_protocol,
                    " | ".join(PROTOCOLS),
                    protocol,
                )
        protocols[signal] = given.get("otlp_protocol") or protocol
        endpoints[signal] = _signal_endpoint(
            given.get("otlp_endpoint"), env, signal, protocols[signal]
        )
    if "otlp_protocol" in given:
        _check_argument(
            "otlp_protocol", given["otlp_protocol"], lambda v: v in PROTOCOLS, " | ".join(PROTOCOLS)
        )

    headers: dict[str, str] = {}
    raw_headers = _env(env, OTEL_EXPORTER_OTLP_HEADERS)
    if raw_headers is not None:
        try:
            headers = parse_key_values(raw_headers)
        except ValueError:
            _warn_invalid(OTEL_EXPORTER_OTLP_HEADERS, "<masked>", "key=value,key=value", {})
    headers.update(given.get("otlp_headers", {}))

    sampler = _parse_env(
        env, OTEL_TRACES_SAMPLER, _choice(SAMPLERS), " | ".join(SAMPLERS), default.sampler
    )
    ratio_default = default.sampler_ratio if "ratio" in sampler else 1.0
    sampler_ratio = _parse_env(
        env, OTEL_TRACES_SAMPLER_ARG, _ratio, "a number from 0 to 1", ratio_default
    )
    if "sampler_ratio" in given:
        sampler_ratio = _check_argument(
            "sampler_ratio",
            _as_number("sampler_ratio", given["sampler_ratio"]),
            lambda v: 0.0 <= v <= 1.0,
            "0 to 1",
        )
        sampler = "parentbased_traceidratio"

    def flag(name: str, variable: str) -> bool:
        if name in given:
            return bool(given[name])
        return _parse_env(env, variable, _parse_bool, "true or false", True)

    def seconds(name: str, variable: str, fallback: float, scale: float = 1.0) -> float:
        if name in given:
            return _check_argument(
                name, _as_number(name, given[name]), lambda v: v > 0, "a positive number of seconds"
            )
        value = _parse_env(env, variable, _positive_float, "a positive number", fallback * scale)
        return value / scale

    cardinality_limit = given.get("cardinality_limit") or _parse_env(
        env,
        APPVITALS_CARDINALITY_LIMIT,
        _positive_int,
        "a positive integer",
        default.cardinality_limit,
    )
    _check_argument(
        "cardinality_limit",
        _as_number("cardinality_limit", cardinality_limit),
        lambda v: v >= 1,
        "a positive integer",
    )
    log_level = str(
        given.get("log_level")
        or _parse_env(env, APPVITALS_LOG_LEVEL, _choice(LOG_LEVELS), "a log level name", "INFO")
    ).upper()
    _check_argument("log_level", log_level, lambda v: v in LOG_LEVELS, " | ".join(LOG_LEVELS))

    return Config(
        disabled=bool(given["disabled"])
        if "disabled" in given
        else _parse_env(env, OTEL_SDK_DISABLED, _parse_bool, "true or false", False),
        service_name=str(service_name),
        service_version=given.get("service_version")
        or _env(env, APPVITALS_SERVICE_VERSION)
        or resource_attributes.get("service.version"),
        service_namespace=given.get("service_namespace")
        or _env(env, APPVITALS_SERVICE_NAMESPACE)
        or resource_attributes.get("service.namespace"),
        environment=given.get("environment")
        or _env(env, APPVITALS_ENVIRONMENT)
        or resource_attributes.get("deployment.environment.name")
        or resource_attributes.get("deployment.environment"),
        resource_attributes=resource_attributes,
        exporter=str(exporter),
        export_mode=str(export_mode),
        jsonl_dir=str(
            given.get("jsonl_dir") or _env(env, APPVITALS_JSONL_DIR) or default.jsonl_dir
        ),
        otlp_endpoints=endpoints,
        otlp_protocols=protocols,
        otlp_headers=headers,
        otlp_timeout=seconds(
            "otlp_timeout", OTEL_EXPORTER_OTLP_TIMEOUT, default.otlp_timeout, 1000
        ),
        sampler=sampler,
        sampler_ratio=sampler_ratio,
        traces=flag("traces", APPVITALS_TRACES),
        metrics=flag("metrics", APPVITALS_METRICS),
        logs=flag("logs", APPVITALS_LOGS),
        prometheus=flag("prometheus", APPVITALS_PROMETHEUS),
        log_level=log_level,
        metric_export_interval=seconds(
            "metric_export_interval",
            OTEL_METRIC_EXPORT_INTERVAL,
            default.metric_export_interval,
            1000,
        ),
        metric_export_timeout=seconds(
            "metric_export_timeout",
            OTEL_METRIC_EXPORT_TIMEOUT,
            default.metric_export_timeout,
            1000,
        ),
        shutdown_timeout=seconds(
            "shutdown_timeout", APPVITALS_SHUTDOWN_TIMEOUT, default.shutdown_timeout
        ),
        cardinality_limit=int(cardinality_limit),
        structlog=flag("structlog", APPVITALS_STRUCTLOG),
        **_log_settings(env),
    )


def _log_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """The structured-logging settings read from the environment (``appvitals.logs``)."""
    default = Config()
    return {
        "log_renderer": _parse_env(
            env, APPVITALS_LOG_RENDERER, _choice(LOG_RENDERERS), " | ".join(LOG_RENDERERS), "auto"
        ),
        "log_masking": _parse_env(
            env, APPVITALS_LOG_MASKING, _parse_bool, "true or false", default.log_masking
        ),
        "log_sample_debug": _parse_env(
            env, APPVITALS_LOG_SAMPLE_DEBUG, _ratio, "a number from 0 to 1", 1.0
        ),
        "log_sample_info": _parse_env(
            env, APPVITALS_LOG_SAMPLE_INFO, _ratio, "a number from 0 to 1", 1.0
        ),
        "log_dedupe_window": _parse_env(
            env, APPVITALS_LOG_DEDUPE_WINDOW, _non_negative_float, "seconds >= 0", 0.0
        ),
    }


def _any_otlp_endpoint(env: Mapping[str, str]) -> bool:
    return any(
        _env(env, name) is not None
        for name in (
            OTEL_EXPORTER_OTLP_ENDPOINT,
            *(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT" for signal in SIGNALS),
        )
    )


def _signal_endpoint(
    argument: Optional[str], env: Mapping[str, str], signal: str, protocol: str
) -> Optional[str]:
    """Where one signal's OTLP exporter sends, following the OTLP exporter specification.

    The generic endpoint (argument or ``OTEL_EXPORTER_OTLP_ENDPOINT``) is a base URL to which
    OTLP/HTTP appends ``/v1/<signal>``; a per-signal variable is used as it is.
    """
    base = argument
    if base is None:
        specific = _env(env, f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT")
        if specific is not None:
            return specific
        base = _env(env, OTEL_EXPORTER_OTLP_ENDPOINT)
    if base is None:
        return None
    if protocol == "http/protobuf":
        return base.rstrip("/") + f"/v1/{signal}"
    return base
