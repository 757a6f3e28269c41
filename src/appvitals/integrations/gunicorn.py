"""gunicorn: telemetry in every worker, whether or not the app is preloaded.

Use from ``gunicorn.conf.py``::

    from appvitals.integrations.gunicorn import post_fork  # noqa: F401

gunicorn calls ``post_fork(server, worker)`` in each new worker. It configures appvitals
from the environment (``OTEL_*``/``APPVITALS_*``) if the application did not already, so a
deployment can be instrumented with environment variables alone.

When the application calls :func:`appvitals.configure` itself, ``post_fork`` is optional:
without ``--preload`` each worker imports the app and configures on its own; with
``--preload`` the master configures once and appvitals' fork hook, together with the
OpenTelemetry SDK's own, gives each worker fresh exporter connections, worker threads and
its own ``process.pid`` and ``service.instance.id``. Metrics recorded in the master before
the fork would be inherited by every worker, so record nothing there.
"""

from __future__ import annotations

from typing import Any

from appvitals._safety import internal_errors
from appvitals._setup import configure, is_configured


def post_fork(server: Any, worker: Any) -> None:  # noqa: ARG001 - gunicorn's hook signature
    """gunicorn ``post_fork`` hook: make sure appvitals is configured in this worker."""
    with internal_errors("gunicorn post_fork"):
        if not is_configured():
            configure()
