"""Metric helpers: cached, validated instruments with a cardinality guard.

``appvitals.counter("orders.created")`` returns the same instrument every time it is called
with the same name, so helpers can be created where they are used. Names and units are
checked against OpenTelemetry's rules when the instrument is defined — a bad name is a bug
found at start-up, not a silent drop at run time. Recording never raises.

Each instrument admits a bounded number of distinct attribute sets
(``APPVITALS_CARDINALITY_LIMIT``, default 1000); further sets are recorded under the single
attribute ``otel.metric.overflow=true`` and counted in
``appvitals.metrics.cardinality_overflow``, so a user id put in an attribute by mistake
cannot exhaust memory.

Examples:
    >>> import appvitals
    >>> orders = appvitals.counter("shop.orders", unit="{order}", description="Orders placed")
    >>> orders.add(1, {"payment.method": "card"})
    >>> appvitals.counter("shop.orders") is orders
    True
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Optional, Union

from opentelemetry import metrics as otel_metrics
from opentelemetry.metrics import CallbackOptions, Observation

from appvitals._safety import internal_error_counts, report_internal_error
from appvitals._version import __version__

__all__ = [
    "Counter",
    "Gauge",
    "Histogram",
    "MetricDefinitionError",
    "UpDownCounter",
    "counter",
    "gauge",
    "histogram",
    "updown_counter",
]

Attributes = Optional[Mapping[str, Any]]
GaugeCallback = Callable[
    [], Union[float, int, Iterable[tuple[Union[float, int], Mapping[str, Any]]], None]
]

# https://opentelemetry.io/docs/specs/otel/metrics/api/#instrument-name-syntax
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_./-]{0,254}")
_OVERFLOW: Mapping[str, Any] = {"otel.metric.overflow": True}
_DEFAULT_LIMIT = 1000

_lock = threading.Lock()
_instruments: dict[str, _Instrument] = {}


class MetricDefinitionError(ValueError):
    """An instrument was defined with an invalid name or unit, or redefined differently."""


def _meter() -> otel_metrics.Meter:
    return otel_metrics.get_meter("appvitals", __version__)


def _cardinality_limit() -> int:
    from appvitals._setup import get_config

    config = get_config()
    return _DEFAULT_LIMIT if config is None else config.cardinality_limit


class _Instrument:
    """Common part of the helpers: validation, the guard, and the fail-open boundary."""

    kind = ""
    __slots__ = ("_limit", "_otel", "_seen", "description", "name", "unit")

    def __init__(self, name: str, unit: str, description: str) -> None:
        self.name = name
        self.unit = unit
        self.description = description
        self._limit = _cardinality_limit()
        self._seen: set[Any] = set()
        self._otel: Any = None

    def _guard(self, attributes: Attributes) -> Attributes:
        if not attributes:
            return None
        try:
            key: Any = frozenset(attributes.items())
        except TypeError:  # unhashable values (lists): compare by their text
            key = frozenset((k, repr(v)) for k, v in attributes.items())
        seen = self._seen
        if key in seen:
            return attributes
        if len(seen) < self._limit:
            seen.add(key)
            return attributes
        _overflow_counter().add(1, {"instrument": self.name})
        return _OVERFLOW

    def _at_fork_reinit(self) -> None:
        pass


class Counter(_Instrument):
    """A monotonic sum (requests served, bytes sent). Create with :func:`counter`."""

    kind = "counter"
    __slots__ = ()

    def __init__(self, name: str, unit: str, description: str) -> None:
        super().__init__(name, unit, description)
        self._otel = _meter().create_counter(name, unit=unit, description=description)

    def add(self, amount: Union[int, float] = 1, attributes: Attributes = None) -> None:
        """Add a non-negative ``amount``."""
        try:
            self._otel.add(amount, self._guard(attributes))
        except Exception as error:
            report_internal_error(f"counter {self.name}", error)


class UpDownCounter(_Instrument):
    """A sum that goes up and down (items in a queue). Create with :func:`updown_counter`."""

    kind = "updown_counter"
    __slots__ = ()

    def __init__(self, name: str, unit: str, description: str) -> None:
        super().__init__(name, unit, description)
        self._otel = _meter().create_up_down_counter(name, unit=unit, description=description)

    def add(self, amount: Union[int, float], attributes: Attributes = None) -> None:
        """Add ``amount`` (negative to subtract)."""
        try:
            self._otel.add(amount, self._guard(attributes))
        except Exception as error:
            report_internal_error(f"updown_counter {self.name}", error)


class Histogram(_Instrument):
    """A distribution (durations, sizes). Create with :func:`histogram`."""

    kind = "histogram"
    __slots__ = ()

    def __init__(
        self, name: str, unit: str, description: str, buckets: Optional[Sequence[float]]
    ) -> None:
        super().__init__(name, unit, description)
        kwargs: dict[str, Any] = {"unit": unit, "description": description}
        if buckets is not None:
            kwargs["explicit_bucket_boundaries_advisory"] = list(buckets)
        self._otel = _meter().create_histogram(name, **kwargs)

    def record(self, value: Union[int, float], attributes: Attributes = None) -> None:
        """Record one measurement."""
        try:
            self._otel.record(value, self._guard(attributes))
        except Exception as error:
            report_internal_error(f"histogram {self.name}", error)


class Gauge(_Instrument):
    """A current value: set it (synchronous) or let a callback report it at export time.

    Create with :func:`gauge`.
    """

    kind = "gauge"
    __slots__ = ("_callback",)

    def __init__(
        self, name: str, unit: str, description: str, callback: Optional[GaugeCallback]
    ) -> None:
        super().__init__(name, unit, description)
        self._callback = callback
        meter = _meter()
        if callback is None:
            self._otel = meter.create_gauge(name, unit=unit, description=description)
        else:
            self._otel = meter.create_observable_gauge(
                name, callbacks=[self._observe], unit=unit, description=description
            )

    def set(self, value: Union[int, float], attributes: Attributes = None) -> None:
        """Set the current value (only for gauges created without a callback)."""
        try:
            self._otel.set(value, self._guard(attributes))
        except Exception as error:
            report_internal_error(f"gauge {self.name}", error)

    def _observe(self, _options: CallbackOptions) -> Iterable[Observation]:
        assert self._callback is not None
        try:
            result = self._callback()
            if result is None:
                return []
            if isinstance(result, (int, float)):
                return [Observation(result)]
            return [Observation(value, self._guard(attrs)) for value, attrs in result]
        except Exception as error:
            report_internal_error(f"gauge {self.name} callback", error)
            return []


def _validate(name: str, unit: str) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        msg = (
            f"invalid instrument name {name!r}: OpenTelemetry names start with a letter and "
            "have at most 255 of A-Z a-z 0-9 _ . / -"
        )
        raise MetricDefinitionError(msg)
    if not isinstance(unit, str) or len(unit) > 63 or not unit.isascii():
        msg = (
            f"invalid unit {unit!r} for {name}: at most 63 ASCII characters (UCUM, e.g. 's', 'By')"
        )
        raise MetricDefinitionError(msg)


def _get_or_create(kind: str, name: str, unit: str, build: Callable[[], _Instrument]) -> Any:
    _validate(name, unit)
    with _lock:
        existing = _instruments.get(name)
        if existing is not None:
            if existing.kind != kind:
                msg = f"{name!r} is already a {existing.kind}, not a {kind}"
                raise MetricDefinitionError(msg)
            return existing
        instrument = build()
        _instruments[name] = instrument
        return instrument


def counter(name: str, *, unit: str = "1", description: str = "") -> Counter:
    """The monotonic counter ``name``, created on first use.

    Raises:
        MetricDefinitionError: invalid name or unit, or ``name`` is another kind of instrument.
    """
    result: Counter = _get_or_create(
        "counter", name, unit, lambda: Counter(name, unit, description)
    )
    return result


def updown_counter(name: str, *, unit: str = "1", description: str = "") -> UpDownCounter:
    """The up-down counter ``name``, created on first use (see :func:`counter`)."""
    result: UpDownCounter = _get_or_create(
        "updown_counter", name, unit, lambda: UpDownCounter(name, unit, description)
    )
    return result


def histogram(
    name: str,
    *,
    unit: str = "s",
    description: str = "",
    buckets: Optional[Sequence[float]] = None,
) -> Histogram:
    """The histogram ``name``, created on first use; ``buckets`` advises bucket boundaries.

    Examples:
        >>> import appvitals
        >>> latency = appvitals.histogram("heartbeat.processing.duration", unit="s")
        >>> latency.record(0.012, {"outcome": "ok"})
    """
    result: Histogram = _get_or_create(
        "histogram", name, unit, lambda: Histogram(name, unit, description, buckets)
    )
    return result


def gauge(
    name: str,
    *,
    unit: str = "1",
    description: str = "",
    callback: Optional[GaugeCallback] = None,
) -> Gauge:
    """The gauge ``name``: set it, or give a ``callback`` read at every export.

    The callback returns a number, ``None`` (nothing to report) or an iterable of
    ``(value, attributes)`` pairs; an exception in it is counted, never raised.

    Examples:
        >>> import appvitals
        >>> overdue = appvitals.gauge("application.overdue.count", callback=lambda: 3)
    """
    result: Gauge = _get_or_create(
        "gauge", name, unit, lambda: Gauge(name, unit, description, callback)
    )
    return result


_overflow: Optional[Any] = None


def _overflow_counter() -> Any:
    global _overflow  # noqa: PLW0603 - one process-wide self-metric
    if _overflow is None:
        _overflow = _meter().create_counter(
            "appvitals.metrics.cardinality_overflow",
            unit="{measurement}",
            description="Measurements recorded under otel.metric.overflow by the cardinality guard",
        )
    return _overflow


def register_self_metrics(meter_provider: Any) -> None:
    """Report ``appvitals.internal.errors`` (by place) through ``meter_provider``."""

    def observe(_options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(count, {"where": where}) for where, count in internal_error_counts().items()
        ]

    meter_provider.get_meter("appvitals", __version__).create_observable_counter(
        "appvitals.internal.errors",
        callbacks=[observe],
        unit="{error}",
        description="Errors caught inside appvitals (never raised into the application)",
    )


def _reset() -> None:
    """Forget every cached instrument (tests, after resetting global providers)."""
    global _overflow  # noqa: PLW0603
    with _lock:
        _instruments.clear()
        _overflow = None


def _at_fork_reinit() -> None:
    global _lock  # noqa: PLW0603 - a lock held by a parent thread is never released in the child
    _lock = threading.Lock()
