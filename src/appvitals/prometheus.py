"""The application's OpenTelemetry metrics as Prometheus text (``/metrics``), multi-process safe.

:class:`PrometheusReader` is a pull metric reader added to the application's
``MeterProvider``: nothing is stored between scrapes, each :meth:`PrometheusReader.render`
collects the SDK's cumulative state and translates it to the Prometheus text exposition
format 0.0.4 following OpenTelemetry's "Prometheus and OpenMetrics compatibility"
specification (names, unit and ``_total`` suffixes, label sanitising, ``target_info``).

Multi-process mode: gunicorn workers each hold their own ``MeterProvider`` and a scrape
reaches one of them. When ``APPVITALS_PROMETHEUS_MULTIPROC_DIR`` (or prometheus_client's
``PROMETHEUS_MULTIPROC_DIR``) names a directory, every process keeps its current snapshot in
``<dir>/appvitals-<pid>.json`` (rewritten atomically on each render and every few seconds by
a daemon thread) and a render in any worker merges all of them:

* counters and histograms are summed over every snapshot, dead workers included, so a
  counter never goes backwards when a worker exits;
* gauges (including up-down counters such as ``http.server.active_requests``) are summed over
  live processes only;
* :func:`mark_process_dead` (gunicorn's ``child_exit`` hook) folds a dead worker's counters
  and histograms into ``appvitals-dead.json`` and deletes its snapshot, which drops its
  gauges for good and keeps the directory from growing with every recycled worker;
* host-wide families (``system_*``, see :mod:`appvitals.resources`) are reported by one
  process and count only while it lives: its successor reports the same since-boot
  counters, which must not be added to the dead one's.

OpenMetrics: :func:`metrics_text` answers in the OpenMetrics 1.0 text format, with exemplars
(trace and span ids of a sampled measurement) on histogram buckets and counters, when the
scrape's ``Accept`` header prefers it (as Prometheus' does). Exemplars are this process's:
in multi-process mode a scrape shows those of the worker it reached, beside the merged
values (they are not written to the snapshot files).

Nothing happens at import time; :func:`reader` creates the process-wide reader on first use.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import sys
import tempfile
import threading
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import AggregationTemporality, MetricReader, MetricsData
from opentelemetry.sdk.metrics.export import Gauge as GaugeData
from opentelemetry.sdk.metrics.export import Histogram as HistogramData
from opentelemetry.sdk.metrics.export import Sum as SumData
from opentelemetry.sdk.resources import Resource

from appvitals import _inline, _safety

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_INTERVAL",
    "DIRECTORY_VARIABLES",
    "INTERVAL_VARIABLE",
    "NOT_CONFIGURED_BODY",
    "OPENMETRICS_CONTENT_TYPE",
    "Kind",
    "PrometheusReader",
    "label_name",
    "mark_process_dead",
    "metric_name",
    "metrics_text",
    "reader",
    "start_snapshots",
    "unit_suffix",
    "wants_openmetrics",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The ``Content-Type`` of the Prometheus text exposition format 0.0.4."""

OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
"""The ``Content-Type`` of the OpenMetrics 1.0 text format (exemplars included)."""

NOT_CONFIGURED_BODY = b"# appvitals is not configured\n"
"""The body :func:`metrics_text` answers before appvitals' ``MeterProvider`` exists."""

DIRECTORY_VARIABLES = ("APPVITALS_PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROC_DIR")
"""Environment variables naming the multi-process directory, the first set one wins."""

INTERVAL_VARIABLE = "APPVITALS_PROMETHEUS_WRITE_INTERVAL"
"""Environment variable: seconds between two snapshots written by the background thread."""

DEFAULT_INTERVAL = 5.0
"""Seconds between two snapshots when ``APPVITALS_PROMETHEUS_WRITE_INTERVAL`` is not set."""

Kind = Literal["counter", "gauge", "histogram"]
Number = Union[int, float]
Labels = tuple[tuple[str, str], ...]
# (suffix, labels): suffix is "" for counters and gauges, "_bucket"/"_sum"/"_count" for
# histograms, whose bucket labels end with ("le", bound).
SampleKey = tuple[str, Labels]

_logger = logging.getLogger("appvitals")
_ERRORS = "prometheus"
_FILE_ERRORS = "prometheus.multiprocess"
_SNAPSHOT_VERSION = 1
_SNAPSHOT_FILE = re.compile(r"appvitals-([0-9]+)\.json")
_DEAD_FILE = "appvitals-dead.json"
_LOCK_FILE = ".appvitals-dead.lock"
_KINDS: dict[str, Kind] = {"counter": "counter", "gauge": "gauge", "histogram": "histogram"}
_SUFFIX_ORDER = {"": 0, "_bucket": 0, "_sum": 1, "_count": 2}
# Resource attributes Prometheus expresses as the job and instance of the scrape target.
_NOT_IN_TARGET_INFO = frozenset(("service.name", "service.namespace", "service.instance.id"))

_INVALID_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_:]")
_INVALID_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")
_REPEATED_UNDERSCORES = re.compile(r"__+")
_UNIT_ANNOTATIONS = re.compile(r"\{[^}]*\}")

