"""Fusion in space and time, corroboration, tower triangulation and late detections."""

from datetime import UTC, datetime, timedelta

import pytest

from gridwatch import kinds
from gridwatch.events import (
    Detection,
    DetectionKind,
    IncidentKind,
    Level,
    Point,
    SourceRef,
    ZoneKind,
)
from gridwatch.events import SourceType as St
from gridwatch.geo import GridIndex, LocalProjection
from gridwatch.site import Site
from streams.fusion import (
    FusionContext,
    FusionState,
    expire,
    fuse,
    incident_kind_of,
    kinds_fed,
    quiet_due,
)

T0 = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)
WEST = Point(lon=106.605, lat=26.605)
TOWER_A = Point(lon=106.600, lat=26.600)
TOWER_B = Point(lon=106.620, lat=26.600)


@pytest.fixture
def ctx(tiny_site: Site) -> FusionContext:
    index = GridIndex(tiny_site)
    return FusionContext(
        locate=index.locate,
        projection=index.projection,
        towers={"WT-A": TOWER_A, "WT-B": TOWER_B},
        departments=tiny_site.departments_for,
    )


def gauge(source: str, level: Level | None, minutes: float, at: Point = WEST) -> Detection:
    return Detection(
        kind=DetectionKind.WATER_LEVEL,
        source=SourceRef(type=St.SENSOR, id=source),
        ts=T0 + timedelta(minutes=minutes),
        confidence=0.9,
        level=level,
        location=at,
        cleared=level is None,
    )


def bearing(tower: str, at: Point, minutes: float, ctx: FusionContext) -> Detection:
    proj = LocalProjection(ctx.towers[tower])
    x, y = proj.xy(at)
    from math import atan2, degrees

    return Detection(
        kind=DetectionKind.SMOKE,
        source=SourceRef(type=St.WATCHTOWER, id=tower),
        ts=T0 + timedelta(minutes=minutes),
        confidence=0.7,
        bearing_deg=degrees(atan2(x, y)) % 360,
        bbox=(10, 10, 20, 20),
    )


def test_one_incident_grows_corroborates_and_ends(ctx: FusionContext) -> None:
    state, first = fuse(FusionState(), gauge("WL-1", Level.YELLOW, 0), ctx)
    assert first is not None and first.revision == 1 and first.kind is IncidentKind.FLOOD
    assert first.departments == ("water", "emergency")
    assert first.micro_grid_code == "5201990030010101"
    state, second = fuse(state, gauge("WL-2", Level.ORANGE, 1, Point(lon=106.615, lat=26.605)), ctx)
    assert second is not None and second.id == first.id and second.revision == 2
    assert second.level is Level.ORANGE and len(second.sources) == 2
    assert second.confidence == 0.99  # noisy-OR: 1 - 0.1 * 0.1
    state, third = fuse(state, gauge("WL-2", None, 2), ctx)
    assert third is not None and not third.ended and third.level is Level.YELLOW
    state, last = fuse(state, gauge("WL-1", None, 3), ctx)
    assert last is not None and last.ended and last.revision == 4


def test_a_flood_opened_by_the_rain_moves_to_the_first_river_gauge(ctx: FusionContext) -> None:
    rain = gauge("RG-1", Level.YELLOW, 0, Point(lon=106.615, lat=26.605)).model_copy(
        update={"kind": DetectionKind.RAINFALL}
    )
    state, opened = fuse(FusionState(), rain, ctx)
    assert opened is not None and opened.location == rain.location
    state, placed = fuse(state, gauge("WL-1", Level.ORANGE, 1), ctx)
    assert placed is not None and placed.id == opened.id and placed.location == WEST
    assert placed.micro_grid_code == "5201990030010101"  # the cell moved with it
    state, kept = fuse(state, gauge("WL-2", Level.RED, 2, Point(lon=106.606, lat=26.605)), ctx)
    assert kept is not None and kept.location == WEST  # the first gauge keeps it


