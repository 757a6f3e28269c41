"""``appvitals test`` and ``appvitals health``: the HTTP subcommands of the ``appvitals`` command.

``test`` runs :func:`appvitals.http.test_connection` on each URL; ``health`` reads a
service's ``/health/detailed`` and shows it as a table. Both exit 0 when all is well, 1 for
slow/degraded, 2 for failed/unhealthy/unreachable and 3 for a usage error (argparse's own
2 would read as "failed"). httpx is imported only when one of them runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NoReturn, Optional

EXIT_OK = 0
EXIT_SLOW = 1
EXIT_FAILED = 2
EXIT_USAGE = 3
HEALTH_PATH = "/health/detailed"


class UsageError(Exception):
    """An argument the subcommand cannot use (exit code 3)."""


def add_http_commands(commands: Any) -> None:
    """Add ``test`` and ``health`` to the ``appvitals`` subcommands (``add_subparsers()``)."""
    test = commands.add_parser(
        "test",
        help="measure DNS, TCP, TLS and response times of URLs",
        description=(
            "Send GET requests to each URL, each on a new connection, and show the median of "
            "every phase. Exit code: 0 fast or normal, 1 slow, 2 failed, 3 usage error."
        ),
    )
    test.add_argument("urls", nargs="+", metavar="URL", help="http:// or https:// URL")
    test.add_argument("--requests", type=int, default=5, metavar="N", help="requests per URL")
    test.add_argument("--timeout", type=float, default=5.0, metavar="S", help="seconds per phase")
    test.add_argument("--insecure", action="store_true", help="do not verify TLS certificates")
    test.add_argument("--cacert", metavar="FILE", help="trust the CA certificates in FILE")
    test.add_argument(
        "--fast-ms", type=float, default=200.0, metavar="MS", help="Fast up to this median"
    )
    test.add_argument(
        "--slow-ms", type=float, default=1000.0, metavar="MS", help="Slow above this median"
    )
    test.add_argument("--verbose", "-v", action="store_true", help="per-phase min/median/max")
    test.add_argument("--json", action="store_true", help="print one JSON object")
    test.set_defaults(handler=_guarded(run_test))
    _exit_3_on_usage_errors(test)

    health = commands.add_parser(
        "health",
        help="show a service's /health/detailed as a table",
        description=(
            f"Fetch URL{HEALTH_PATH} (or URL itself when it ends with it) and show every "
            "check. Exit code: 0 healthy, 1 degraded, 2 unhealthy or unreachable, 3 usage error."
        ),
    )
    health.add_argument("url", metavar="URL", help="the service's base URL or health URL")
    health.add_argument("--timeout", type=float, default=5.0, metavar="S", help="seconds")
    health.add_argument("--json", action="store_true", help="print the payload as JSON")
    health.add_argument(
        "--watch", type=float, metavar="SECONDS", help="check again every SECONDS until Ctrl-C"
    )
    health.add_argument("--count", type=int, metavar="N", help="with --watch: stop after N checks")
    health.set_defaults(handler=_guarded(run_health))
    _exit_3_on_usage_errors(health)


def _exit_3_on_usage_errors(parser: argparse.ArgumentParser) -> None:
    """Make ``parser`` exit 3 on a usage error, unrecognised arguments included.

    argparse exits 2, which these commands use for "failed"; the subparser also hands
    unknown arguments up to the main parser, so they are rejected here instead.
    """
    parse_known_args = parser.parse_known_args

    def error(message: str) -> NoReturn:
        parser.print_usage(sys.stderr)
        parser.exit(EXIT_USAGE, f"{parser.prog}: error: {message}\n")

    def parse_strictly(args: Any = None, namespace: Any = None) -> Any:
        parsed, extras = parse_known_args(args, namespace)
        if extras:
            error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras

    parser.error = error  # type: ignore[method-assign]
    parser.parse_known_args = parse_strictly  # type: ignore[method-assign]


def _guarded(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(arguments: argparse.Namespace) -> int:
        try:
            return handler(arguments)
        except UsageError as error:
            print(f"appvitals {arguments.command}: error: {error}", file=sys.stderr)
            return EXIT_USAGE

    return run


def _check_url(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"expected an http:// or https:// URL, not {url!r}")
    try:
        _ = parts.port
    except ValueError as error:
        raise UsageError(f"invalid port in {url!r}") from error
    return url


def _symbols() -> tuple[str, str]:
    encoding = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        "✓✗".encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return "OK", "FAIL"
    return "✓", "✗"


def _ms(value: Optional[float]) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}ms" if value < 10 else f"{value:.0f}ms"


# -- appvitals test ------------------------------------------------------------------------


def run_test(arguments: argparse.Namespace) -> int:
    """``appvitals test``: the exit code of the worst URL."""
    if arguments.requests < 1:
        raise UsageError("--requests must be at least 1")
    if arguments.timeout <= 0:
        raise UsageError("--timeout must be positive")
    if not 0 <= arguments.fast_ms <= arguments.slow_ms:
        raise UsageError("expected 0 <= --fast-ms <= --slow-ms")
    if arguments.insecure and arguments.cacert:
        raise UsageError("--insecure and --cacert exclude each other")
    urls = [_check_url(url) for url in arguments.urls]
    try:
        from appvitals.http import Thresholds, test_connection
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise UsageError("needs httpx: pip install 'appvitals[httpx]'") from error
    verify: Any = arguments.cacert or not arguments.insecure
    if arguments.cacert:
        import ssl

        try:
            verify = ssl.create_default_context(cafile=arguments.cacert)
        except (OSError, ssl.SSLError) as error:
            raise UsageError(f"cannot load --cacert {arguments.cacert}: {error}") from error
    thresholds = Thresholds(fast_ms=arguments.fast_ms, slow_ms=arguments.slow_ms)
    results = [
        test_connection(
            url,
            requests=arguments.requests,
            timeout=arguments.timeout,
            thresholds=thresholds,
            verify=verify,
        )
        for url in urls
    ]
    code = max(_test_exit_code(result) for result in results)
    if arguments.json:
        payload = {"results": [result.to_dict() for result in results], "exit_code": code}
        print(json.dumps(payload, indent=2))
    else:
        for result in results:
            print(render_test(result, verbose=arguments.verbose))
    return code


def _test_exit_code(result: Any) -> int:
    if not result.passed:
        return EXIT_FAILED
    return EXIT_SLOW if result.rating == "Slow" else EXIT_OK


def render_test(result: Any, verbose: bool = False) -> str:
    """One line per URL (``✓ URL  DNS 1ms / TCP 1ms / … / total 9ms  Fast``), details after.

    Examples:
        >>> from appvitals.http import ConnectionTestResult, PhaseStats
        >>> stats = {p: PhaseStats(v, v, v) for p, v in
        ...          [("dns", 12.0), ("connect", 18.0), ("tls", 25.0), ("total", 80.0)]}
        >>> result = ConnectionTestResult("https://x", 1, 1, 0, stats, rating="Fast")
        >>> print(render_test(result).replace("✓", "OK"))
        OK https://x  DNS 12ms / TCP 18ms / TLS 25ms / response 25ms / total 80ms  Fast
    """
    ok, failed = _symbols()
    lines = []
    if result.succeeded:
        dns, connect, tls = (result.median_ms(p) for p in ("dns", "connect", "tls"))
        total = result.median_ms("total") or 0.0
        # "response": what the server and the transfer took, once connected.
        response = total - sum(value for value in (dns, connect, tls) if value is not None)
        parts = [f"DNS {_ms(dns)}", f"TCP {_ms(connect)}"]
        if tls is not None:
            parts.append(f"TLS {_ms(tls)}")
        parts.extend([f"response {_ms(max(0.0, response))}", f"total {_ms(total)}"])
        mark = ok if result.passed else failed
        lines.append(f"{mark} {result.url}  {' / '.join(parts)}  {result.rating}")
    else:
        lines.append(f"{failed} {result.url}")
    lines.extend(
        f"    {error.category}/{error.type}: {error.message} "
        f"({error.count}/{result.requests} failed)"
        for error in result.errors
    )
    if verbose:
        lines.extend(_test_details(result))
    lines.extend(f"    → {advice}" for advice in result.recommendations)
    return "\n".join(lines)


def _test_details(result: Any) -> list[str]:
    lines = [f"    {'phase':<11} {'min':>9} {'median':>9} {'max':>9}"]
    for phase, stats in result.phases.items():
        lines.append(
            f"    {phase:<11} {_ms(stats.min_ms):>9} {_ms(stats.median_ms):>9} "
            f"{_ms(stats.max_ms):>9}"
        )
    tls = result.tls
    if tls is not None:
        expiry = ""
        if tls.not_after is not None:
            expiry = f", certificate valid until {tls.not_after[:10]} ({tls.days_left} days)"
        lines.append(f"    tls         {tls.protocol} {tls.cipher}{expiry}")
    if result.throughput_bps is not None:
        lines.append(f"    throughput  {result.throughput_bps / 1024:.1f} KiB/s")
    if result.statuses:
        counts: dict[int, int] = {}
        for status in result.statuses:
            counts[status] = counts.get(status, 0) + 1
        shown = ", ".join(f"{status} x{count}" for status, count in sorted(counts.items()))
        lines.append(f"    statuses    {shown}")
    return lines


# -- appvitals health ----------------------------------------------------------------------


def health_url(url: str) -> str:
    """The ``/health/detailed`` URL of a service, from its base URL or a health URL.

    Examples:
        >>> health_url("http://127.0.0.1:8000")
        'http://127.0.0.1:8000/health/detailed'
        >>> health_url("http://svc/api/health/detailed")
        'http://svc/api/health/detailed'
    """
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    if not path.endswith(HEALTH_PATH):
        path = path + "/detailed" if path.endswith("/health") else path + HEALTH_PATH
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def run_health(arguments: argparse.Namespace) -> int:
    """``appvitals health``: once, or every ``--watch`` seconds; the last check's exit code."""
    if arguments.timeout <= 0:
        raise UsageError("--timeout must be positive")
    if arguments.watch is not None and arguments.watch < 0:
        raise UsageError("--watch must not be negative")
    if arguments.count is not None and arguments.count < 1:
        raise UsageError("--count must be at least 1")
    url = health_url(_check_url(arguments.url))
    rounds = 1 if arguments.watch is None else arguments.count
    done, code = 0, EXIT_OK
    try:
        while True:
            code, report = fetch_health(url, arguments.timeout)
            if arguments.json:
                indent = None if arguments.watch is not None else 2  # JSON lines when watching
                print(json.dumps(report, indent=indent), flush=True)
            else:
                if arguments.watch is not None:
                    print(f"-- {time.strftime('%H:%M:%S')}")
                print(render_health(report), flush=True)
            done += 1
            if rounds is not None and done >= rounds:
                return code
            time.sleep(arguments.watch)
    except KeyboardInterrupt:
        return code


