"""The error taxonomy of outgoing HTTP calls: one ``ErrorClass(category, type)`` per failure.

:func:`classify` reads an exception *and its cause chain* (``__cause__``/``__context__``):
httpx wraps httpcore's exception, which wraps the ``OSError`` or ``ssl`` error that says what
really happened (``ConnectionRefusedError``, ``socket.gaierror``, an expired certificate).
Classes are matched by name along the MRO, so neither httpx nor httpcore is imported here:
:class:`~appvitals.http.RetryPolicy` and this module work in programs without httpx.
"""

from __future__ import annotations

import errno
import json
import re
import socket
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Optional, overload

NETWORK = "Network"
TIMEOUT = "Timeout"
PROTOCOL = "Protocol"
AUTH = "Auth"
DATA = "Data"
SERVICE = "Service"
UNKNOWN = "Unknown"

#: Every type of the taxonomy and its category.
TAXONOMY: Mapping[str, str] = {
    "DnsResolutionFailed": NETWORK,
    "ConnectionRefused": NETWORK,
    "ConnectionReset": NETWORK,
    "NetworkUnreachable": NETWORK,
    "HostUnreachable": NETWORK,
    "ConnectionFailed": NETWORK,
    "ConnectionTimeout": TIMEOUT,
    "ReadTimeout": TIMEOUT,
    "WriteTimeout": TIMEOUT,
    "PoolTimeout": TIMEOUT,
    "SslHandshakeFailed": PROTOCOL,
    "CertificateInvalid": PROTOCOL,
    "CertificateExpired": PROTOCOL,
    "HttpProtocolError": PROTOCOL,
    "AuthenticationFailed": AUTH,
    "PermissionDenied": AUTH,
    "TokenExpired": AUTH,
    "DeserializationFailed": DATA,
    "EncodingError": DATA,
    "PayloadTooLarge": DATA,
    "ServiceUnavailable": SERVICE,
    "RateLimited": SERVICE,
    "ServerError": SERVICE,
    "ClientError": UNKNOWN,
    "Unknown": UNKNOWN,
}

# OpenSSL X509_V_ERR_* codes carried by ssl.SSLCertVerificationError.verify_code.
_CERT_HAS_EXPIRED = 10
_HOSTNAME_MISMATCH = 62

_HTTPX_MODULES = ("httpx", "httpcore")
_TIMEOUTS = {
    "ConnectTimeout": "ConnectionTimeout",
    "ReadTimeout": "ReadTimeout",
    "WriteTimeout": "WriteTimeout",
    "PoolTimeout": "PoolTimeout",
}
_ERRNO_TYPES = {
    errno.ECONNREFUSED: "ConnectionRefused",
    errno.ECONNRESET: "ConnectionReset",
    errno.ECONNABORTED: "ConnectionReset",
    errno.EPIPE: "ConnectionReset",
    errno.ENETUNREACH: "NetworkUnreachable",
    errno.ENETDOWN: "NetworkUnreachable",
    errno.EHOSTUNREACH: "HostUnreachable",
    errno.EHOSTDOWN: "HostUnreachable",
}
# Last resort when a library dropped the cause: the text it kept from the original error.
_MESSAGE_TYPES = (
    (
        re.compile(r"name or service not known|nodename nor servname|name resolution", re.I),
        "DnsResolutionFailed",
    ),
    (re.compile(r"certificate has expired", re.I), "CertificateExpired"),
    (
        re.compile(r"hostname mismatch|doesn't match|certificate verify failed", re.I),
        "CertificateInvalid",
    ),
    (re.compile(r"\bssl\b|\btls\b|handshake", re.I), "SslHandshakeFailed"),
    (re.compile(r"connection refused", re.I), "ConnectionRefused"),
    (re.compile(r"connection reset|broken pipe|connection aborted", re.I), "ConnectionReset"),
    (re.compile(r"network is unreachable", re.I), "NetworkUnreachable"),
    (re.compile(r"no route to host|host is unreachable", re.I), "HostUnreachable"),
)
_STATUS_TYPES = {
    401: "AuthenticationFailed",
    403: "PermissionDenied",
    413: "PayloadTooLarge",
    429: "RateLimited",
    503: "ServiceUnavailable",
}
_EXPIRED_TOKEN = re.compile(
    rb"token[^\"'<>]{0,40}expired|expired[^\"'<>]{0,40}token|token_expired", re.I
)


