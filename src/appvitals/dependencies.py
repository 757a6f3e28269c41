"""What a service depends on: caches, queues and the services it calls.

Caches and queues have no OpenTelemetry semantic conventions of their own, so appvitals
records a few instruments whose Prometheus forms make the usual questions one PromQL
expression each (see ``docs/dependencies.md``):

* :func:`cache_hit` / :func:`cache_miss` → counter ``appvitals.cache.requests``
  (``cache.name``, ``cache.result`` = ``hit`` | ``miss``); Prometheus
  ``appvitals_cache_requests_total``, whose ratio is the hit rate;
* :func:`queue_depth` → observable gauge ``appvitals.queue.depth`` (``queue.name``), read
  from your callback only when metrics are collected;
* :func:`enqueued` / :func:`dequeued` → counter ``appvitals.queue.messages``
  (``queue.name``, ``direction`` = ``enqueue`` | ``dequeue``) and, when the time a message
  waited is known, histogram ``appvitals.queue.lag`` (s, ``queue.name``).

:func:`peer_service` and :func:`set_peer_services` name the services behind hosts for
``peer.service`` on CLIENT spans (``APPVITALS_PEER_SERVICES``), so service maps draw the
edge between this service and the ones it calls.

Recording never raises; names go through the metric helpers' cardinality guard, so a
cache or queue name built from user input cannot exhaust memory.

Examples:
    >>> from appvitals import dependencies
    >>> dependencies.cache_hit("sessions")
    >>> dependencies.cache_miss("sessions", 2)
    >>> dependencies.enqueued("emails")
    >>> dependencies.dequeued("emails", lag_seconds=0.25)
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Optional, Union

from appvitals import metrics
from appvitals._peers import peer_service, set_peer_services
from appvitals._safety import report_internal_error

__all__ = [
    "LAG_BUCKETS",
    "cache_hit",
    "cache_miss",
    "dequeued",
    "enqueued",
    "peer_service",
    "queue_depth",
    "set_peer_services",
]

LAG_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
"""Bucket bounds of ``appvitals.queue.lag`` (s): from a hot queue to an hour-long backlog."""

Number = Union[int, float]
DepthCallback = Callable[[], Optional[Number]]

_depth_lock = threading.Lock()
_depth_callbacks: dict[str, DepthCallback] = {}


def _cache_requests() -> metrics.Counter:
    return metrics.counter(
        "appvitals.cache.requests",
        unit="{request}",
        description="Cache lookups by cache.result (hit or miss).",
    )


def cache_hit(name: str, n: int = 1) -> None:
    """Count ``n`` lookups of cache ``name`` that found their entry.

    Args:
        name: The cache (``cache.name``), e.g. ``"sessions"``.
        n: How many lookups.
    """
    try:
        _cache_requests().add(n, {"cache.name": name, "cache.result": "hit"})
    except Exception as error:
        report_internal_error("cache_hit", error)


def cache_miss(name: str, n: int = 1) -> None:
    """Count ``n`` lookups of cache ``name`` that did not find their entry.

    Args:
        name: The cache (``cache.name``).
        n: How many lookups.
    """
    try:
        _cache_requests().add(n, {"cache.name": name, "cache.result": "miss"})
    except Exception as error:
        report_internal_error("cache_miss", error)


def _observe_depths() -> list[tuple[Number, dict[str, str]]]:
    with _depth_lock:
        callbacks = list(_depth_callbacks.items())
    points: list[tuple[Number, dict[str, str]]] = []
    for name, callback in callbacks:
        try:
            depth = callback()
        except Exception as error:
            # One broken callback must not hide the other queues.
            report_internal_error(f"queue_depth {name} callback", error)
            continue
        if depth is not None:
            points.append((depth, {"queue.name": name}))
    return points


def queue_depth(name: str, callback: Optional[DepthCallback]) -> None:
    """Report the depth of queue ``name`` from ``callback``, called at every metric collection.

    A later call for the same name replaces its callback; ``None`` stops reporting it. The
    callback returns the number of waiting messages, or ``None`` for "unknown now"; it
    should be quick (an ``LLEN``, a ``qsize()``), since it runs on the exporting thread.

    Args:
        name: The queue (``queue.name``).
        callback: Returns the current depth.

    Examples:
        >>> import queue
        >>> from appvitals import dependencies
        >>> jobs = queue.Queue()
        >>> dependencies.queue_depth("jobs", jobs.qsize)
        >>> dependencies.queue_depth("jobs", None)
    """
    with _depth_lock:
        if callback is None:
            _depth_callbacks.pop(name, None)
        else:
            _depth_callbacks[name] = callback
    try:
        # The helper returns the cached gauge; after a reset() it is made on the new provider.
        metrics.gauge(
            "appvitals.queue.depth",
            unit="{message}",
            description="Messages waiting in the queue.",
            callback=_observe_depths,
        )
    except Exception as error:
        report_internal_error("queue_depth", error)


def _messages() -> metrics.Counter:
    return metrics.counter(
        "appvitals.queue.messages",
        unit="{message}",
        description="Messages put on (enqueue) and taken from (dequeue) the queue.",
    )


def enqueued(name: str, n: int = 1) -> None:
    """Count ``n`` messages put on queue ``name``.

    Args:
        name: The queue (``queue.name``).
        n: How many messages.
    """
    try:
        _messages().add(n, {"queue.name": name, "direction": "enqueue"})
    except Exception as error:
        report_internal_error("enqueued", error)


def dequeued(name: str, n: int = 1, lag_seconds: Optional[float] = None) -> None:
    """Count ``n`` messages taken from queue ``name``, and how long they waited.

    Args:
        name: The queue (``queue.name``).
        n: How many messages.
        lag_seconds: Seconds between enqueueing and dequeueing (for a batch, its oldest
            message); recorded once per call in ``appvitals.queue.lag``. Negative values
            (clock skew between producer and consumer) are recorded as 0.

    Examples:
        >>> import time
        >>> from appvitals import dependencies
        >>> message = {"body": "hi", "enqueued_at": time.time() - 1.5}
        >>> dependencies.dequeued("emails", lag_seconds=time.time() - message["enqueued_at"])
    """
    try:
        attributes = {"queue.name": name}
        _messages().add(n, {**attributes, "direction": "dequeue"})
        if lag_seconds is not None:
            metrics.histogram(
                "appvitals.queue.lag",
                unit="s",
                description="Time messages waited in the queue before being taken.",
                buckets=LAG_BUCKETS,
            ).record(max(0.0, float(lag_seconds)), attributes)
    except Exception as error:
        report_internal_error("dequeued", error)


def _reset() -> None:
    """Forget every queue-depth callback (tests)."""
    with _depth_lock:
        _depth_callbacks.clear()
