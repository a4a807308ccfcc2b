"""Fusion: detections of one kind close in space and time become one incident.

Pure logic over frozen models; the Faust agent keeps one ``FusionState`` per incident kind.
What a detection is evidence of, and how far and how long apart evidence may be, is the kind's
entry in ``gridwatch.kinds``.
- A detection is evidence of its kind's incident, or another one by the zones it lies in: its
  camera's image zones (``Detection.zones``) and the site's ground zones at its location. Fire
  or smoke over farmland is straw burning.
- A located detection joins the nearest incident of its kind within the kind's radius whose
  time span (widened by the kind's window) holds the detection's time, else it starts one. So a
  late detection joins the incident it belongs to, even one that has ended meanwhile (as
  evidence). A clear goes to the incident its source is raising, however long ago it rose.
- A watchtower detection carries a bearing, not a location: it joins an incident its ray passes
  close to, or waits for another tower's bearing, and the two are triangulated
  (``gridwatch.geo.triangulate_bearings``) into a location with an error estimate.
- Independent sources (distinct devices) raise confidence by noisy-OR; an incident ends when
  every source that raised it has cleared, or when no detection touched it for the kind's
  ``quiet_after`` (``expire``: a source whose clear was lost, a camera that went away).
- A kind's ``corroboration`` lets detections of other kinds nearby (a gauge beside water on a
  road) join its incidents as sources; they never open one nor keep it open.
- A detection the state already holds changes nothing, and an incident's id derives from the
  detection that opened it: fused again after a crash, a message gives the same revisions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from math import prod

from gridwatch import kinds
from gridwatch.events import (
    Detection,
    DetectionKind,
    Incident,
    IncidentKind,
    Level,
    Model,
    Point,
    SourceRef,
    ZoneKind,
    derived_id,
)
from gridwatch.geo import GridMatch, LocalProjection, triangulate_bearings

MAX_DETECTION_IDS = 100  # an incident keeps its newest detection ids; all are in the database
BEARING_SIGMA_DEG = 0.5


class SourceState(Model):
    source: SourceRef
    level: Level
    confidence: float
    first_area: int | None = None
    last_area: int | None = None
    kind: DetectionKind | None = None  # None in states kept before kinds were recorded
    corroborating: bool = False  # another kind's detection (``Corroboration``)


class Tracked(Model):
    """An incident with the sources still raising it and the sharpest latest bearing of each
    tower, with the width of the box it came from: a tower's visible and thermal streams both
    report, and a thermal hotspot's few pixels give a truer bearing than a learned model's tile,
    so a wider box's bearing never replaces a narrower one's."""

    incident: Incident
    active: dict[str, SourceState] = {}
    bearings: dict[str, float] = {}
    bearing_widths: dict[str, int] = {}


class FusionState(Model):
    tracked: tuple[Tracked, ...] = ()
    pending: tuple[Detection, ...] = ()  # tower bearings waiting for a second tower
    corroborators: tuple[Detection, ...] = ()  # other kinds' detections no incident took yet


def _no_zones(_point: Point) -> tuple[ZoneKind, ...]:
    return ()


def _table_quiet(kind: IncidentKind) -> timedelta:
    return kinds.incident(kind).quiet_after


@dataclass(frozen=True)
class FusionContext:
    """What fusion needs from the site, kept out of the (serialised) state."""

    locate: Callable[[Point], GridMatch]
    projection: LocalProjection
    towers: dict[str, Point]
    departments: Callable[[IncidentKind], tuple[str, ...]]
    zones_at: Callable[[Point], tuple[ZoneKind, ...]] = _no_zones  # the site's ground zones
    quiet_after: Callable[[IncidentKind], timedelta] = _table_quiet  # the site's, by kind


def _key(source: SourceRef) -> str:
    return f"{source.type.value}:{source.id}"


def incident_kind_of(det: Detection, ctx: FusionContext) -> IncidentKind:
    """The incident ``det`` is evidence of, by its kind and the zones it lies in."""
    ground = ctx.zones_at(det.location) if det.location is not None else ()
    return kinds.incident_kind(det.kind, (*det.zones, *ground))


def kinds_fed(det: Detection, ctx: FusionContext) -> tuple[IncidentKind, ...]:
    """Every incident kind whose state ``det`` goes to: its own, then those it corroborates."""
    own = incident_kind_of(det, ctx)
    return (own, *(k for k in kinds.corroborated(det.kind) if k is not own))


def fuse(
    state: FusionState, det: Detection, ctx: FusionContext, kind: IncidentKind | None = None
) -> tuple[FusionState, Incident | None]:
    """Fold one detection into the state of ``kind`` (default: the incident it is evidence
    of; else a kind it corroborates); returns the new state and the incident revision to
    publish, if an operator would see a change. A detection the state already holds (one
    fused again after a crash) changes nothing."""
    if _holds(state, det):
        return state, None
    own = incident_kind_of(det, ctx)
    kind = kind or own
    info = kinds.incident(kind)
    horizon = det.ts - 2 * info.window
    tracked = [t for t in state.tracked if not t.incident.ended or t.incident.last_seen >= horizon]
    pending = [p for p in state.pending if abs(p.ts - det.ts) <= info.window]
    corroborators = [c for c in state.corroborators if abs(c.ts - det.ts) <= info.window]
    if kind is not own:
        return _corroborate(tracked, pending, corroborators, det, kind, ctx)
    match = _raised_by(tracked, det) if det.cleared else None
    if match is not None:
        point, error = None, None
    elif det.location is not None:
        point, error = det.location, None
        match = _nearest(tracked, det, point, kind, ctx)
    else:
        match = _on_ray(tracked, det, kind, ctx)
        point, error = None, None
        if match is None:
            fix = _pair(pending, det, ctx)
            if fix is None:
                if not det.cleared:
                    pending = _pend(pending, det)
                return _state(tracked, pending, corroborators), None
            partner, point, error = fix
            pending.remove(partner)
            first, _ = _start(partner, kind, point, error, ctx, corroborators)
            tracked.append(first)
            match = first
    if match is None:
        assert point is not None  # noqa: S101 - a located detection
        if det.cleared:
            return _state(tracked, pending, corroborators), None
        new, incident = _start(det, kind, point, error, ctx, corroborators)
        return _state([*tracked, new], pending, corroborators), incident
    updated = _join(match, det, ctx)
    tracked = [updated if t is match else t for t in tracked]
    return _state(tracked, pending, corroborators), updated.incident


def expire(
    state: FusionState, now: datetime, quiet: timedelta
) -> tuple[FusionState, list[Incident]]:
    """End every incident of the state no detection touched for ``quiet`` (its kind's
    ``quiet_after``); returns the state and the ended revisions to publish."""
    tracked, ended = [], []
    for t in state.tracked:
        if not t.incident.ended and t.incident.last_seen + quiet <= now:
            incident = t.incident.model_copy(
                update={"revision": t.incident.revision + 1, "ended": True}
            )
            ended.append(incident)
            t = Tracked(incident=incident, bearings=t.bearings, bearing_widths=t.bearing_widths)
        tracked.append(t)
    return state.model_copy(update={"tracked": tuple(tracked)}), ended


def quiet_due(state: FusionState, now: datetime, quiet: timedelta) -> bool:
    """Whether ``expire`` would end an incident of the state now."""
    return any(not t.incident.ended and t.incident.last_seen + quiet <= now for t in state.tracked)


def _state(
    tracked: list[Tracked], pending: list[Detection], corroborators: list[Detection]
) -> FusionState:
    return FusionState(
        tracked=tuple(tracked), pending=tuple(pending), corroborators=tuple(corroborators)
    )


def _holds(state: FusionState, det: Detection) -> bool:
    return any(det.id in t.incident.detection_ids for t in state.tracked) or any(
        d.id == det.id for d in (*state.pending, *state.corroborators)
    )


def _raised_by(tracked: list[Tracked], det: Detection) -> Tracked | None:
    """The open incident ``det``'s source is raising (where its clear belongs)."""
    key = _key(det.source)
    return next((t for t in reversed(tracked) if not t.incident.ended and key in t.active), None)


