"""The ``appvitals`` command (also ``python -m appvitals``).

``appvitals doctor`` shows what a deployment's environment resolves to, exactly as
:func:`appvitals.configure` would resolve it, where each signal goes, and whether those
destinations can be reached. It never calls ``configure()``: no provider is installed and no
file or folder is written.

``appvitals test URL`` measures the phases of HTTP requests to URLs and ``appvitals health
URL`` shows a service's ``/health/detailed`` (both in ``appvitals._cli_http``). ``appvitals
export prometheus-rules`` and ``appvitals export grafana-dashboard`` print the operator
artifacts of :mod:`appvitals.artifacts` (in ``appvitals._cli_export``).

Each subcommand is one ``add_parser`` call in :func:`build_parser` plus a handler that takes
the parsed arguments and returns the exit code.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import socket
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, NoReturn, Optional

from appvitals._cli_export import add_export_commands
from appvitals._cli_http import add_http_commands
from appvitals._config import (
    APPVITALS_EXPORTER,
    APPVITALS_LOGS,
    APPVITALS_METRICS,
    APPVITALS_TRACES,
    OTEL_SDK_DISABLED,
    SIGNALS,
    Config,
    resolve,
    split_endpoint,
)
from appvitals._exporters import destination
from appvitals._version import __version__

PROG = "appvitals"

EXIT_OK = 0
EXIT_WARNINGS = 1
EXIT_ERRORS = 2

CONNECT_TIMEOUT = 2.0
"""Seconds ``doctor`` waits for a TCP connection to an OTLP endpoint."""

# What the OTLP exporters use when no endpoint is configured.
DEFAULT_OTLP_ENDPOINTS = {"http/protobuf": "http://localhost:4318", "grpc": "localhost:4317"}

Status = Literal["ok", "warning", "error"]
Handler = Callable[[argparse.Namespace], int]

# scheme://userinfo@ — greedy up to the last "@" before the path, as urlsplit reads it.
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/\s?#]*)@")


class _ParserExit(Exception):  # noqa: N818 - not an error: --version and --help stop too
    """argparse wanted to exit (``--version``, ``--help``, a usage error)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that hands its exit status to :func:`main` instead of exiting.

    ``main()`` returns exit codes rather than raising ``SystemExit`` so that it can be called
    in-process; subparsers inherit this class (argparse builds them with ``type(parser)``).
    """

    def exit(self, status: int = 0, message: Optional[str] = None) -> NoReturn:
        """Print ``message`` to stderr and stop parsing with ``status``."""
        if message:
            self._print_message(message, sys.stderr)
        raise _ParserExit(status)


@dataclasses.dataclass(frozen=True)
class Check:
    """One line of the doctor's verdict."""

    name: str
    status: Status
    detail: str


