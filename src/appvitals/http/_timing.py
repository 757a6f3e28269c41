"""Phase timings of one request: httpcore's ``trace`` extension plus a resolving backend.

httpcore reports ``connection.connect_tcp``, ``connection.start_tls``,
``http11.send_request_headers``/``send_request_body``, ``receive_response_headers`` and
``receive_response_body`` (``http2.*`` likewise) to the callback in
``request.extensions["trace"]``, each as ``.started`` then ``.complete`` or ``.failed``.
:class:`PhaseRecorder` is that callback: it keeps one timestamp per event, and turns them
into phases.

httpcore resolves the host name inside ``connect_tcp`` (``socket.create_connection`` or
anyio's ``connect_tcp``), so DNS and TCP are one event there. :class:`TimingBackend` (and
:class:`AsyncTimingBackend`) wrap the connection pool's network backend: their
``connect_tcp`` calls ``getaddrinfo`` first (timed: ``dns``), then asks the wrapped backend
to connect to each resolved address in turn (timed: ``connect``). The recorder of the
request being sent is found through a context variable, set around the transport call.
"""

from __future__ import annotations

import contextvars
import socket
import time
from collections.abc import Iterable, Mapping
from typing import Any, Optional

import httpcore

_active: contextvars.ContextVar[Optional[PhaseRecorder]] = contextvars.ContextVar(
    "appvitals_http_phases", default=None
)


class PhaseRecorder:
    """Timestamps of one request's connection and HTTP events (``perf_counter`` seconds)."""

    __slots__ = ("_marks", "origin", "origin_ns")

    def __init__(self) -> None:
        self.origin = time.perf_counter()
        self.origin_ns = time.time_ns()
        self._marks: dict[str, float] = {}

    def trace(self, name: str, info: Mapping[str, Any]) -> None:  # noqa: ARG002
        """httpcore's synchronous ``trace`` callback."""
        # "http11.send_request_headers.started" -> "send_request_headers.started"
        self._marks[name[name.find(".") + 1 :]] = time.perf_counter()

    async def atrace(self, name: str, info: Mapping[str, Any]) -> None:
        """httpcore's asynchronous ``trace`` callback."""
        self.trace(name, info)

    def mark(self, phase: str, started: float, ended: float, failed: bool = False) -> None:
        """Record a phase measured outside httpcore (the resolving backend's dns and tcp)."""
        self._marks[f"{phase}.started"] = started
        self._marks[f"{phase}.failed" if failed else f"{phase}.complete"] = ended

    def reset(self) -> None:
        """Forget the events (a retry transport starts a new attempt)."""
        self._marks.clear()

    def wall_ns(self, moment: float) -> int:
        """A ``perf_counter`` moment as nanoseconds since the epoch (span event times)."""
        return self.origin_ns + int((moment - self.origin) * 1e9)

    def intervals(self) -> dict[str, tuple[float, float]]:
        """``phase -> (start, end)`` of the phases that started (and ended or failed)."""
        marks = self._marks
        found: dict[str, tuple[float, float]] = {}

        def interval(phase: str, start: Optional[float], *ends: str) -> None:
            if start is None:
                return
            for key in ends:
                end = marks.get(key)
                if end is not None and end >= start:
                    found[phase] = (start, end)
                    return

        interval("dns", marks.get("dns.started"), "dns.complete", "dns.failed")
        if "dns.started" in marks:
            interval("connect", marks.get("tcp.started"), "tcp.complete", "tcp.failed")
        else:  # not our backend: httpcore's connect_tcp (which resolved the name too)
            interval(
                "connect",
                marks.get("connect_tcp.started"),
                "connect_tcp.complete",
                "connect_tcp.failed",
            )
        interval("tls", marks.get("start_tls.started"), "start_tls.complete", "start_tls.failed")
        interval(
            "send",
            marks.get("send_request_headers.started"),
            "send_request_body.complete",
            "send_request_body.failed",
            "send_request_headers.failed",
        )
        sent = found.get("send")
        interval(
            "first_byte",
            None if sent is None else sent[1],
            "receive_response_headers.complete",
            "receive_response_headers.failed",
        )
        interval(
            "download",
            marks.get("receive_response_body.started"),
            "receive_response_body.complete",
            "receive_response_body.failed",
        )
        return found

    def phases_ms(self) -> dict[str, float]:
        """Duration of each phase that happened, in milliseconds (no ``total``)."""
        return {
            phase: round((end - start) * 1000.0, 3)
            for phase, (start, end) in self.intervals().items()
        }


def activate(recorder: Optional[PhaseRecorder]) -> contextvars.Token[Optional[PhaseRecorder]]:
    """Make ``recorder`` the one the resolving backends report to, in this context."""
    return _active.set(recorder)


def deactivate(token: contextvars.Token[Optional[PhaseRecorder]]) -> None:
    """Undo :func:`activate`."""
    _active.reset(token)


def _addresses(infos: Iterable[tuple[Any, ...]]) -> list[str]:
    """Resolved addresses, without duplicates, in the resolver's order of preference."""
    seen: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in seen:
            seen.append(address)
    return seen