def _rule(source: SourceState) -> kinds.Corroboration | None:
    """What may corroborate an incident's own source; None for a corroborating one."""
    if source.corroborating or source.kind is None:
        return None
    return kinds.detection(source.kind).corroboration


def _corroborates(det: Detection, source: SourceState) -> bool:
    rule = _rule(source)
    return rule is not None and det.kind in rule.by


def _corroboration_radius(det: Detection, t: Tracked) -> float | None:
    """How far from ``t`` a detection of ``det``'s kind may be and still corroborate it; None
    if it corroborates none of ``t``'s sources."""
    radii = [r.radius_m for s in t.active.values() if (r := _rule(s)) and det.kind in r.by]
    return max(radii, default=None)


def _corroborate(
    tracked: list[Tracked],
    pending: list[Detection],
    corroborators: list[Detection],
    det: Detection,
    kind: IncidentKind,
    ctx: FusionContext,
) -> tuple[FusionState, Incident | None]:
    """Another kind's detection near an incident of ``kind`` it corroborates joins it as a
    source; one that finds none waits, for the kind's window, for such an incident to start."""
    corroborators = [c for c in corroborators if c.source != det.source]
    match = _raised_by(tracked, det) if det.cleared else None
    if match is None and det.location is not None and not det.cleared:
        best: tuple[float, Tracked] | None = None
        for t in tracked:
            if t.incident.kind is not kind or t.incident.ended:
                continue
            radius = _corroboration_radius(det, t)
            d = ctx.projection.distance_m(det.location, t.incident.location)
            if radius is not None and d <= radius and (best is None or d < best[0]):
                best = (d, t)
        match = best[1] if best else None
    if match is None:
        if not det.cleared and det.location is not None:
            corroborators.append(det)
        return _state(tracked, pending, corroborators), None
    updated = _join(match, det, ctx, corroborating=True)
    tracked = [updated if t is match else t for t in tracked]
    return _state(tracked, pending, corroborators), updated.incident


