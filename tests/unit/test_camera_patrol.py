"""A watchtower patrol in the simulator: a head that never moves shows the same picture at every
preset, which raises the stuck-PTZ camera-health detection and suppresses detection; a head
that moves does not. The evaluation scores the stuck patrol as a negative."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from benchmarks.eval_detectors import Outcome, run_patrol, score
from gridwatch.events import Detection, DetectionKind, Point
from gridwatch.site_cameras import Preset, Vision, Watchtower
from ingest.camera_evidence import EvidenceStore
from ingest.camera_source import Captured
from ingest.camera_worker import CameraWorker
from simulators.camera_ptz import SimulatedPtz
from simulators.camera_scenes import HORIZON, Scenario, catalogue, render

START = datetime(2025, 4, 1, 10, tzinfo=UTC)
AT = Point(lon=106.65, lat=26.62)


def _frames(sc: Scenario) -> Iterator[Captured]:
    for t, image in render(sc):
        yield Captured(image, START + timedelta(seconds=t))


def _stuck_ptz(found: list[Detection]) -> list[Detection]:
    return [d for d in found if d.rule == "camera_health:stuck_ptz"]


def test_stuck_head_raises_stuck_ptz_and_suppresses_a_fire(tmp_path: Path) -> None:
    fire = Scenario(
        "stuck-fire", "none", "fire", seed=3, duration_s=45.0, fps=4.0, onset_s=14.0,
        size=(320, 180),
    )  # fmt: skip
    found = run_patrol(fire, _frames(fire), tmp_path)
    stuck = _stuck_ptz(found)
    assert stuck and not stuck[0].cleared and stuck[0].snapshot
    assert not [d for d in found if d.kind is DetectionKind.FIRE]


def test_moving_head_is_not_stuck(tmp_path: Path) -> None:
    views = {
        p: image
        for p, (_, image) in enumerate(
            next(iter(render(Scenario(f"v{p}", "none", "clouds", seed=p, size=(320, 180)))))
            for p in range(3)
        )
    }
    ptz = SimulatedPtz(views, seed=2)
    tower = Watchtower(
        id="WT-P",
        name="p",
        location=AT,
        height_m=30.0,
        visible_url="",
        presets=tuple(Preset(id=i, pan_deg=i * 120.0, tilt_deg=-3.0, fov_deg=60.0) for i in views),
        settle_s=2.0,
        dwell_s=5.0,
        vision=Vision(horizon=HORIZON),
    )
    found: list[Detection] = []
    worker = CameraWorker.for_watchtower(tower, found.append, EvidenceStore(tmp_path), ptz=ptz)
    for i in range(100):
        worker.handle(Captured(ptz.capture(), START + timedelta(seconds=i / 2)))
    assert ptz.moves[:4] == [0, 1, 2, 0]
    assert not _stuck_ptz(found) and worker.stats.frames_analysed > 0


def test_stuck_patrol_is_an_evaluated_negative(tmp_path: Path) -> None:
    sc = next(s for s in catalogue(per_kind=1, duration_s=40.0) if s.element == "stuck_ptz")
    small = Scenario(
        sc.name, sc.label, sc.element, sc.seed, sc.duration_s, sc.fps, sc.onset_s,
        sc.expect_health, size=(320, 180), vision=sc.vision,
    )  # fmt: skip
    assert small.label == "none" and small.expect_health == "stuck_ptz"
    found = run_patrol(small, _frames(small), tmp_path)
    report = score(
        [Outcome(small.name, small.label, small.duration_s, tuple(found), 0.0, "stuck_ptz")]
    )
    assert report["negatives"]["false_positive_rate"] == 0.0
    assert report["health_gates"] == {"sequences": 1, "raised": 1, "missed": []}
