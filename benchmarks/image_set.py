"""A labelled image folder, ``DIR/{fire,smoke,none}/*.jpg``, as training and evaluation read it.

``fire/`` holds images with visible flames (with or without smoke), ``smoke/`` smoke without
flames, ``none/`` neither. ``DIR/labels/<stem>.txt`` holds YOLO boxes (0 fire, 1 smoke) where the
source gave them: they tell which fire images also show smoke.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from detectors.frame import Image
from gridwatch.errors import GridwatchError

_SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SHARED_SET = Path(os.environ.get("GRIDWATCH_SHARED_DATA", _SHARED_DATA)) / "fire-smoke"
"""The real images the model is trained and measured on: ``../shared/data/fire-smoke`` beside
the repository (never in it), or under ``$GRIDWATCH_SHARED_DATA``."""
LABELS = ("fire", "smoke", "none")
SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
SMOKE_BOX = "1"


@dataclass(frozen=True, slots=True)
class LabelledImage:
    path: Path
    label: str  # one of LABELS
    smoke_box: bool  # its label file has a smoke box (so a fire image also shows smoke)

    @property
    def source(self) -> str:
        """The source group named by the file (``<source>_<hash>.jpg``)."""
        return self.path.stem.rsplit("_", 1)[0]


def scan(directory: Path) -> list[LabelledImage]:
    """Every image of ``directory``'s class folders, sorted, so a run is reproducible."""
    missing = [label for label in LABELS if not (directory / label).is_dir()]
    if missing:
        raise GridwatchError(
            f"{directory}: no {', '.join(missing)} folder (expected fire, smoke, none)"
        )
    images: list[LabelledImage] = []
    for label in LABELS:
        for path in sorted((directory / label).iterdir()):
            if path.suffix.lower() not in SUFFIXES:
                continue
            boxes = directory / "labels" / f"{path.stem}.txt"
            smoke = boxes.is_file() and any(
                line.split()[:1] == [SMOKE_BOX] for line in boxes.read_text().splitlines()
            )
            images.append(LabelledImage(path=path, label=label, smoke_box=smoke))
    return images


def read(path: Path) -> Image:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise GridwatchError(f"{path}: not a readable image")
    return np.asarray(image, np.uint8)
