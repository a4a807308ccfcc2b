"""The learned detector's tiles and temporal confirmation, driven by scripted probabilities."""

from __future__ import annotations

import numpy as np
import pydantic
import pytest

from detectors.fire_model import Batch, FireSmokeModel
from detectors.learned import LearnedFireSmoke, tiles
from gridwatch.events import DetectionKind
from gridwatch.site_cameras import LearnedDetector, Vision


class Scripted(FireSmokeModel):
    """Gives every tile of a sample the next scripted (fire, smoke) pair; no ONNX session."""

    def __init__(self, script: list[tuple[float, float]]) -> None:
        self.script = list(script)

    def run(self, batch: Batch) -> np.ndarray:
        fire, smoke = self.script.pop(0)
        return np.tile(np.array([[fire, smoke]], np.float32), (len(batch), 1))


WORK = np.zeros((360, 640, 3), np.uint8)
ALLOWED = np.ones((360, 640), np.bool_)


def test_tiles_cover_the_view_at_each_scale() -> None:
    boxes = tiles(WORK.shape, (1, 3), 0.25)
    assert boxes[0] == (0, 0, 640, 360) and len(boxes) == 10
    cover = np.zeros((360, 640), np.bool_)
    for x, y, w, h in boxes[1:]:
        assert 0 <= x and x + w <= 640 and 0 <= y and y + h <= 360
        assert w < 640 / 2
        cover[y : y + h, x : x + w] = True
    assert cover.all()


def _run(script: list[tuple[float, float]], **settings: object) -> list[list[str]]:
    detector = LearnedFireSmoke(LearnedDetector.model_validate(settings), Scripted(script))
    return [[f"{c.kind.value}:{c.state}" for c in detector.observe(WORK, ALLOWED)] for _ in script]


def test_confirms_on_n_of_m_hits_and_never_on_a_flicker() -> None:
    flicker = [(0.9, 0.0), (0.1, 0.0)] * 4
    assert all(not step for step in _run(flicker, confirm_n=3, confirm_m=4))
    steady = [(0.9, 0.0), (0.1, 0.0), (0.9, 0.0), (0.9, 0.0)]
    fire = DetectionKind.FIRE.value
    assert _run(steady, confirm_n=3, confirm_m=4) == [[], [], [], [f"{fire}:confirmed"]]


def test_clears_only_after_the_score_stays_below_the_lower_level() -> None:
    smoke = DetectionKind.SMOKE.value
    script = [(0.0, 0.8)] * 2 + [(0.0, 0.3)] * 3 + [(0.0, 0.1)] * 2
    steps = _run(script, confirm_n=2, confirm_m=2, clear_misses=2, clear_ratio=0.5)
    # 0.3 is below the threshold but above half of it: the smoke stays confirmed
    assert steps == [[], [f"{smoke}:confirmed"], [], [], [], [], [f"{smoke}:cleared"]]


def test_a_masked_view_is_not_scored() -> None:
    detector = LearnedFireSmoke(LearnedDetector(confirm_n=1), Scripted([(1.0, 1.0)]))
    assert detector.observe(WORK, np.zeros_like(ALLOWED)) == []


def test_vision_names_its_detector_by_type_and_rejects_unknown_settings() -> None:
    vision = Vision.model_validate({"learned": {"type": "fire_smoke_model", "grids": [1, 2]}})
    assert vision.learned is not None and vision.learned.grids == (1, 2)
    with pytest.raises(pydantic.ValidationError):
        Vision.model_validate({"learned": {"type": "yolo"}})
    with pytest.raises(pydantic.ValidationError):
        Vision.model_validate({"learned": {"fire_treshold": 0.4}})
