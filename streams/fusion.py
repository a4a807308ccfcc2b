"""Fusion: detections of one kind in one grid, close in time, become one incident.

Pure logic over frozen models; the Faust agent keeps ``FusionState`` per fusion key in a
changelogged table. Independent sources raise the incident's confidence (noisy-OR).
"""

from __future__ import annotations

from datetime import timedelta
from math import prod

from gridwatch.events import (
    Detection,
    DetectionKind,
    Incident,
    IncidentKind,
    Level,
    Model,
    SourceRef,
)

# Which incident each detection kind is evidence of.
INCIDENT_OF: dict[DetectionKind, IncidentKind] = {
    DetectionKind.WATER_LEVEL: IncidentKind.FLOOD,
    DetectionKind.RAINFALL: IncidentKind.FLOOD,
    DetectionKind.FIRE: IncidentKind.FOREST_FIRE,
    DetectionKind.SMOKE: IncidentKind.FOREST_FIRE,
    DetectionKind.THERMAL_HOTSPOT: IncidentKind.FOREST_FIRE,
    DetectionKind.SMOKE_SENSOR: IncidentKind.FOREST_FIRE,
    DetectionKind.TEMPERATURE: IncidentKind.FOREST_FIRE,
    DetectionKind.PM25: IncidentKind.STRAW_BURNING,
    DetectionKind.CONSTRUCTION_CHANGE: IncidentKind.ILLEGAL_CONSTRUCTION,
    DetectionKind.DEVICE_OFFLINE: IncidentKind.DEVICE_FAULT,
    DetectionKind.CAMERA_HEALTH: IncidentKind.DEVICE_FAULT,
}

DEFAULT_WINDOW = timedelta(minutes=30)
MAX_DETECTION_IDS = 100  # an incident keeps its newest detection ids; all are in the database


class Placed(Model):
    """A detection with the grid cell it falls in, keyed for fusion."""

    detection: Detection
    community_code: str
    grid_code: str
    micro_grid_code: str | None

    @property
    def incident_kind(self) -> IncidentKind:
        return INCIDENT_OF[self.detection.kind]

    @property
    def fusion_key(self) -> str:
        return f"{self.incident_kind.value}:{self.grid_code}"


class SourceState(Model):
    source: SourceRef
    level: Level
    confidence: float


class FusionState(Model):
    incident: Incident | None = None
    active: dict[str, SourceState] = {}


def _key(source: SourceRef) -> str:
    return f"{source.type.value}:{source.id}"


def fuse(
    state: FusionState,
    placed: Placed,
    departments: tuple[str, ...] = (),
    window: timedelta = DEFAULT_WINDOW,
) -> tuple[FusionState, Incident | None]:
    """Fold one detection into the state; returns the new state and the incident revision to
    publish, if anything an operator would see changed."""
    det = placed.detection
    active = dict(state.active)
    if det.cleared or det.level is None:
        active.pop(_key(det.source), None)
    else:
        active[_key(det.source)] = SourceState(
            source=det.source, level=det.level, confidence=det.confidence
        )
    current = state.incident
    if current is not None and (current.ended or det.ts - current.last_seen > window):
        current = None  # that incident is over; this detection starts afresh
    if current is None:
        if not active:
            return FusionState(active=active), None  # a clear with nothing open
        assert det.location is not None  # noqa: S101 - placement needs a location
        incident = Incident(
            kind=placed.incident_kind,
            location=det.location,
            community_code=placed.community_code,
            grid_code=placed.grid_code,
            micro_grid_code=placed.micro_grid_code,
            level=_max_level(active),
            confidence=_noisy_or(active),
            sources=tuple(s.source for s in active.values()),
            detection_ids=(det.id,),
            departments=departments,
            first_seen=det.ts,
            last_seen=det.ts,
        )
        return FusionState(incident=incident, active=active), incident
    ended = not active
    incident = current.model_copy(
        update={
            "revision": current.revision + 1,
            "level": _max_level(active) if active else current.level,
            "confidence": _noisy_or(active) if active else current.confidence,
            "sources": _union(current.sources, det.source),
            "detection_ids": (*current.detection_ids, det.id)[-MAX_DETECTION_IDS:],
            "first_seen": min(current.first_seen, det.ts),
            "last_seen": max(current.last_seen, det.ts),
            "ended": ended,
        }
    )
    return FusionState(incident=None if ended else incident, active=active), incident


def _max_level(active: dict[str, SourceState]) -> Level:
    return max((s.level for s in active.values()), key=lambda lv: lv.rank)


def _noisy_or(active: dict[str, SourceState]) -> float:
    """Independent sources: the chance all of them are wrong shrinks with each one."""
    return round(1 - prod(1 - s.confidence for s in active.values()), 4)


def _union(sources: tuple[SourceRef, ...], new: SourceRef) -> tuple[SourceRef, ...]:
    return sources if new in sources else (*sources, new)
