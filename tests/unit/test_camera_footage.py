"""Real flames and smoke from the training images composited into a generated scene: only the
event's neighbourhood changes, and without the images the scene falls back to drawn flames."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from gridwatch.shared_data import FIRE_SMOKE
from simulators import camera_footage
from simulators.camera_scenes import Scenario, render

TRAIN = FIRE_SMOKE / "train"


def _frame(sc: Scenario, index: int) -> np.ndarray:
    return next(image for i, (_, image) in enumerate(render(sc)) if i == index)


def test_without_the_images_there_is_no_footage(tmp_path: Path) -> None:
    assert camera_footage.load(tmp_path / "train") is None


@pytest.mark.skipif(
    not (TRAIN / "labels").is_dir(),
    reason=f"real images absent: no {TRAIN} (set GRIDWATCH_SHARED_DATA)",
)
def test_footage_replaces_the_drawn_fire_near_the_source_only() -> None:
    footage = camera_footage.load(TRAIN)
    assert footage is not None and footage.fire and footage.smoke
    drawn = Scenario(
        "f", "fire", "fire_and_smoke", seed=3, duration_s=4.0, fps=5.0, onset_s=0.0,
        source=(0.5, 0.7), size=(320, 180),
    )  # fmt: skip
    real = _frame(replace(drawn, footage=True), 15)
    plain = _frame(drawn, 15)
    changed = np.argwhere(np.abs(real.astype(int) - plain.astype(int)).max(axis=2) > 40)
    assert len(changed) > 50
    ys, xs = changed[:, 0] / 180, changed[:, 1] / 320
    assert abs(float(np.median(xs)) - 0.5) < 0.1 and float(np.median(ys)) < 0.75
