"""A scenario's camera events on the simulated cameras: each fire drawn where its place really
shows in the view that sees it (so the worker's bearing and a two-tower triangulation land on
the place), played by the simulator at its time, a lost stream staying lost."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from gridwatch.camera_geometry import bearing_deg, bearing_to, ground_point, image_point
from gridwatch.events import Point
from gridwatch.geo import LocalProjection, triangulate_bearings
from gridwatch.scenario import load_scenario, place_point
from gridwatch.site import Site
from gridwatch.site_cameras import Preset, Watchtower
from ingest.camera_worker import Ptz
from simulators.camera_events import preset_facing, scenario_cues
from simulators.camera_feeds import LOST, CameraSimulator, Cue, feeds_for_site

AT = Point(lon=106.62, lat=26.61)
SIZE = (640, 360)
SHAPE = (360, 640)


def _box_at(x: float, y: float) -> tuple[int, int, int, int]:
    """A 4-pixel box centred on column ``x``, its bottom on row ``y`` (fractions)."""
    return round(x * SIZE[0]) - 2, round(y * SIZE[1]) - 4, 4, 4


@pytest.mark.parametrize(("east", "north"), [(30.0, 200.0), (-20.0, 150.0), (10.0, 60.0)])
def test_a_place_shows_where_the_worker_reads_it_back(east: float, north: float) -> None:
    target = LocalProjection(AT).point(east, north)
    heading, tilt, fov = 20.0, -8.0, 70.0
    point = image_point(AT, 12.0, heading, tilt, fov, target, SHAPE)
    assert point is not None
    x, y = point
    bearing = bearing_deg(heading, fov, _box_at(x, y), SIZE[0])
    assert bearing == pytest.approx(bearing_to(AT, target), abs=0.2)
    back = ground_point(AT, 12.0, heading, tilt, fov, _box_at(x, y), SHAPE)
    assert back is not None
    # a pixel is a few metres on the ground at these ranges
    assert LocalProjection(target).distance_m(target, back) < 0.05 * math.hypot(east, north)


def test_a_place_outside_the_view_shows_nowhere() -> None:
    behind = LocalProjection(AT).point(0.0, -300.0)
    assert image_point(AT, 12.0, 0.0, -8.0, 70.0, behind, SHAPE) is None
    beyond_horizon_up = LocalProjection(AT).point(0.0, 300.0)
    assert image_point(AT, 12.0, 0.0, 30.0, 70.0, beyond_horizon_up, SHAPE) is None


def test_a_tower_sees_a_place_from_its_widest_preset_facing_it() -> None:
    tower = Watchtower(
        id="WT-T",
        name="t",
        location=AT,
        height_m=35.0,
        visible_url="rtsp://x/v",
        presets=(
            Preset(id=0, pan_deg=0.0, tilt_deg=-3.0, fov_deg=64.0),
            Preset(id=1, pan_deg=60.0, tilt_deg=-3.0, fov_deg=64.0),
            Preset(id=2, pan_deg=5.0, tilt_deg=-5.0, fov_deg=16.0),
        ),
    )
    north = LocalProjection(AT).point(50.0, 1000.0)  # bearing 2.9°: presets 0 and 2 see it
    assert preset_facing(tower, north).id == 0
    east = LocalProjection(AT).point(1000.0, 700.0)  # bearing 55°
    assert preset_facing(tower, east).id == 1
    with pytest.raises(ValueError, match="no preset of WT-T looks towards bearing 180"):
        preset_facing(tower, LocalProjection(AT).point(0.0, -1000.0))


def test_the_demo_fire_is_drawn_at_its_bearing_from_each_tower(site: Site) -> None:
    spec = load_scenario()
    fire = spec.fire
    assert fire is not None
    where = place_point(site, fire.place)
    cues = {c.device: c for c in scenario_cues(site, spec, SIZE)}
    towers = {t.id: t for t in site.watchtowers}
    read = {}
    for tower_id in ("WT-01", "WT-02"):
        cue, tower = cues[tower_id], towers[tower_id]
        preset = next(p for p in tower.presets if p.id == cue.preset)
        assert (cue.preset, cue.scene, cue.at_s) == (
            0,
            "fire_and_smoke",
            1.0 if tower_id == "WT-01" else 1.5,
        )
        read[tower_id] = bearing_deg(preset.pan_deg, preset.fov_deg, _box_at(*cue.source), SIZE[0])
        assert read[tower_id] == pytest.approx(bearing_to(tower.location, where), abs=0.1)
    fix = triangulate_bearings(
        towers["WT-01"].location, read["WT-01"], towers["WT-02"].location, read["WT-02"], 0.5
    )
    assert fix is not None
    assert LocalProjection(where).distance_m(where, fix.point) < 10.0
    # The straw fire by the PM2.5 sensor, in CAM-004's view over the field; CAM-002's stream lost.
    straw, lost = cues["CAM-004"], cues["CAM-002"]
    assert straw.preset is None and straw.scene == "farm_fire" and straw.at_s == 7.0
    camera = next(c for c in site.cameras if c.id == "CAM-004")
    sensor = site.sensor("PM-001")
    assert sensor is not None
    assert bearing_deg(camera.heading_deg, camera.fov_deg, _box_at(*straw.source), SIZE[0]) == (
        pytest.approx(bearing_to(camera.location, sensor.location), abs=0.2)
    )
    assert (lost.scene, lost.at_s) == (LOST, 6.0)


def test_the_simulator_plays_cues_on_a_camera_and_at_a_tower_preset(
    site: Site, tmp_path: Path
) -> None:
    tower = next(t for t in site.watchtowers if t.id == "WT-01")
    camera = next(c for c in site.cameras if c.id == "CAM-004")
    small = site.model_copy(
        update={
            "cameras": (camera,),
            "watchtowers": (tower.model_copy(update={"presets": tower.presets[:2]}),),
        }
    )
    fire_at_1 = Cue(at_s=0.0, device="WT-01", scene="fire", source=(0.3, 0.6), preset=1)
    field = Cue(at_s=0.0, device="CAM-004", scene="farm_fire", source=(0.5, 0.6))
    feeds = feeds_for_site(
        small, fps=2.0, seconds=1.0, size=(64, 36), footage=False, cues=[fire_at_1, field]
    )
    by_path = {f.path: f for f in feeds}
    assert set(by_path["wt-01/visible"].clips) == {"0", "1", "1/fire"}
    assert set(by_path["wt-01/thermal"].clips) == {"0", "1", "1/hotspot"}
    assert by_path["wt-01/visible"].clips["1/fire"].source == (0.3, 0.6)
    with CameraSimulator(feeds, tmp_path, rtsp=False) as sim:
        channels = sim.channels
        sim.cue(fire_at_1)  # the head looks at preset 0: nothing shows yet
        assert channels["wt-01/visible"].key == "0" and channels["wt-01/thermal"].key == "0"
        head = Ptz(sim.ptz_url("WT-01"))  # the worker's PTZ client, over HTTP
        head.goto(1)
        assert channels["wt-01/visible"].key == "1/fire"
        assert channels["wt-01/thermal"].key == "1/hotspot"
        head.goto(0)
        assert channels["wt-01/visible"].key == "0"
        sim.cue(field)
        assert channels["cam-004"].key == "farm_fire"
        assert next(channels["cam-004"].jpegs())  # it streams
        sim.cue(Cue(at_s=0.0, device="CAM-004", scene=LOST))
        assert list(channels["cam-004"].jpegs()) == []  # a reconnecting client gets nothing
