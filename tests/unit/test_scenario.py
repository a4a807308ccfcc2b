"""Scenario files: the bundled demo scenario drives the simulators as the coded one did, bad
files are refused with the path, and a run is scored against the ground truth."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import shapely

from gridwatch.errors import ConfigError
from gridwatch.events import IncidentKind, Level, ZoneKind
from gridwatch.geo import LocalProjection, ray_through
from gridwatch.scenario import (
    DEMO_SCENARIO,
    Construction,
    ForestFire,
    RoadObstruction,
    SensorRise,
    StreamLost,
    load_scenario,
    place_point,
)
from gridwatch.scenario_score import RunIncident, run_incidents, score
from gridwatch.site import Site
from simulators.sensors import Scenario, Truth, messages, plan_events, sensor_scenario


def test_the_demo_scenario_plays_the_messages_the_coded_scenario_played(site: Site) -> None:
    spec = load_scenario(DEMO_SCENARIO)
    spec.check(site)
    assert spec.fire is not None
    others = site.model_copy(
        update={"sensors": tuple(s for s in site.sensors if s.id != spec.fire.smoke_sensor)}
    )
    # The rain that rises along with the river is the file's own; the rest is the coded one's.
    alone = spec.model_copy(
        update={
            "events": tuple(
                e.model_copy(update={"along": ()}) if isinstance(e, SensorRise) else e
                for e in spec.events
            )
        }
    )
    for duration in (20.0, 12.0):
        file_scenario = sensor_scenario(alone.stretched(duration).model_copy(update={"rate_hz": 4}))
        coded = Scenario(duration, 4.0)  # events chosen per metric, at 20 % and 70 % of the run
        planned, chosen = plan_events(others, file_scenario), plan_events(others, coded)
        assert [(e.name, e.sensor_id, e.metric, e.peak_level) for e in planned] == [
            (e.name, e.sensor_id, e.metric, e.peak_level) for e in chosen
        ]
        times = [t for e in planned for t in (e.start_s, e.peak_s)]
        assert times == pytest.approx([t for e in chosen for t in (e.start_s, e.peak_s)])
        played, expected = (list(messages(others, s, Truth())) for s in (file_scenario, coded))
        assert [(m.at_s, m.topic, m.readings) for m in played] == [
            (m.at_s, m.topic, m.readings) for m in expected
        ]
        # The same values, but for the last digit where 0.6 × 4 s is not 0.2 × 12 s in floats.
        assert [v for m in played for v in _values(m.payload)] == pytest.approx(
            [v for m in expected for v in _values(m.payload)], abs=2e-4
        )


def _values(payload: bytes) -> list[float]:
    try:
        return [float(v) for v in json.loads(payload)["values"].values()]
    except ValueError:
        return []  # the malformed message


def test_the_demo_fire_is_where_and_when_it_was(site: Site) -> None:
    fire = load_scenario().fire
    assert isinstance(fire, ForestFire)
    smoke = site.sensor("SM-001")
    assert smoke is not None
    assert place_point(site, fire.place) == LocalProjection(smoke.location).point(120.0, 60.0)
    assert [(t.tower, t.at_s, t.preset) for t in fire.towers] == [
        ("WT-01", 1.0, None),
        ("WT-02", 1.5, None),
    ]
    assert fire.smoke_rise_s == (4.0, 7.0) and fire.start == 1.0


def test_stretching_scales_every_event_time(site: Site) -> None:
    spec = load_scenario().stretched(10.0)
    assert spec.duration_s == 10.0
    flood, straw, _, lost, car, building = spec.events
    assert (flood.start, getattr(flood, "peak_s", None)) == (2.0, 7.0)
    assert spec.fire is not None and spec.fire.smoke_rise_s == (2.0, 3.5)
    assert [t.at_s for t in spec.fire.towers] == [0.5, 0.75]
    assert isinstance(straw, SensorRise) and straw.cameras[0].at_s == 3.5 and straw.start == 2.0
    assert isinstance(lost, StreamLost) and lost.at_s == 3.0
    assert isinstance(car, RoadObstruction) and car.start == 0.0  # on the simulator's clock
    # the tower's compressed day shrinks with the run; the building rises on the simulator's clock
    assert isinstance(building, Construction) and building.day_s == 1.25 and building.start == 0.0


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ("kind: sensor_rise", "kind: tsunami", "events[0]: Input tag 'tsunami'"),
        ("peak_s: 14", "peak_s: 1", "events[0].sensor_rise: Value error, peak_s (1.0) must come"),
        ("metric: water_level_m", "metric: water_level_m\n    colour: red",
         "events[0].sensor_rise.colour"),
        ("within_m: 150, sources: 3", "within_m: -5", "events[2].forest_fire.expect.within_m"),
        ("scene: farm_fire", "scene: rainbow", "events[1].sensor_rise.cameras[0].scene"),
        ("kind: stream_lost", "kind: stream_lost\n    preset: 2", "events[3].stream_lost.preset"),
        ("day_s: 2.5", "day_s: 0", "events[5].construction.day_s"),
        ("    preset: 1\n", "", "events[5].construction.preset"),
    ],
)  # fmt: skip
def test_a_bad_scenario_file_names_the_path(
    tmp_path: Path, old: str, new: str, problem: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(DEMO_SCENARIO.read_text(encoding="utf-8").replace(old, new, 1), "utf-8")
    with pytest.raises(ConfigError, match="bad.yaml: ") as err:
        load_scenario(path)
    assert problem in str(err.value)


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ("sensor: WL-001", "sensor: WL-999", "flood rise.*WL-999"),
        ("camera: CAM-004", "camera: CAM-999", "PM2.5 plume.*no camera 'CAM-999'"),
        ("camera: CAM-002", "camera: WT-01", "uplink lost.*no camera 'WT-01'"),
        ("camera: CAM-006", "camera: CAM-009", "stalled car.*no camera 'CAM-009'"),
        ("tower: WT-02, at_s: 1.5", "tower: WT-02, at_s: 1.5, preset: 9", "WT-02 has no preset 9"),
        ("tower: WT-02", "tower: SM-001", "forest fire.*no watchtower 'SM-001'"),
        ("tower: WT-03", "tower: WT-09", "illegal construction.*no watchtower 'WT-09'"),
        ("    preset: 1\n", "    preset: 7\n", "illegal construction.*WT-03 has no preset 7"),
        ("    preset: 1\n", "    preset: 0\n", "WT-03 does not watch preset 0 for construction"),
        ("tower: WT-03", "tower: WT-02", "WT-02 does not watch preset 1 for construction"),
    ],
)
def test_a_scenario_naming_a_device_the_site_lacks_is_refused(
    site: Site, tmp_path: Path, old: str, new: str, problem: str
) -> None:
    path = tmp_path / "ghost.yaml"
    path.write_text(DEMO_SCENARIO.read_text().replace(old, new, 1))
    with pytest.raises(ConfigError, match=problem):
        load_scenario(path).check(site)


def _at(site: Site, device: str, east_m: float = 0.0) -> tuple[float, float]:
    spec = load_scenario()
    place = next(e.place for e in spec.events if e.place.device == device)
    point = LocalProjection(place_point(site, place)).point(east_m, 0.0)
    return point.lon, point.lat


def test_a_run_is_scored_by_event_with_its_false_incidents(site: Site) -> None:
    spec = load_scenario()
    flood_lon, flood_lat = _at(site, "WL-001", east_m=30.0)
    fire_lon, fire_lat = _at(site, "SM-001", east_m=50.0)  # the fire's place, 120 m E, 60 m N
    far_lon, far_lat = _at(site, "WL-001", east_m=400.0)
    listed = [
        {"kind": "flood", "level": "orange", "lon": flood_lon, "lat": flood_lat, "sources": 1,
         "first_alert_s": 6.5, "grid_code": "x"},
        {"kind": "forest_fire", "level": "red", "lon": fire_lon, "lat": fire_lat, "sources": 3,
         "first_alert_s": 1.7},
        {"kind": "flood", "level": "yellow", "lon": far_lon, "lat": far_lat, "sources": 1},
    ]  # fmt: skip
    result = score(spec, site, run_incidents(listed))
    flood, plume, fire, lost, car, building = result.events
    assert flood.detected and flood.location_error_m == pytest.approx(30.0, abs=0.5)
    assert flood.level is Level.ORANGE and not flood.level_ok  # the gauge went red
    assert flood.time_to_first_alert_s == pytest.approx(2.5)  # started at 4 s
    assert not plume.detected and plume.expected is IncidentKind.STRAW_BURNING
    assert fire.detected and fire.level_ok and fire.sources_ok
    assert fire.location_error_m == pytest.approx(50.0, abs=0.5)
    assert fire.time_to_first_alert_s == pytest.approx(0.7)
    assert not lost.detected and lost.expected is IncidentKind.DEVICE_FAULT
    assert not car.detected and car.expected is IncidentKind.TRAFFIC_SAFETY
    assert not building.detected and building.expected is IncidentKind.ILLEGAL_CONSTRUCTION
    assert [i.kind for i in result.false_incidents] == [IncidentKind.FLOOD]  # 400 m off
    assert (result.detected, result.missed, result.passed) == (2, 4, False)
    report = result.report()
    assert report["false_incidents"] == 1 and report["per_event"][1]["detected"] is False


def test_a_perfect_run_passes(site: Site) -> None:
    spec = load_scenario()
    incidents = []
    for event in spec.events:
        point = place_point(site, event.place)
        incidents.append(
            RunIncident(
                kind=event.expect.incident,
                level=event.expect.level,
                lon=point.lon,
                lat=point.lat,
                sources=event.expect.sources or 1,
            )
        )
    result = score(spec, site, incidents)
    assert result.passed and result.detected == 6 and not result.false_incidents


def test_without_camera_sightings_no_camera_is_expected_to_see_a_sensor_s_fire() -> None:
    spec = load_scenario(DEMO_SCENARIO)
    straw = next(e for e in spec.events if isinstance(e, SensorRise) and e.cameras)
    bare = spec.without_camera_sightings()
    left = next(e for e in bare.events if isinstance(e, SensorRise) and e.name == straw.name)
    assert left.cameras == ()
    assert straw.expect.sources is not None
    assert left.expect.sources == straw.expect.sources - len({c.camera for c in straw.cameras})
    assert bare.fire == spec.fire  # the towers still see the forest fire
    assert len(bare.events) == len(spec.events)


def test_the_demo_building_stands_where_the_watched_preset_s_bearing_crosses_its_plot(
    site: Site,
) -> None:
    building = next(e for e in load_scenario().events if isinstance(e, Construction))
    tower = next(t for t in site.watchtowers if t.id == building.tower)
    preset = next(p for p in tower.presets if p.id == building.preset)
    (watch,) = (z for z in tower.vision.zones if z.kind is ZoneKind.CONSTRUCTION_WATCH)
    assert watch.preset == building.preset
    plot = shapely.Polygon(next(z.polygon for z in site.zones if z.name == watch.name))
    crossing = ray_through(tower.location, preset.pan_deg, plot)
    assert crossing is not None
    where = place_point(site, building.place)
    assert plot.contains(shapely.Point(where.lon, where.lat))
    assert math.hypot(*LocalProjection(crossing[0]).xy(where)) < 2.0


def test_a_sensor_rising_along_plays_the_event_s_rise_and_must_be_in_the_site(site: Site) -> None:
    spec = load_scenario(DEMO_SCENARIO)
    flood = next(e for e in spec.events if isinstance(e, SensorRise) and e.along)
    rises = {e.sensor_id: e for e in sensor_scenario(spec).events or ()}
    for along in flood.along:
        rise = rises[along.sensor]
        assert (rise.metric, rise.start_s, rise.peak_s, rise.peak_level) == (
            along.metric, flood.start_s, flood.peak_s, flood.expect.level
        )  # fmt: skip
    raw = spec.model_dump(mode="json")
    for event in raw["events"]:
        if event.get("along"):
            event["along"] = [{"sensor": "RG-999", "metric": "rainfall_mm_h"}]
    with pytest.raises(ConfigError, match="RG-999"):
        type(spec).model_validate(raw).check(site)
