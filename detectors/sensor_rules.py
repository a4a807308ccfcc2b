"""Sensor rules as pure functions: the readings a rule can see and its previous level in, the new
level out. ``None`` means the condition is clear.

Every rule kind decides from the event-time-ordered history of one metric of one device (its
``Sample``s), so the same readings give the same levels whatever order or how often they arrived
(the ordering and deduplication happen in ``detectors.sensor_state``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple
from uuid import UUID

from gridwatch.events import Level, Reading
from gridwatch.site_sensors import (
    FlatlineRule,
    NOfMRule,
    OutOfRangeRule,
    RateOfRiseRule,
    SensorRule,
    ThresholdRule,
)


class Sample(NamedTuple):
    """One reading of a metric as the rules keep it: a tuple, made tens of thousands of times a
    second, where a ``Reading`` model cost most of a rule worker's time; the detection's
    evidence is made of its readings only when a rule's level changes."""

    ts: datetime
    value: float
    unit: str
    seq: int | None
    id: UUID  # of the message that carried the reading
    received_at: datetime

    @classmethod
    def of(cls, reading: Reading) -> Sample:
        return cls(reading.ts, reading.value, reading.unit, reading.seq, reading.id,
                   reading.received_at)  # fmt: skip

    @staticmethod
    def stored(value: Any) -> Any:
        """A stored sample as the tuple it is, also when stored as a whole reading (as rule
        states were before samples)."""
        if isinstance(value, dict):
            return tuple(value[name] for name in Sample._fields)
        return value

    def reading(self, device_id: str, metric: str) -> Reading:
        return Reading.trusted(device_id=device_id, metric=metric, value=self.value,
                               unit=self.unit, ts=self.ts, seq=self.seq, id=self.id,
                               received_at=self.received_at)  # fmt: skip


def threshold_level(rule: ThresholdRule, current: Level | None, value: float) -> Level | None:
    """The level for ``value``: rises at once, falls only ``hysteresis`` below a threshold."""
    raw = rule.level_of(value)
    if current is None or (raw is not None and raw.rank >= current.rank):
        return raw
    lowered = rule.level_of(value + rule.hysteresis)
    if lowered is None or lowered.rank < current.rank:
        return lowered
    return current


def in_window(history: Sequence[Sample], seconds: float) -> list[Sample]:
    """The readings at most ``seconds`` older than the newest, plus the one just before that
    boundary: the value the metric held when the window opened."""
    boundary = history[-1].ts - timedelta(seconds=seconds)
    inside = [r for r in history if r.ts > boundary]
    before = [r for r in history if r.ts <= boundary]
    return before[-1:] + inside


def _rate_of_rise(rule: RateOfRiseRule, history: Sequence[Sample], current: Level | None) -> bool:
    window = in_window(history, rule.window)
    rise = window[-1].value - min(r.value for r in window)
    return rise >= (rule.rise if current is None else rule.rise - rule.hysteresis)


def _n_of_m(rule: NOfMRule, history: Sequence[Sample]) -> bool:
    return sum(r.value >= rule.above for r in history[-rule.m :]) >= rule.n


def _flatline(rule: FlatlineRule, history: Sequence[Sample]) -> bool:
    window = in_window(history, rule.window)
    covered = window[0].ts <= history[-1].ts - timedelta(seconds=rule.window)
    values = [r.value for r in window]
    return covered and max(values) - min(values) <= rule.tolerance


def _out_of_range(rule: OutOfRangeRule, history: Sequence[Sample]) -> bool:
    return not rule.low <= history[-1].value <= rule.high


def rule_level(rule: SensorRule, history: Sequence[Sample], current: Level | None) -> Level | None:
    """The rule's level after the newest reading of ``history`` (oldest first, never empty)."""
    if isinstance(rule, ThresholdRule):
        return threshold_level(rule, current, history[-1].value)
    if isinstance(rule, RateOfRiseRule):
        active = _rate_of_rise(rule, history, current)
    elif isinstance(rule, NOfMRule):
        active = _n_of_m(rule, history)
    elif isinstance(rule, FlatlineRule):
        active = _flatline(rule, history)
    else:
        active = _out_of_range(rule, history)
    return rule.level if active else None


def evidence(rule: SensorRule, history: Sequence[Sample]) -> tuple[Sample, ...]:
    """The readings that decided the rule's level: what an operator checks the detection by."""
    if isinstance(rule, RateOfRiseRule | FlatlineRule):
        return tuple(in_window(history, rule.window))
    if isinstance(rule, NOfMRule):
        return tuple(history[-rule.m :])
    return (history[-1],)