def test_far_apart_or_after_the_window_is_another_incident(ctx: FusionContext) -> None:
    state, first = fuse(FusionState(), gauge("WL-1", Level.YELLOW, 0), ctx)
    state, later = fuse(state, gauge("WL-1", Level.ORANGE, 45), ctx)
    assert first is not None and later is not None and later.id != first.id
    far = Point(lon=106.70, lat=26.605)  # ~9.5 km east, beyond the flood radius
    state, other = fuse(state, gauge("WL-9", Level.YELLOW, 46, far), ctx)
    assert other is not None and other.id not in (first.id, later.id)


def test_late_detection_joins_the_right_incident_even_after_it_ended(ctx: FusionContext) -> None:
    state, first = fuse(FusionState(), gauge("WL-1", Level.YELLOW, 10), ctx)
    state, late = fuse(state, gauge("WL-2", Level.YELLOW, 5), ctx)
    assert first is not None and late is not None and late.id == first.id
    assert late.first_seen == T0 + timedelta(minutes=5)
    state, _ = fuse(state, gauge("WL-2", None, 11), ctx)
    state, ended = fuse(state, gauge("WL-1", None, 12), ctx)
    assert ended is not None and ended.ended
    state, evidence = fuse(state, gauge("WL-3", Level.YELLOW, 8), ctx)
    assert evidence is not None and evidence.id == first.id and evidence.ended


def test_two_tower_bearings_triangulate_and_a_sensor_corroborates(ctx: FusionContext) -> None:
    fire = Point(lon=106.611, lat=26.607)
    state, none = fuse(FusionState(), bearing("WT-A", fire, 0, ctx), ctx)
    assert none is None and len(state.pending) == 1  # one bearing fixes no point
    state, incident = fuse(state, bearing("WT-B", fire, 0.5, ctx), ctx)
    assert incident is not None and incident.kind is IncidentKind.FOREST_FIRE
    assert ctx.projection.distance_m(incident.location, fire) < 5
    assert incident.location_error_m is not None and incident.location_error_m < 50
    assert {s.id for s in incident.sources} == {"WT-A", "WT-B"}
    smoke = Detection(
        kind=DetectionKind.SMOKE_SENSOR,
        source=SourceRef(type=St.SENSOR, id="SM-1"),
        ts=T0 + timedelta(minutes=1),
        confidence=0.8,
        level=Level.ORANGE,
        location=Point(lon=106.612, lat=26.6075),
    )
    state, joined = fuse(state, smoke, ctx)
    assert joined is not None and joined.id == incident.id and len(joined.sources) == 3
    assert joined.level is Level.ORANGE and joined.confidence > incident.confidence
    # A later bearing from a tower joins by its ray, with no second tower needed.
    state, again = fuse(state, bearing("WT-A", fire, 2, ctx), ctx)
    assert again is not None and again.id == incident.id


def test_a_detection_fused_again_after_a_crash_gives_the_same_revisions(
    ctx: FusionContext,
) -> None:
    """A worker killed after publishing but before writing its state is followed by one that
    fuses the same detections into the old state; one killed after writing it, by one that
    fuses them into the new. Either way the revisions are those already published."""
    fire = Point(lon=106.611, lat=26.607)
    a, b = bearing("WT-A", fire, 0, ctx), bearing("WT-B", fire, 0.5, ctx)
    rise = gauge("WL-1", Level.YELLOW, 1)
    published = []
    state = FusionState()
    for det in (a, b, rise):
        state, out = fuse(state, det, ctx, kinds_fed(det, ctx)[0])
        published.append(out)
    assert all(p is not None for p in published[1:])
    old = FusionState()
    for det, before in zip((a, b, rise), published, strict=True):
        old, again = fuse(old, det, ctx, kinds_fed(det, ctx)[0])
        assert again == before  # the same ids and revisions, so consumers take them once
    for det in (a, b, rise):
        assert fuse(state, det, ctx, kinds_fed(det, ctx)[0]) == (state, None)


