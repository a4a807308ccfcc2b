"""Fusion: detections of one kind close in space and time become one incident.

Pure logic over frozen models; the Faust agent keeps one ``FusionState`` per incident kind.
- A located detection joins the nearest incident of its kind within the kind's radius whose
  time span (widened by the window) holds the detection's time, else it starts one. So a late
  detection joins the incident it belongs to, even one that has ended meanwhile (as evidence).
- A watchtower detection carries a bearing, not a location: it joins an incident its ray passes
  close to, or waits for another tower's bearing, and the two are triangulated
  (``gridwatch.geo.triangulate_bearings``) into a location with an error estimate.
- Independent sources (distinct devices) raise confidence by noisy-OR; an incident ends when
  every source that raised it has cleared.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from math import prod

from gridwatch.events import (
    Detection,
    DetectionKind,
    Incident,
    IncidentKind,
    Level,
    Model,
    Point,
    SourceRef,
)
from gridwatch.geo import GridMatch, LocalProjection, triangulate_bearings

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
    DetectionKind.SENSOR_FAULT: IncidentKind.DEVICE_FAULT,  # flatline, out of range
    DetectionKind.CAMERA_HEALTH: IncidentKind.DEVICE_FAULT,
    DetectionKind.TRAFFIC_OBSTRUCTION: IncidentKind.TRAFFIC_SAFETY,
    DetectionKind.ROAD_WATER: IncidentKind.FLOOD,  # joins the gauges' flood nearby
}

# How far apart two detections of one event can be: a gauge network spans a catchment, a fire
# a hillside, a construction site a block; a device fault is the device itself.
RADIUS_M: dict[IncidentKind, float] = {
    IncidentKind.FLOOD: 5000.0,
    IncidentKind.FOREST_FIRE: 1500.0,
    IncidentKind.STRAW_BURNING: 1000.0,
    IncidentKind.ILLEGAL_CONSTRUCTION: 300.0,
    IncidentKind.DEVICE_FAULT: 1.0,
    IncidentKind.TRAFFIC_SAFETY: 200.0,  # one stretch of road
}
DEFAULT_WINDOW = timedelta(minutes=30)
MAX_DETECTION_IDS = 100  # an incident keeps its newest detection ids; all are in the database
BEARING_SIGMA_DEG = 0.5


class SourceState(Model):
    source: SourceRef
    level: Level
    confidence: float
    first_area: int | None = None
    last_area: int | None = None


class Tracked(Model):
    """An incident with the sources still raising it and the latest bearing of each tower."""

    incident: Incident
    active: dict[str, SourceState] = {}
    bearings: dict[str, float] = {}


class FusionState(Model):
    tracked: tuple[Tracked, ...] = ()
    pending: tuple[Detection, ...] = ()  # tower bearings waiting for a second tower


@dataclass(frozen=True)
class FusionContext:
    """What fusion needs from the site, kept out of the (serialised) state."""

    locate: Callable[[Point], GridMatch]
    projection: LocalProjection
    towers: dict[str, Point]
    departments: Callable[[IncidentKind], tuple[str, ...]]
    window: timedelta = DEFAULT_WINDOW


def _key(source: SourceRef) -> str:
    return f"{source.type.value}:{source.id}"


def fuse(
    state: FusionState, det: Detection, ctx: FusionContext
) -> tuple[FusionState, Incident | None]:
    """Fold one detection into its kind's state; returns the new state and the incident
    revision to publish, if an operator would see a change."""
    kind = INCIDENT_OF[det.kind]
    horizon = det.ts - 2 * ctx.window
    tracked = [t for t in state.tracked if t.incident.last_seen >= horizon]
    pending = [p for p in state.pending if abs(p.ts - det.ts) <= ctx.window]
    if det.location is not None:
        point, error = det.location, None
        match = _nearest(tracked, det, point, kind, ctx)
    else:
        match = _on_ray(tracked, det, kind, ctx)
        point, error = None, None
        if match is None:
            fix = _pair(pending, det, ctx)
            if fix is None:
                if not det.cleared:
                    pending = [p for p in pending if p.source != det.source] + [det]
                return FusionState(tracked=tuple(tracked), pending=tuple(pending)), None
            partner, point, error = fix
            pending.remove(partner)
            first, _ = _start(partner, kind, point, error, ctx)
            tracked.append(first)
            match = first
    if match is None:
        assert point is not None  # noqa: S101 - a located detection
        if det.cleared:
            return FusionState(tracked=tuple(tracked), pending=tuple(pending)), None
        new, incident = _start(det, kind, point, error, ctx)
        return FusionState(tracked=(*tracked, new), pending=tuple(pending)), incident
    updated = _join(match, det, ctx)
    tracked = [updated if t is match else t for t in tracked]
    return FusionState(tracked=tuple(tracked), pending=tuple(pending)), updated.incident


def _in_time(incident: Incident, ts: datetime, window: timedelta) -> bool:
    if incident.ended:
        return incident.first_seen - window <= ts <= incident.last_seen
    return incident.first_seen - window <= ts <= incident.last_seen + window


def _nearest(
    tracked: list[Tracked], det: Detection, point: Point, kind: IncidentKind, ctx: FusionContext
) -> Tracked | None:
    best: tuple[float, Tracked] | None = None
    for t in tracked:
        if t.incident.kind is not kind or not _in_time(t.incident, det.ts, ctx.window):
            continue
        d = ctx.projection.distance_m(point, t.incident.location)
        if d <= RADIUS_M[kind] and (best is None or d < best[0]):
            best = (d, t)
    return best[1] if best else None


def _on_ray(
    tracked: list[Tracked], det: Detection, kind: IncidentKind, ctx: FusionContext
) -> Tracked | None:
    """The incident a tower's bearing points at: ahead of the tower, within the radius."""
    assert det.bearing_deg is not None  # noqa: S101 - checked by the placing agent
    tx, ty = ctx.projection.xy(ctx.towers[det.source.id])
    dx, dy = math.sin(math.radians(det.bearing_deg)), math.cos(math.radians(det.bearing_deg))
    best: tuple[float, Tracked] | None = None
    for t in tracked:
        if t.incident.kind is not kind or not _in_time(t.incident, det.ts, ctx.window):
            continue
        ix, iy = ctx.projection.xy(t.incident.location)
        along = (ix - tx) * dx + (iy - ty) * dy
        across = abs((ix - tx) * dy - (iy - ty) * dx)
        if along > 0 and across <= RADIUS_M[kind] and (best is None or across < best[0]):
            best = (across, t)
    return best[1] if best else None


