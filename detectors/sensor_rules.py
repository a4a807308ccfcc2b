"""Sensor rules as pure functions: a reading and the rule's state in, new state and detection out.

State is a small frozen model so a stream processor can keep it in a changelogged table.
"""

from __future__ import annotations

from datetime import datetime

from gridwatch.events import (
    Detection,
    Level,
    Model,
    Reading,
    SourceRef,
    SourceType,
)
from gridwatch.site import Sensor, ThresholdRule

# A calibrated gauge measures the hazard directly; camera detectors earn their confidence.
MEASURED_CONFIDENCE = 0.9


class ThresholdState(Model):
    level: Level | None = None
    ts: datetime | None = None


def threshold_level(rule: ThresholdRule, current: Level | None, value: float) -> Level | None:
    """The level for ``value``: rises at once, falls only ``hysteresis`` below a threshold."""
    raw = rule.level_of(value)
    if current is None or (raw is not None and raw.rank >= current.rank):
        return raw
    lowered = rule.level_of(value + rule.hysteresis)
    if lowered is None or lowered.rank < current.rank:
        return lowered
    return current


def apply_threshold(
    sensor: Sensor, rule: ThresholdRule, state: ThresholdState, reading: Reading
) -> tuple[ThresholdState, Detection | None]:
    """Advance the rule by one reading. A reading not newer than the last one seen (a duplicate
    or a late arrival) does not move the state: the newest reading decides the level."""
    if state.ts is not None and reading.ts <= state.ts:
        return state, None
    level = threshold_level(rule, state.level, reading.value)
    new_state = ThresholdState(level=level, ts=reading.ts)
    if level == state.level:
        return new_state, None
    detection = Detection(
        kind=rule.detection_kind,
        source=SourceRef(type=SourceType.SENSOR, id=sensor.id),
        ts=reading.ts,
        confidence=MEASURED_CONFIDENCE,
        level=level,
        location=sensor.location,
        rule=f"threshold:{rule.metric}",
        evidence=(reading,),
        cleared=level is None,
    )
    return new_state, detection
