"""``test_connection()``: how fast and how healthy the way to one URL is, phase by phase.

Each request goes through a fresh client (a fresh connection), so DNS, TCP and TLS are
measured every time instead of once; the TLS context is built once and shared, as loading
the CA bundle costs more than a handshake. The body is read (at most 10 MB) to measure the
download. Nothing is exported: the recorder and the resolving backend are used directly.
"""

from __future__ import annotations

import ssl
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Optional, Union

from appvitals._version import __version__
from appvitals.http._capture import mask_url
from appvitals.http._taxonomy import ErrorClass, classify, error_message

if TYPE_CHECKING:  # httpx is optional: imported when a test runs, not with appvitals.http
    import httpx

MAX_BODY_BYTES = 10 * 1024 * 1024
#: Phases a recommendation can point at (``send`` is rarely the problem; ``total`` never).
_DOMINANT = ("dns", "connect", "tls", "first_byte", "download")
_LABELS = {
    "dns": "DNS lookup",
    "connect": "TCP connect",
    "tls": "TLS handshake",
    "first_byte": "server response time (time to first byte)",
    "download": "body download",
}
_ADVICE = {
    "dns": "use a caching resolver, or reuse connections (one shared client) so that fewer "
    "lookups happen",
    "connect": "the server is far away or the network is congested; reuse connections (one "
    "shared client keeps them alive)",
    "tls": "reuse connections, allow TLS session resumption and prefer TLS 1.3",
    "first_byte": "the time is spent in the service itself: profile it, or cache its answers",
    "download": "compress the response (Accept-Encoding: gzip) or fetch less",
}
_ERROR_ADVICE = {
    "DnsResolutionFailed": "{host} cannot be resolved: check the host name and the DNS setup",
    "ConnectionRefused": "nothing accepts connections on {host}:{port}: is the service "
    "running, and on that port?",
    "ConnectionReset": "the server closed the connection abruptly: check its logs, or a "
    "proxy or firewall in between",
    "NetworkUnreachable": "no route to the network of {host}: check routing and VPN",
    "HostUnreachable": "{host} is unreachable: check that it is up and routed",
    "ConnectionTimeout": "no TCP connection within the timeout: a firewall may drop the "
    "packets, or the host is down",
    "ReadTimeout": "the server accepted the connection but did not answer within the timeout",
    "CertificateExpired": "the server's certificate has expired: renew it",
    "CertificateInvalid": "the certificate does not match {host} or is not trusted: check the "
    "name and the chain (or test without verification)",
    "SslHandshakeFailed": "the TLS handshake failed: is it an HTTPS port, and do both sides "
    "share a protocol version and cipher?",
    "HttpProtocolError": "the answer is not valid HTTP: is it an HTTP service on that port "
    "(http:// against a TLS port, or the reverse)?",
}


@dataclass(frozen=True)
class Thresholds:
    """Median total times (milliseconds) that separate Fast, Normal and Slow.

    Examples:
        >>> Thresholds().rate(150.0), Thresholds().rate(400.0), Thresholds().rate(1500.0)
        ('Fast', 'Normal', 'Slow')
    """

    fast_ms: float = 200.0
    slow_ms: float = 1000.0

    def rate(self, total_ms: float) -> str:
        """``Fast`` up to ``fast_ms``, ``Normal`` up to ``slow_ms``, else ``Slow``."""
        if total_ms <= self.fast_ms:
            return "Fast"
        return "Normal" if total_ms <= self.slow_ms else "Slow"


@dataclass(frozen=True)
class PhaseStats:
    """Minimum, median and maximum of one phase over the requests that had it (ms)."""

    min_ms: float
    median_ms: float
    max_ms: float

    def to_dict(self) -> dict[str, float]:
        """``{"min_ms", "median_ms", "max_ms"}``."""
        return {"min_ms": self.min_ms, "median_ms": self.median_ms, "max_ms": self.max_ms}


@dataclass(frozen=True)
class TlsDetails:
    """The negotiated TLS session and the server certificate's validity.

    ``not_after`` and ``days_left`` need a verified certificate (``verify=True``): Python
    does not decode the certificate of an unverified connection.
    """

    protocol: Optional[str]
    cipher: Optional[str]
    not_after: Optional[str] = None
    days_left: Optional[int] = None
    subject: Optional[str] = None
    issuer: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        """The details as a JSON-compatible dict."""
        return {
            "protocol": self.protocol,
            "cipher": self.cipher,
            "not_after": self.not_after,
            "days_left": self.days_left,
            "subject": self.subject,
            "issuer": self.issuer,
        }


@dataclass(frozen=True)
class TestError:
    """A failure seen during the test, with how many requests it hit."""

    __test__ = False  # not a pytest test class, whatever its name

    category: str
    type: str
    message: str
    count: int = 1

    def to_dict(self) -> dict[str, Any]:
        """The error as a JSON-compatible dict."""
        return {
            "category": self.category,
            "type": self.type,
            "message": self.message,
            "count": self.count,
        }


