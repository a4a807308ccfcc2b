"""The camera worker without a network: sampling and bursts, location, patrol and a stuck PTZ."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from gridwatch.camera_geometry import bearing_deg, ground_point
from gridwatch.events import Detection, Point
from gridwatch.geo import LocalProjection
from gridwatch.site_cameras import Preset, Watchtower
from ingest.camera_evidence import EvidenceStore
from ingest.camera_source import Captured
from ingest.camera_worker import CameraWorker, Sampler

AT = Point(lon=106.65, lat=26.62)


def test_sampler_bursts_around_a_candidate() -> None:
    sampler = Sampler(fps=1.0, burst_fps=5.0, burst_s=2.0)
    due = [t / 10 for t in range(0, 60) if sampler.due(t / 10)]
    assert due[:3] == [0.0, 1.0, 2.0]
    sampler = Sampler(fps=1.0, burst_fps=5.0, burst_s=2.0)
    sampler.due(0.0)
    sampler.burst(0.0)
    burst = [t / 10 for t in range(1, 30) if sampler.due(t / 10)]
    assert len([t for t in burst if t < 2.0]) >= 8


def test_bearing_and_ground_point() -> None:
    assert bearing_deg(350.0, 60.0, (300, 0, 40, 10), 640) == 350.0
    assert math.isclose(bearing_deg(350.0, 60.0, (630, 0, 20, 10), 640), 20.0, abs_tol=0.01)
    # Looking east, tilted down 10°, the box bottom on the optical axis: range = h / tan 10°.
    point = ground_point(AT, 20.0, 90.0, -10.0, 60.0, (310, 170, 20, 10), (360, 640))
    assert point is not None
    x, y = LocalProjection(AT).xy(point)
    assert math.isclose(x, 20 / math.tan(math.radians(10)), rel_tol=0.01) and abs(y) < 1
    assert ground_point(AT, 20.0, 90.0, 0.0, 60.0, (310, 0, 20, 10), (360, 640)) is None


class FakePtz:
    def __init__(self) -> None:
        self.moves: list[int] = []

    def goto(self, preset: int) -> None:
        self.moves.append(preset)


def test_patrol_settles_and_reports_a_stuck_ptz(tmp_path: Path) -> None:
    tower = Watchtower(
        id="WT-T",
        name="t",
        location=AT,
        height_m=30.0,
        visible_url="",
        presets=(
            Preset(id=0, pan_deg=0.0, tilt_deg=-3.0, fov_deg=60.0),
            Preset(id=1, pan_deg=90.0, tilt_deg=-3.0, fov_deg=60.0),
        ),
        settle_s=2.0,
        dwell_s=5.0,
    )
    published: list[Detection] = []
    ptz = FakePtz()
    worker = CameraWorker.for_watchtower(tower, published.append, EvidenceStore(tmp_path), ptz=ptz)
    rng = np.random.default_rng(1)
    scene = rng.integers(0, 255, (180, 320, 3)).astype(np.uint8)  # the head never moves
    start = datetime(2025, 4, 1, tzinfo=UTC)
    for i in range(40):
        worker.handle(Captured(scene, start + timedelta(seconds=i * 0.5)))
    assert ptz.moves[:3] == [0, 1, 0]
    stuck = [d for d in published if d.rule == "camera_health:stuck_ptz"]
    assert stuck and not stuck[0].cleared and stuck[0].snapshot
    assert worker.stats.frames_analysed < worker.stats.frames_read  # settling frames skipped