# UCUM units → Prometheus words, as in the specification and the Collector's translator.
_UNITS = {
    "d": "days",
    "h": "hours",
    "min": "minutes",
    "s": "seconds",
    "ms": "milliseconds",
    "us": "microseconds",
    "ns": "nanoseconds",
    "By": "bytes",
    "KiBy": "kibibytes",
    "MiBy": "mebibytes",
    "GiBy": "gibibytes",
    "TiBy": "tibibytes",
    "KBy": "kilobytes",
    "MBy": "megabytes",
    "GBy": "gigabytes",
    "TBy": "terabytes",
    "m": "meters",
    "V": "volts",
    "A": "amperes",
    "J": "joules",
    "W": "watts",
    "g": "grams",
    "Cel": "celsius",
    "Hz": "hertz",
    "%": "percent",
}
# The denominator of "X/Y" reads in the singular: meters_per_second.
_PER_UNITS = {
    "s": "second",
    "m": "minute",
    "h": "hour",
    "d": "day",
    "w": "week",
    "mo": "month",
    "y": "year",
}


# --- names, labels and values ---------------------------------------------------------------


def _sanitize(text: str, invalid: re.Pattern[str]) -> str:
    text = _REPEATED_UNDERSCORES.sub("_", invalid.sub("_", text))
    if not text:
        return "_"
    return "_" + text if text[0].isdigit() else text


def _unit_words(unit: str) -> str:
    mapped = _UNITS.get(unit)
    if mapped is not None:
        return mapped
    return _REPEATED_UNDERSCORES.sub("_", _INVALID_LABEL_CHARS.sub("_", unit)).strip("_")


def unit_suffix(unit: str, kind: Kind = "gauge") -> str:
    """The Prometheus name suffix for an OpenTelemetry (UCUM) unit, ``""`` for none.

    Args:
        unit: The instrument's unit, e.g. ``"ms"``, ``"By/s"`` or ``"{request}"``.
        kind: The Prometheus type of the metric: ``"1"`` reads ``ratio`` only for gauges.

    Returns:
        The words to append to the metric name, without the joining ``_``.

    Examples:
        >>> unit_suffix("ms"), unit_suffix("By/s"), unit_suffix("{request}")
        ('milliseconds', 'bytes_per_second', '')
        >>> unit_suffix("1", "counter"), unit_suffix("1", "gauge")
        ('', 'ratio')
    """
    unit = _UNIT_ANNOTATIONS.sub("", unit).strip()
    if unit == "1":
        return "ratio" if kind == "gauge" else ""
    if "/" in unit:
        numerator, denominator = (part.strip() for part in unit.split("/", 1))
        top = "" if numerator == "1" else _unit_words(numerator)
        bottom = _PER_UNITS.get(denominator) or _unit_words(denominator)
        if not bottom:
            return top
        return f"{top}_per_{bottom}" if top else f"per_{bottom}"
    return _unit_words(unit)


def metric_name(name: str, unit: str = "", kind: Kind = "gauge") -> str:
    """The Prometheus metric (family) name of an OpenTelemetry instrument.

    Characters outside ``[a-zA-Z0-9_:]`` become ``_``, runs of ``_`` collapse, a leading
    digit gets a ``_`` prefix; the unit's words are appended unless the name already holds
    them, and counters end in ``_total``.

    Args:
        name: The OpenTelemetry metric name, e.g. ``"http.server.request.duration"``.
        unit: Its unit (``"s"``, ``"By"``, ``"{request}"``, ...).
        kind: ``"counter"`` (monotonic sum), ``"gauge"`` or ``"histogram"``.

    Returns:
        The name, without the ``_bucket``/``_sum``/``_count`` suffixes of histograms.

    Examples:
        >>> metric_name("http.server.request.duration", "s", "histogram")
        'http_server_request_duration_seconds'
        >>> metric_name("shop.orders", "{order}", "counter")
        'shop_orders_total'
        >>> metric_name("process.memory.usage", "By")
        'process_memory_usage_bytes'
    """
    base = _sanitize(name, _INVALID_NAME_CHARS)
    if kind == "counter" and base.endswith("_total") and len(base) > len("_total"):
        # Re-added after the unit, which comes before type suffixes.
        base = base[: -len("_total")]
    suffix = unit_suffix(unit, kind)
    if suffix and f"_{suffix}_" not in f"_{base}_":
        base = f"{base}_{suffix}"
    if kind == "counter":
        base += "_total"
    return _REPEATED_UNDERSCORES.sub("_", base)


def label_name(key: str) -> str:
    """The Prometheus label name of an OpenTelemetry attribute key.

    Characters outside ``[a-zA-Z0-9_]`` become ``_`` and runs of ``_`` collapse (which also
    keeps names out of the ``__`` prefix Prometheus reserves); a leading digit gets ``_``.

    Args:
        key: The attribute key, e.g. ``"http.request.method"``.

    Returns:
        A valid label name.

    Examples:
        >>> label_name("http.request.method"), label_name("2xx"), label_name("__meta")
        ('http_request_method', '_2xx', '_meta')
    """
    return _sanitize(key, _INVALID_LABEL_CHARS)


def _label_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        # Arrays read as JSON arrays (OpenTelemetry's non-OTLP attribute representation).
        return json.dumps(list(value), ensure_ascii=False, separators=(",", ":"), default=str)
    return str(value)


def _labels(attributes: Optional[Mapping[str, Any]], *, drop: str = "") -> Labels:
    """Sanitised labels, sorted by name; keys that collide join their values with ``;``."""
    if not attributes:
        return ()
    grouped: dict[str, list[str]] = {}
    # The specification orders colliding values by the original keys.
    for key in sorted(attributes):
        name = label_name(key)
        if name != drop:
            grouped.setdefault(name, []).append(_label_value(attributes[key]))
    return tuple((name, ";".join(values)) for name, values in sorted(grouped.items()))