def _in_time(incident: Incident, ts: datetime, kind: IncidentKind) -> bool:
    window = kinds.incident(kind).window
    if incident.ended:
        return incident.first_seen - window <= ts <= incident.last_seen
    return incident.first_seen - window <= ts <= incident.last_seen + window


def _nearest(
    tracked: list[Tracked], det: Detection, point: Point, kind: IncidentKind, ctx: FusionContext
) -> Tracked | None:
    best: tuple[float, Tracked] | None = None
    for t in tracked:
        if t.incident.kind is not kind or not _in_time(t.incident, det.ts, kind):
            continue
        d = ctx.projection.distance_m(point, t.incident.location)
        if d <= kinds.incident(kind).radius_m and (best is None or d < best[0]):
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
        if t.incident.kind is not kind or not _in_time(t.incident, det.ts, kind):
            continue
        ix, iy = ctx.projection.xy(t.incident.location)
        along = (ix - tx) * dx + (iy - ty) * dy
        across = abs((ix - tx) * dy - (iy - ty) * dx)
        radius = kinds.incident(kind).radius_m
        if along > 0 and across <= radius and (best is None or across < best[0]):
            best = (across, t)
    return best[1] if best else None


def _pair(
    pending: list[Detection], det: Detection, ctx: FusionContext
) -> tuple[Detection, Point, float] | None:
    """Another tower's pending bearing of the same kind that crosses this one."""
    kind = incident_kind_of(det, ctx)
    for other in reversed(pending):
        if other.source.id == det.source.id or incident_kind_of(other, ctx) is not kind:
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
    det: Detection,
    kind: IncidentKind,
    point: Point,
    error: float | None,
    ctx: FusionContext,
    corroborators: list[Detection],
) -> tuple[Tracked, Incident]:
    """A new incident from ``det``, with the waiting ``corroborators`` that corroborate it
    (taken out of that list)."""
    incident = Incident(
        id=derived_id(det.ts, kind, det.id),  # the same incident when fused again
        kind=kind,
        **_placed(point, error, ctx),
        level=det.level or Level.YELLOW,
        confidence=det.confidence,
        sources=(det.source,),
        detection_ids=(det.id,),
        departments=ctx.departments(kind),
        first_seen=det.ts,
        last_seen=det.ts,
    )
    new = _bearing_of(
        Tracked(incident=incident, active={_key(det.source): _source(det, None, False)}), det
    )
    own = new.active[_key(det.source)]
    rule = kinds.detection(det.kind).corroboration
    for waiting in list(corroborators):
        if (
            rule is not None
            and _corroborates(waiting, own)
            and waiting.location is not None
            and ctx.projection.distance_m(waiting.location, point) <= rule.radius_m
        ):
            corroborators.remove(waiting)
            new = _join(new, waiting, ctx, corroborating=True)
    # One first revision, with the corroboration it starts with.
    first = new.incident.model_copy(update={"revision": 1})
    return new.model_copy(update={"incident": first}), first