@dataclass(frozen=True)
class ConnectionTestResult:
    """What :func:`~appvitals.http.test_connection` measured.

    Attributes:
        url: The URL tested (masked).
        requests: Requests sent.
        succeeded: Requests answered with a status below 400.
        failed: Requests that raised or were answered with 400 or more.
        phases: ``dns``, ``connect``, ``tls``, ``send``, ``first_byte``, ``download`` and
            ``total`` statistics over the requests that went through each phase.
        tls: The TLS session of the last request that had one.
        throughput_bps: Body bytes per second of download (``None`` without a body).
        rating: ``Fast``, ``Normal`` or ``Slow`` by the median total of the successful
            requests (``None`` when none succeeded).
        recommendations: What to look at, from the dominant phase, the certificate and the
            errors.
        errors: Distinct failures, classified, with their counts.
        statuses: The status of each answered request.
    """

    url: str
    requests: int
    succeeded: int
    failed: int
    phases: Mapping[str, PhaseStats] = field(default_factory=dict)
    tls: Optional[TlsDetails] = None
    throughput_bps: Optional[float] = None
    rating: Optional[str] = None
    recommendations: tuple[str, ...] = ()
    errors: tuple[TestError, ...] = ()
    statuses: tuple[int, ...] = ()

    @property
    def passed(self) -> bool:
        """Whether every request succeeded."""
        return self.failed == 0

    def median_ms(self, phase: str) -> Optional[float]:
        """The median of ``phase``, or ``None`` when no request went through it."""
        stats = self.phases.get(phase)
        return None if stats is None else stats.median_ms

    def to_dict(self) -> dict[str, Any]:
        """The result as a JSON-compatible dict; ``dns``, ``connect``, ``tls``,
        ``first_byte``, ``download`` and ``total`` are medians in ms (``null`` when absent).
        """
        medians = {phase: self.median_ms(phase) for phase in (*_DOMINANT, "send", "total")}
        return {
            "url": self.url,
            "passed": self.passed,
            "rating": self.rating,
            "requests": self.requests,
            "succeeded": self.succeeded,
            "failed": self.failed,
            **medians,
            "phases": {phase: stats.to_dict() for phase, stats in self.phases.items()},
            "tls": None if self.tls is None else self.tls.to_dict(),
            "throughput_bps": self.throughput_bps,
            "statuses": list(self.statuses),
            "errors": [error.to_dict() for error in self.errors],
            "recommendations": list(self.recommendations),
        }


@dataclass
class _Outcome:
    phases: dict[str, float]
    status: Optional[int] = None
    error: Optional[ErrorClass] = None
    message: str = ""
    received: int = 0
    tls: Optional[TlsDetails] = None


def run(
    url: str,
    *,
    requests: int = 5,
    timeout: float = 5.0,
    thresholds: Optional[Thresholds] = None,
    verify: Union[bool, str, ssl.SSLContext] = True,
) -> ConnectionTestResult:
    """The implementation of :func:`appvitals.http.test_connection`."""
    import httpx

    if requests < 1:
        msg = f"requests must be at least 1, not {requests}"
        raise ValueError(msg)
    if timeout <= 0:
        msg = f"timeout must be positive, not {timeout}"
        raise ValueError(msg)
    parsed = httpx.URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        msg = f"expected an http:// or https:// URL, not {url!r}"
        raise ValueError(msg)
    limits = thresholds or Thresholds()
    # Once for all requests: loading the CA bundle costs more than a TLS handshake.
    context = httpx.create_ssl_context(verify=verify)
    outcomes = [_one(parsed, context, timeout) for _ in range(requests)]
    return _summarise(mask_url(url), parsed, outcomes, limits)


def _one(url: httpx.URL, context: ssl.SSLContext, timeout: float) -> _Outcome:
    import httpx

    from appvitals.http._timing import PhaseRecorder, activate, deactivate, install_backend

    transport = httpx.HTTPTransport(verify=context)
    install_backend(transport)
    outcome = _Outcome(phases={})
    with httpx.Client(transport=transport, timeout=timeout) as client:
        # Built before the clock starts: the client's set-up is not the server's time.
        recorder = PhaseRecorder()
        request = client.build_request(
            "GET",
            url,
            headers={"User-Agent": f"appvitals/{__version__} (connection test)"},
            extensions={"trace": recorder.trace},
        )
        token = activate(recorder)
        try:
            response = client.send(request, stream=True)
            try:
                outcome.status = response.status_code
                # Read while the connection is open: the stream is gone once it closes.
                outcome.tls = _tls_details(response)
                for chunk in response.iter_raw():
                    outcome.received += len(chunk)
                    if outcome.received >= MAX_BODY_BYTES:
                        break
            finally:
                response.close()
            found = classify(response=response)
            if found is not None:
                outcome.error, outcome.message = found, error_message(None, response.status_code)
        except httpx.HTTPError as error:
            outcome.error, outcome.message = classify(error), error_message(error)
        finally:
            deactivate(token)
        outcome.phases = recorder.phases_ms()
        outcome.phases["total"] = round((time.perf_counter() - recorder.origin) * 1000.0, 3)
    return outcome