def _format_number(value: Number) -> str:
    """Prometheus' float spelling: ``1`` for ``1.0``, ``0.005``, ``+Inf``, ``NaN``."""
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


# --- families ------------------------------------------------------------------------------


@dataclass
class _Family:
    """One Prometheus metric family: its samples by (suffix, labels)."""

    name: str
    kind: Kind
    help: str
    samples: dict[SampleKey, Number] = field(default_factory=dict)


_warned_conflicts: set[str] = set()


def _warn_conflict(name: str) -> None:
    # The specification drops a metric whose TYPE conflicts and asks for a warning; once per
    # name, because the conflict repeats on every scrape.
    if name in _warned_conflicts:
        return
    _warned_conflicts.add(name)
    _logger.warning(
        "appvitals: two metrics translate to the Prometheus name %r with different types; "
        "only the first is exposed",
        name,
    )


def _family_for(
    families: dict[str, _Family], name: str, kind: Kind, description: str
) -> Optional[_Family]:
    family = families.get(name)
    if family is None:
        family = families[name] = _Family(name, kind, description)
    elif family.kind != kind:
        _warn_conflict(name)
        return None
    elif not family.help:
        family.help = description
    return family


def _add(family: _Family, key: SampleKey, value: Number) -> None:
    previous = family.samples.get(key)
    if previous is None:
        family.samples[key] = value
    elif family.kind != "gauge":
        # The same stream from two instrumentation scopes: both counted events.
        family.samples[key] = previous + value
    # A gauge reported by two scopes keeps the first value: adding two readings of the same
    # quantity would double it.


def _add_histogram_point(family: _Family, point: Any) -> None:
    # An attribute named "le" would clash with the bucket label and invalidate the scrape.
    labels = _labels(point.attributes, drop="le")
    cumulative = 0
    # bucket_counts has one more entry than the bounds: the +Inf bucket, which is the count.
    for bound, count in zip(point.explicit_bounds, point.bucket_counts, strict=False):
        cumulative += count
        _add(family, ("_bucket", (*labels, ("le", _format_number(float(bound))))), cumulative)
    _add(family, ("_bucket", (*labels, ("le", "+Inf"))), point.count)
    # Always a counter-like _sum: the SDK refuses negative histogram measurements.
    _add(family, ("_sum", labels), point.sum)
    _add(family, ("_count", labels), point.count)


def _families_from(metrics_data: Optional[MetricsData]) -> dict[str, _Family]:
    """Translate one collection; identical families of several scopes merge."""
    families: dict[str, _Family] = {}
    if metrics_data is None:
        return families
    for resource_metrics in metrics_data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                data = metric.data
                kind = _kind_of(data)
                if kind is None:
                    continue
                name = metric_name(metric.name, metric.unit or "", kind)
                family = _family_for(families, name, kind, metric.description or "")
                if family is None:
                    continue
                if isinstance(data, HistogramData):
                    for histogram_point in data.data_points:
                        _add_histogram_point(family, histogram_point)
                elif isinstance(data, (SumData, GaugeData)):
                    for point in data.data_points:
                        _add(family, ("", _labels(point.attributes)), point.value)
    return families


def _kind_of(data: Any) -> Optional[Kind]:
    """The Prometheus type of one metric's data, ``None`` for data that is not exposed."""
    cumulative = AggregationTemporality.CUMULATIVE
    if isinstance(data, SumData):
        if data.aggregation_temporality != cumulative:
            return None
        return "counter" if data.is_monotonic else "gauge"
    if isinstance(data, GaugeData):
        return "gauge"
    if isinstance(data, HistogramData) and data.aggregation_temporality == cumulative:
        return "histogram"
    # Exponential histograms would need native histograms (the protobuf format).
    return None


def _host_wide(name: str) -> bool:
    """A host metric (``system.*``): one process reports it, for as long as it lives."""
    return name.startswith("system_")


def _merge(target: dict[str, _Family], source: Mapping[str, _Family], *, gauges: bool) -> None:
    """Add ``source`` into ``target`` sample by sample (gauges only when ``gauges``).

    ``gauges=False`` means "of a dead process": host-wide families are skipped then too.
    """
    for name, family in source.items():
        if (family.kind == "gauge" or _host_wide(name)) and not gauges:
            continue
        existing = _family_for(target, name, family.kind, family.help)
        if existing is None:
            continue
        for key, value in family.samples.items():
            existing.samples[key] = existing.samples.get(key, 0) + value


def _target_info(resource: Optional[Resource], *, without_pid: bool) -> Optional[_Family]:
    if resource is None:
        return None
    skipped = _NOT_IN_TARGET_INFO | {"process.pid"} if without_pid else _NOT_IN_TARGET_INFO
    attributes = {k: v for k, v in resource.attributes.items() if k not in skipped}
    if not attributes:
        return None
    family = _Family("target_info", "gauge", "Target metadata")
    family.samples[("", _labels(attributes))] = 1
    return family


def _sample_order(kind: Kind, key: SampleKey) -> tuple[Labels, int, float]:
    suffix, labels = key
    if kind != "histogram" or suffix != "_bucket":
        return labels, _SUFFIX_ORDER[suffix], 0.0
    return labels[:-1], 0, float(labels[-1][1])


