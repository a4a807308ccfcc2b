"""The simulator's composited scenes as a camera worker sees them: the packaged model, through
the default scene analysis at 1 fps, confirms a farm fire on a fixed camera and a fire on a
watchtower preset within seconds, on the pasted fire, and stays quiet on a quiet view and on
drifting clouds."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from detectors.frame import Frame
from detectors.scene import Hit, SceneAnalyzer
from gridwatch.events import DetectionKind
from gridwatch.shared_data import FIRE_SMOKE
from gridwatch.site import Site
from gridwatch.site_cameras import Vision
from simulators.camera_feeds import Feed, feeds_for_site
from simulators.camera_scenes import Image, render

TRAIN = FIRE_SMOKE / "train"
pytestmark = pytest.mark.skipif(
    not (TRAIN / "labels").is_dir(),
    reason=f"real images absent: no {TRAIN} (set GRIDWATCH_SHARED_DATA)",
)
START = datetime(2025, 4, 1, 10, tzinfo=UTC)
WITHIN_S = 6
SECONDS = 8.0  # of each clip: enough to confirm within WITHIN_S


def _each_second(feed: Feed, key: str) -> list[Image]:
    sc = feed.clips[key]
    step = round(sc.fps)
    return [image for i, (_, image) in enumerate(render(sc)) if i % step == 0]


def _first_hit(frames: list[Image], vision: Vision, preset: int | None) -> tuple[float, Hit] | None:
    analyzer = SceneAnalyzer(vision, preset)
    for second, image in enumerate(frames):
        ts = START + timedelta(seconds=second)
        for hit in analyzer.analyse(Frame(image, ts, "cam", preset)).hits:
            if hit.state == "confirmed":
                return float(second), hit
    return None


@pytest.fixture(scope="module")
def feeds(site: Site) -> dict[str, Feed]:
    scenes = {"CAM-004": "farm_fire", "CAM-001": "clouds", "WT-01:2": "fire"}
    return {f.path: f for f in feeds_for_site(site, scenes, seconds=SECONDS)}


@pytest.mark.parametrize(("path", "key", "preset"), [("cam-004", "farm_fire", None),
                                                      ("wt-01/visible", "2", 2)])  # fmt: skip
def test_a_pasted_fire_is_confirmed_within_seconds_where_it_burns(
    site: Site, feeds: dict[str, Feed], path: str, key: str, preset: int | None
) -> None:
    feed = feeds[path]
    visions = {d.id: d.vision for d in site.cameras} | {t.id: t.vision for t in site.watchtowers}
    frames = _each_second(feed, key)
    found = _first_hit(frames, visions[feed.device], preset)
    assert found is not None, f"{path} {key}: nothing confirmed in {SECONDS} s"
    second, hit = found
    assert second <= WITHIN_S and hit.kind in (DetectionKind.FIRE, DetectionKind.SMOKE)
    # the pasted fire (what differs from the same landscape without it) lies in the hit's box
    plain = next(iter(render(replace(feed.clips[key], element="quiet", onset_s=None))))[1]
    diff = np.abs(frames[int(second)].astype(int) - plain.astype(int)).max(axis=2)
    changed = np.argwhere(diff > 40)
    y, x = np.median(changed, axis=0)
    bx, by, bw, bh = hit.box
    assert bx <= x <= bx + bw and by <= y <= by + bh


@pytest.mark.parametrize(("path", "key"), [("cam-004", "quiet"), ("cam-001", "clouds")])
def test_a_quiet_view_and_drifting_clouds_are_never_confirmed(
    site: Site, feeds: dict[str, Feed], path: str, key: str
) -> None:
    camera = next(c for c in site.cameras if c.id == feeds[path].device)
    assert _first_hit(_each_second(feeds[path], key), camera.vision, None) is None
