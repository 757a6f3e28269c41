"""A real OTLP receiver (gRPC and HTTP) that keeps what it receives, for tests.

Tests that check what appvitals sends should go through the same exporters and wire formats
production uses, not through an in-memory exporter, so this receiver speaks OTLP/gRPC and
OTLP/HTTP (protobuf, optionally gzip or deflate compressed, and JSON) on free local ports and
stores every request as OTLP/JSON.
"""

from __future__ import annotations

import gzip
import json
import threading
import zlib
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, NamedTuple, Optional, TypeVar, cast
from urllib.parse import urlsplit

import grpc
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from appvitals._otlp_json import to_otlp_json
from appvitals.testing._records import (
    LogRecord,
    MetricPoint,
    Signal,
    SpanRecord,
    logs_from,
    metrics_from,
    spans_from,
)

_HOST = "127.0.0.1"
_SIGNALS: tuple[Signal, ...] = ("traces", "metrics", "logs")
# serve_forever() only notices shutdown() between polls, so this bounds how long stop() takes.
_HTTP_POLL_INTERVAL_S = 0.05
# A bogus Content-Length must not make the receiver try to read gigabytes; SDK batches are
# far smaller than this.
_MAX_HTTP_BODY = 64 * 1024 * 1024

_Record = TypeVar("_Record")


class _Route(NamedTuple):
    signal: Signal
    request_type: type[Message]
    response: bytes


_HTTP_ROUTES: dict[str, _Route] = {
    "/v1/traces": _Route(
        "traces",
        trace_service_pb2.ExportTraceServiceRequest,
        trace_service_pb2.ExportTraceServiceResponse().SerializeToString(),
    ),
    "/v1/metrics": _Route(
        "metrics",
        metrics_service_pb2.ExportMetricsServiceRequest,
        metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString(),
    ),
    "/v1/logs": _Route(
        "logs",
        logs_service_pb2.ExportLogsServiceRequest,
        logs_service_pb2.ExportLogsServiceResponse().SerializeToString(),
    ),
}


