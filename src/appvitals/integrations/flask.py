"""Flask: request spans, RED metrics, correlation ids, errors, health and /metrics.

``appvitals.instrument_flask(app)`` (or the extension form ``FlaskVitals().init_app(app)``)
wraps the application's WSGI callable with a lean middleware, which reads the matched route
template while Flask answers (from ``start_response``). The OpenTelemetry contrib
Flask instrumentation measured +603 µs of CPU per request on this project's benchmark (issue
9), about eight times the whole budget, so appvitals emits the same stable semantic
conventions itself instead of wrapping it.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from appvitals._inline import tick
from appvitals._safety import report_internal_error
from appvitals.integrations._http_server import (
    EndpointRequest,
    Request,
    ServerOptions,
    ServerTelemetry,
    describe_headers,
    endpoint_response,
    serves,
)

if TYPE_CHECKING:
    from flask import Flask

    StartResponse = Callable[..., Any]
    WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

_ROUTE_KEY = "appvitals.route"
_ERROR_KEY = "appvitals.error"
_instrumented: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def _require_flask() -> Any:
    try:
        import flask
    except ImportError as error:  # pragma: no cover - depends on the environment
        msg = "appvitals.instrument_flask() needs Flask: pip install 'appvitals[flask]'"
        raise ImportError(msg) from error
    return flask


class _WSGIMiddleware:
    """The WSGI side: one request's span, metrics and correlation id."""

    def __init__(self, wsgi_app: WSGIApp, telemetry: ServerTelemetry) -> None:
        self.wsgi_app = wsgi_app
        self.telemetry = telemetry

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        telemetry = self.telemetry
        path = environ.get("PATH_INFO", "")
        if path in telemetry.excluded:
            endpoint = telemetry.endpoints.get(path)
            tick()  # probes and scrapes run inline exports too, when an idle app gets no other
            if endpoint is None or not serves(endpoint, environ.get("REQUEST_METHOD")):
                return self.wsgi_app(environ, start_response)
            status, headers, body = endpoint_response(endpoint, _endpoint_request(environ))
            start_response(f"{status} {'OK' if status < 400 else 'Error'}", headers)
            return [body]
        request = self._start(environ)
        if request is None:
            return self.wsgi_app(environ, start_response)
        cid_header = telemetry.options.correlation_response_header
        cid = request.correlation_id
        seen: list[int] = []

        def recording_start_response(status: str, headers: list[Any], *args: Any) -> Any:
            try:
                seen.append(int(status[:3]))
                headers.append((cid_header, cid))
                _remember_route(environ)  # Flask answers inside the request context
            except Exception as error:
                report_internal_error("flask start_response", error)
            return start_response(status, headers, *args)

        try:
            result = self.wsgi_app(environ, recording_start_response)
        except BaseException as error:
            request.finish(500, environ.get(_ROUTE_KEY), error, _int(environ.get("CONTENT_LENGTH")))
            raise
        request.finish(
            seen[0] if seen else 500,
            environ.get(_ROUTE_KEY),
            environ.get(_ERROR_KEY),
            _int(environ.get("CONTENT_LENGTH")),
        )
        return result

    def _start(self, environ: dict[str, Any]) -> Request | None:
        telemetry = self.telemetry
        try:
            incoming = None
            for key in telemetry.correlation_environ_keys:
                incoming = environ.get(key)
                if incoming is not None:
                    break
            cid = telemetry.correlation_id(incoming)
            carrier = None
            if "HTTP_TRACEPARENT" in environ:
                carrier = {"traceparent": environ["HTTP_TRACEPARENT"]}
                for header in ("tracestate", "baggage"):
                    value = environ.get("HTTP_" + header.upper())
                    if value is not None:
                        carrier[header] = value
            return telemetry.start(
                environ.get("REQUEST_METHOD", "GET"),
                environ.get("wsgi.url_scheme", "http"),
                environ.get("PATH_INFO", ""),
                cid,
                carrier,
                lambda: describe_headers(
                    environ.get("HTTP_USER_AGENT"),
                    environ.get("HTTP_HOST"),
                    environ.get("REMOTE_ADDR"),
                    environ.get("SERVER_PROTOCOL"),
                ),
            )
        except Exception as error:
            report_internal_error("flask request start", error)
            return None


def _int(value: Any) -> int | None:
    try:
        return int(value) if value else None
    except (TypeError, ValueError):
        return None