@dataclass(frozen=True)
class ErrorClass:
    """Where a failed call belongs: a ``category`` and, inside it, a ``type``.

    Attributes:
        category: ``Network``, ``Timeout``, ``Protocol``, ``Auth``, ``Data``, ``Service`` or
            ``Unknown``.
        type: The type inside the category (``ConnectionRefused``, ``RateLimited`` …), used
            as ``error.type`` on spans and metrics.

    Examples:
        >>> ErrorClass("Service", "RateLimited")
        ErrorClass(category='Service', type='RateLimited')
        >>> str(ErrorClass("Network", "ConnectionRefused"))
        'Network/ConnectionRefused'
    """

    category: str
    type: str

    def __str__(self) -> str:
        return f"{self.category}/{self.type}"


def _of(type_name: str) -> ErrorClass:
    return ErrorClass(TAXONOMY[type_name], type_name)


@overload
def classify(
    exception: BaseException, response: Any = None, *, body: Optional[bytes] = None
) -> ErrorClass: ...


@overload
def classify(
    exception: None = None, response: Any = None, *, body: Optional[bytes] = None
) -> Optional[ErrorClass]: ...


def classify(
    exception: Optional[BaseException] = None,
    response: Any = None,
    *,
    body: Optional[bytes] = None,
) -> Optional[ErrorClass]:
    """The :class:`ErrorClass` of a failed call: from its exception, else from its response.

    Args:
        exception: What the call raised (httpx, httpcore, ``OSError``, ``ssl``, JSON or
            Unicode errors; ``httpx.HTTPStatusError`` is classified by its response).
        response: The response (anything with ``status_code`` and ``headers``) when no
            exception says more.
        body: The start of the response body, if read (a 401 whose body says the token
            expired is ``TokenExpired``); by default the body of a response already read.

    Returns:
        The class; ``None`` only without an exception and without a response of status
        400 or more.

    Examples:
        >>> classify(ConnectionRefusedError(111, "Connection refused"))
        ErrorClass(category='Network', type='ConnectionRefused')
        >>> import socket
        >>> classify(socket.gaierror(-2, "Name or service not known")).type
        'DnsResolutionFailed'
        >>> class Response:
        ...     status_code = 429
        ...     headers = {"Retry-After": "3"}
        >>> classify(response=Response())
        ErrorClass(category='Service', type='RateLimited')
        >>> classify(response=None) is None
        True
    """
    if exception is not None:
        status_response = getattr(exception, "response", None)
        if _is(exception, "HTTPStatusError") and status_response is not None:
            found = classify_response(status_response, body)
            if found is not None:
                return found
        return classify_exception(exception)
    if response is None:
        return None
    return classify_response(response, body)


def classify_exception(exception: BaseException) -> ErrorClass:
    """The class of an exception, read from the most telling error in its cause chain."""
    chain = list(_chain(exception))
    # 1. httpx/httpcore timeouts: their class says which phase timed out, while the
    #    socket.timeout underneath does not.
    for error in chain:
        for name, type_name in _TIMEOUTS.items():
            if _is(error, name):
                return _of(type_name)
    # 2. The low-level error: what the operating system or OpenSSL reported.
    for error in chain:
        found = _low_level(error)
        if found is not None:
            return found
    # 3. The library's own class, then the text it kept.
    for error in chain:
        found = _library_level(error)
        if found is not None:
            return found
    return _of("Unknown")


