"""Real fire and smoke, cut from the training images, to composite into generated scenes.

Drawn flames are enough for the colour rules but not for a model trained on photographs, so a
scenario with ``footage`` pastes real flames and smoke instead: the boxes of the YOLO labels in
``fire-smoke/train/labels`` (never ``val/`` or ``videos/``, which measure the model), cropped
with a margin and blended through a feathered ellipse. The images are read at run time from the
shared data (``gridwatch.shared_data``); without them ``load`` returns None and the scene draws
its flames, with a warning.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from gridwatch.shared_data import FIRE_SMOKE

log = logging.getLogger(__name__)
FIRE, SMOKE = 0, 1  # the label files' classes
Canvas = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Cutout:
    image: Canvas  # BGR
    alpha: Canvas  # 0..1, one channel

    def paste(self, img: Canvas, x: float, bottom: float, width: float, opacity: float) -> None:
        """Blend onto ``img`` with its bottom centre at (x, bottom), ``width`` pixels wide."""
        h0, w0 = self.alpha.shape
        w = max(4, round(width))
        h = max(4, round(h0 * w / w0))
        left, top = round(x - w / 2), round(bottom - h)
        x0, y0 = max(left, 0), max(top, 0)
        x1, y1 = min(left + w, img.shape[1]), min(top + h, img.shape[0])
        if x1 <= x0 or y1 <= y0:
            return
        image = cv2.resize(self.image, (w, h))[y0 - top : y1 - top, x0 - left : x1 - left]
        alpha = cv2.resize(self.alpha, (w, h))[y0 - top : y1 - top, x0 - left : x1 - left]
        a = (alpha * opacity)[..., None]
        img[y0:y1, x0:x1] = img[y0:y1, x0:x1] * (1 - a) + image * a


@dataclass(frozen=True)
class Footage:
    fire: tuple[Cutout, ...]
    smoke: tuple[Cutout, ...]


def _cutouts(root: Path, cls: int, limit: int) -> list[Cutout]:
    out: list[Cutout] = []
    for label in sorted((root / "labels").glob("*.txt")):
        if len(out) >= limit:
            break
        image_path = next((p for p in (root / d / f"{label.stem}.jpg" for d in ("fire", "smoke"))
                           if p.is_file()), None)  # fmt: skip
        if image_path is None:
            continue
        boxes = [
            [float(v) for v in line.split()[1:5]]
            for line in label.read_text().splitlines()
            if line.split()[:1] == [str(cls)]
        ]
        boxes = [b for b in boxes if b[2] * b[3] >= 0.04]  # big enough to stay sharp
        if not boxes:
            continue
        image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
        if image is None:
            continue
        ih, iw = image.shape[:2]
        xc, yc, bw, bh = max(boxes, key=lambda b: b[2] * b[3])
        x0, x1 = round((xc - bw * 0.6) * iw), round((xc + bw * 0.6) * iw)
        y0, y1 = round((yc - bh * 0.6) * ih), round((yc + bh * 0.6) * ih)
        crop = image[max(y0, 0) : min(y1, ih), max(x0, 0) : min(x1, iw)].astype(np.float32)
        if min(crop.shape[:2]) < 16:
            continue
        ch, cw = crop.shape[:2]
        alpha = np.zeros((ch, cw), np.float32)
        cv2.ellipse(alpha, (cw // 2, ch // 2), (cw * 2 // 5, ch * 2 // 5), 0, 0, 360, 1.0, -1)
        soft = cv2.GaussianBlur(alpha, (0, 0), max(cw, ch) / 12)
        out.append(Cutout(crop, np.asarray(soft, np.float32)))
    return out


@functools.cache
def load(root: Path = FIRE_SMOKE / "train", limit: int = 12) -> Footage | None:
    """Up to ``limit`` fire and smoke cutouts of the training images, or None without them."""
    if not (root / "labels").is_dir():
        log.warning("no real fire footage in %s: scenes draw their flames", root)
        return None
    footage = Footage(tuple(_cutouts(root, FIRE, limit)), tuple(_cutouts(root, SMOKE, limit)))
    if not footage.fire or not footage.smoke:
        log.warning("no labelled fire or smoke boxes in %s: scenes draw their flames", root)
        return None
    return footage