def _pair(
    pending: list[Detection], det: Detection, ctx: FusionContext
) -> tuple[Detection, Point, float] | None:
    """Another tower's pending bearing of the same kind that crosses this one."""
    for other in reversed(pending):
        if other.source.id == det.source.id or INCIDENT_OF[other.kind] != INCIDENT_OF[det.kind]:
            continue
        fix = _triangulate(ctx, {other.source.id: other, det.source.id: det})
        if fix is not None:
            return other, *fix
    return None


def _triangulate(ctx: FusionContext, by_tower: dict[str, Detection]) -> tuple[Point, float] | None:
    (a, da), (b, db) = list(by_tower.items())[-2:]
    assert da.bearing_deg is not None and db.bearing_deg is not None  # noqa: S101
    fix = triangulate_bearings(
        ctx.towers[a], da.bearing_deg, ctx.towers[b], db.bearing_deg, BEARING_SIGMA_DEG
    )
    return (fix.point, round(fix.error_m, 1)) if fix else None


def _area(det: Detection) -> int | None:
    if det.bbox is None:
        return None
    x0, y0, x1, y1 = det.bbox
    return max(abs(x1 - x0) * abs(y1 - y0), 1)


def _start(
    det: Detection, kind: IncidentKind, point: Point, error: float | None, ctx: FusionContext
) -> tuple[Tracked, Incident]:
    cell = ctx.locate(point)
    incident = Incident(
        kind=kind,
        location=point,
        location_error_m=error,
        community_code=cell.community_code,
        grid_code=cell.grid_code,
        micro_grid_code=cell.micro_grid_code if cell.inside else None,
        level=det.level or Level.YELLOW,
        confidence=det.confidence,
        sources=(det.source,),
        detection_ids=(det.id,),
        departments=ctx.departments(kind),
        first_seen=det.ts,
        last_seen=det.ts,
    )
    bearings = {det.source.id: det.bearing_deg} if det.bearing_deg is not None else {}
    new = Tracked(
        incident=incident, active={_key(det.source): _source(det, None)}, bearings=bearings
    )
    return new, incident


def _source(det: Detection, before: SourceState | None) -> SourceState:
    area = _area(det)
    return SourceState(
        source=det.source,
        level=det.level or Level.YELLOW,
        confidence=det.confidence,
        first_area=before.first_area if before and before.first_area else area,
        last_area=area if area is not None else (before.last_area if before else None),
    )


def _join(t: Tracked, det: Detection, ctx: FusionContext) -> Tracked:
    current = t.incident
    late = current.ended  # evidence for an incident that is over: recorded, not reopened
    active = dict(t.active)
    if det.cleared:
        active.pop(_key(det.source), None)
    elif not late:
        active[_key(det.source)] = _source(det, active.get(_key(det.source)))
    bearings = dict(t.bearings)
    update: dict[str, object] = {}
    if det.bearing_deg is not None:
        bearings[det.source.id] = det.bearing_deg
        if len(bearings) >= 2:
            fix = _triangulate(ctx, _bearing_detections(bearings, det))
            if fix is not None:
                update.update(location=fix[0], location_error_m=fix[1])
    if active:
        update.update(
            level=max((s.level for s in active.values()), key=lambda lv: lv.rank),
            confidence=round(1 - prod(1 - s.confidence for s in active.values()), 4),
            growth=max(_growth(s) for s in active.values()),
        )
    incident = current.model_copy(
        update={
            **update,
            "revision": current.revision + 1,
            "sources": current.sources
            if det.source in current.sources
            else (
                *current.sources,
                det.source,
            ),
            "detection_ids": (*current.detection_ids, det.id)[-MAX_DETECTION_IDS:],
            "first_seen": min(current.first_seen, det.ts),
            "last_seen": max(current.last_seen, det.ts),
            "ended": late or not active,
        }
    )
    return Tracked(incident=incident, active=active, bearings=bearings)


def _bearing_detections(bearings: dict[str, float], det: Detection) -> dict[str, Detection]:
    """The latest bearing of each tower as detections, this detection's tower last."""
    others = {
        tower: det.model_copy(
            update={"source": SourceRef(type=det.source.type, id=tower), "bearing_deg": b}
        )
        for tower, b in bearings.items()
        if tower != det.source.id
    }
    return {**others, det.source.id: det}


def _growth(s: SourceState) -> float:
    if s.first_area and s.last_area:
        return max(s.last_area / s.first_area, 1.0)
    return 1.0
