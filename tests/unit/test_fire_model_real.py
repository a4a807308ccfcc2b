"""The packaged model on a handful of real validation images, where the shared set is present."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from benchmarks.image_set import SHARED_SET, read
from detectors.fire_model import FireSmokeModel
from detectors.frame import Frame
from detectors.scene import SceneAnalyzer
from gridwatch.cli import app
from gridwatch.events import DetectionKind
from gridwatch.site_cameras import Vision
from gridwatch.site_detectors import Detectors, FireSmokeModelSettings

VAL = SHARED_SET / "val"
pytestmark = pytest.mark.skipif(
    not VAL.is_dir(), reason=f"real images absent: no {VAL} (set GRIDWATCH_SHARED_DATA)"
)
PER_CLASS = 6


def _few(label: str) -> list[Path]:
    return sorted((VAL / label).glob("*.jpg"))[:PER_CLASS]


def test_real_fire_scores_above_real_negatives() -> None:
    model = FireSmokeModel()
    fire = [s.fire for s in model.score([read(p) for p in _few("fire")])]
    smoke = [s.smoke for s in model.score([read(p) for p in _few("smoke")])]
    none = model.score([read(p) for p in _few("none")])
    assert np.median(fire) > np.median([s.fire for s in none])
    assert np.median(smoke) > np.median([s.smoke for s in none])


def test_eval_images_reports_every_figure_per_class(tmp_path: Path) -> None:
    for label in ("fire", "smoke", "none"):
        (tmp_path / label).mkdir()
        for path in _few(label):
            (tmp_path / label / path.name).symlink_to(path)
    out = tmp_path / "report.json"
    sheet = tmp_path / "sheet.png"
    result = CliRunner().invoke(
        app,
        ["eval", "images", str(tmp_path), "--json", str(out), "--sheet", str(sheet), "--tiles"],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    for name in ("fire", "smoke"):
        keys = {"auc", "recall_at_fpr_0.01", "recall_at_fpr_0.05", "recall_at_fpr_0.10"}
        assert keys <= report[name].keys()
        assert report[name]["negatives"] == f"none/ ({PER_CLASS})"
    assert report["cost_ms_per_image"]["mean"] > 0
    tiles = report["tiles"]
    for name in ("fire", "smoke"):
        assert tiles[name]["images"] == PER_CLASS
        assert tiles[name]["recall_view_or_tile"] >= tiles[name]["recall_view"]
    assert tiles["none"]["images"] == PER_CLASS and "fire_fpr_any_tile" in tiles["none"]
    assert read(sheet).shape[1] > 0


def _frames(path: Path, count: int) -> list[Frame]:
    image = cv2.resize(read(path), (1280, 720))
    rng = np.random.default_rng(0)
    start = datetime(2025, 4, 1, 10, tzinfo=UTC)
    return [
        Frame(
            image=np.clip(image + rng.normal(0, 2, image.shape), 0, 255).astype(np.uint8),
            ts=start + timedelta(seconds=i),
            source_id="cam",
        )
        for i in range(count)
    ]


def test_the_scene_analyzer_confirms_real_fire_with_the_learned_model() -> None:
    model = FireSmokeModelSettings(confirm_n=3, confirm_m=4)
    vision = Vision(detectors=Detectors(fire_smoke_model=model))
    fire = max(_few("fire"), key=lambda p: FireSmokeModel().score([read(p)])[0].fire)
    analyzer = SceneAnalyzer(vision)
    hits = [h for f in _frames(fire, 5) for h in analyzer.analyse(f).hits]
    assert [h.kind for h in hits if h.state == "confirmed"][:1] == [DetectionKind.FIRE]


def test_a_real_fire_video_is_published_with_score_box_and_snapshot(tmp_path: Path) -> None:
    from benchmarks.eval_detectors import eval_camera, file_frames, run_worker

    video = SHARED_SET / "videos" / "fire_and_smoke" / "spacewalk01_car_fire.mp4"
    found = run_worker(eval_camera(Vision(), "car"), file_frames(video), tmp_path, thermal=False)
    fires = [d for d in found if d.kind is DetectionKind.FIRE and not d.cleared]
    assert fires, [d.rule for d in found]
    fire = fires[0]
    assert 0.5 <= fire.confidence <= 1.0  # the model's probability, at or over its threshold
    assert fire.bbox is not None and fire.bbox[2] > 0 and fire.bbox[3] > 0
    assert fire.snapshot is not None and Path(fire.snapshot).is_file()
