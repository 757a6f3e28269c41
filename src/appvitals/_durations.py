"""``http.server.request.duration`` aggregated by appvitals, merged into the SDK's collections.

One ``Histogram.record`` through the SDK costs about 5.5 µs (``docs/benchmarks.md``): the
SDK cleans the attributes, hashes them and looks the series up for every measurement. That
was a fifth of what the Flask middleware costs a request. When nothing but appvitals'
Prometheus reader collects the provider — the default set-up, where the OTLP export shares
that reader (:class:`appvitals._exporters.SharedExportReader`) — the durations are
aggregated here instead, about 1 µs each, into the same explicit-bucket cumulative
histogram, and the reader merges them into every collection (:meth:`DirectHistogram.merge`).
A sampled request also leaves its bucket's exemplar, as the SDK's ``trace_based`` filter and
aligned-bucket reservoir would.

Any other reader on the provider (a delta-temporality OTLP export, ``appvitals.testing``,
an application's own provider), or an ``always_on`` exemplar filter, leaves :data:`current`
unset (``configure()`` decides), and the durations go through the SDK as before.
"""

from __future__ import annotations

import bisect
import os
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from opentelemetry.sdk.metrics import Exemplar
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext

from appvitals._version import __version__

# http.server.request.duration as the semantic conventions define it, with their buckets.
SCOPE = "appvitals.http.server"
NAME = "http.server.request.duration"
UNIT = "s"
DESCRIPTION = "Duration of HTTP server requests."
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)

# The SDK's default cardinality limit: past it, one overflow series takes the rest.
MAX_SERIES = 2000
OVERFLOW_ATTRIBUTES: Mapping[str, Any] = {"otel.metric.overflow": True}


class _Series:
    __slots__ = ("attributes", "count", "counts", "exemplars", "max", "min", "start", "sum")

    def __init__(self, attributes: Mapping[str, Any], buckets: int) -> None:
        self.attributes = dict(attributes)
        self.counts = [0] * buckets
        self.count = 0
        self.sum = 0.0
        self.min = float("inf")
        self.max = float("-inf")
        self.start = time.time_ns()
        # Bucket index → (value, time, span id, trace id) of its latest sampled measurement,
        # as the SDK's aligned-bucket exemplar reservoir keeps them until a collection.
        self.exemplars: dict[int, tuple[float, int, int, int]] = {}


class DirectHistogram:
    """A cumulative explicit-bucket histogram that a reader merges into its collections.

    Args:
        scope: the instrumentation scope the SDK's instrument of the same name lives in.
        name, unit, description: as the SDK instrument's.
        boundaries: the explicit bucket boundaries (the instrument's advisory ones).
        exemplars: keep the latest sampled measurement per bucket, as the SDK's default
            ``trace_based`` exemplar filter and aligned-bucket reservoir do; each
            collection takes them (and the next starts afresh).
    """

    def __init__(
        self,
        scope: InstrumentationScope,
        name: str,
        unit: str,
        description: str,
        boundaries: Sequence[float],
        *,
        exemplars: bool = True,
    ) -> None:
        self.scope = scope
        self.exemplars = exemplars
        self.name = name
        self.unit = unit
        self.description = description
        self.boundaries = tuple(float(bound) for bound in boundaries)
        self._lock = threading.Lock()
        self._series: dict[tuple[tuple[str, Any], ...], _Series] = {}

    def record(
        self,
        value: float,
        attributes: Mapping[str, Any],
        sampled: Optional[SpanContext] = None,
    ) -> None:
        """Add one measurement (finite, non-negative: a duration) of ``attributes``.

        ``sampled`` is the span context of a sampled request, kept as the bucket's exemplar.
        """
        key = tuple(attributes.items())
        index = bisect.bisect_left(self.boundaries, value)
        exemplar = None
        if sampled is not None and self.exemplars:
            exemplar = (value, time.time_ns(), sampled.span_id, sampled.trace_id)
        with self._lock:
            series = self._series.get(key)
            if series is None:
                series = self._new_series(key, attributes)
            series.counts[index] += 1
            series.count += 1
            series.sum += value
            # Comparisons, not min()/max(): this runs once per request.
            if value < series.min:  # noqa: PLR1730
                series.min = value
            if value > series.max:  # noqa: PLR1730
                series.max = value
            if exemplar is not None:
                series.exemplars[index] = exemplar

    def _new_series(
        self, key: tuple[tuple[str, Any], ...], attributes: Mapping[str, Any]
    ) -> _Series:
        if len(self._series) >= MAX_SERIES - 1:
            key = tuple(OVERFLOW_ATTRIBUTES.items())
            attributes = OVERFLOW_ATTRIBUTES
            series = self._series.get(key)
            if series is not None:
                return series
        series = self._series[key] = _Series(attributes, len(self.boundaries) + 1)
        return series

    def at_fork_reinit(self) -> None:
        """In a forked child: a new lock, and no series (what the parent counted is its own)."""
        self._lock = threading.Lock()
        self._series = {}

    def points(self, now: int) -> list[HistogramDataPoint]:
        """The cumulative data points of every series, stamped ``now``; takes the exemplars."""
        with self._lock:
            series = [
                (s.attributes, s.start, s.count, s.sum, list(s.counts), s.min, s.max, s.exemplars)
                for s in self._series.values()
            ]
            for each in self._series.values():
                if each.exemplars:
                    each.exemplars = {}
        return [
            HistogramDataPoint(
                attributes=dict(attributes),
                start_time_unix_nano=start,
                time_unix_nano=now,
                count=count,
                sum=total,
                bucket_counts=counts,
                explicit_bounds=self.boundaries,
                min=low,
                max=high,
                exemplars=[
                    Exemplar({}, value, at, span_id, trace_id)
                    for _index, (value, at, span_id, trace_id) in sorted(exemplars.items())
                ],
            )
            for attributes, start, count, total, counts, low, high, exemplars in series
        ]

    def merge(
        self, data: Optional[MetricsData], resource: Optional[Resource]
    ) -> Optional[MetricsData]:
        """``data`` with this histogram's series added (per series, to the SDK's own points).

        ``resource`` describes the process when the SDK collected nothing at all.
        """
        points = self.points(time.time_ns())
        if not points:
            return data
        if data is None or not data.resource_metrics:
            if resource is None:
                return data
            return MetricsData([ResourceMetrics(resource, [self._scope_metrics(points)], "")])
        first, *others = data.resource_metrics
        scopes = list(first.scope_metrics)
        for index, scope_metrics in enumerate(scopes):
            if _same_scope(scope_metrics.scope, self.scope):
                scopes[index] = self._merge_scope(scope_metrics, points)
                break
        else:
            scopes.append(self._scope_metrics(points))
        merged = ResourceMetrics(first.resource, scopes, first.schema_url)
        return MetricsData([merged, *others])

    def _metric(self, points: Sequence[HistogramDataPoint]) -> Metric:
        return Metric(
            name=self.name,
            description=self.description,
            unit=self.unit,
            data=Histogram(
                data_points=list(points),
                aggregation_temporality=AggregationTemporality.CUMULATIVE,
            ),
        )

    def _scope_metrics(self, points: Sequence[HistogramDataPoint]) -> ScopeMetrics:
        return ScopeMetrics(self.scope, [self._metric(points)], self.scope.schema_url or "")

    def _merge_scope(
        self, scope_metrics: ScopeMetrics, points: list[HistogramDataPoint]
    ) -> ScopeMetrics:
        metrics = list(scope_metrics.metrics)
        for index, metric in enumerate(metrics):
            if metric.name == self.name and isinstance(metric.data, Histogram):
                metrics[index] = self._metric(_merge_points(metric.data.data_points, points))
                break
        else:
            metrics.append(self._metric(points))
        return ScopeMetrics(scope_metrics.scope, metrics, scope_metrics.schema_url)


