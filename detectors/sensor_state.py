"""One device's rule state, advanced one reading or status at a time in event time.

Readings are buffered until the device's watermark (its newest reading time minus the allowed
lateness) passes them, then judged in time order; a repeated reading, or one older than the
last judged, does not move the state. So any arrival order within the lateness, and any number
of redeliveries, give the same detections as clean input, and a detection's id derives from
its device, rule, level and time: judged again after a crash, it is the same message. The
state is a small record a stream processor keeps, as JSON, in a changelogged table.

The first value for a time is the one judged, as it is the one the store keeps. A second,
different value for that time changes no decision that was made or is pending on the first:
it is logged and counted (``conflicts``; ``late`` when its time has left what the rules still
hold), and the store keeps it in ``reading_corrections``.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated

from pydantic import BeforeValidator, Field, TypeAdapter

from detectors.sensor_rules import Sample, evidence, rule_level
from gridwatch.events import (
    Detection,
    DetectionKind,
    DeviceStatus,
    Level,
    Reading,
    SourceRef,
    SourceType,
    derived_id,
)
from gridwatch.site_sensors import Sensor, SensorRule

log = logging.getLogger(__name__)

# A calibrated gauge measures the hazard directly; camera detectors earn their confidence.
MEASURED_CONFIDENCE = 0.9
Stored = Annotated[Sample, BeforeValidator(Sample.stored)]


@dataclass(slots=True)
class MetricState:
    pending: list[Stored] = field(default_factory=list)  # not yet judged, oldest first
    history: list[Stored] = field(default_factory=list)  # judged, as far as rules look back
    levels: list[Level | None] = field(default_factory=list)  # per rule on the metric
    late: int = 0  # readings that came after their time was judged
    conflicts: int = 0  # a second, different value for a time held: the first one stands

    @property
    def newest(self) -> datetime | None:
        return self.pending[-1].ts if self.pending else self.judged

    @property
    def judged(self) -> datetime | None:
        return self.history[-1].ts if self.history else None


@dataclass(slots=True)
class DeviceState:
    """Mutable: a rule worker advances tens of thousands of these a second, and copying a
    frozen model per reading was most of its time. Stored as JSON by ``encode``/``decode``."""

    metrics: dict[str, MetricState] = field(default_factory=dict)
    last_seen: datetime | None = None  # newest reading time
    online: bool = True
    since: datetime | None = None  # when ``online`` last changed
    # Counts changes to what a replay could not rebuild (see ``decisive``); not stored.
    changes: Annotated[int, Field(exclude=True)] = field(default=0, compare=False, repr=False)


_STATE = TypeAdapter(DeviceState)

# How stale a stored ``last_seen`` may be, as a share of the device's heartbeat (see ``decisive``).
LAST_SEEN_SLACK = 0.1


def encode(state: DeviceState) -> bytes:
    return _STATE.dump_json(state)


def decode(stored: str | bytes) -> DeviceState:
    return _STATE.validate_json(stored)


def decisive(sensor: Sensor, state: DeviceState, lateness_s: float) -> int | None:
    """A mark of what of the state a replay of the device's later readings could not rebuild,
    which differs whenever that did since; or None when a replay could rebuild none of it.

    Rules that judge a reading by its value and their current level alone (no window, no count,
    no lateness buffer) reach the same levels from a stored state however many readings it has
    not seen, since each of those left the levels as they were. For such a device the stored
    state need change only with its levels, liveness and late and conflict counts, which
    ``DeviceState.changes`` counts as they change (a counter, not a copy of them made per
    batch); its ``last_seen`` is refreshed every ``LAST_SEEN_SLACK`` of a heartbeat, so a
    restart cannot make it look silent. Any other device's state is stored after every reading.
    """
    if lateness_s or any(r.window_s or r.samples > 1 for r in sensor.rules):
        return None
    return state.changes


def on_reading(
    sensor: Sensor, state: DeviceState, reading: Reading, lateness_s: float = 0.0
) -> list[Detection]:
    """Take one reading: judge what the watermark has passed, and mark a silent device alive."""
    return on_sample(sensor, state, reading.metric, Sample.of(reading), lateness_s)


def on_sample(
    sensor: Sensor, state: DeviceState, name: str, sample: Sample, lateness_s: float = 0.0
) -> list[Detection]:
    """``on_reading`` for a reading of metric ``name`` given as a sample."""
    metric = state.metrics.get(name)
    if metric is None:
        metric = state.metrics[name] = MetricState()
    detections = _admit(sensor, state, name, metric, sample, lateness_s)
    ts = sample.ts
    if state.last_seen is None or ts > state.last_seen:
        state.last_seen = ts
    if not state.online and (state.since is None or ts > state.since):
        state.online, state.since = True, ts
        detections.append(_offline(sensor, ts, "reading", cleared=True))
    if detections:  # a level or the liveness changed
        state.changes += 1
    return detections


def on_status(
    sensor: Sensor, state: DeviceState, status: DeviceStatus, lateness_s: float = 0.0
) -> list[Detection]:
    """Take a status. Its time moves the watermark of a quiet device, so buffered readings are
    judged even when no newer reading comes; going offline judges every buffered reading."""
    horizon = status.ts - timedelta(seconds=lateness_s)
    if status.online == state.online or (state.since is not None and status.ts <= state.since):
        detections = _judge_until(sensor, state, horizon)
    else:
        if not status.online:
            horizon = datetime.max.replace(tzinfo=status.ts.tzinfo)
        detections = _judge_until(sensor, state, horizon)
        detections.append(_offline(sensor, status.ts, status.cause, cleared=status.online))
        state.online, state.since = status.online, status.ts
    if detections:  # a level or the liveness changed
        state.changes += 1
    return detections


def waiting(state: DeviceState, lateness_s: float, now: datetime) -> bool:
    """Readings are buffered that the allowed lateness has run out for."""
    horizon = now - timedelta(seconds=lateness_s)
    return any(m.pending and m.pending[0].ts <= horizon for m in state.metrics.values())


def _judge_until(sensor: Sensor, state: DeviceState, horizon: datetime) -> list[Detection]:
    detections: list[Detection] = []
    for name, metric in state.metrics.items():
        ready = sum(1 for r in metric.pending if r.ts <= horizon)
        detections += _judge(sensor, name, metric, ready)
    return detections


def overdue(state: DeviceState, heartbeat_s: float, now: datetime) -> bool:
    """An online device whose newest reading is older than its heartbeat allows."""
    return (
        state.online
        and state.last_seen is not None
        and now - state.last_seen > timedelta(seconds=heartbeat_s)
    )


def _admit(
    sensor: Sensor,
    state: DeviceState,
    name: str,
    metric: MetricState,
    reading: Sample,
    lateness_s: float,
) -> list[Detection]:
    ts, pending, history = reading.ts, metric.pending, metric.history
    # ``metric.newest``, inline: this runs for every reading.
    newest = pending[-1].ts if pending else history[-1].ts if history else None
    if newest is None or ts > newest:  # in order: the common case, neither late nor repeated
        if not lateness_s and not pending:  # judged at once, without a stay in ``pending``
            return _judge_one(sensor, name, metric, reading)
        pending.append(reading)
    else:
        same = next((r for r in (*metric.history, *pending) if r.ts == ts), None)
        if same is not None:
            if same.value != reading.value:
                metric.conflicts += 1
                state.changes += 1
                log.warning(
                    "device %s %s at %s: second value %s ignored, %s stands",
                    sensor.id,
                    name,
                    ts.isoformat(),
                    reading.value,
                    same.value,
                )
            return []  # a redelivery, or a correction the rules do not act on
        judged = metric.judged
        lateness = timedelta(seconds=lateness_s)
        if (judged is not None and ts < judged) or ts < newest - lateness:
            metric.late += 1
            state.changes += 1
            return []
        bisect.insort(pending, reading, key=_time)
    if not lateness_s:
        return _judge(sensor, name, metric, len(pending))
    watermark = pending[-1].ts - timedelta(seconds=lateness_s)
    return _judge(sensor, name, metric, sum(1 for r in pending if r.ts <= watermark))


def _time(reading: Sample) -> datetime:
    return reading.ts


def _judge(sensor: Sensor, name: str, metric: MetricState, count: int) -> list[Detection]:
    """Judge the ``count`` oldest pending readings in time order."""
    detections = []
    for reading in metric.pending[:count]:
        detections += _judge_one(sensor, name, metric, reading)
    del metric.pending[:count]
    return detections


def _judge_one(sensor: Sensor, name: str, metric: MetricState, reading: Sample) -> list[Detection]:
    """Judge the reading that comes next in time order."""
    history = metric.history
    history.append(reading)
    rules, window, keep = sensor.judging(name)
    if window or len(history) > keep:
        _trim(history, window, keep)
    levels = metric.levels
    if len(levels) != len(rules):
        levels[:] = [None] * len(rules)
    if not rules:  # a metric only kept (battery, signal): nothing to judge
        return []
    detections = []
    for i, rule in enumerate(rules):
        level = rule_level(rule, history, levels[i])
        if level != levels[i]:
            detections.append(_detection(sensor, name, rule, level, history))
            levels[i] = level
    return detections


def _trim(history: list[Sample], window: float, keep: int) -> None:
    """Keep what the rules can still look at: their longest window (plus the reading before it,
    the value held when the window opened) and their largest count of newest readings."""
    if window:
        boundary = history[-1].ts - timedelta(seconds=window)
        keep = max(keep, 1 + sum(1 for r in history if r.ts > boundary))
    if len(history) > keep:
        del history[:-keep]


def _detection(
    sensor: Sensor, name: str, rule: SensorRule, level: Level | None, history: Sequence[Sample]
) -> Detection:
    newest = history[-1]
    return Detection(
        id=derived_id(newest.ts, rule.detection_kind, sensor.id, rule.name, level),
        kind=rule.detection_kind,
        source=SourceRef(type=SourceType.SENSOR, id=sensor.id),
        ts=newest.ts,
        confidence=MEASURED_CONFIDENCE,
        level=level,
        location=sensor.location,
        rule=rule.name,
        evidence=tuple(s.reading(sensor.id, name) for s in evidence(rule, history)),
        cleared=level is None,
    )


def _offline(sensor: Sensor, ts: datetime, cause: str, *, cleared: bool) -> Detection:
    return Detection(
        id=derived_id(ts, DetectionKind.DEVICE_OFFLINE, sensor.id, cause, cleared),
        kind=DetectionKind.DEVICE_OFFLINE,
        source=SourceRef(type=SourceType.SENSOR, id=sensor.id),
        ts=ts,
        confidence=MEASURED_CONFIDENCE,
        level=None if cleared else Level.YELLOW,
        location=sensor.location,
        rule=f"offline:{cause}",
        cleared=cleared,
    )