class OTLPReceiver:
    """An OTLP/gRPC and OTLP/HTTP receiver on free ports of 127.0.0.1 that records requests.

    Every request is kept as OTLP/JSON (a ``dict``), per signal, in arrival order. Use it as a
    context manager, or through the ``otlp_receiver`` pytest fixture::

        with OTLPReceiver() as receiver:
            exporter = OTLPSpanExporter(endpoint=receiver.grpc_endpoint, insecure=True)
            ...
            (span,) = receiver.wait_for_spans(lambda s: s.name == "GET /")

    The ``wait_for_*`` helpers block on a condition variable that each arriving request
    notifies, so they return as soon as the data is there and never sleep-poll.

    All methods are thread-safe.
    """

    def __init__(self) -> None:
        """Create a stopped receiver; :meth:`start` (or ``with``) opens the ports."""
        self._condition = threading.Condition()
        self._requests: dict[Signal, list[dict[str, Any]]] = {signal: [] for signal in _SIGNALS}
        self._grpc_server: Any = None
        self._grpc_executor: Optional[ThreadPoolExecutor] = None
        self._grpc_port = 0
        self._http_server: Optional[_OTLPHTTPServer] = None
        self._http_thread: Optional[threading.Thread] = None

    @property
    def grpc_endpoint(self) -> str:
        """The OTLP/gRPC endpoint, ``http://127.0.0.1:PORT``.

        Raises:
            RuntimeError: If the receiver is not running.
        """
        if self._grpc_server is None:
            raise RuntimeError("the OTLP receiver is not running; call start() first")
        return f"http://{_HOST}:{self._grpc_port}"

    @property
    def http_endpoint(self) -> str:
        """The OTLP/HTTP base URL, ``http://127.0.0.1:PORT``; signals are under ``/v1/...``.

        Raises:
            RuntimeError: If the receiver is not running.
        """
        if self._http_server is None:
            raise RuntimeError("the OTLP receiver is not running; call start() first")
        return f"http://{_HOST}:{self._http_server.server_address[1]}"

    def start(self) -> None:
        """Open both ports and start serving.

        Raises:
            RuntimeError: If the receiver is already running, or gRPC cannot bind a port.
        """
        if self._grpc_server is not None or self._http_server is not None:
            raise RuntimeError("the OTLP receiver is already running")
        try:
            self._start_grpc()
            self._start_http()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop both servers, dropping in-flight requests; a no-op when not running.

        Received requests are kept, so tests can still read them after stopping.
        """
        grpc_server, self._grpc_server = self._grpc_server, None
        if grpc_server is not None:
            grpc_server.stop(grace=0).wait()
        executor, self._grpc_executor = self._grpc_executor, None
        if executor is not None:
            executor.shutdown(wait=True)
        http_server, self._http_server = self._http_server, None
        http_thread, self._http_thread = self._http_thread, None
        if http_server is not None:
            if http_thread is not None:
                http_server.shutdown()
                http_thread.join()
            http_server.server_close()

    def __enter__(self) -> OTLPReceiver:
        """Start the receiver and return it."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        """Stop the receiver."""
        self.stop()

    def requests(self, signal: Signal) -> list[dict[str, Any]]:
        """Return the requests received so far for one signal, as OTLP/JSON.

        Args:
            signal: ``"traces"``, ``"metrics"`` or ``"logs"``.

        Returns:
            A snapshot list, in arrival order; later requests do not change it.

        Raises:
            ValueError: If ``signal`` is not one of the three signals.
        """
        if signal not in _SIGNALS:
            raise ValueError(f"signal must be one of {', '.join(_SIGNALS)}, not {signal!r}")
        with self._condition:
            return list(self._requests[signal])

    def spans(self) -> list[SpanRecord]:
        """Return every span received so far."""
        return spans_from(self.requests("traces"))

    def metrics(self) -> list[MetricPoint]:
        """Return every metric data point received so far."""
        return metrics_from(self.requests("metrics"))

    def logs(self) -> list[LogRecord]:
        """Return every log record received so far."""
        return logs_from(self.requests("logs"))

    def clear(self) -> None:
        """Forget every request received so far."""
        with self._condition:
            for requests in self._requests.values():
                requests.clear()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Wait until ``predicate()`` is true, re-checking it whenever a request arrives.

        Args:
            predicate: Called with the receiver's lock held (so it must not block), typically
                reading :meth:`requests`, :meth:`spans`, :meth:`metrics` or :meth:`logs`.
            timeout: Seconds to wait at most.

        Returns:
            The predicate's last result: ``False`` means it timed out.
        """
        with self._condition:
            return self._condition.wait_for(predicate, timeout=timeout)

    def wait_for_spans(
        self,
        predicate: Optional[Callable[[SpanRecord], bool]] = None,
        count: int = 1,
        timeout: float = 10.0,
    ) -> list[SpanRecord]:
        """Wait until at least ``count`` received spans match ``predicate``.

        Args:
            predicate: Selects the spans to wait for; ``None`` selects every span.
            count: How many matching spans to wait for.
            timeout: Seconds to wait at most.

        Returns:
            Every matching span received so far, in arrival order. On timeout this has fewer
            than ``count`` items, so assert on its length.
        """
        return self._wait_for_records(self.spans, predicate, count, timeout)

    def wait_for_metrics(
        self,
        predicate: Optional[Callable[[MetricPoint], bool]] = None,
        count: int = 1,
        timeout: float = 10.0,
    ) -> list[MetricPoint]:
        """Wait until at least ``count`` received metric data points match ``predicate``.

        Args:
            predicate: Selects the points to wait for; ``None`` selects every point.
            count: How many matching points to wait for.
            timeout: Seconds to wait at most.

        Returns:
            Every matching point received so far, in arrival order. On timeout this has fewer
            than ``count`` items, so assert on its length.
        """
        return self._wait_for_records(self.metrics, predicate, count, timeout)

    def wait_for_logs(
        self,
        predicate: Optional[Callable[[LogRecord], bool]] = None,
        count: int = 1,
        timeout: float = 10.0,
    ) -> list[LogRecord]:
        """Wait until at least ``count`` received log records match ``predicate``.

        Args:
            predicate: Selects the records to wait for; ``None`` selects every record.
            count: How many matching records to wait for.
            timeout: Seconds to wait at most.

        Returns:
            Every matching record received so far, in arrival order. On timeout this has fewer
            than ``count`` items, so assert on its length.
        """
        return self._wait_for_records(self.logs, predicate, count, timeout)

    def _wait_for_records(
        self,
        read: Callable[[], list[_Record]],
        predicate: Optional[Callable[[_Record], bool]],
        count: int,
        timeout: float,
    ) -> list[_Record]:
        matched: list[_Record] = []

        def enough() -> bool:
            nonlocal matched
            matched = [r for r in read() if predicate is None or predicate(r)]
            return len(matched) >= count

        self.wait_for(enough, timeout)
        return matched

    def _record(self, signal: Signal, request: dict[str, Any]) -> None:
        with self._condition:
            self._requests[signal].append(request)
            self._condition.notify_all()

    def _start_grpc(self) -> None:
        self._grpc_executor = ThreadPoolExecutor(
            max_workers=4, thread_name_prefix="appvitals-otlp-grpc"
        )
        server = grpc.server(self._grpc_executor)
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(  # type: ignore[no-untyped-call]
            _TraceService(self._record), server
        )
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(  # type: ignore[no-untyped-call]
            _MetricsService(self._record), server
        )
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(  # type: ignore[no-untyped-call]
            _LogsService(self._record), server
        )
        port = server.add_insecure_port(f"{_HOST}:0")
        if not port:
            raise RuntimeError(f"gRPC could not bind a port on {_HOST}")
        server.start()
        self._grpc_server = server
        self._grpc_port = int(port)

    def _start_http(self) -> None:
        self._http_server = _OTLPHTTPServer((_HOST, 0), self._record)
        self._http_thread = threading.Thread(
            target=self._http_server.serve_forever,
            kwargs={"poll_interval": _HTTP_POLL_INTERVAL_S},
            name="appvitals-otlp-http",
            daemon=True,
        )
        self._http_thread.start()