@dataclasses.dataclass(frozen=True)
class Report:
    """What ``appvitals doctor`` found: masked configuration, destinations and checks."""

    config: dict[str, Any]
    signals: dict[str, str]
    checks: list[Check]

    @property
    def exit_code(self) -> int:
        """0 when every check passed, 1 when some only warn, 2 when any failed."""
        statuses = {check.status for check in self.checks}
        if "error" in statuses:
            return EXIT_ERRORS
        if "warning" in statuses:
            return EXIT_WARNINGS
        return EXIT_OK

    def count(self, status: Status) -> int:
        """How many checks have ``status``."""
        return sum(check.status == status for check in self.checks)

    def as_json(self) -> dict[str, Any]:
        """The report as the object ``appvitals doctor --json`` prints."""
        return {
            "version": __version__,
            "config": self.config,
            "signals": self.signals,
            "checks": [dataclasses.asdict(check) for check in self.checks],
            "exit_code": self.exit_code,
        }


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``appvitals`` command.

    Args:
        argv: the arguments after the program name; ``None`` reads ``sys.argv[1:]``.

    Returns:
        The process exit code (argparse's 2 for a usage error).
    """
    parser = build_parser()
    try:
        arguments = parser.parse_args(argv)
    except _ParserExit as stop:
        return stop.status
    handler: Handler = arguments.handler
    return handler(arguments)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: global options and one subparser per subcommand."""
    parser = _Parser(
        prog=PROG,
        description="appvitals: OpenTelemetry vital signs for Python web services.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    doctor = commands.add_parser(
        "doctor",
        help="show the effective configuration and check where telemetry goes",
        description=(
            "Resolve the configuration from the environment as configure() would, show where "
            "each signal goes and check that it can get there. Exit code: 0 all fine, "
            "1 warnings, 2 errors."
        ),
    )
    doctor.add_argument("--json", action="store_true", help="print one JSON object")
    doctor.set_defaults(handler=_run_doctor)

    add_http_commands(commands)  # test, health (their usage errors exit 3)
    add_export_commands(commands)  # export prometheus-rules, export grafana-dashboard
    return parser


def _run_doctor(arguments: argparse.Namespace) -> int:
    report = diagnose()
    if arguments.json:
        print(json.dumps(report.as_json(), indent=2))
    else:
        print(render(report))
    return report.exit_code


def diagnose() -> Report:
    """Resolve the configuration from the environment and check it, changing nothing.

    Returns:
        The report; its ``exit_code`` is what ``appvitals doctor`` exits with.
    """
    with _captured_warnings() as warnings:
        config = resolve({})
    checks = _environment_checks(warnings)
    checks.extend(_exporter_checks(config))
    if not config.disabled and config.exporter != "none":
        checks.append(_export_mode_check(config))
    return Report(
        config=_masked(config.describe()),
        signals={signal: mask_url_credentials(destination(config, signal)) for signal in SIGNALS},
        checks=checks,
    )


def mask_url_credentials(text: str) -> str:
    """Replace the password (or a lone user token) of every URL in ``text`` with ``***``.

    Examples:
        >>> mask_url_credentials("http://user:pass@collector:4318/v1/traces")
        'http://user:***@collector:4318/v1/traces'
        >>> mask_url_credentials("https://token@collector")
        'https://***@collector'
    """

    def replace(match: re.Match[str]) -> str:
        user, colon, _secret = match["userinfo"].partition(":")
        # A user without a password is often an access token itself.
        return f"{match['scheme']}{user + ':***' if colon else '***'}@"

    return _URL_USERINFO.sub(replace, text)


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return mask_url_credentials(value)
    if isinstance(value, Mapping):
        return {key: _masked(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_masked(item) for item in value]
    return value


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def _captured_warnings() -> Iterator[list[str]]:
    """Collect the warnings ``resolve()`` logs to the ``appvitals`` logger.

    Having a handler on the logger also keeps them away from logging's last-resort handler,
    so they are reported once, as checks, instead of also going to stderr.
    """
    logger = logging.getLogger("appvitals")
    handler = _ListHandler()
    saved_level = logger.level
    if logger.getEffectiveLevel() > logging.WARNING:
        logger.setLevel(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved_level)


def _environment_checks(warnings: Sequence[str]) -> list[Check]:
    if not warnings:
        return [Check("environment", "ok", "every variable set has a usable value")]
    return [
        Check("environment", "warning", mask_url_credentials(message.removeprefix("appvitals: ")))
        for message in warnings
    ]


def _exporter_checks(config: Config) -> list[Check]:
    """Checks of where telemetry goes, for the signals that will actually be exported."""
    if config.disabled:
        return [
            Check(
                "sdk",
                "warning",
                f"{OTEL_SDK_DISABLED}=true: appvitals installs nothing; nothing will be exported",
            )
        ]
    signals = config.enabled_signals()
    if not signals:
        switches = ", ".join((APPVITALS_TRACES, APPVITALS_METRICS, APPVITALS_LOGS))
        return [Check("signals", "warning", f"every signal is off ({switches})")]
    if config.exporter == "none":
        return [
            Check(
                "exporter",
                "warning",
                f"{APPVITALS_EXPORTER}=none: nothing will leave the process",
            )
        ]
    if config.exporter == "console":
        return [Check("exporter", "ok", "console: the process's stdout")]
    if config.exporter == "jsonl":
        return _jsonl_checks(Path(config.jsonl_dir), signals)
    return _otlp_checks(config, signals)


def _export_mode_check(config: Config) -> Check:
    """Which thread will run the exports (``export_mode``; configuration.md, export modes)."""
    mode = config.effective_export_mode()
    if config.export_mode == "inline":
        detail = "inline: the application's requests run the exports, never a thread"
    elif mode == "auto":
        detail = (
            "auto: every destination is on this machine; the application's requests run the"
            " exports while the process is single-threaded, one export thread once it is not"
        )
    elif config.export_mode == "auto":
        detail = "auto: a remote destination; the OpenTelemetry SDK's export threads"
    else:
        detail = "background: the OpenTelemetry SDK's export threads"
    return Check("export mode", "ok", detail)


def _otlp_checks(config: Config, signals: Sequence[str]) -> list[Check]:
    """One TCP connection attempt per distinct host:port the signals are sent to."""
    checks: list[Check] = []
    targets: dict[tuple[str, int], list[str]] = {}
    for signal in signals:
        protocol = config.otlp_protocols.get(signal, "http/protobuf")
        endpoint = config.otlp_endpoints.get(signal) or DEFAULT_OTLP_ENDPOINTS[protocol]
        try:
            address = _host_port(endpoint, protocol)
        except ValueError:
            detail = f"{signal}: cannot read a host and port from {mask_url_credentials(endpoint)}"
            checks.append(Check("otlp endpoint", "error", detail))
            continue
        targets.setdefault(address, []).append(signal)
    for (host, port), users in targets.items():
        status, outcome = _probe(host, port)
        shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        checks.append(Check("otlp endpoint", status, f"{shown} ({', '.join(users)}): {outcome}"))
    return checks


def _host_port(endpoint: str, protocol: str) -> tuple[str, int]:
    """Where an OTLP exporter connects to; raises ValueError when the endpoint has no host.

    gRPC endpoints may omit the scheme (``localhost:4317``); a missing port is the scheme's
    (80 for plain HTTP) or 443, gRPC's default.
    """
    parts = split_endpoint(endpoint)
    if not parts.hostname:
        raise ValueError(endpoint)
    port = parts.port  # raises ValueError for a port that is not a number from 0 to 65535
    if port is None:
        port = 80 if parts.scheme == "http" and protocol == "http/protobuf" else 443
    return parts.hostname, port


def _probe(host: str, port: int) -> tuple[Status, str]:
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT):
            return "ok", "reachable"
    except socket.gaierror as error:
        return "error", f"DNS failure: cannot resolve {host} ({error.strerror})"
    except ConnectionRefusedError:
        return "error", "connection refused (nothing listens there)"
    except TimeoutError:
        return "error", f"timeout: no answer within {CONNECT_TIMEOUT:g} s"
    except OSError as error:
        return "error", f"unreachable ({error.strerror or error})"


def _jsonl_checks(directory: Path, signals: Sequence[str]) -> list[Check]:
    """The folder must be writable, or creatable; existing files must be appendable."""
    shown = directory.absolute()
    try:
        if not directory.exists():
            return [_creatable(shown)]
        if not directory.is_dir():
            return [Check("jsonl directory", "error", f"{shown} exists and is not a directory")]
        if not _writable(directory):
            return [Check("jsonl directory", "error", f"{shown} is not writable")]
        checks = [Check("jsonl directory", "ok", f"{shown} exists and is writable")]
        for signal in signals:
            file = directory / f"{signal}.jsonl"
            if file.exists() and not (file.is_file() and os.access(file, os.W_OK)):
                checks.append(Check("jsonl file", "error", f"{file.absolute()} is not writable"))
    except OSError as error:
        return [Check("jsonl directory", "error", f"{shown} cannot be inspected ({error})")]
    return checks


def _creatable(directory: Path) -> Check:
    # The exporter creates every missing level, so the nearest existing ancestor decides.
    ancestor = next(parent for parent in directory.parents if parent.exists())
    if not ancestor.is_dir():
        detail = f"{directory} cannot be created: {ancestor} is not a directory"
        return Check("jsonl directory", "error", detail)
    if not _writable(ancestor):
        detail = f"{directory} cannot be created: {ancestor} is not writable"
        return Check("jsonl directory", "error", detail)
    detail = f"{directory} does not exist yet; it will be created on the first export"
    return Check("jsonl directory", "ok", detail)


def _writable(directory: Path) -> bool:
    # Creating an entry needs write and search permission on the folder.
    return os.access(directory, os.W_OK | os.X_OK)


def render(report: Report) -> str:
    """The human-readable report ``appvitals doctor`` prints.

    Args:
        report: what :func:`diagnose` found.

    Returns:
        Aligned text, ending with a ``doctor: N warnings, M errors`` line.
    """
    config = list(_flatten(report.config))
    config_width = max(len(key) for key, _ in config)
    signal_width = max(len(signal) for signal in report.signals)
    name_width = max((len(check.name) for check in report.checks), default=0)
    lines = [f"{PROG} {__version__} doctor", "", "configuration"]
    lines.extend(f"  {key:<{config_width}}  {value}" for key, value in config)
    lines.extend(["", "signals"])
    lines.extend(f"  {name:<{signal_width}}  {where}" for name, where in report.signals.items())
    lines.extend(["", "checks"])
    lines.extend(
        f"  {check.status:<7}  {check.name:<{name_width}}  {check.detail}"
        for check in report.checks
    )
    warnings, errors = report.count("warning"), report.count("error")
    lines.extend(["", f"doctor: {_plural(warnings, 'warning')}, {_plural(errors, 'error')}"])
    return "\n".join(lines)


def _flatten(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    for key, value in data.items():
        if isinstance(value, Mapping) and value:
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", _text(value)


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Mapping):
        return "(none)"
    return str(value)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"
