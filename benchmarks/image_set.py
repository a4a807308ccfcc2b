"""A labelled image folder, ``DIR/{fire,smoke,none}/*.jpg``, as training and evaluation read it.

``fire/`` holds images with visible flames (with or without smoke), ``smoke/`` smoke without
flames, ``none/`` neither. ``DIR/labels/<stem>.txt`` holds YOLO boxes (0 fire, 1 smoke) where the
source gave them: they tell which fire images also show smoke.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from detectors.frame import Image
from gridwatch.errors import GridwatchError
from gridwatch.shared_data import FIRE_SMOKE

SHARED_SET = FIRE_SMOKE
"""The real images the model is trained and measured on (``gridwatch.shared_data``)."""
LABELS = ("fire", "smoke", "none")
SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
FIRE_BOX, SMOKE_BOX = 0, 1
Centre = tuple[float, float]
"""x, y of a box centre in fractions of the image's width and height."""


@dataclass(frozen=True, slots=True)
class LabelledImage:
    path: Path
    label: str  # one of LABELS
    fire_boxes: tuple[Centre, ...] = ()
    smoke_boxes: tuple[Centre, ...] = ()
    largest_box: float | None = None  # its own class's largest box, share of the image area

    @property
    def smoke_box(self) -> bool:
        """Its label file has a smoke box (so a fire image also shows smoke)."""
        return bool(self.smoke_boxes)

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
            centres: dict[int, list[Centre]] = {FIRE_BOX: [], SMOKE_BOX: []}
            areas: dict[int, list[float]] = {FIRE_BOX: [], SMOKE_BOX: []}
            boxes = directory / "labels" / f"{path.stem}.txt"
            for line in boxes.read_text().splitlines() if boxes.is_file() else ():
                fields = line.split()
                if len(fields) == 5 and int(fields[0]) in centres:
                    centres[int(fields[0])].append((float(fields[1]), float(fields[2])))
                    areas[int(fields[0])].append(float(fields[3]) * float(fields[4]))
            own = areas[FIRE_BOX] if label == "fire" else areas[SMOKE_BOX]
            images.append(
                LabelledImage(
                    path=path,
                    label=label,
                    fire_boxes=tuple(centres[FIRE_BOX]),
                    smoke_boxes=tuple(centres[SMOKE_BOX]),
                    largest_box=max(own, default=None),
                )
            )
    return images


def read(path: Path) -> Image:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise GridwatchError(f"{path}: not a readable image")
    return np.asarray(image, np.uint8)