def fetch_health(url: str, timeout: float) -> tuple[int, dict[str, Any]]:
    """The exit code and the report (``url``, ``status``, ``checks``, ``error``) of one check."""
    import httpx

    from appvitals.http import classify
    from appvitals.http._capture import mask_url
    from appvitals.http._taxonomy import error_message

    shown = mask_url(url)
    report: dict[str, Any] = {"url": shown, "status": "unreachable", "checks": {}, "error": None}
    try:
        with httpx.Client(timeout=timeout) as client:
            response = client.get(url, headers={"Accept": "application/json"})
    except httpx.HTTPError as error:
        report["error"] = f"{classify(error)}: {error_message(error)}"
        return EXIT_FAILED, report
    report["http_status"] = response.status_code
    try:
        payload = response.json()
        status, checks = payload["status"], payload.get("checks", {})
        if not isinstance(checks, dict):
            raise TypeError(checks)
    except (ValueError, KeyError, TypeError):
        found = classify(response=response)
        problem = f"{found}: " if found is not None else ""
        report["status"] = "invalid"
        report["error"] = (
            f"{problem}HTTP {response.status_code}, not an appvitals health payload "
            f"(is {HEALTH_PATH} served there?)"
        )
        return EXIT_FAILED, report
    report.update(status=status, checks=checks, uptime_seconds=payload.get("uptime_seconds"))
    codes = {"healthy": EXIT_OK, "degraded": EXIT_SLOW}
    return codes.get(status, EXIT_FAILED), report


