"""A watchtower patrol over the simulator's real PTZ API and RTSP stream: the worker's PTZ client
moves the head from preset to preset and the stream shows each preset's view, so the patrol is
not stuck; a head that ignores moves keeps one view on the stream, and stuck-PTZ is raised."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from gridwatch.events import Detection, Point
from gridwatch.site_cameras import Preset, Vision, Watchtower
from ingest.camera_evidence import EvidenceStore
from ingest.camera_source import VideoSource
from ingest.camera_worker import CameraWorker
from simulators.camera_feeds import CameraSimulator, Feed
from simulators.camera_rtsp import unavailable
from simulators.camera_scenes import HORIZON, Scenario

NO_RTSP = unavailable()
pytestmark = pytest.mark.skipif(NO_RTSP is not None, reason=NO_RTSP or "")
TOWER = "WT-T"


def _patrol(
    tmp_path: Path, *, stuck: bool, moves: int, settle_s: float = 1.0
) -> tuple[list[Detection], list[int]]:
    """The worker's patrol until it has asked for ``moves`` moves and the last has settled."""
    views = {
        str(p): Scenario(f"p{p}", "none", "quiet", seed=p, duration_s=4.0, fps=5.0, size=(320, 180))
        for p in range(3)
    }
    feed = Feed(TOWER, "wt-t/visible", views, "0", ptz=True)
    stuck_heads = frozenset({TOWER}) if stuck else frozenset()
    with CameraSimulator([feed], tmp_path / "sim", stuck=stuck_heads) as sim:
        tower = Watchtower(
            id=TOWER,
            name="t",
            location=Point(lon=106.65, lat=26.62),
            height_m=30.0,
            visible_url=sim.rtsp_url("wt-t/visible"),
            ptz_url=sim.ptz_url(TOWER),
            presets=tuple(
                Preset(id=p, pan_deg=p * 120.0, tilt_deg=-3.0, fov_deg=60.0) for p in range(3)
            ),
            settle_s=settle_s,
            dwell_s=1.0,
            sample_fps=2.0,
            vision=Vision(horizon=HORIZON),
        )
        found: list[Detection] = []
        worker = CameraWorker.for_watchtower(tower, found.append, EvidenceStore(tmp_path))
        stop = threading.Event()
        head = sim.heads[TOWER]

        def watch() -> None:  # a busy machine may take longer to connect: count moves, not time
            deadline = time.monotonic() + 60
            while len(head.moves) < moves and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(settle_s + 0.5)  # the last view compared with the one before
            stop.set()

        threading.Thread(target=watch, daemon=True).start()
        worker.run(VideoSource(tower.visible_url), stop)
        return found, list(head.moves)


def test_ptz_api_moves_the_head_and_the_stream_follows(tmp_path: Path) -> None:
    # Two seconds to settle: on a busy machine the RTSP picture trails the head by more than one,
    # and a view still showing the last preset is rightly taken for a stuck head.
    found, moves = _patrol(tmp_path, stuck=False, moves=4, settle_s=2.0)
    assert moves[:4] == [0, 1, 2, 0]
    assert not [d for d in found if d.rule == "camera_health:stuck_ptz"], found


def test_a_stuck_head_keeps_its_view_and_raises_stuck_ptz(tmp_path: Path) -> None:
    found, moves = _patrol(tmp_path, stuck=True, moves=2)
    assert moves[:2] == [0, 1]  # the worker asked; the head did not move
    stuck = [d for d in found if d.rule == "camera_health:stuck_ptz"]
    assert stuck and not stuck[0].cleared