def _render_text(families: Mapping[str, _Family], target_info: Optional[_Family]) -> str:
    lines: list[str] = []
    ordered = [families[name] for name in sorted(families)]
    for family in [target_info, *ordered] if target_info is not None else ordered:
        if not family.samples:
            continue
        if family.help:
            lines.append(f"# HELP {family.name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        kind = family.kind
        for key in sorted(family.samples, key=lambda k: _sample_order(kind, k)):
            suffix, labels = key
            rendered = ",".join(f'{k}="{_escape_label_value(v)}"' for k, v in labels)
            braces = f"{{{rendered}}}" if rendered else ""
            value = _format_number(family.samples[key])
            lines.append(f"{family.name}{suffix}{braces} {value}")
    return "".join(line + "\n" for line in lines)


# --- snapshot files ------------------------------------------------------------------------


@dataclass
class _Snapshot:
    pid: int
    token: str
    families: dict[str, _Family]


@dataclass
class _Accumulator:
    """``appvitals-dead.json``: counters and histograms of workers marked dead."""

    absorbed: dict[str, int]  # process token → pid, so a snapshot is never counted twice
    families: dict[str, _Family]


def _dump_families(families: Mapping[str, _Family]) -> list[dict[str, Any]]:
    return [
        {
            "name": family.name,
            "type": family.kind,
            "help": family.help,
            "samples": [
                [suffix, [list(pair) for pair in labels], value]
                for (suffix, labels), value in family.samples.items()
            ],
        }
        for family in families.values()
    ]


def _load_families(raw: Any) -> dict[str, _Family]:
    """Parse dumped families; raises ``ValueError``/``TypeError``/``KeyError`` when invalid."""
    if not isinstance(raw, list):
        raise TypeError("families must be a list")
    families: dict[str, _Family] = {}
    for entry in raw:
        name, kind, description = entry["name"], _KINDS[entry["type"]], entry["help"]
        if not (isinstance(name, str) and isinstance(description, str)):
            raise TypeError(f"invalid family {name!r}")
        family = _Family(name, kind, description)
        for suffix, labels, value in entry["samples"]:
            if suffix not in _SUFFIX_ORDER or isinstance(value, bool):
                raise ValueError(f"invalid sample of {name!r}")
            if not isinstance(value, (int, float)):
                raise TypeError(f"invalid value of {name!r}")
            pairs = tuple((str(k), str(v)) for k, v in labels)
            family.samples[(suffix, pairs)] = value
        families[name] = family
    return families


def _parse_document(data: bytes) -> dict[str, Any]:
    document = json.loads(data)
    if not isinstance(document, dict) or document.get("version") != _SNAPSHOT_VERSION:
        raise ValueError("not an appvitals snapshot (unknown version)")
    return document


def _read_snapshot(path: Path, pid: int) -> _Snapshot:
    document = _parse_document(path.read_bytes())
    token = document["token"]
    if document["pid"] != pid or not isinstance(token, str):
        raise ValueError(f"{path.name} does not describe process {pid}")
    return _Snapshot(pid, token, _load_families(document["families"]))


def _read_accumulator(directory: Path) -> _Accumulator:
    try:
        document = _parse_document((directory / _DEAD_FILE).read_bytes())
    except FileNotFoundError:
        return _Accumulator({}, {})
    absorbed = document["absorbed"]
    if not isinstance(absorbed, dict) or not all(isinstance(pid, int) for pid in absorbed.values()):
        raise TypeError("invalid absorbed process list")
    return _Accumulator(dict(absorbed), _load_families(document["families"]))


def _write_json(path: Path, document: Mapping[str, Any]) -> None:
    """Write ``document`` to ``path`` atomically: readers see the old or the new file."""
    data = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".appvitals-", suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):
            # Readable by every worker even when the gunicorn master (another user, e.g. root
            # with --user) writes the dead-worker file; mkstemp creates 0600.
            os.fchmod(descriptor, 0o644)
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        Path(temporary).replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            Path(temporary).unlink()
        raise


