"""One device's rule state, advanced one reading or status at a time in event time.

Readings are buffered until the device's watermark (its newest reading time minus the allowed
lateness) passes them, then judged in time order; a repeated reading, or one older than the
last judged, does not move the state. So any arrival order within the lateness, and any number
of redeliveries, give the same detections as clean input. The state is a small frozen model a
stream processor keeps in a changelogged table.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from pydantic import Field

from detectors.sensor_rules import evidence, rule_level
from gridwatch.events import (
    Detection,
    DetectionKind,
    DeviceStatus,
    Level,
    Model,
    Reading,
    SourceRef,
    SourceType,
)
from gridwatch.site_sensors import Sensor, SensorRule

# A calibrated gauge measures the hazard directly; camera detectors earn their confidence.
MEASURED_CONFIDENCE = 0.9


class MetricState(Model):
    pending: tuple[Reading, ...] = Field(default=(), description="not yet judged, oldest first")
    history: tuple[Reading, ...] = Field(default=(), description="judged, as far as rules look")
    levels: tuple[Level | None, ...] = Field(default=(), description="per rule on the metric")
    late: int = Field(default=0, description="readings that came after their time was judged")

    @property
    def newest(self) -> datetime | None:
        return self.pending[-1].ts if self.pending else self.judged

    @property
    def judged(self) -> datetime | None:
        return self.history[-1].ts if self.history else None


class DeviceState(Model):
    metrics: dict[str, MetricState] = {}
    last_seen: datetime | None = Field(default=None, description="newest reading time")
    online: bool = True
    since: datetime | None = Field(default=None, description="when ``online`` last changed")


Outcome = tuple[DeviceState, list[Detection]]


def on_reading(
    sensor: Sensor, state: DeviceState, reading: Reading, lateness_s: float = 0.0
) -> Outcome:
    """Take one reading: judge what the watermark has passed, and mark a silent device alive."""
    current = state.metrics.get(reading.metric, MetricState())
    metric, detections = _admit(sensor, current, reading, timedelta(seconds=lateness_s))
    last_seen = max(filter(None, (state.last_seen, reading.ts)))
    new = state.model_copy(
        update={"metrics": {**state.metrics, reading.metric: metric}, "last_seen": last_seen}
    )
    if not state.online and (state.since is None or reading.ts > state.since):
        new = new.model_copy(update={"online": True, "since": reading.ts})
        detections.append(_offline(sensor, reading.ts, "reading", cleared=True))
    return new, detections


def on_status(
    sensor: Sensor, state: DeviceState, status: DeviceStatus, lateness_s: float = 0.0
) -> Outcome:
    """Take a status. Its time moves the watermark of a quiet device, so buffered readings are
    judged even when no newer reading comes; going offline judges every buffered reading."""
    horizon = status.ts - timedelta(seconds=lateness_s)
    if status.online == state.online or (state.since is not None and status.ts <= state.since):
        return _judge_until(sensor, state, horizon)
    if not status.online:
        horizon = datetime.max.replace(tzinfo=status.ts.tzinfo)
    new, detections = _judge_until(sensor, state, horizon)
    detections.append(_offline(sensor, status.ts, status.cause, cleared=status.online))
    return new.model_copy(update={"online": status.online, "since": status.ts}), detections


def waiting(state: DeviceState, lateness_s: float, now: datetime) -> bool:
    """Readings are buffered that the allowed lateness has run out for."""
    horizon = now - timedelta(seconds=lateness_s)
    return any(m.pending and m.pending[0].ts <= horizon for m in state.metrics.values())


def _judge_until(sensor: Sensor, state: DeviceState, horizon: datetime) -> Outcome:
    detections: list[Detection] = []
    metrics = dict(state.metrics)
    for name, metric in state.metrics.items():
        ready = sum(1 for r in metric.pending if r.ts <= horizon)
        metrics[name], judged = _judge(sensor, metric, ready)
        detections += judged
    if not detections and metrics == state.metrics:
        return state, []
    return state.model_copy(update={"metrics": metrics}), detections


def overdue(state: DeviceState, heartbeat_s: float, now: datetime) -> bool:
    """An online device whose newest reading is older than its heartbeat allows."""
    return (
        state.online
        and state.last_seen is not None
        and now - state.last_seen > timedelta(seconds=heartbeat_s)
    )


def _admit(
    sensor: Sensor, metric: MetricState, reading: Reading, lateness: timedelta
) -> tuple[MetricState, list[Detection]]:
    if any(r.ts == reading.ts for r in (*metric.history, *metric.pending)):
        return metric, []  # a redelivery
    newest, judged = metric.newest, metric.judged
    if (judged is not None and reading.ts < judged) or (
        newest is not None and reading.ts < newest - lateness
    ):
        return metric.model_copy(update={"late": metric.late + 1}), []
    pending = tuple(sorted((*metric.pending, reading), key=lambda r: r.ts))
    watermark = pending[-1].ts - lateness
    ready = sum(1 for r in pending if r.ts <= watermark)
    return _judge(sensor, metric.model_copy(update={"pending": pending}), ready)


def _judge(sensor: Sensor, metric: MetricState, count: int) -> tuple[MetricState, list[Detection]]:
    """Judge the ``count`` oldest pending readings in time order."""
    if count == 0:
        return metric, []
    rules = [r for r in sensor.rules if r.metric == metric.pending[0].metric]
    levels = list(metric.levels or (None,) * len(rules))
    history = list(metric.history)
    detections = []
    for reading in metric.pending[:count]:
        history = _trim([*history, reading], rules)
        for i, rule in enumerate(rules):
            level = rule_level(rule, history, levels[i])
            if level != levels[i]:
                detections.append(_detection(sensor, rule, level, history))
                levels[i] = level
    judged = metric.model_copy(
        update={
            "pending": metric.pending[count:],
            "history": tuple(history),
            "levels": tuple(levels),
        }
    )
    return judged, detections


def _trim(history: list[Reading], rules: Iterable[SensorRule]) -> list[Reading]:
    """Keep what the rules can still look at: their longest window (plus the reading before it,
    the value held when the window opened) and their largest count of newest readings."""
    rules = list(rules)
    window = timedelta(seconds=max((r.window_s for r in rules), default=0.0))
    count = max((r.samples for r in rules), default=1)
    boundary = history[-1].ts - window
    inside = sum(1 for r in history if r.ts > boundary)
    keep = max(count, inside + (1 if window else 0))
    return history[-keep:]


def _detection(
    sensor: Sensor, rule: SensorRule, level: Level | None, history: Sequence[Reading]
) -> Detection:
    newest = history[-1]
    return Detection(
        kind=rule.detection_kind,
        source=SourceRef(type=SourceType.SENSOR, id=sensor.id),
        ts=newest.ts,
        confidence=MEASURED_CONFIDENCE,
        level=level,
        location=sensor.location,
        rule=rule.name,
        evidence=evidence(rule, history),
        cleared=level is None,
    )


def _offline(sensor: Sensor, ts: datetime, cause: str, *, cleared: bool) -> Detection:
    return Detection(
        kind=DetectionKind.DEVICE_OFFLINE,
        source=SourceRef(type=SourceType.SENSOR, id=sensor.id),
        ts=ts,
        confidence=MEASURED_CONFIDENCE,
        level=None if cleared else Level.YELLOW,
        location=sensor.location,
        rule=f"offline:{cause}",
        cleared=cleared,
    )
