"""``gridwatch train footage`` on a tiny labelled set: each kept fire is one source video, with
its best frames in video order and one box per image, and the fires kept are those the model
sees best when pasted small."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmarks.footage_picks import rank
from detectors.fire_model import DEFAULT_MODEL
from detectors.learned import shared_model


def _image(flame: bool, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.full((240, 240, 3), (60, 90, 70), np.uint8)
    image += rng.integers(0, 20, image.shape, dtype=np.uint8)
    if flame:  # a burning heap: orange and yellow tongues
        for _ in range(12):
            x, y = int(rng.integers(70, 170)), int(rng.integers(90, 190))
            colour = (40, int(rng.integers(120, 230)), 250)
            cv2.ellipse(image, (x, y), (12, 40), 0, 0, 360, colour, -1)
    return image


@pytest.fixture(scope="module")
def train(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fire-smoke")
    (root / "train" / "fire").mkdir(parents=True)
    (root / "train" / "labels").mkdir()
    rows = []
    # video 1 burns in every frame; video 2's frames show grass only; frame 2 of video 1 has a
    # second, grass-only box
    for video, flame in ((1, True), (2, False)):
        for frame in range(3):
            stem = f"v{video}_{frame}"
            cv2.imwrite(
                str(root / "train" / "fire" / f"{stem}.jpg"), _image(flame, video * 10 + frame)
            )
            boxes = ["0 0.5 0.58 0.5 0.5"] + (["0 0.15 0.15 0.2 0.2"] if stem == "v1_2" else [])
            (root / "train" / "labels" / f"{stem}.txt").write_text("\n".join(boxes) + "\n")
            rows.append(
                {
                    "file": f"train/fire/{stem}.jpg",
                    "original_path": f"Video{video}_f{9 - frame}.jpg",
                    "group": f"video{video}",
                }
            )
    with (root / "SOURCES.tsv").open("w", newline="") as f:
        out = csv.DictWriter(f, ("file", "original_path", "group"), delimiter="\t")
        out.writeheader()
        out.writerows(rows)
    return root / "train"


def test_the_fire_the_model_sees_is_kept_its_frames_in_video_order(train: Path) -> None:
    picks = rank(train, shared_model(DEFAULT_MODEL), fires=1, frames=3)
    assert [p.stem for p in picks] == ["v1_2", "v1_1", "v1_0"]  # frames f7, f8, f9
    assert {p.group for p in picks} == {"video1"} and {p.box for p in picks} == {0}
    both = rank(train, shared_model(DEFAULT_MODEL), fires=2, frames=2)
    assert len(both) == 4 and len({p.stem for p in both}) == 4