class TimingBackend(httpcore.NetworkBackend):
    """A network backend that resolves the name itself, so that DNS and TCP are timed apart.

    It connects to the resolved addresses in the resolver's order until one accepts, as
    ``socket.create_connection`` does; TLS still verifies and sends SNI for the host name,
    which httpcore passes to ``start_tls`` separately.
    """

    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self.inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: Optional[float] = None,
        local_address: Optional[str] = None,
        socket_options: Optional[Iterable[Any]] = None,
    ) -> httpcore.NetworkStream:
        """Resolve ``host`` (dns), then connect to its addresses in turn (connect)."""
        recorder = _active.get()
        started = time.perf_counter()
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as error:
            if recorder is not None:
                recorder.mark("dns", started, time.perf_counter(), failed=True)
            # As httpcore's own backend reports it: a ConnectError caused by the gaierror.
            raise httpcore.ConnectError(str(error)) from error
        resolved = time.perf_counter()
        if recorder is not None:
            recorder.mark("dns", started, resolved)
        options = list(socket_options) if socket_options is not None else None
        failure: Optional[Exception] = None
        for address in _addresses(infos):
            try:
                stream = self.inner.connect_tcp(
                    address, port, timeout, local_address, socket_options=options
                )
            except httpcore.ConnectError as error:
                failure = error
                continue
            except BaseException:
                if recorder is not None:
                    recorder.mark("tcp", resolved, time.perf_counter(), failed=True)
                raise
            if recorder is not None:
                recorder.mark("tcp", resolved, time.perf_counter())
            return stream
        if recorder is not None:
            recorder.mark("tcp", resolved, time.perf_counter(), failed=True)
        raise failure or httpcore.ConnectError(f"no address found for {host}")

    def connect_unix_socket(
        self,
        path: str,
        timeout: Optional[float] = None,
        socket_options: Optional[Iterable[Any]] = None,
    ) -> httpcore.NetworkStream:
        """Unchanged: a Unix socket has no name to resolve."""
        return self.inner.connect_unix_socket(path, timeout, socket_options)

    def sleep(self, seconds: float) -> None:
        """The wrapped backend's sleep."""
        self.inner.sleep(seconds)


class AsyncTimingBackend(httpcore.AsyncNetworkBackend):
    """:class:`TimingBackend` for ``AsyncClient``: ``anyio.getaddrinfo`` (asyncio or trio)."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend) -> None:
        self.inner = inner

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: Optional[float] = None,
        local_address: Optional[str] = None,
        socket_options: Optional[Iterable[Any]] = None,
    ) -> httpcore.AsyncNetworkStream:
        """Resolve ``host`` (dns), then connect to its addresses in turn (connect)."""
        import anyio

        recorder = _active.get()
        started = time.perf_counter()
        try:
            infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as error:
            if recorder is not None:
                recorder.mark("dns", started, time.perf_counter(), failed=True)
            raise httpcore.ConnectError(str(error)) from error
        resolved = time.perf_counter()
        if recorder is not None:
            recorder.mark("dns", started, resolved)
        options = list(socket_options) if socket_options is not None else None
        failure: Optional[Exception] = None
        for address in _addresses(infos):
            try:
                stream = await self.inner.connect_tcp(
                    address, port, timeout, local_address, socket_options=options
                )
            except httpcore.ConnectError as error:
                failure = error
                continue
            except BaseException:
                if recorder is not None:
                    recorder.mark("tcp", resolved, time.perf_counter(), failed=True)
                raise
            if recorder is not None:
                recorder.mark("tcp", resolved, time.perf_counter())
            return stream
        if recorder is not None:
            recorder.mark("tcp", resolved, time.perf_counter(), failed=True)
        raise failure or httpcore.ConnectError(f"no address found for {host}")

    async def connect_unix_socket(
        self,
        path: str,
        timeout: Optional[float] = None,
        socket_options: Optional[Iterable[Any]] = None,
    ) -> httpcore.AsyncNetworkStream:
        """Unchanged: a Unix socket has no name to resolve."""
        return await self.inner.connect_unix_socket(path, timeout, socket_options)

    async def sleep(self, seconds: float) -> None:
        """The wrapped backend's sleep."""
        await self.inner.sleep(seconds)


def _pools(transport: Any) -> Iterable[Any]:
    """The httpcore connection pools under ``transport`` (through appvitals' wrappers)."""
    seen: set[int] = set()
    current = transport
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        pool = getattr(current, "_pool", None)  # httpx.HTTPTransport / AsyncHTTPTransport
        if pool is not None and hasattr(pool, "_network_backend"):
            yield pool
            return
        # appvitals' instrumented transport (``inner``) and retry transport (``wrapped``).
        current = getattr(current, "inner", None) or getattr(current, "wrapped", None)


def install_backend(transport: Any) -> list[tuple[Any, Any]]:
    """Put a resolving backend in the pools under ``transport``; returns what to restore."""
    replaced = []
    for pool in _pools(transport):
        backend = pool._network_backend
        if isinstance(backend, (TimingBackend, AsyncTimingBackend)):
            continue
        if isinstance(backend, httpcore.NetworkBackend):
            pool._network_backend = TimingBackend(backend)
        elif isinstance(backend, httpcore.AsyncNetworkBackend):
            pool._network_backend = AsyncTimingBackend(backend)
        else:
            continue
        replaced.append((pool, backend))
    return replaced


def restore_backends(replaced: Iterable[tuple[Any, Any]]) -> None:
    """Undo :func:`install_backend`."""
    for pool, backend in replaced:
        pool._network_backend = backend