def test_a_towers_coarse_bearing_never_replaces_its_sharp_one(ctx: FusionContext) -> None:
    """A tower's thermal hotspot (a few pixels) and its visible stream's learned tile (a quarter
    of the view) both report: the tile's bearing, off by degrees, leaves the fix alone."""
    fire = Point(lon=106.611, lat=26.607)

    def seen(tower: str, minutes: float, width: int, off_deg: float = 0.0) -> Detection:
        d = bearing(tower, fire, minutes, ctx)
        assert d.bearing_deg is not None
        return d.model_copy(
            update={"bbox": (300, 160, width, width), "bearing_deg": d.bearing_deg + off_deg}
        )

    state, _ = fuse(FusionState(), seen("WT-A", 0, 4), ctx)
    state, fixed = fuse(state, seen("WT-B", 0.1, 4), ctx)
    assert fixed is not None and ctx.projection.distance_m(fixed.location, fire) < 5
    state, coarse = fuse(state, seen("WT-A", 0.5, 213, off_deg=6.0), ctx)
    assert coarse is not None and coarse.location == fixed.location
    # A sharper bearing still moves the fix (the fire itself moved 3° as seen from WT-A).
    state, sharper = fuse(state, seen("WT-A", 1, 2, off_deg=3.0), ctx)
    assert sharper is not None and ctx.projection.distance_m(sharper.location, fire) > 50
    # Waiting for a second tower, a tower's sharp bearing is kept over its later coarse one.
    state, _ = fuse(FusionState(), seen("WT-A", 0, 4), ctx)
    state, none = fuse(state, seen("WT-A", 0.2, 213, off_deg=6.0), ctx)
    assert none is None and [_width_of(p) for p in state.pending] == [4]
    state, paired = fuse(state, seen("WT-B", 0.4, 4), ctx)
    assert paired is not None and ctx.projection.distance_m(paired.location, fire) < 5


def _width_of(det: Detection) -> int | None:
    return det.bbox[2] if det.bbox is not None else None


def test_a_clear_with_nothing_open_emits_nothing(ctx: FusionContext) -> None:
    state, incident = fuse(FusionState(), gauge("WL-1", None, 0), ctx)
    assert incident is None and state.tracked == ()


def test_a_sensor_fault_becomes_a_device_fault_incident(ctx: FusionContext) -> None:
    flatline = gauge("WL-1", Level.YELLOW, 0).model_copy(
        update={"kind": DetectionKind.SENSOR_FAULT, "rule": "flatline:water_level_m"}
    )
    _, incident = fuse(FusionState(), flatline, ctx)
    assert incident is not None and incident.kind is IncidentKind.DEVICE_FAULT
    assert incident.level is Level.YELLOW and incident.grid_code == "52019900300101"


def camera(kind: DetectionKind, minutes: float, zones: tuple[ZoneKind, ...] = ()) -> Detection:
    return Detection(
        kind=kind,
        source=SourceRef(type=St.CAMERA, id="CAM-1"),
        ts=T0 + timedelta(minutes=minutes),
        confidence=0.8,
        location=WEST,
        bbox=(10, 10, 20, 20),
        zones=zones,
    )


@pytest.mark.parametrize("kind", [DetectionKind.FIRE, DetectionKind.SMOKE])
def test_camera_fire_or_smoke_in_a_farmland_zone_is_straw_burning(
    ctx: FusionContext, kind: DetectionKind
) -> None:
    _, straw = fuse(FusionState(), camera(kind, 0, (ZoneKind.FARMLAND,)), ctx)
    _, forest = fuse(FusionState(), camera(kind, 0, (ZoneKind.FOREST,)), ctx)
    assert straw is not None and straw.kind is IncidentKind.STRAW_BURNING
    assert forest is not None and forest.kind is IncidentKind.FOREST_FIRE


def test_a_sensor_inside_a_ground_farmland_zone_is_straw_burning_evidence(
    ctx: FusionContext,
) -> None:
    farmland = FusionContext(
        locate=ctx.locate,
        projection=ctx.projection,
        towers=ctx.towers,
        departments=ctx.departments,
        zones_at=lambda _p: (ZoneKind.FARMLAND,),
    )
    smoke = gauge("SM-1", Level.YELLOW, 0).model_copy(update={"kind": DetectionKind.SMOKE_SENSOR})
    assert incident_kind_of(smoke, farmland) is IncidentKind.STRAW_BURNING
    assert incident_kind_of(smoke, ctx) is IncidentKind.FOREST_FIRE


def road_water(minutes: float, cleared: bool = False) -> Detection:
    return camera(DetectionKind.ROAD_WATER, minutes, (ZoneKind.ROAD,)).model_copy(
        update={"cleared": cleared}
    )