def _chain(exception: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: Optional[BaseException] = exception
    while current is not None and id(current) not in seen and len(seen) < 16:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _is(error: BaseException, name: str) -> bool:
    """Whether ``error`` is an httpx or httpcore exception of class ``name`` (or a subclass)."""
    return any(
        cls.__name__ == name and cls.__module__.split(".")[0] in _HTTPX_MODULES
        for cls in type(error).__mro__
    )


def _low_level(error: BaseException) -> Optional[ErrorClass]:  # noqa: PLR0911 - one per kind
    if isinstance(error, socket.gaierror):
        return _of("DnsResolutionFailed")
    if isinstance(error, ssl.SSLCertVerificationError):
        if error.verify_code == _CERT_HAS_EXPIRED:
            return _of("CertificateExpired")
        # Hostname mismatch (62), self-signed, unknown issuer, not yet valid …
        return _of("CertificateInvalid")
    if isinstance(error, ssl.SSLError):
        if "CERTIFICATE_VERIFY_FAILED" in str(error):
            return _of("CertificateExpired" if "expired" in str(error) else "CertificateInvalid")
        return _of("SslHandshakeFailed")
    if isinstance(error, json.JSONDecodeError):
        return _of("DeserializationFailed")
    if isinstance(error, (UnicodeDecodeError, UnicodeEncodeError)):
        return _of("EncodingError")
    if isinstance(error, TimeoutError):
        # The kernel's ETIMEDOUT comes from connect(); a bare socket.timeout from a read.
        return _of("ConnectionTimeout" if error.errno == errno.ETIMEDOUT else "ReadTimeout")
    if isinstance(error, ConnectionRefusedError):
        return _of("ConnectionRefused")
    if isinstance(error, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        return _of("ConnectionReset")
    if isinstance(error, OSError) and error.errno in _ERRNO_TYPES:
        return _of(_ERRNO_TYPES[error.errno])
    return None


def _library_level(error: BaseException) -> Optional[ErrorClass]:  # noqa: PLR0911 - one per kind
    if _is(error, "ProtocolError") or _is(error, "TooManyRedirects"):
        return _of("HttpProtocolError")
    if _is(error, "UnsupportedProtocol") or _is(error, "InvalidURL"):
        return _of("HttpProtocolError")
    if _is(error, "DecodingError"):
        return _of("EncodingError")
    if _is(error, "NetworkError") or _is(error, "ProxyError"):
        message = str(error)
        for pattern, type_name in _MESSAGE_TYPES:
            if pattern.search(message):
                return _of(type_name)
        if _is(error, "ReadError") or _is(error, "WriteError"):
            return _of("ConnectionReset")
        return _of("ConnectionFailed")
    if isinstance(error, ValueError) and type(error).__name__ == "JSONDecodeError":
        return _of("DeserializationFailed")  # simplejson and others
    return None


def classify_response(response: Any, body: Optional[bytes] = None) -> Optional[ErrorClass]:
    """The class of a response by its status (``None`` below 400)."""
    status = int(response.status_code)
    if status < 400:
        return None
    if status == 401:
        headers = response.headers
        if _token_expired(headers.get("WWW-Authenticate"), body or _read_body(response)):
            return _of("TokenExpired")
    type_name = _STATUS_TYPES.get(status)
    if type_name is not None:
        return _of(type_name)
    return _of("ServerError" if status >= 500 else "ClientError")


def _read_body(response: Any) -> Optional[bytes]:
    """The body of a response that was already read; never reads one (it may be a stream)."""
    content = getattr(response, "_content", None)  # httpx keeps a read body there
    return content if isinstance(content, bytes) else None


def _token_expired(challenge: Optional[str], body: Optional[bytes]) -> bool:
    """RFC 6750: ``error="invalid_token"`` whose description says expired; or a body saying so."""
    if challenge:
        lowered = challenge.lower()
        if "invalid_token" in lowered and "expired" in lowered:
            return True
    if not body:
        return False
    return _EXPIRED_TOKEN.search(body[:4096]) is not None


def error_message(exception: Optional[BaseException], status: Optional[int] = None) -> str:
    """What went wrong in one line: the exception's type and message, or the HTTP status.

    Examples:
        >>> error_message(None, 503)
        'HTTP 503 Service Unavailable'
        >>> error_message(ConnectionRefusedError(111, "Connection refused"))
        'ConnectionRefusedError: [Errno 111] Connection refused'
    """
    if exception is None:
        if status is None:
            return ""
        try:
            return f"HTTP {status} {HTTPStatus(status).phrase}"
        except ValueError:  # a status the standard library does not name
            return f"HTTP {status}"
    text = str(exception) or next((str(e) for e in _chain(exception) if str(e)), "")
    return f"{type(exception).__name__}: {text}" if text else type(exception).__name__