@contextlib.contextmanager
def _directory_lock(directory: Path) -> Iterator[None]:
    """Serialise updates of ``appvitals-dead.json`` between processes (and threads)."""
    if sys.platform == "win32":
        yield
        return
    import fcntl

    descriptor = os.open(directory / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing the descriptor releases the lock


def _absorb(directory: Path, pid: int, *, unless_token: str = "") -> bool:
    """Fold the snapshot of dead process ``pid`` into the accumulator and delete it.

    Its counters and histograms are kept, its gauges are dropped. The accumulator records
    the snapshot's token before the snapshot file is deleted, and readers read snapshot
    files before the accumulator and skip absorbed tokens, so a concurrent render counts
    the dead process exactly once.
    """
    path = directory / f"appvitals-{pid}.json"
    with _directory_lock(directory):
        try:
            snapshot = _read_snapshot(path, pid)
        except FileNotFoundError:
            return False
        except (ValueError, TypeError, KeyError) as error:
            # Nothing can be salvaged from a corrupt snapshot of a dead process.
            _safety.report_internal_error(_FILE_ERRORS, error)
            if not unless_token:
                path.unlink(missing_ok=True)
            return False
        if snapshot.token == unless_token:
            return False
        try:
            accumulator = _read_accumulator(directory)
        except (ValueError, TypeError, KeyError) as error:
            # Start over rather than block every later absorption: counters reset once.
            _safety.report_internal_error(_FILE_ERRORS, error)
            accumulator = _Accumulator({}, {})
        if snapshot.token not in accumulator.absorbed:
            _merge(accumulator.families, snapshot.families, gauges=False)
            # Tokens whose snapshot file is gone can no longer be met by a reader.
            accumulator.absorbed = {
                token: owner
                for token, owner in accumulator.absorbed.items()
                if (directory / f"appvitals-{owner}.json").exists()
            }
            accumulator.absorbed[snapshot.token] = pid
            document = {
                "version": _SNAPSHOT_VERSION,
                "absorbed": accumulator.absorbed,
                "families": _dump_families(accumulator.families),
            }
            _write_json(directory / _DEAD_FILE, document)
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            # A new process that reused the pid may have replaced the file meanwhile.
            if _read_snapshot(path, pid).token == snapshot.token:
                path.unlink()
        return True


def _is_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if sys.platform == "win32":
        # os.kill(pid, 0) would terminate the process on Windows.
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        # PermissionError: the process exists but belongs to another user.
        return True
    return True


def _read_directory(directory: Path, own_pid: Optional[int]) -> dict[str, _Family]:
    """Merge every snapshot in ``directory`` except ``own_pid``'s, and the accumulator."""
    snapshots: list[_Snapshot] = []
    try:
        names = sorted(path.name for path in directory.iterdir())
    except FileNotFoundError:
        names = []
    for name in names:
        match = _SNAPSHOT_FILE.fullmatch(name)
        if match is None or int(match.group(1)) in (own_pid, 0):
            continue
        try:
            snapshots.append(_read_snapshot(directory / name, int(match.group(1))))
        except FileNotFoundError:
            continue  # absorbed since the listing: the accumulator, read last, holds it
        except Exception as error:
            _safety.report_internal_error(_FILE_ERRORS, error)
    # Read after the snapshots: a snapshot absorbed meanwhile is then found here, with its
    # token, instead of being missed by both reads.
    try:
        accumulator = _read_accumulator(directory)
    except Exception as error:
        _safety.report_internal_error(_FILE_ERRORS, error)
        accumulator = _Accumulator({}, {})
    merged: dict[str, _Family] = {}
    for snapshot in snapshots:
        if snapshot.token not in accumulator.absorbed:
            _merge(merged, snapshot.families, gauges=_is_alive(snapshot.pid))
    _merge(merged, accumulator.families, gauges=False)
    return merged


# --- configuration from the environment ----------------------------------------------------


def _directory_from_environment() -> Optional[Path]:
    for variable in DIRECTORY_VARIABLES:
        value = os.environ.get(variable, "").strip()
        if value:
            return Path(value)
    return None


def _interval_from_environment() -> float:
    raw = os.environ.get(INTERVAL_VARIABLE, "").strip()
    if not raw:
        return DEFAULT_INTERVAL
    try:
        interval = float(raw)
    except ValueError:
        interval = -1.0
    if not interval > 0 or math.isinf(interval):
        _logger.warning(
            "appvitals: %s=%r is not a positive number of seconds; using %s",
            INTERVAL_VARIABLE,
            raw,
            DEFAULT_INTERVAL,
        )
        return DEFAULT_INTERVAL
    return interval


# --- the reader ----------------------------------------------------------------------------


_readers: weakref.WeakSet[PrometheusReader] = weakref.WeakSet()
_fork_hooks_registered = False
_module_lock = threading.Lock()  # fork hooks and snapshot threads
_singleton_lock = threading.Lock()


_held_across_fork: list[threading.RLock] = []


def _before_fork() -> None:
    # Hold every reader's lock across fork() so no snapshot thread is halfway through a
    # collection (holding SDK locks) at the moment the child is copied.
    for each in list(_readers):
        each._lock.acquire()
        _held_across_fork.append(each._lock)


def _after_fork_in_parent() -> None:
    while _held_across_fork:
        _held_across_fork.pop().release()


def _after_fork_in_child() -> None:
    global _module_lock, _singleton_lock  # noqa: PLW0603 - a parent thread's lock stays held here
    _module_lock = threading.Lock()
    _singleton_lock = threading.Lock()
    _held_across_fork.clear()
    for each in list(_readers):
        each._after_fork_in_child()


def _register_fork_hooks() -> None:
    global _fork_hooks_registered  # noqa: PLW0603 - once per process, on the first reader
    with _module_lock:
        if _fork_hooks_registered or not hasattr(os, "register_at_fork"):
            return
        _fork_hooks_registered = True
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )


def _snapshot_loop(
    reference: weakref.ref[PrometheusReader], stop: threading.Event, interval: float
) -> None:
    # Waits first: started while a MeterProvider is being constructed, the first collection
    # must not race the rest of its constructor.
    while not stop.wait(interval):
        current = reference()
        if current is None:
            return
        current._write_own_snapshot()
        del current  # no strong reference while sleeping: the reader may be collected


def _snapshot_task(reader: PrometheusReader) -> Callable[[], bool]:
    """The snapshot write as an inline export task (``export_mode="inline"``)."""
    reference = weakref.ref(reader)

    def write() -> bool:
        current = reference()
        if current is not None and not current._is_shutdown:
            current._write_own_snapshot()
        return True

    return write