def _same_scope(left: InstrumentationScope, right: InstrumentationScope) -> bool:
    return left.name == right.name and left.version == right.version


def _merge_points(
    sdk_points: Sequence[HistogramDataPoint], own: list[HistogramDataPoint]
) -> list[HistogramDataPoint]:
    """One point per attribute set: the SDK's (sampled requests, with exemplars) plus ours."""
    by_key = {_attributes_key(point.attributes): point for point in own}
    merged: list[HistogramDataPoint] = []
    for point in sdk_points:
        mine = by_key.pop(_attributes_key(point.attributes), None)
        if mine is None or list(point.explicit_bounds) != list(mine.explicit_bounds):
            merged.append(point)
            if mine is not None:  # a view changed the SDK's buckets: report both, never mix
                merged.append(mine)
            continue
        merged.append(
            HistogramDataPoint(
                attributes=point.attributes,
                start_time_unix_nano=min(point.start_time_unix_nano, mine.start_time_unix_nano),
                time_unix_nano=max(point.time_unix_nano, mine.time_unix_nano),
                count=point.count + mine.count,
                sum=point.sum + mine.sum,
                bucket_counts=[
                    a + b for a, b in zip(point.bucket_counts, mine.bucket_counts, strict=True)
                ],
                explicit_bounds=point.explicit_bounds,
                min=min(point.min, mine.min),
                max=max(point.max, mine.max),
                exemplars=[*point.exemplars, *mine.exemplars],
            )
        )
    merged.extend(by_key.values())
    return merged


def _attributes_key(attributes: Optional[Mapping[str, Any]]) -> frozenset[tuple[str, Any]]:
    return frozenset((attributes or {}).items())


def request_duration(exemplars: bool = True) -> DirectHistogram:
    """A new direct ``http.server.request.duration``, in the scope the HTTP servers use."""
    scope = InstrumentationScope(SCOPE, __version__)
    return DirectHistogram(scope, NAME, UNIT, DESCRIPTION, BUCKETS, exemplars=exemplars)


def exemplar_filter(environ: Mapping[str, str] = os.environ) -> Optional[bool]:
    """Whether the SDK would keep exemplars of sampled measurements (``None``: not only those).

    ``OTEL_METRICS_EXEMPLAR_FILTER``: ``trace_based`` (the default) keeps the sampled ones,
    ``always_off`` none; ``always_on`` (every measurement) is left to the SDK.
    """
    value = environ.get("OTEL_METRICS_EXEMPLAR_FILTER", "trace_based")
    return {"trace_based": True, "always_off": False}.get(value)


# The histogram every instrumented HTTP server records its unsampled durations into, while
# appvitals' configured provider is collected by its Prometheus reader only; else None.
current: Optional[DirectHistogram] = None