def test_a_nearby_gauge_corroborates_water_on_a_road_but_never_opens_or_holds_it(
    ctx: FusionContext,
) -> None:
    rising = gauge("WL-1", Level.ORANGE, 0)
    assert kinds_fed(rising, ctx) == (IncidentKind.FLOOD, IncidentKind.TRAFFIC_SAFETY)
    assert kinds_fed(road_water(0), ctx) == (IncidentKind.TRAFFIC_SAFETY,)
    traffic = IncidentKind.TRAFFIC_SAFETY
    # The gauge first: no traffic incident of its own; it waits for the road's.
    state, none = fuse(FusionState(), rising, ctx, traffic)
    assert none is None and len(state.corroborators) == 1
    state, opened = fuse(state, road_water(1), ctx)
    assert opened is not None and opened.kind is traffic and opened.revision == 1
    assert {s.id for s in opened.sources} == {"CAM-1", "WL-1"}
    assert opened.level is Level.YELLOW  # the road's own evidence sets the level
    assert opened.confidence == pytest.approx(1 - 0.2 * 0.1)
    # The road clears: the incident ends though the gauge is still high.
    state, ended = fuse(state, road_water(2, cleared=True), ctx)
    assert ended is not None and ended.ended


def test_a_gauge_after_the_road_joins_its_incident(ctx: FusionContext) -> None:
    traffic = IncidentKind.TRAFFIC_SAFETY
    state, opened = fuse(FusionState(), road_water(0), ctx)
    state, joined = fuse(state, gauge("WL-1", Level.ORANGE, 1), ctx, traffic)
    assert opened is not None and joined is not None and joined.id == opened.id
    assert len(joined.sources) == 2 and not joined.ended
    # An obstruction is not what a gauge corroborates.
    blocked = camera(DetectionKind.TRAFFIC_OBSTRUCTION, 0, (ZoneKind.ROAD,))
    state, other = fuse(FusionState(), blocked, ctx)
    state, nothing = fuse(state, gauge("WL-1", Level.ORANGE, 1), ctx, traffic)
    assert other is not None and nothing is None


def test_a_clear_long_after_the_rise_still_ends_its_incident(ctx: FusionContext) -> None:
    state, first = fuse(FusionState(), gauge("WL-1", Level.YELLOW, 0), ctx)
    later = 3 * kinds.incident(IncidentKind.FLOOD).window.total_seconds() / 60
    state, last = fuse(state, gauge("WL-1", None, later), ctx)
    assert first is not None and last is not None and last.id == first.id and last.ended


def test_an_incident_quiet_past_its_kinds_quiet_after_ends(ctx: FusionContext) -> None:
    state, first = fuse(FusionState(), gauge("WL-1", Level.YELLOW, 0), ctx)
    assert first is not None
    quiet = ctx.quiet_after(IncidentKind.FLOOD)
    assert quiet == kinds.incident(IncidentKind.FLOOD).quiet_after
    almost = first.last_seen + quiet - timedelta(seconds=1)
    assert not quiet_due(state, almost, quiet)
    assert expire(state, almost, quiet)[1] == []
    assert quiet_due(state, first.last_seen + quiet, quiet)
    state, [ended] = expire(state, first.last_seen + quiet, quiet)
    assert ended.id == first.id and ended.ended and ended.revision == 2
    assert not quiet_due(state, first.last_seen + 2 * quiet, quiet)
    # The clear that was lost arrives after all: nothing is reopened nor opened.
    state, late = fuse(state, gauge("WL-1", None, 1), ctx)
    assert late is None and [t.incident.ended for t in state.tracked] == [True]


def test_a_site_sets_its_own_quiet_time_per_kind(tiny_site: Site) -> None:
    times = tiny_site.policy.incidents.model_validate({"quiet_after_minutes": {"flood": 90}})
    assert times.quiet_after(IncidentKind.FLOOD) == timedelta(minutes=90)
    assert (
        times.quiet_after(IncidentKind.FOREST_FIRE)
        == kinds.incident(IncidentKind.FOREST_FIRE).quiet_after
    )
    with pytest.raises(ValueError, match="must be positive"):
        times.model_validate({"quiet_after_minutes": {"flood": 0}})