class PrometheusReader(MetricReader):
    """A pull metric reader rendering the Prometheus text exposition format 0.0.4.

    Add it to a ``MeterProvider``; every instrument type is read with cumulative
    temporality and nothing is stored between scrapes. In multi-process mode (see the module
    docstring) it also keeps this process's snapshot file current.

    Args:
        directory: The multi-process directory; ``None`` reads ``DIRECTORY_VARIABLES`` on
            every use, and neither set means single-process rendering.
        interval: Seconds between snapshots written by the background thread; ``None`` reads
            ``APPVITALS_PROMETHEUS_WRITE_INTERVAL`` (default 5).

    Examples:
        >>> from opentelemetry.sdk.metrics import MeterProvider
        >>> from opentelemetry.sdk.resources import Resource
        >>> prometheus_reader = PrometheusReader()
        >>> provider = MeterProvider(
        ...     metric_readers=[prometheus_reader],
        ...     resource=Resource({"service.name": "shop", "deployment.environment.name": "dev"}),
        ... )
        >>> counter = provider.get_meter("shop").create_counter("shop.orders", description="Orders")
        >>> counter.add(3, {"channel": "web"})
        >>> print(prometheus_reader.render(), end="")
        # HELP target_info Target metadata
        # TYPE target_info gauge
        target_info{deployment_environment_name="dev"} 1
        # HELP shop_orders_total Orders
        # TYPE shop_orders_total counter
        shop_orders_total{channel="web"} 3
        >>> provider.shutdown()
    """

    def __init__(
        self,
        *,
        directory: Optional[Union[str, os.PathLike[str]]] = None,
        interval: Optional[float] = None,
    ) -> None:
        cumulative = AggregationTemporality.CUMULATIVE
        # Explicit, although it is MetricReader's default: Prometheus only has cumulative
        # counters, and a pull reader must not follow an OTLP temporality preference.
        super().__init__(
            preferred_temporality=dict.fromkeys(
                (
                    Counter,
                    UpDownCounter,
                    Histogram,
                    ObservableCounter,
                    ObservableUpDownCounter,
                    ObservableGauge,
                ),
                cumulative,
            )
        )
        self._directory = None if directory is None else Path(directory)
        self._interval = interval
        self._lock = threading.RLock()
        self._capture = threading.local()
        self._provider: Optional[weakref.ref[MeterProvider]] = None
        self._is_shutdown = False
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self._snapshots_wanted = False
        self._schedule: Optional[_inline.Schedule] = None  # export_mode="inline"
        self._pid = os.getpid()
        self._token = uuid.uuid4().hex
        self._predecessor_checked = False
        # The latest exemplar per bucket / counter sample, by family (see _openmetrics).
        self._exemplars: dict[str, dict[SampleKey, Any]] = {}
        # Histograms appvitals aggregates itself, merged into every collection (_durations).
        self._direct: list[Any] = []
        _readers.add(self)
        _register_fork_hooks()

    @property
    def attached(self) -> bool:
        """Whether the reader is registered on a ``MeterProvider`` that was not shut down."""
        return self._collect is not None

    @property
    def is_shutdown(self) -> bool:
        """Whether :meth:`shutdown` ran (a reader is attached to one provider, once)."""
        return self._is_shutdown

    def multiprocess_directory(self) -> Optional[Path]:
        """The multi-process directory in effect now, or ``None`` in single-process mode."""
        return self._directory if self._directory is not None else _directory_from_environment()

    def _receive_metrics(
        self,
        metrics_data: MetricsData,
        timeout_millis: float = 10_000,  # noqa: ARG002
        **kwargs: Any,  # noqa: ARG002
    ) -> None:
        # Only the thread that asked for this collection (render or a snapshot) keeps it;
        # collections by force_flush are dropped, as a pull reader has nowhere to send them.
        if getattr(self._capture, "active", False):
            self._capture.data = metrics_data

    def _set_meter_provider(self, meter_provider: MeterProvider) -> None:
        super()._set_meter_provider(meter_provider)
        self._provider = weakref.ref(meter_provider)
        # Workers that are never scraped must still publish their counts for the others.
        if self.multiprocess_directory() is not None:
            self.start_snapshots()

    def _collect_now(self) -> Optional[MetricsData]:
        """Collect on this thread and return what the SDK handed to ``_receive_metrics``."""
        self._capture.active = True
        self._capture.data = None
        try:
            self.collect()
            data: Optional[MetricsData] = self._capture.data
        finally:
            self._capture.active = False
            self._capture.data = None
        try:
            for histogram in self._direct:
                data = histogram.merge(data, self._resource(data))
        except Exception as error:
            _safety.report_internal_error(_ERRORS, error)
        return data

    def add_direct(self, histogram: Any) -> None:
        """Merge ``histogram`` (a :class:`appvitals._durations.DirectHistogram`) into collections.

        Only valid while this reader is the only one on its provider: every consumer of the
        provider's data must see the measurements the histogram holds instead of the SDK.
        """
        self._direct.append(histogram)

    def _collect_families(self) -> tuple[Optional[MetricsData], dict[str, _Family]]:
        """Collect (holding ``_lock``), translate, and keep the collection's exemplars.

        Every collection passes through here — renders, snapshots, the dashboard — because
        the SDK hands each exemplar to one collection only.
        """
        data = self._collect_now()
        families = _families_from(data)
        try:
            from appvitals import _openmetrics

            _openmetrics.update_exemplars(self._exemplars, data, families)
        except Exception as error:
            _safety.report_internal_error(_ERRORS, error)
        return data, families

    def _resource(self, data: Optional[MetricsData]) -> Optional[Resource]:
        if data is not None and data.resource_metrics:
            return data.resource_metrics[0].resource
        # Nothing recorded yet: target_info still describes the process. The SDK keeps the
        # resource privately, hence the defensive lookup.
        provider = self._provider() if self._provider is not None else None
        resource = getattr(getattr(provider, "_sdk_config", None), "resource", None)
        return resource if isinstance(resource, Resource) else None

    def render(self, *, openmetrics: bool = False) -> str:
        """Collect now and render the Prometheus text exposition format 0.0.4.

        In multi-process mode this refreshes this process's snapshot first and merges every
        process's snapshot. Never raises: an internal error is logged once and yields ``""``.

        Args:
            openmetrics: Render the OpenMetrics 1.0 text format instead, with exemplars and
                the closing ``# EOF`` (content type :data:`OPENMETRICS_CONTENT_TYPE`).

        Returns:
            The exposition text (``""`` when there is nothing to expose).
        """
        try:
            families, target_info = self._gather()
            if not openmetrics:
                return _render_text(families, target_info)
            from appvitals import _openmetrics

            with self._lock:
                exemplars = {name: dict(kept) for name, kept in self._exemplars.items()}
            return _openmetrics.render(families, target_info, exemplars)
        except Exception as error:
            _safety.report_internal_error(_ERRORS, error)
            return ""

    def _gather(self) -> tuple[dict[str, _Family], Optional[_Family]]:
        """Collect now: the families to expose (merged in multi-process mode), target_info."""
        directory = self.multiprocess_directory()
        with self._lock:
            attached = self.attached
            data, own = self._collect_families() if attached else (None, {})
            if directory is not None and attached:
                self._write_snapshot(directory, own)
        resource = self._resource(data) if attached else None
        if directory is None:
            return own, _target_info(resource, without_pid=False)
        merged: dict[str, _Family] = {}
        if attached:
            # Lazily, for readers attached before the directory was configured.
            self.start_snapshots()
            _merge(merged, own, gauges=True)
        merged_others = _read_directory(directory, os.getpid() if attached else None)
        _merge(merged, merged_others, gauges=True)  # dead gauges were left out while reading
        # Every worker shares the resource but process.pid, so one target_info of this one.
        return merged, _target_info(resource, without_pid=True)

    def _write_snapshot(self, directory: Path, families: Mapping[str, _Family]) -> None:
        """Replace this process's snapshot file (errors are reported, not raised)."""
        try:
            self._check_pid()
            pid = os.getpid()
            if not self._predecessor_checked:
                directory.mkdir(parents=True, exist_ok=True)
                self._predecessor_checked = True
                # A dead process with our pid left a snapshot: keep its counts before ours
                # replace the file (a failure here must not stop our own snapshots).
                try:
                    _absorb(directory, pid, unless_token=self._token)
                except Exception as error:
                    _safety.report_internal_error(_FILE_ERRORS, error)
            document = {
                "version": _SNAPSHOT_VERSION,
                "pid": pid,
                "token": self._token,
                "families": _dump_families(families),
            }
            _write_json(directory / f"appvitals-{pid}.json", document)
        except Exception as error:
            _safety.report_internal_error(_FILE_ERRORS, error)

    def _write_own_snapshot(self) -> None:
        """Collect and write this process's snapshot, if in multi-process mode and attached."""
        try:
            directory = self.multiprocess_directory()
            if directory is None:
                return
            with self._lock:
                if not self.attached:
                    return
                self._write_snapshot(directory, self._collect_families()[1])
        except Exception as error:
            _safety.report_internal_error(_FILE_ERRORS, error)

    def _check_pid(self) -> None:
        """After a fork without the at-fork hook, become a new process (new token)."""
        if self._pid != os.getpid():
            self._after_fork_in_child()

    def _after_fork_in_child(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.RLock()
        self._capture = threading.local()
        self._token = uuid.uuid4().hex
        self._predecessor_checked = False
        self._exemplars = {}  # measured in the parent, whose spans are not this process's
        self._thread = None
        self._stop = threading.Event()
        if self._snapshots_wanted and not self._is_shutdown:
            # The parent's thread does not exist in the child.
            self.start_snapshots()

    def start_snapshots(self) -> bool:
        """Start the daemon thread writing this process's snapshot every ``interval`` s.

        Idempotent, and restarted in a forked child. Without a multi-process directory
        nothing starts.

        Returns:
            Whether the thread is running.
        """
        try:
            self._check_pid()
            if self._is_shutdown or self.multiprocess_directory() is None:
                return False
            with _module_lock:
                interval = self._interval or _interval_from_environment()
                schedule = _inline.current
                if schedule is not None:  # export_mode="inline": a scheduled write, no thread
                    self._snapshots_wanted = True
                    if self._schedule is not schedule:
                        self._schedule = schedule
                        schedule.every("prometheus snapshot", interval, _snapshot_task(self))
                    return True
                if self._thread is not None and self._thread.is_alive():
                    return True
                self._snapshots_wanted = True
                self._thread = threading.Thread(
                    target=_snapshot_loop,
                    args=(weakref.ref(self), self._stop, interval),
                    name="appvitals-prometheus-snapshots",
                    daemon=True,
                )
                self._thread.start()
                return True
        except Exception as error:
            _safety.report_internal_error(_ERRORS, error)
            return False

    def collect_metrics_data(self) -> Optional[MetricsData]:
        """Collect now and return the SDK's cumulative data, for a consumer sharing this reader.

        appvitals' OTLP export uses it when its exporter wants cumulative temporality too
        (:class:`appvitals._exporters.SharedExportReader`): one reader on the provider
        aggregates every measurement once instead of twice. The collection passes through
        the same path as a render, so the exemplars it takes are kept for ``/metrics``.

        Returns:
            The collection, or ``None`` when the reader is not attached to a provider.
        """
        with self._lock:
            if not self.attached:
                return None
            data, _families = self._collect_families()
        return data

    def force_flush(self, timeout_millis: float = 10_000) -> bool:  # noqa: ARG002
        """Write this process's snapshot now (multi-process mode); nothing else to flush.

        Args:
            timeout_millis: Unused: the snapshot is a local file write.

        Returns:
            ``True``.
        """
        self._write_own_snapshot()
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:  # noqa: ARG002
        """Stop the snapshot thread, write a last snapshot and detach from the provider.

        Args:
            timeout_millis: How long to wait for the snapshot thread to stop.
            **kwargs: Accepted for forward compatibility with the SDK.
        """
        with _module_lock:
            if self._is_shutdown:
                return
            self._is_shutdown = True
            thread, self._thread = self._thread, None
            self._snapshots_wanted = False
        self._stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(timeout_millis, 0) / 1000)
        # The counts since the last periodic snapshot would otherwise be lost with the worker.
        self._write_own_snapshot()
        self._set_collect_callback(None)


