"""appvitals: vital signs for Python web services, through OpenTelemetry.

The public API is what this module exports (``__all__``); everything in a ``_private``
module may change without notice. Importing appvitals changes nothing: no provider, thread,
patch or file appears before :func:`configure` is called.

Examples:
    >>> import appvitals
    >>> _ = appvitals.configure(service_name="billing", exporter="none")
    >>> @appvitals.traced
    ... def charge(amount: int) -> int:
    ...     return amount
    >>> charge(3)
    3
    >>> appvitals.shutdown()
    True
"""

# _sdk_resources first: before any OpenTelemetry SDK module creates a resource.
from appvitals import (
    _sdk_resources,  # noqa: F401
    db,
    health,
    logs,
    masking,
    resources,
)
from appvitals._config import Config, ConfigurationError
from appvitals._context import (
    CORRELATION_ID_HEADER,
    Bound,
    ContextExecutor,
    bind,
    bound_fields,
    correlation_id,
    extracted_context,
    inject_headers,
    new_correlation_id,
    wrap_context,
)
from appvitals._setup import configure, force_flush, get_config, is_configured, shutdown
from appvitals._version import __version__
from appvitals.decorators import counted, span, timed, traced
from appvitals.dependencies import cache_hit, cache_miss, queue_depth
from appvitals.http import instrument_httpx, test_connection
from appvitals.integrations.asgi import instrument_fastapi
from appvitals.integrations.flask import instrument_flask
from appvitals.jobs import JobRun, job, monitored_job, retry
from appvitals.logs import configure_logging, get_logger
from appvitals.metrics import (
    MetricDefinitionError,
    counter,
    gauge,
    histogram,
    updown_counter,
)

__all__ = [
    "CORRELATION_ID_HEADER",
    "Bound",
    "Config",
    "ConfigurationError",
    "ContextExecutor",
    "JobRun",
    "MetricDefinitionError",
    "__version__",
    "bind",
    "bound_fields",
    "cache_hit",
    "cache_miss",
    "configure",
    "configure_logging",
    "correlation_id",
    "counted",
    "counter",
    "db",
    "extracted_context",
    "force_flush",
    "gauge",
    "get_config",
    "get_logger",
    "health",
    "histogram",
    "inject_headers",
    "instrument_fastapi",
    "instrument_flask",
    "instrument_httpx",
    "is_configured",
    "job",
    "logs",
    "masking",
    "monitored_job",
    "new_correlation_id",
    "queue_depth",
    "resources",
    "retry",
    "shutdown",
    "span",
    "test_connection",
    "timed",
    "traced",
    "updown_counter",
    "wrap_context",
]
