"""One decision and one event dict per log record, shared by every appvitals handler.

A record reaches two handlers on the root logger — the console (JSON or console lines) and
the OpenTelemetry bridge — and both must agree: same fields, same masking, and the same
sampling and duplicate decisions, made once. :meth:`Pipeline.prepare` computes the event dict
of a record the first time a handler asks and caches it (weakly) for the others.

Summaries of suppressed duplicates are not logged from inside a handler (a handler holding
its lock while logging into another handler's lock can deadlock with a thread doing the
reverse); each handler gets its own queue of summaries instead and writes them, before its
current record, the next time it emits. Nothing here imports structlog.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import random
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional, Protocol

from appvitals._logs_fields import (
    RECORD_KEY,
    EventDict,
    EventMessage,
    Processor,
    iso_timestamp,
    level_name,
    reorder,
)
from appvitals._safety import report_internal_error

DROPPED_METRIC = "appvitals.logs.dropped"
_DROPPED = object()
_MAX_WINDOWS = 1024
_MAX_PENDING = 1024


class RandomSource(Protocol):
    """What sampling needs from a random generator (:class:`random.Random` has it)."""

    def random(self) -> float:
        """A float in ``[0, 1)``."""
        ...


@dataclass(frozen=True)
class Summary:
    """A ``"<event> (suppressed N repeats)"`` line: a record for handler filters, its fields."""

    record: logging.LogRecord
    event: dict[str, Any]


def sampling_key(levelno: int) -> str:
    """The ``sample_rates`` key that applies to a level (custom levels: the one below)."""
    if levelno < logging.INFO:
        return "debug"
    if levelno < logging.WARNING:
        return "info"
    if levelno < logging.ERROR:
        return "warning"
    if levelno < logging.CRITICAL:
        return "error"
    return "critical"


class NoiseControl:
    """Sampling by level and suppression of repeats within a time window.

    Args:
        sample_rates: share of records kept per level name (``"debug"``, ``"info"`` …);
            missing levels keep everything.
        dedupe_window: seconds during which a repeat of the same logger, level and event
            template is suppressed; ``0`` turns suppression off.
        rng: the source of sampling decisions (injectable for tests).
        clock: monotonic seconds for the windows (injectable for tests).
    """

    def __init__(
        self,
        sample_rates: Mapping[str, float],
        dedupe_window: float,
        rng: RandomSource,
        clock: Callable[[], float],
    ) -> None:
        self.rates = {key: rate for key, rate in sample_rates.items() if rate < 1.0}
        self.window = dedupe_window
        self._rng = rng
        self._clock = clock
        self._lock = threading.Lock()
        # key → [window start, repeats suppressed]; insertion order is start order, because
        # a window that closes is removed and a new one appended.
        self._windows: collections.OrderedDict[tuple[str, int, str], list[float]] = (
            collections.OrderedDict()
        )

    @property
    def active(self) -> bool:
        """Whether this does anything at all."""
        return bool(self.rates) or self.window > 0

    def sampled_out(self, levelno: int) -> bool:
        """Whether sampling drops a record of this level (one random draw when it applies)."""
        rate = self.rates.get(sampling_key(levelno))
        if rate is None:
            return False
        return rate <= 0.0 or self._rng.random() >= rate

    def admit(self, name: str, levelno: int, text: str) -> tuple[bool, list[tuple[Any, ...]]]:
        """Record one occurrence; return whether to keep it and the windows that closed.

        Closed windows come back as ``(name, levelno, text, repeats)`` for those that
        suppressed something.
        """
        if self.window <= 0:
            return True, []
        now = self._clock()
        key = (name, levelno, text)
        with self._lock:
            closed = self._expire(now)
            entry = self._windows.get(key)
            if entry is not None:
                entry[1] += 1
                return False, closed
            self._windows[key] = [now, 0]
            if len(self._windows) > _MAX_WINDOWS:
                (old_key, (_, repeats)) = self._windows.popitem(last=False)
                if repeats:
                    closed.append((*old_key, int(repeats)))
        return True, closed

    def expire(self) -> list[tuple[Any, ...]]:
        """Close the windows that are over (without recording an occurrence)."""
        if self.window <= 0:
            return []
        now = self._clock()
        with self._lock:
            return self._expire(now)

    def flush(self) -> list[tuple[Any, ...]]:
        """Close every window (at shutdown), returning those that suppressed something."""
        with self._lock:
            closed = [(*key, int(entry[1])) for key, entry in self._windows.items() if entry[1]]
            self._windows.clear()
        return closed

    def at_fork_reinit(self) -> None:
        """A new lock in a forked child."""
        self._lock = threading.Lock()

    def _expire(self, now: float) -> list[tuple[Any, ...]]:
        closed: list[tuple[Any, ...]] = []
        windows = self._windows
        while windows:
            key, (start, repeats) = next(iter(windows.items()))
            if now - start < self.window:
                break
            del windows[key]
            if repeats:
                closed.append((*key, int(repeats)))
        return closed


class Pipeline:
    """The processors, masking and noise control of the active logging configuration.

    Args:
        foreign_chain: the processors that turn a stdlib record into an event dict.
        summary_chain: the processors applied to a summary line (service, masking, order).
        noise: sampling and duplicate suppression, or ``None``.
        masker: returns the masker in effect, or ``None`` when masking is off.
    """

    def __init__(
        self,
        foreign_chain: Sequence[Processor],
        summary_chain: Sequence[Processor],
        noise: Optional[NoiseControl] = None,
        masker: Optional[Callable[[], Any]] = None,
    ) -> None:
        self.foreign_chain = list(foreign_chain)
        self.summary_chain = list(summary_chain)
        self.noise = noise if noise is not None and noise.active else None
        self.masker = masker
        self._cache: weakref.WeakKeyDictionary[logging.LogRecord, Any] = weakref.WeakKeyDictionary()
        self._queues: dict[logging.Handler, collections.deque[Summary]] = {}
        self._queues_lock = threading.Lock()
        self._dropped_counter: Any = None

    # --- records ---------------------------------------------------------------------------

    def prepare(self, record: logging.LogRecord) -> Optional[dict[str, Any]]:
        """The event dict of ``record``, or ``None`` when sampling or dedupe dropped it.

        The first call decides and processes; later calls (the other handlers) get the
        same answer. Callers must not modify the returned dict.
        """
        try:
            cached = self._cache.get(record)
        except TypeError:  # a LogRecord subclass without weak references: decide each time
            cached = None
        if cached is not None:
            return None if cached is _DROPPED else cached
        try:
            event = self._decide(record)
        except Exception as error:
            report_internal_error("log pipeline", error)
            event = self._fallback(record)
        with contextlib.suppress(TypeError):
            self._cache[record] = _DROPPED if event is None else event
        return event

    def _decide(self, record: logging.LogRecord) -> Optional[dict[str, Any]]:
        message: Any = record.msg
        # Through our structlog chain: processed (and sampled) already.
        from_structlog = type(message) is EventMessage
        noise = self.noise
        if noise is not None:
            if not from_structlog and noise.sampled_out(record.levelno):
                self._enqueue(noise.expire())
                self.count_dropped("sampled")
                return None
            template = message.get("event") if _is_event_dict(record) else message
            admitted, closed = noise.admit(record.name, record.levelno, str(template))
            self._enqueue(closed)
            if not admitted:
                self.count_dropped("duplicate")
                return None
        if from_structlog:
            return dict(message)
        return self._process_foreign(record)

    def _process_foreign(self, record: logging.LogRecord) -> dict[str, Any]:
        event: EventDict
        if _is_event_dict(record):
            # An event dict from a structlog chain of the application's own
            # (ProcessorFormatter.wrap_for_formatter): its fields, completed by ours.
            event = {**record.msg, RECORD_KEY: record}  # type: ignore[dict-item]
        else:
            try:
                message = record.getMessage()
            except Exception:
                # Arguments that do not match the format: keep both rather than lose the line.
                message = f"{record.msg} {record.args!r}"
            event = {"event": message, RECORD_KEY: record}
        if record.exc_info:
            event["exc_info"] = record.exc_info
        if record.stack_info:
            event["stack"] = record.stack_info
        method = record.levelname.lower()
        for processor in self.foreign_chain:
            event = processor(None, method, event)
        return dict(event)

    def _fallback(self, record: logging.LogRecord) -> dict[str, Any]:
        """Timestamp, level, logger and masked message: what a failing pipeline still writes."""
        try:
            message = str(record.getMessage())
            if self.masker is not None:
                message = self.masker().mask_text(message)
        except Exception:
            message = "<message could not be rendered>"
        return {
            "timestamp": iso_timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": message,
        }

    def sample_structlog(self, method: str) -> bool:
        """Whether a structlog call at ``method``'s level is sampled out (and count it)."""
        noise = self.noise
        if noise is None:
            return False
        levelno = logging.getLevelName(method.upper())
        if not isinstance(levelno, int):
            levelno = {"warn": logging.WARNING, "exception": logging.ERROR}.get(method, 0)
        if noise.sampled_out(levelno):
            self.count_dropped("sampled")
            return True
        return False

    def count_dropped(self, reason: str) -> None:
        """Add one to ``appvitals.logs.dropped{reason}``."""
        counter = self._dropped_counter
        if counter is None:
            from appvitals.metrics import counter as make_counter

            counter = self._dropped_counter = make_counter(
                DROPPED_METRIC,
                unit="{record}",
                description="Log records dropped by sampling or duplicate suppression",
            )
        counter.add(1, {"reason": reason})

    # --- summaries -------------------------------------------------------------------------

    def register(self, handler: logging.Handler) -> None:
        """Give ``handler`` a queue of summaries to write."""
        with self._queues_lock:
            self._queues.setdefault(handler, collections.deque(maxlen=_MAX_PENDING))

    def take(self, handler: logging.Handler) -> list[Summary]:
        """The summaries ``handler`` has not written yet (emptying its queue)."""
        queue = self._queues.get(handler)
        taken: list[Summary] = []
        # popleft() is atomic: another thread may append meanwhile, never lose an item.
        while queue:
            taken.append(queue.popleft())
        return taken

    def close(self) -> None:
        """Turn every open duplicate window into its summary (at shutdown or re-configure)."""
        if self.noise is not None:
            self._enqueue(self.noise.flush())

    def at_fork_reinit(self) -> None:
        """New locks in a forked child: a parent thread may have held one at ``fork``."""
        self._queues_lock = threading.Lock()
        if self.noise is not None:
            self.noise.at_fork_reinit()

    def handlers(self) -> list[logging.Handler]:
        """The handlers that have a queue."""
        with self._queues_lock:
            return list(self._queues)

    def _enqueue(self, closed: list[tuple[Any, ...]]) -> None:
        if not closed:
            return
        with self._queues_lock:
            queues = list(self._queues.items())
        for name, levelno, text, repeats in closed:
            summary = self._summary(name, levelno, text, repeats)
            for handler, queue in queues:
                if levelno >= handler.level and handler.filter(summary.record):
                    queue.append(summary)

    def _summary(self, name: str, levelno: int, text: str, repeats: int) -> Summary:
        message = f"{text} (suppressed {repeats} repeats)"
        record = logging.LogRecord(name, levelno, "", 0, message, (), None)
        # A summary belongs to no request: no correlation id, no trace context.
        event: EventDict = {
            "timestamp": iso_timestamp(record.created),
            "level": level_name(levelno),
            "logger": name,
            "event": message,
            "suppressed": repeats,
        }
        for processor in self.summary_chain:
            event = processor(None, level_name(levelno), event)
        event = reorder(None, "", event)
        self._cache[record] = event
        return Summary(record, dict(event))


def _is_event_dict(record: logging.LogRecord) -> bool:
    """Whether ``msg`` is a structlog event dict (``wrap_for_formatter`` adds ``_logger``)."""
    return isinstance(record.msg, Mapping) and hasattr(record, "_logger")


_active: Optional[Pipeline] = None


def active() -> Optional[Pipeline]:
    """The pipeline of the current ``configure_logging()``, or ``None``."""
    return _active


def activate(pipeline: Optional[Pipeline]) -> None:
    """Make ``pipeline`` the one handlers use (``None``: the plain bridge)."""
    global _active  # noqa: PLW0603 - logging configuration is process-wide
    _active = pipeline


def default_rng() -> random.Random:
    """A generator of its own, so an application seeding ``random`` does not steer sampling."""
    return random.Random()  # noqa: S311 - sampling log lines, not cryptography


def default_clock() -> float:
    """Monotonic seconds for the dedupe windows."""
    return time.monotonic()