# --- the process-wide reader ---------------------------------------------------------------

_singleton: Optional[PrometheusReader] = None


def reader() -> PrometheusReader:
    """The process-wide reader appvitals adds to its ``MeterProvider``.

    Created on the first call; after a shutdown (``appvitals.shutdown()``) the next call
    creates a fresh one, because an SDK reader belongs to one provider for its lifetime.

    Returns:
        The reader.

    Examples:
        >>> reader() is reader()
        True
    """
    global _singleton  # noqa: PLW0603 - one reader per process is the point
    with _singleton_lock:
        if _singleton is None or _singleton.is_shutdown:
            _singleton = PrometheusReader()
        return _singleton


def wants_openmetrics(accept: Optional[str]) -> bool:
    """Whether a scrape's ``Accept`` header prefers OpenMetrics text to Prometheus text 0.0.4.

    Args:
        accept: The request's ``Accept`` header, ``None`` when absent.

    Returns:
        ``True`` when ``application/openmetrics-text`` is accepted at least as well as
        ``text/plain`` (Prometheus asks for it with ``q=0.5`` over text's ``q=0.3``).

    Examples:
        >>> wants_openmetrics("application/openmetrics-text;version=1.0.0,text/plain;q=0.5")
        True
        >>> wants_openmetrics("text/plain;version=0.0.4"), wants_openmetrics(None)
        (False, False)
    """
    from appvitals import _openmetrics

    return _openmetrics.wants_openmetrics(accept)


