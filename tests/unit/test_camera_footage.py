"""Real flames and smoke from the training images composited into a generated scene: only the
event's neighbourhood changes, the fire stands at the scenario's source, the flames are keyed
by their colour, the picked crops are training images, and without the images the scene falls
back to drawn flames."""

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


def test_flames_are_keyed_by_their_colour_not_their_surroundings() -> None:
    image = np.zeros((64, 64, 3), np.float32)
    image[:, :32] = (40, 150, 250)  # orange flame (BGR)
    image[:, 32:] = (60, 110, 70)  # foliage behind it
    alpha = camera_footage.fire_alpha(image)
    assert alpha[24:40, 12:20].min() > 0.8 and alpha[24:40, 44:52].max() < 0.1


def test_picks_are_written_and_read_back(tmp_path: Path) -> None:
    picks = [
        camera_footage.Pick(kind="fire", group="v:7", order=12, stem="a_1", box=0, score=0.97),
        camera_footage.Pick(kind="smoke", group="v:9", order=3, stem="b_2", box=1, score=0.91),
    ]
    camera_footage.write_picks(picks, tmp_path / "picks.tsv")
    assert camera_footage.read_picks(tmp_path / "picks.tsv") == picks


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


@pytest.mark.skipif(
    not (TRAIN / "labels").is_dir(),
    reason=f"real images absent: no {TRAIN} (set GRIDWATCH_SHARED_DATA)",
)
def test_the_picked_crops_are_labelled_training_boxes_of_several_fires() -> None:
    picks = camera_footage.read_picks()
    boxes = {(p.kind, p.stem, p.box) for p in camera_footage.candidates(TRAIN)}
    assert {(p.kind, p.stem, p.box) for p in picks} <= boxes
    footage = camera_footage.load(TRAIN)
    assert footage is not None and len(footage.fire) > 1 and len(footage.smoke) > 1
    assert all(len(frames) > 1 for frames in (*footage.fire, *footage.smoke))


@pytest.mark.skipif(
    not (TRAIN / "labels").is_dir(),
    reason=f"real images absent: no {TRAIN} (set GRIDWATCH_SHARED_DATA)",
)
@pytest.mark.parametrize("x", [0.2, 0.65])
def test_the_fire_stands_on_the_source_column(x: float) -> None:
    plain = Scenario(
        "f", "fire", "fire", seed=5, duration_s=1.0, fps=5.0, onset_s=0.0, source=(x, 0.7),
        size=(640, 360),
    )  # fmt: skip
    real = _frame(replace(plain, footage=True), 4).astype(int)
    quiet = _frame(replace(plain, element="quiet", onset_s=None), 4).astype(int)
    columns = np.nonzero((np.abs(real - quiet).max(axis=2) > 40).any(axis=0))[0]
    assert abs((columns.min() + columns.max()) / 2 - x * 640) <= 0.02 * 640
