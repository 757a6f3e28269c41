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

from appvitals._inline import tick
from appvitals._safety import internal_errors
from appvitals._setup import configure, is_configured


def post_fork(server: Any, worker: Any) -> None:  # noqa: ARG001 - gunicorn's hook signature
    """gunicorn ``post_fork`` hook: configure appvitals in this worker, export when idle.

    A worker tells the master it is alive (``worker.notify()``) before each accept and at
    least every half ``--timeout`` (15 s by default) while it waits for connections. The hook
    runs the exports that are due at that moment too, so that with ``export_mode="auto"``
    or ``"inline"`` (no export thread) an idle worker still sends its last requests' spans
    and metrics within seconds, not at its next request.
    """
    with internal_errors("gunicorn post_fork"):
        if not is_configured():
            configure()
        notify = getattr(worker, "notify", None)
        if callable(notify):

            def notify_and_export() -> None:
                notify()
                tick()

            worker.notify = notify_and_export