def _remember_route(environ: dict[str, Any]) -> None:
    """Put the route template Flask matched where the middleware reads it after the request.

    Called while Flask answers, inside its request context: from ``start_response`` and,
    for an exception that Flask propagates instead of answering, from
    ``got_request_exception``. Flask matches the route when it pushes the request context,
    before any ``before_request`` hook runs, so a request that a hook answers has its route
    too. (A ``before_request`` hook of appvitals' own cost ~3 µs per request more: Flask
    calls hooks through ``ensure_sync``.)
    """
    if _ROUTE_KEY not in environ:
        try:
            rule = _current_rule()
        except (LookupError, RuntimeError, AttributeError):  # no request context (a WSGI
            return  # layer between Flask and appvitals answered), or a Flask we do not know
        if rule is not None:
            environ[_ROUTE_KEY] = rule.rule


def _rule_reader() -> Callable[[], Any]:
    """A function that returns the ``url_rule`` of the request Flask is answering.

    Flask 2.2 and later keep the request context in a context variable: reading it takes
    ~60 ns, against ~600 ns through the ``flask.request`` proxy, which stays the fallback.
    """
    try:
        from flask.globals import _cv_request
    except ImportError:  # pragma: no cover - Flask < 2.2 or a future layout
        from flask import request

        return lambda: request.url_rule
    return lambda: _cv_request.get().request.url_rule


def _no_rule() -> Any:
    return None


_current_rule: Callable[[], Any] = _no_rule  # set by the first init_app()


def _remember_error(_sender: Any, exception: BaseException, **_extra: Any) -> None:
    """``got_request_exception``: Flask turns the exception into a 500; keep it for the span."""
    from flask import request

    request.environ[_ERROR_KEY] = exception
    _remember_route(request.environ)


class FlaskVitals:
    """The Flask extension form: ``FlaskVitals(app)`` or ``FlaskVitals().init_app(app)``.

    Examples:
        >>> from flask import Flask
        >>> import appvitals
        >>> from appvitals.integrations.flask import FlaskVitals
        >>> vitals = FlaskVitals(health_live_path="/livez")
        >>> app = Flask("shop")
        >>> vitals.init_app(app)
        >>> app.test_client().get("/livez").json["status"]
        'alive'
        >>> appvitals.shutdown()
        True
    """

    def __init__(self, app: Flask | None = None, **options: Any) -> None:
        self.options = ServerOptions.from_kwargs(options)
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Instrument ``app`` (configuring appvitals from the environment if needed)."""
        flask = _require_flask()
        if app in _instrumented:
            return
        from appvitals._setup import configure, is_configured

        if not is_configured():
            configure()
        global _current_rule  # noqa: PLW0603 - one reader for every Flask app of the process
        if _current_rule is _no_rule:
            _current_rule = _rule_reader()
        telemetry = ServerTelemetry(self.options)
        original = app.wsgi_app
        app.wsgi_app = _WSGIMiddleware(original, telemetry)  # type: ignore[method-assign]
        flask.got_request_exception.connect(_remember_error, app, weak=False)
        _instrumented[app] = original
        app.extensions["appvitals"] = self


def instrument_flask(app: Flask, **options: Any) -> FlaskVitals:
    """Instrument a Flask application: one line for traces, RED metrics and health.

    Configures appvitals from the environment when :func:`appvitals.configure` has not run.
    Options are those of :class:`~appvitals.integrations._http_server.ServerOptions`
    (health paths, ``/metrics``, excluded paths, correlation headers, body sizes).

    Examples:
        >>> from flask import Flask
        >>> import appvitals
        >>> app = Flask("billing")
        >>> _ = appvitals.instrument_flask(app)
        >>> response = app.test_client().get("/health/ready")
        >>> response.status_code, response.json["status"]
        (200, 'ready')
        >>> appvitals.shutdown()
        True
    """
    return FlaskVitals(app, **options)


def uninstrument_flask(app: Flask) -> None:
    """Remove appvitals from ``app`` (its WSGI callable and hooks are restored)."""
    original = _instrumented.pop(app, None)
    if original is None:
        return
    flask = _require_flask()
    app.wsgi_app = original  # type: ignore[method-assign]
    flask.got_request_exception.disconnect(_remember_error, app)
    app.extensions.pop("appvitals", None)


def _endpoint_request(environ: dict[str, Any]) -> EndpointRequest:
    """The parts of a WSGI request appvitals' own endpoints read (a body only for POST)."""
    body = b""
    if environ.get("REQUEST_METHOD") == "POST":
        from appvitals.monitoring_api import MAX_BYTES

        stream = environ.get("wsgi.input")
        try:  # one byte over the limit is enough to answer 413
            body = stream.read(MAX_BYTES + 1) if stream is not None else b""
        except Exception as error:  # a broken input stream: answered as an empty body (400)
            report_internal_error("monitoring request body", error)
    return EndpointRequest(
        accept=environ.get("HTTP_ACCEPT"),
        content_type=environ.get("CONTENT_TYPE"),
        body=body,
        client=environ.get("REMOTE_ADDR"),
    )