def _tls_details(response: httpx.Response) -> Optional[TlsDetails]:
    stream = response.extensions.get("network_stream")
    ssl_object = None if stream is None else stream.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    cipher = ssl_object.cipher()
    certificate = ssl_object.getpeercert() or {}
    not_after = days_left = None
    if "notAfter" in certificate:
        expires = ssl.cert_time_to_seconds(certificate["notAfter"])
        not_after = datetime.fromtimestamp(expires, timezone.utc).isoformat()
        days_left = int((expires - time.time()) // 86400)
    return TlsDetails(
        protocol=ssl_object.version(),
        cipher=None if cipher is None else cipher[0],
        not_after=not_after,
        days_left=days_left,
        subject=_common_name(certificate.get("subject")),
        issuer=_common_name(certificate.get("issuer")),
    )


def _common_name(name: Any) -> Optional[str]:
    for relative in name or ():
        for key, value in relative:
            if key == "commonName":
                return str(value)
    return None


def _summarise(
    url: str, parsed: httpx.URL, outcomes: Sequence[_Outcome], thresholds: Thresholds
) -> ConnectionTestResult:
    phases: dict[str, PhaseStats] = {}
    for phase in ("dns", "connect", "tls", "send", "first_byte", "download", "total"):
        values = [outcome.phases[phase] for outcome in outcomes if phase in outcome.phases]
        if values:
            phases[phase] = PhaseStats(
                round(min(values), 3), round(statistics.median(values), 3), round(max(values), 3)
            )
    succeeded = [outcome for outcome in outcomes if outcome.error is None]
    rating = None
    if succeeded:
        rating = thresholds.rate(statistics.median(o.phases["total"] for o in succeeded))
    received = sum(outcome.received for outcome in outcomes)
    downloading = sum(outcome.phases.get("download", 0.0) for outcome in outcomes) / 1000.0
    throughput = round(received / downloading, 1) if received and downloading > 0 else None
    tls = next((o.tls for o in reversed(outcomes) if o.tls is not None), None)
    errors: dict[tuple[str, str, str], int] = {}
    for outcome in outcomes:
        if outcome.error is not None:
            key = (outcome.error.category, outcome.error.type, outcome.message)
            errors[key] = errors.get(key, 0) + 1
    found = tuple(TestError(c, t, m, n) for (c, t, m), n in errors.items())
    return ConnectionTestResult(
        url=url,
        requests=len(outcomes),
        succeeded=len(succeeded),
        failed=len(outcomes) - len(succeeded),
        phases=phases,
        tls=tls,
        throughput_bps=throughput,
        rating=rating,
        recommendations=tuple(_recommend(parsed, phases, tls, throughput, rating, found)),
        errors=found,
        statuses=tuple(o.status for o in outcomes if o.status is not None),
    )


def _recommend(
    url: httpx.URL,
    phases: Mapping[str, PhaseStats],
    tls: Optional[TlsDetails],
    throughput: Optional[float],
    rating: Optional[str],
    errors: Sequence[TestError],
) -> list[str]:
    port = url.port or (443 if url.scheme == "https" else 80)
    advice: list[str] = []
    for error in errors:
        template = _ERROR_ADVICE.get(error.type)
        if template is not None:
            advice.append(template.format(host=url.host, port=port))
        elif error.category == "Auth":
            advice.append("the server refuses the request without valid credentials")
        elif error.category == "Service":
            advice.append(f"the service reports a failure ({error.message}): check its health")
    if rating in ("Normal", "Slow"):
        candidates = {phase: phases[phase].median_ms for phase in _DOMINANT if phase in phases}
        if candidates:
            dominant = max(candidates, key=lambda phase: candidates[phase])
            detail = f"{candidates[dominant]:.0f} ms median"
            if dominant == "download" and throughput:
                detail += f", {throughput / 1024:.0f} KiB/s"
            advice.append(f"{_LABELS[dominant]} dominates ({detail}): {_ADVICE[dominant]}")
    if tls is not None:
        if tls.days_left is not None and tls.days_left < 30:
            advice.append(
                f"the certificate expires in {tls.days_left} days ({tls.not_after}): renew it"
            )
        if tls.protocol in ("SSLv3", "TLSv1", "TLSv1.1"):
            advice.append(f"{tls.protocol} is outdated: enable TLS 1.2 or 1.3 on the server")
    return advice