def metrics_text(accept: Optional[str] = None) -> tuple[bytes, str]:
    """The ``/metrics`` response: the rendered body (UTF-8) and its content type.

    Never raises: before appvitals is configured the body is the single comment line
    ``# appvitals is not configured`` (in OpenMetrics, which has no comments, just
    ``# EOF``), and an internal error yields an empty body.

    Args:
        accept: The scrape's ``Accept`` header. When it prefers OpenMetrics
            (:func:`wants_openmetrics`) the body is OpenMetrics 1.0 text with exemplars and
            the content type :data:`OPENMETRICS_CONTENT_TYPE`; otherwise (and when omitted)
            Prometheus text 0.0.4, :data:`CONTENT_TYPE`.

    Returns:
        ``(body, content_type)``.

    Examples:
        >>> body, content_type = metrics_text()
        >>> body
        b'# appvitals is not configured\\n'
        >>> content_type
        'text/plain; version=0.0.4; charset=utf-8'
        >>> body, content_type = metrics_text("application/openmetrics-text; version=1.0.0")
        >>> body.splitlines()[-1], content_type.split(";")[0]
        (b'# EOF', 'application/openmetrics-text')
    """
    openmetrics = False
    try:
        openmetrics = wants_openmetrics(accept)
        content_type = OPENMETRICS_CONTENT_TYPE if openmetrics else CONTENT_TYPE
        current = reader()
        if not current.attached:
            # OpenMetrics has no free-form comments: an empty exposition says as much.
            return (b"# EOF\n" if openmetrics else NOT_CONFIGURED_BODY), content_type
        return current.render(openmetrics=openmetrics).encode("utf-8"), content_type
    except Exception as error:
        _safety.report_internal_error(_ERRORS, error)
        return (b"# EOF\n" if openmetrics else b""), (
            OPENMETRICS_CONTENT_TYPE if openmetrics else CONTENT_TYPE
        )


def start_snapshots() -> bool:
    """Start the process-wide reader's snapshot thread (e.g. in gunicorn's ``post_fork``).

    Returns:
        Whether the thread is running (``False`` without a multi-process directory).

    Examples:
        >>> start_snapshots()  # no APPVITALS_PROMETHEUS_MULTIPROC_DIR here
        False
    """
    return reader().start_snapshots()


def mark_process_dead(pid: int, directory: Optional[Union[str, os.PathLike[str]]] = None) -> bool:
    """Forget a dead worker's gauges while keeping its counters (gunicorn's ``child_exit``).

    The worker's counters and histograms are added to ``appvitals-dead.json`` and its
    snapshot file is deleted, so its gauges stop counting immediately (even if the pid is
    reused) and the directory does not grow with every recycled worker. Never raises.

    Args:
        pid: The dead process.
        directory: The multi-process directory; ``None`` reads the environment.

    Returns:
        Whether a snapshot of ``pid`` was found and folded in.

    Examples:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     mark_process_dead(4242, folder)
        False
    """
    try:
        folder = _directory_from_environment() if directory is None else Path(directory)
        if folder is None or pid <= 0 or not folder.is_dir():
            return False
        return _absorb(folder, pid)
    except Exception as error:
        _safety.report_internal_error(_FILE_ERRORS, error)
        return False
