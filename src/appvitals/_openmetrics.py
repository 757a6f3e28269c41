"""OpenMetrics 1.0 text for ``/metrics``, with exemplars linking metrics to traces.

:mod:`appvitals.prometheus` builds the metric families; this module writes them in the
OpenMetrics text format when a scraper asks for it (:func:`wants_openmetrics`): counters as
family ``x`` with samples ``x_total``, ``target_info`` as the info family ``target``,
``le`` in canonical float form (``1.0``), and ``# EOF`` last.

Exemplars: the OpenTelemetry SDK keeps, for a measurement made inside a *sampled* span (its
default ``trace_based`` exemplar filter), the trace and span ids; per histogram bucket the
latest such measurement. The SDK forgets them at every collection, so the reader keeps the
latest exemplar of each bucket and counter sample across collections (as Prometheus client
libraries do) and writes it after the sample: ``… 3 # {trace_id="…",span_id="…"} 0.042
1700000000.123``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from opentelemetry.sdk.metrics.export import HistogramDataPoint, MetricsData
from opentelemetry.sdk.metrics.export import Sum as SumData

if TYPE_CHECKING:
    from appvitals.prometheus import SampleKey, _Family

CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
_VERSIONS = frozenset({None, "1.0.0", "0.0.1"})
_TEXT_TYPES = frozenset({"text/plain", "text/*", "*/*"})


@dataclass(frozen=True)
class Exemplar:
    """One exemplar: the measured value, when, and the span it was measured in."""

    value: float
    trace_id: str
    span_id: str
    time_unix_nano: int


Exemplars = dict[str, dict["SampleKey", Exemplar]]


def wants_openmetrics(accept: Optional[str]) -> bool:
    """Whether an ``Accept`` header prefers OpenMetrics text over Prometheus text 0.0.4.

    OpenMetrics is chosen when ``application/openmetrics-text`` (version 1.0.0, 0.0.1 or
    none) is accepted with a quality at least that of ``text/plain`` and the wildcards.

    Examples:
        >>> wants_openmetrics(
        ...     "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3"
        ... )
        True
        >>> wants_openmetrics("text/plain"), wants_openmetrics("*/*"), wants_openmetrics(None)
        (False, False, False)
    """
    if not accept:
        return False
    best_openmetrics = best_text = 0.0
    for media_range in accept.split(","):
        media_type, *parameters = (part.strip() for part in media_range.split(";"))
        quality, version = 1.0, None
        for parameter in parameters:
            key, _, value = parameter.partition("=")
            key, value = key.strip().lower(), value.strip().strip('"')
            if key == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
            elif key == "version":
                version = value
        media_type = media_type.lower()
        if media_type == "application/openmetrics-text" and version in _VERSIONS:
            best_openmetrics = max(best_openmetrics, quality)
        elif media_type in _TEXT_TYPES:
            best_text = max(best_text, quality)
    return best_openmetrics > 0 and best_openmetrics >= best_text


# --- exemplars ---------------------------------------------------------------------------------


def _exemplar(raw: Any) -> Optional[Exemplar]:
    if not raw.trace_id or not raw.span_id:
        return None  # an always_on filter outside a span: nothing to link to
    return Exemplar(
        float(raw.value), f"{raw.trace_id:032x}", f"{raw.span_id:016x}", int(raw.time_unix_nano)
    )


def _latest(candidates: Any) -> Optional[Exemplar]:
    found = [exemplar for exemplar in map(_exemplar, candidates) if exemplar is not None]
    return max(found, key=lambda exemplar: exemplar.time_unix_nano) if found else None


def _keep_histogram_exemplars(into: dict[SampleKey, Exemplar], point: HistogramDataPoint) -> None:
    from appvitals.prometheus import _format_number, _labels

    labels = _labels(point.attributes, drop="le")
    for exemplar in map(_exemplar, point.exemplars):
        if exemplar is None:
            continue
        # The bucket holding the value: (previous bound, bound], as the SDK counts it.
        bound = next((b for b in point.explicit_bounds if exemplar.value <= b), None)
        le = "+Inf" if bound is None else _format_number(float(bound))
        into[("_bucket", (*labels, ("le", le)))] = exemplar


def update_exemplars(
    store: Exemplars, data: Optional[MetricsData], families: Mapping[str, _Family]
) -> None:
    """Keep the newest exemplar of every bucket and counter sample of ``data`` in ``store``.

    Entries of samples no longer in ``families`` (this process's collection) are dropped,
    so the store never outgrows the series themselves.
    """
    from appvitals.prometheus import _kind_of, _labels, metric_name

    metrics = [
        metric
        for resource_metrics in (data.resource_metrics if data is not None else ())
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
    ]
    for metric in metrics:
        kind = _kind_of(metric.data)
        if kind not in ("counter", "histogram"):
            continue
        into = store.setdefault(metric_name(metric.name, metric.unit or "", kind), {})
        for point in metric.data.data_points:
            if not point.exemplars:
                continue
            if isinstance(point, HistogramDataPoint):
                _keep_histogram_exemplars(into, point)
            elif isinstance(metric.data, SumData):
                newest = _latest(point.exemplars)
                if newest is not None:
                    into[("", _labels(point.attributes))] = newest
    for name in list(store):
        family = families.get(name)
        kept = {k: v for k, v in store[name].items() if family and k in family.samples}
        if kept:
            store[name] = kept
        else:
            del store[name]


# --- rendering ---------------------------------------------------------------------------------


def _canonical(text: str) -> str:
    """A bucket bound as OpenMetrics writes it: ``1.0``, ``0.005``, ``1e+07``, ``+Inf``."""
    value = float(text)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    rendered = repr(value)
    dot = rendered.find(".")
    if value > 0 and dot > 6:  # Go (and so Prometheus) switches to exponents sooner
        mantissa = f"{rendered[0]}.{rendered[1:dot]}{rendered[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return rendered


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _timestamp(time_unix_nano: int) -> str:
    seconds, nanos = divmod(time_unix_nano, 1_000_000_000)
    return f"{seconds}.{nanos // 1_000_000:03d}"


def render(
    families: Mapping[str, _Family], target_info: Optional[_Family], exemplars: Exemplars
) -> str:
    """The families as OpenMetrics 1.0 text, ending with ``# EOF``."""
    from appvitals.prometheus import _escape_label_value, _format_number, _sample_order

    lines: list[str] = []
    declared: set[str] = set()

    def labels_text(labels: Any, bucket: bool) -> str:
        pairs = [
            (key, _canonical(value) if bucket and key == "le" else value) for key, value in labels
        ]
        rendered = ",".join(f'{key}="{_escape_label_value(value)}"' for key, value in pairs)
        return f"{{{rendered}}}" if rendered else ""

    if target_info is not None and target_info.samples:
        declared.add("target")
        lines.append("# HELP target Target metadata")
        lines.append("# TYPE target info")
        for _, labels in target_info.samples:
            lines.append(f"target_info{labels_text(labels, False)} 1")
    for name in sorted(families):
        family = families[name]
        if not family.samples:
            continue
        kind = family.kind
        declared_name = name[: -len("_total")] if kind == "counter" else name
        if declared_name in declared:
            continue  # two families would share a name: the first one wins, as in 0.0.4
        declared.add(declared_name)
        if family.help:
            lines.append(f"# HELP {declared_name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {declared_name} {kind}")
        own = exemplars.get(name, {})
        for key in sorted(family.samples, key=lambda k: _sample_order(kind, k)):
            suffix, labels = key
            line = f"{name}{suffix}{labels_text(labels, suffix == '_bucket')} "
            line += _format_number(family.samples[key])
            exemplar = own.get(key) if kind == "counter" or suffix == "_bucket" else None
            if exemplar is not None:
                line += (
                    f' # {{trace_id="{exemplar.trace_id}",span_id="{exemplar.span_id}"}} '
                    f"{_format_number(exemplar.value)} {_timestamp(exemplar.time_unix_nano)}"
                )
            lines.append(line)
    lines.append("# EOF")
    return "".join(line + "\n" for line in lines)