def _source(det: Detection, before: SourceState | None, corroborating: bool) -> SourceState:
    area = _area(det)
    return SourceState(
        source=det.source,
        level=det.level or Level.YELLOW,
        confidence=det.confidence,
        first_area=before.first_area if before and before.first_area else area,
        last_area=area if area is not None else (before.last_area if before else None),
        kind=det.kind,
        corroborating=corroborating,
    )


def _join(
    t: Tracked, det: Detection, ctx: FusionContext, *, corroborating: bool = False
) -> Tracked:
    current = t.incident
    late = current.ended  # evidence for an incident that is over: recorded, not reopened
    active = dict(t.active)
    if det.cleared:
        active.pop(_key(det.source), None)
    elif not late:
        active[_key(det.source)] = _source(det, active.get(_key(det.source)), corroborating)
    aimed = _bearing_of(t, det)
    bearings = aimed.bearings
    update: dict[str, object] = {}
    if aimed is not t and len(bearings) >= 2:
        fix = _triangulate(ctx, _bearing_detections(bearings, det))
        if fix is not None:
            update.update(_placed(fix[0], fix[1], ctx))
    placing = kinds.incident(current.kind).placed_by
    if (
        det.kind in placing
        and det.location is not None
        and not det.cleared
        and not any(s.kind in placing for s in t.active.values())
    ):
        update.update(_placed(det.location, None, ctx))
    own = [s for s in active.values() if not s.corroborating]
    if own:
        update.update(
            level=max((s.level for s in own), key=lambda lv: lv.rank),
            confidence=round(1 - prod(1 - s.confidence for s in active.values()), 4),
            growth=max(_growth(s) for s in own),
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
            "ended": late or not own,
        }
    )
    return Tracked(
        incident=incident, active=active, bearings=bearings, bearing_widths=aimed.bearing_widths
    )


def _placed(point: Point, error: float | None, ctx: FusionContext) -> dict[str, object]:
    """An incident's fields for a new place: the point, its error and the grid cell there."""
    cell = ctx.locate(point)
    return {
        "location": point,
        "location_error_m": error,
        "community_code": cell.community_code,
        "grid_code": cell.grid_code,
        "micro_grid_code": cell.micro_grid_code if cell.inside else None,
    }


def _width(det: Detection) -> int | None:
    return det.bbox[2] if det.bbox is not None else None


def _coarser(width: int | None, kept: int | None) -> bool:
    """Whether a bearing from a box ``width`` wide is coarser than one from a ``kept`` wide."""
    return kept is not None and (width is None or width > kept)


def _pend(pending: list[Detection], det: Detection) -> list[Detection]:
    """``det`` waiting for another tower's bearing, in place of its tower's earlier one unless
    that came from a narrower box."""
    earlier = next((p for p in pending if p.source == det.source), None)
    if earlier is not None and _coarser(_width(det), _width(earlier)):
        return pending
    return [p for p in pending if p.source != det.source] + [det]


def _bearing_of(t: Tracked, det: Detection) -> Tracked:
    """``t`` with ``det``'s bearing as its tower's, unless that tower's is from a narrower box
    (``t`` itself then, as when ``det`` has no bearing)."""
    if det.bearing_deg is None:
        return t
    tower = det.source.id
    width = _width(det)
    if tower in t.bearings and _coarser(width, t.bearing_widths.get(tower)):
        return t
    widths = dict(t.bearing_widths)
    if width is None:
        widths.pop(tower, None)
    else:
        widths[tower] = width
    return t.model_copy(
        update={"bearings": {**t.bearings, tower: det.bearing_deg}, "bearing_widths": widths}
    )


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
