"""The traffic detector on generated road scenes: a car that stops is confirmed after the stall
time and not before, and cleared once it has gone; traffic, queues, headlights, rain, cloud
shadows and shake never confirm; water spreading over the road is reported; nothing outside
the road zones counts. Small frames and a short stall time keep this fast."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from detectors.frame import Frame
from detectors.scene import SceneAnalyzer
from detectors.traffic import TrafficWatch
from detectors.zones import ZoneMap
from gridwatch.events import DetectionKind
from gridwatch.site_cameras import ImageZone, Vision
from gridwatch.site_detectors import Detectors, TrafficDetector
from simulators.road_scenes import LANES, RoadScenario, render, road_vision

STALL_S = 30.0
ONSET_S = 25.0  # after the background's warm-up
START = datetime(2025, 4, 1, 10, tzinfo=UTC)


def scene(element: str, seed: int = 3, **changes: object) -> RoadScenario:
    base = RoadScenario(
        name=element,
        label="none",
        element=element,
        seed=seed,
        duration_s=110.0,
        onset_s=ONSET_S,
        stop_s=60.0,
        spot=0.5,
        size=(320, 180),
        vision=road_vision(STALL_S),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def play(sc: RoadScenario) -> list[tuple[float, DetectionKind, str]]:
    """(time, kind, state) of every change the detector reports, sampled at 1 fps."""
    road = ZoneMap(sc.vision.zones, (sc.size[1], sc.size[0])).mask("road")
    assert road is not None and sc.vision.detectors.traffic is not None
    watch = TrafficWatch(sc.vision.detectors.traffic, road)
    return [(t, c.kind, c.state) for t, image in render(sc) for c in watch.observe(image, t)]


def test_a_stalled_car_is_confirmed_after_the_stall_time_and_cleared_when_it_leaves() -> None:
    sc = scene("stalled_car")
    changes = play(sc)
    kinds = {k for _, k, _ in changes}
    assert kinds == {DetectionKind.TRAFFIC_OBSTRUCTION}, changes
    (confirmed, cleared) = changes
    assert confirmed[2] == "confirmed" and cleared[2] == "cleared"
    # never before the stall time: it stood still from ONSET_S
    assert ONSET_S + STALL_S <= confirmed[0] <= ONSET_S + STALL_S + 20, changes
    left = ONSET_S + sc.stop_s
    assert left <= cleared[0] <= left + 30, changes


def test_a_car_that_leaves_before_the_stall_time_is_never_confirmed() -> None:
    assert play(scene("stalled_car", stop_s=STALL_S * 0.6)) == []


def test_a_stalled_car_at_night_with_its_lights_on_is_confirmed() -> None:
    changes = play(scene("stalled_car_night"))
    assert [(k, s) for _, k, s in changes][:1] == [
        (DetectionKind.TRAFFIC_OBSTRUCTION, "confirmed")
    ], changes
    assert changes[0][0] >= ONSET_S + STALL_S


@pytest.mark.parametrize(
    "element", ["dense_traffic", "red_light", "night_headlights", "cloud_shadow", "camera_shake"]
)
def test_passing_traffic_headlights_shadows_and_shake_never_confirm(element: str) -> None:
    # a red light holds its queue for half the stall time
    assert play(scene(element, stop_s=STALL_S * 0.5)) == []


def test_water_spreading_over_the_road_is_reported_and_is_no_obstruction() -> None:
    changes = play(scene("road_water", duration_s=150.0))
    assert [(k, s) for _, k, s in changes] == [(DetectionKind.ROAD_WATER, "confirmed")], changes
    # it takes a while to cover the share of the road, and must then stay
    assert changes[0][0] >= ONSET_S + TrafficDetector().water_s


def test_rain_darkening_the_road_is_no_water() -> None:
    assert play(scene("rain")) == []


def test_only_road_zones_are_watched() -> None:
    """The car stops in the near lane; the camera's road zone is the far lane only."""
    top, bottom = LANES[0]
    far_lane = ImageZone(kind="road", polygon=((0, top), (1, top), (1, bottom), (0, bottom)))
    vision = Vision(
        zones=(far_lane,),
        detectors=Detectors(fire_smoke_model=None, traffic=TrafficDetector(stall_s=STALL_S)),
    )
    assert play(scene("stalled_car", vision=vision)) == []


def test_the_scene_analyser_reports_the_obstruction_in_frame_pixels_on_the_road() -> None:
    sc = scene("stalled_car", size=(640, 360), duration_s=ONSET_S + STALL_S + 15)
    analyser = SceneAnalyzer(sc.vision)
    hits = [
        hit
        for t, image in render(sc)
        for hit in analyser.analyse(Frame(image, START + timedelta(seconds=t), "cam")).hits
        if hit.kind is DetectionKind.TRAFFIC_OBSTRUCTION
    ]
    assert [h.state for h in hits] == ["confirmed"]
    x, y, w, h = hits[0].box
    assert "road" in hits[0].zones
    car_x = sc.spot * sc.size[0]
    assert x <= car_x + 60 and x + w >= car_x and y >= LANES[0][0] * 360, hits[0].box


def test_a_traffic_block_without_a_road_zone_is_refused() -> None:
    with pytest.raises(ValidationError, match="traffic detector needs a zone of kind road"):
        Vision(detectors=Detectors(traffic=TrafficDetector()))
