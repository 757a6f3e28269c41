"""``peer.service``: the logical name of the service at the other end of an outgoing call.

Service maps (Jaeger, Tempo's service graphs, the Collector's ``servicegraph`` connector)
draw an edge from a CLIENT span's ``peer.service`` to the SERVER span that continues its
trace. A host name says little (``10.0.0.5``), so the operator names the peers once:

* ``APPVITALS_PEER_SERVICES="api.erp.local=erp,10.0.0.5:8080=pim,*.cache.local=cache"``;
* or in code, :func:`set_peer_services` (its entries win over the variable's).

A key is ``host:port`` (most specific), ``host``, or ``*.domain`` (any sub-domain). Hosts
compare case-insensitively; IPv6 addresses are written in brackets (``[::1]:8080``).
Integrations (outgoing HTTP, :mod:`appvitals.db`) call :func:`peer_service` for every
CLIENT span; it is a couple of dictionary lookups.

The newest semantic conventions rename ``peer.service`` to ``service.peer.name``; appvitals
keeps ``peer.service`` because that is the attribute today's service-graph builders read.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from typing import Optional

__all__ = ["PEER_SERVICES_VARIABLE", "peer_service", "set_peer_services"]

PEER_SERVICES_VARIABLE = "APPVITALS_PEER_SERVICES"
"""Environment variable: comma-separated ``host[:port]=service`` pairs."""

_logger = logging.getLogger("appvitals")
_lock = threading.Lock()
_programmatic: dict[str, str] = {}
# The variable's raw text and its parsed map: re-parsed only when the text changes.
_from_environment: tuple[Optional[str], dict[str, str]] = (None, {})


def _normalise_key(key: str) -> str:
    key = key.strip().lower()
    host, port = _split(key)
    return f"{host}:{port}" if port is not None else host


def _split(key: str) -> tuple[str, Optional[int]]:
    """``host:port`` → (host, port); IPv6 only with a port when bracketed."""
    if key.startswith("["):
        host, _, rest = key[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
        return host, int(port) if port.isdigit() else None
    if key.count(":") == 1:
        host, _, port = key.partition(":")
        if port.isdigit():
            return host, int(port)
    return key, None


def _parse(raw: str) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for entry in raw.split(","):
        if not entry.strip():
            continue
        key, sep, service = entry.partition("=")
        if not sep or not key.strip() or not service.strip():
            # A typo in a manifest must not take the service down: skip the entry, say which.
            _logger.warning(
                "appvitals: %s entry %r is not host[:port]=service; ignoring it",
                PEER_SERVICES_VARIABLE,
                entry.strip(),
            )
            continue
        mapping[_normalise_key(key)] = service.strip()
    return mapping


def _environment_map() -> dict[str, str]:
    global _from_environment  # noqa: PLW0603 - a cache of the variable, per process
    raw = os.environ.get(PEER_SERVICES_VARIABLE)
    cached_raw, parsed = _from_environment
    if raw != cached_raw:
        parsed = _parse(raw or "")
        _from_environment = (raw, parsed)
    return parsed


def set_peer_services(mapping: Optional[Mapping[str, str]]) -> None:
    """Name the services behind hosts, in code (``None`` or ``{}`` forgets them).

    These entries take precedence over ``APPVITALS_PEER_SERVICES``; each call replaces the
    previous mapping.

    Args:
        mapping: ``{"host[:port]" or "*.domain": "service"}``.

    Examples:
        >>> set_peer_services({"api.erp.local": "erp", "10.0.0.5:8080": "pim"})
        >>> peer_service("API.ERP.local", 443), peer_service("10.0.0.5", 8080)
        ('erp', 'pim')
        >>> peer_service("10.0.0.5", 9090) is None
        True
        >>> set_peer_services(None)
    """
    global _programmatic  # noqa: PLW0603 - replaced whole, so lookups need no lock
    parsed = {_normalise_key(key): str(value) for key, value in (mapping or {}).items()}
    with _lock:
        _programmatic = parsed


def peer_service(host: Optional[str], port: Optional[int] = None) -> Optional[str]:
    """The configured ``peer.service`` for a call to ``host`` (and ``port``), or ``None``.

    Looks up ``host:port``, then ``host``, then each ``*.parent.domain``; entries set with
    :func:`set_peer_services` first, then ``APPVITALS_PEER_SERVICES``. Never raises.

    Args:
        host: The server's host name or IP address (brackets around IPv6 are optional).
        port: The server's port, when known.

    Returns:
        The service name, or ``None`` when the host is not mapped.

    Examples:
        >>> import os
        >>> os.environ["APPVITALS_PEER_SERVICES"] = "api.erp.local=erp,*.cache.local=cache"
        >>> peer_service("api.erp.local"), peer_service("redis-1.cache.local", 6379)
        ('erp', 'cache')
        >>> del os.environ["APPVITALS_PEER_SERVICES"]
    """
    if not host:
        return None
    try:
        host = host.strip().lower()
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        candidates = [f"{host}:{port}", host] if port is not None else [host]
        labels = host.split(".")
        candidates.extend("*." + ".".join(labels[index:]) for index in range(1, len(labels)))
        for mapping in (_programmatic, _environment_map()):
            if not mapping:
                continue
            for candidate in candidates:
                found = mapping.get(candidate)
                if found is not None:
                    return found
    except Exception as error:
        from appvitals._safety import report_internal_error

        report_internal_error("peer.service lookup", error)
    return None
