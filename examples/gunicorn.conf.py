"""gunicorn configuration for an appvitals-instrumented service (here the Flask example).

    gunicorn -c examples/gunicorn.conf.py --chdir examples flask_app:app

- ``post_fork`` configures appvitals in every worker from ``OTEL_*``/``APPVITALS_*`` when the
  application did not (the Flask example does, through ``instrument_flask``; an application
  that does not is instrumented by this file and the environment alone). It also runs the
  exports that are due whenever an idle worker wakes up (every half ``--timeout``): a sync
  worker exporting to this machine has no export thread (``export_mode="auto"``).
- ``/metrics`` answers for all workers: they share ``APPVITALS_PROMETHEUS_MULTIPROC_DIR``,
  which ``on_starting`` creates and empties (a fresh temporary folder when it is not set),
  ``child_exit`` folds each dead worker's counters into it, and ``on_exit`` removes the
  temporary folder again.

The application is not preloaded: each worker imports it after the fork, so the folder set
by ``on_starting`` is in its environment, and the master records no metrics for the workers
to inherit. See docs/operations.md and docs/prometheus.md.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from appvitals.integrations.gunicorn import post_fork  # noqa: F401 - gunicorn's hook, by name
from appvitals.prometheus import DIRECTORY_VARIABLES, mark_process_dead

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")  # `-b` on the command line wins
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
# Longer than APPVITALS_SHUTDOWN_TIMEOUT (5 s): a stopping worker flushes its telemetry.
graceful_timeout = 10

_created: list[Path] = []


def on_starting(server: Any) -> None:
    """Give the workers an empty metrics folder: old snapshots would be added to the totals."""
    name = next((var for var in DIRECTORY_VARIABLES if os.environ.get(var)), None)
    if name is None:
        directory = Path(tempfile.mkdtemp(prefix="appvitals-metrics-"))
        os.environ[DIRECTORY_VARIABLES[0]] = str(directory)
        _created.append(directory)
    else:
        directory = Path(os.environ[name])
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob("appvitals-*.json"):
            old.unlink()
    server.log.info("appvitals: /metrics of every worker in %s", directory)


def child_exit(server: Any, worker: Any) -> None:  # noqa: ARG001 - gunicorn's signature
    """Keep a dead worker's counters in /metrics and drop its gauges."""
    mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:  # noqa: ARG001 - gunicorn's hook signature
    """Remove the metrics folder this file created."""
    for directory in _created:
        shutil.rmtree(directory, ignore_errors=True)
