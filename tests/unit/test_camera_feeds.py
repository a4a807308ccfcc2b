"""The simulator's feeds for a site: one stream per camera and per watchtower view, on the paths
of the site's URLs, with the scenes asked for; an unknown device or scene is an error."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest

from gridwatch.site import Site
from simulators.camera_feeds import (
    ROAD_ONSET_S,
    ClipChannel,
    clock_frame,
    feeds_for_site,
    parse_scenes,
)
from simulators.camera_scenes import render


def test_every_stream_of_the_sample_site_on_its_url_path(site: Site) -> None:
    feeds = feeds_for_site(site, parse_scenes(["CAM-004=farm_fire", "WT-01:2=smoke"]))
    paths = {f.path: f for f in feeds}
    assert set(paths) == {
        *(c.url.rsplit("8554/", 1)[1] for c in site.cameras),
        *(u.rsplit("8554/", 1)[1] for t in site.watchtowers
          for u in (t.visible_url, t.thermal_url) if u),
    }  # fmt: skip
    assert paths["cam-004"].start == "farm_fire" and set(paths["cam-004"].clips) == {
        "quiet",
        "farm_fire",
    }
    assert paths["cam-001"].start == "quiet"
    tower = paths["wt-01/visible"]
    assert tower.ptz and tower.clips["2"].element == "smoke" and tower.clips["1"].element == "quiet"
    assert paths["wt-01/thermal"].clips["2"].element == "thermal_quiet"  # smoke alone: not hot


def test_unknown_devices_and_scenes_are_errors(site: Site) -> None:
    with pytest.raises(ValueError, match="CAM-999"):
        feeds_for_site(site, {"CAM-999": "fire"})
    with pytest.raises(ValueError, match="DEVICE=ELEMENT"):
        parse_scenes(["CAM-001=lava"])


def _compressed(site: Site, day_s: float) -> Site:
    data = site.model_dump()
    tower = next(t for t in data["watchtowers"] if t["id"] == "WT-01")
    tower["vision"]["detectors"]["construction_change"]["day_s"] = day_s
    return Site.model_validate(data)


def test_a_construction_preset_and_a_road_camera_play_changes_for_good(site: Site) -> None:
    scenes = {"WT-01:2": "construction", "CAM-006": "road_obstruction"}
    with pytest.raises(ValueError, match="compressed days"):
        feeds_for_site(site, scenes)  # the sample site's days are real ones
    with pytest.raises(ValueError, match="traffic detector"):
        feeds_for_site(site, {"CAM-001": "road_obstruction"})
    paths = {f.path: f for f in feeds_for_site(_compressed(site, 4.0), scenes)}
    tower = next(t for t in site.watchtowers if t.id == "WT-01")
    build = paths["wt-01/visible"].clips["2"]
    visit = tower.settle_s + tower.dwell_s  # preset 2 is the patrol's third stop
    assert build.element == "construction" and build.day_s == 4.0
    assert build.onset_s is not None and build.onset_s >= 3 * visit and build.onset_s % 4 == 0
    assert build.loop_from_s == build.onset_s  # the building stays, day after day
    assert build.duration_s == build.onset_s + (3 + 2) * 4.0
    assert paths["wt-01/visible"].clips["1"].loop_from_s is None  # quiet presets loop whole
    road = paths["cam-006"].clips["road_obstruction"]
    camera = next(c for c in site.cameras if c.id == "CAM-006")
    assert camera.vision.detectors.traffic is not None
    assert road.onset_s == ROAD_ONSET_S and road.loop_from_s is not None
    assert road.duration_s > ROAD_ONSET_S + camera.vision.detectors.traffic.stall_s
    assert road.vision == camera.vision and road.label == "traffic_obstruction"


def test_the_building_stands_in_the_watch_zone_from_its_day_on(site: Site) -> None:
    feeds = feeds_for_site(_compressed(site, 2.0), {"WT-01:2": "construction"}, fps=2.0)
    tower = next(f for f in feeds if f.path == "wt-01/visible")
    sc = replace(tower.clips["2"], size=(320, 180))
    assert sc.onset_s is not None and sc.day_s == 2.0
    frames = dict(render(sc))
    assert [t for t, _ in render(sc)] == list(frames)
    before, after = frames[sc.onset_s - 0.5], frames[sc.onset_s]
    zone = next(z for z in site.watchtowers[0].vision.zones if z.preset == 2)
    (x0, y0), (x1, y1) = zone.polygon[0], zone.polygon[2]
    inside = (slice(round(y0 * 180), round(y1 * 180)), slice(round(x0 * 320), round(x1 * 320)))
    moved = np.abs(after.astype(np.int16) - before.astype(np.int16)).mean(axis=2)
    outside = np.ones(moved.shape, np.bool_)
    outside[inside] = False
    # built inside the watched plot; elsewhere only another day's light, aim and noise
    assert moved[inside].mean() > 2 * moved[outside].mean()


def test_a_clocked_clip_keeps_the_simulator_time_across_switches() -> None:
    assert [clock_frame(n, 10, 4) for n in (0, 9, 10, 15, 16)] == [0, 9, 4, 9, 4]
    clips = {"a": [bytes([i]) for i in range(10)], "b": [b"b"]}
    channel = ClipChannel(10.0, clips, "b", clocked={"a": 4}, started=time.monotonic() - 1.25)
    stream = channel.jpegs()
    assert next(stream) == b"b"
    channel.key = "a"  # a PTZ move back to the preset: the clock ran on meanwhile
    assert next(stream)[0] in (6, 7)  # frame 12 or 13 of a clip looping from frame 4