def render_health(report: dict[str, Any]) -> str:
    """The report as a table of checks (check, status, latency, critical, error).

    Examples:
        >>> report = {"url": "http://svc/health/detailed", "status": "degraded", "checks": {
        ...     "disk": {"status": "unhealthy", "latency_ms": 0.4, "critical": False,
        ...              "error": "2% free"}}}
        >>> print(render_health(report).replace("✓", "OK").replace("✗", "FAIL"))
        FAIL http://svc/health/detailed  degraded
          check  status     latency  critical  error
          disk   unhealthy  0.4ms    no        2% free
        health: degraded (1 of 1 checks failing)
    """
    ok, failed = _symbols()
    status = report["status"]
    mark = ok if status == "healthy" else failed
    uptime = report.get("uptime_seconds")
    header = f"{mark} {report['url']}  {status}"
    if uptime is not None:
        header += f"  (up {_duration(float(uptime))})"
    lines = [header]
    if report.get("error"):
        lines.append(f"    {report['error']}")
        return "\n".join(lines)
    checks: dict[str, Any] = report["checks"]
    rows = [("check", "status", "latency", "critical", "error")]
    for name, check in checks.items():
        rows.append(
            (
                str(name),
                str(check.get("status", "?")),
                _ms(check.get("latency_ms")),
                "yes" if check.get("critical") else "no",
                str(check.get("error") or "-"),
            )
        )
    lines.extend(_table(rows))
    failing = sum(1 for check in checks.values() if check.get("status") != "healthy")
    lines.append(f"health: {status} ({failing} of {len(checks)} checks failing)")
    return "\n".join(lines)


def _table(rows: Sequence[Sequence[str]]) -> Iterable[str]:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths[:-1], strict=True)]
        yield "  " + "  ".join([*cells, row[-1]])


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