_RecordFn = Callable[[Signal, dict[str, Any]], None]


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, record: _RecordFn) -> None:
        self._record = record

    def Export(  # noqa: N802 - the generated servicer's method name
        self, request: trace_service_pb2.ExportTraceServiceRequest, _context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self._record("traces", to_otlp_json(request))
        return trace_service_pb2.ExportTraceServiceResponse()


class _MetricsService(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, record: _RecordFn) -> None:
        self._record = record

    def Export(  # noqa: N802 - the generated servicer's method name
        self, request: metrics_service_pb2.ExportMetricsServiceRequest, _context: Any
    ) -> metrics_service_pb2.ExportMetricsServiceResponse:
        self._record("metrics", to_otlp_json(request))
        return metrics_service_pb2.ExportMetricsServiceResponse()


class _LogsService(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, record: _RecordFn) -> None:
        self._record = record

    def Export(  # noqa: N802 - the generated servicer's method name
        self, request: logs_service_pb2.ExportLogsServiceRequest, _context: Any
    ) -> logs_service_pb2.ExportLogsServiceResponse:
        self._record("logs", to_otlp_json(request))
        return logs_service_pb2.ExportLogsServiceResponse()


class _OTLPHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], record: _RecordFn) -> None:
        self.record = record
        super().__init__(address, _OTLPHTTPHandler)


class _HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _OTLPHTTPHandler(BaseHTTPRequestHandler):
    # HTTP/1.0 closes each connection after its response, so no handler thread is left
    # waiting on an idle keep-alive connection when the receiver stops.
    protocol_version = "HTTP/1.0"

    def do_POST(self) -> None:
        """Receive one OTLP/HTTP export request."""
        try:
            # Read the body before any error reply: closing a socket with unread data makes
            # the client see a connection reset instead of the status.
            body = self._read_body()
            route = _HTTP_ROUTES.get(urlsplit(self.path).path)
            if route is None:
                raise _HTTPError(404, f"no OTLP signal at {self.path}")
            content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if content_type == "application/x-protobuf":
                request = route.request_type()
                try:
                    request.ParseFromString(body)
                except DecodeError as error:
                    raise _HTTPError(400, f"invalid protobuf body: {error}") from None
                payload = to_otlp_json(request)
                response = route.response
            elif content_type == "application/json":
                try:
                    payload = json.loads(body)
                except ValueError as error:
                    raise _HTTPError(400, f"invalid JSON body: {error}") from None
                if not isinstance(payload, dict):
                    raise _HTTPError(400, "the JSON body is not an object")
                response = b"{}"
            else:
                raise _HTTPError(415, f"unsupported Content-Type {content_type!r}")
        except _HTTPError as error:
            self._reply(error.status, "text/plain; charset=utf-8", error.message.encode())
            return
        cast(_OTLPHTTPServer, self.server).record(route.signal, payload)
        self._reply(200, content_type, response)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep per-request access logs out of test output."""

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None or not length.strip().isdigit():
            raise _HTTPError(411, "a Content-Length header is required")
        if int(length) > _MAX_HTTP_BODY:
            raise _HTTPError(413, f"bodies over {_MAX_HTTP_BODY} bytes are refused")
        body = self.rfile.read(int(length))
        encoding = self.headers.get("Content-Encoding", "identity").strip().lower()
        try:
            return _DECODERS[encoding](body)
        except KeyError:
            raise _HTTPError(415, f"unsupported Content-Encoding {encoding!r}") from None
        except (OSError, EOFError, zlib.error) as error:
            raise _HTTPError(400, f"cannot decode {encoding} body: {error}") from None

    def _reply(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


_DECODERS: Mapping[str, Callable[[bytes], bytes]] = {
    "identity": lambda body: body,
    "": lambda body: body,
    "gzip": gzip.decompress,
    "deflate": zlib.decompress,
}
