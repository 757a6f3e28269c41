"""Resource detection without a thread pool, for the SDK's own local detectors.

``Resource.create()`` runs every resource detector in a ``ThreadPoolExecutor`` so that a slow
one (a cloud metadata lookup) can time out. The SDK calls it when its logs module is
imported and whenever a provider is built without a resource, and appvitals calls it in
``configure()``, so the detectors of the default set-up — which only read the environment,
a UUID and ``os``/``platform`` facts — started the process's first threads. After that glibc
takes every lock of the process (malloc's, SQLite's, the GIL's) with atomic instructions,
for the life of the process (``docs/benchmarks.md``). This module, imported by ``appvitals``
before any OpenTelemetry SDK module that creates a resource, makes
``get_aggregated_resources`` run those local detectors in the calling thread, with the same
merge order and error handling; any other detector still goes through the SDK's pool.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Optional

from opentelemetry.sdk import resources as _resources

_logger = logging.getLogger("opentelemetry.sdk.resources")
_LOCAL_DETECTORS = tuple(
    detector
    for name in (
        "OTELResourceDetector",
        "ServiceInstanceIdResourceDetector",
        "ProcessResourceDetector",
        "OsResourceDetector",
        "_HostResourceDetector",
    )
    if (detector := getattr(_resources, name, None)) is not None
)
_threaded = _resources.get_aggregated_resources


def get_aggregated_resources(
    detectors: Sequence[Any],
    initial_resource: Optional[_resources.Resource] = None,
    timeout: int = 5,
) -> _resources.Resource:
    """The SDK's function, in the calling thread when every detector is a local one."""
    if not all(type(detector) in _LOCAL_DETECTORS for detector in detectors):
        return _threaded(detectors, initial_resource, timeout)
    merged = initial_resource or _resources.Resource.create()
    for detector in detectors:
        detected = _resources.Resource.get_empty()
        try:
            detected = detector.detect()
        except Exception as error:
            if detector.raise_on_error:
                raise
            _logger.warning("Exception %s in detector %s, ignoring", error, detector)
        merged = merged.merge(detected)
    return merged


if getattr(_resources.get_aggregated_resources, "__module__", None) != __name__:
    _resources.get_aggregated_resources = get_aggregated_resources
