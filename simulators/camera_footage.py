"""Real fire and smoke, cut from the training images, to composite into generated scenes.

Drawn flames are enough for the colour rules but not for a model trained on photographs, so a
scenario with ``footage`` pastes real flames and smoke instead: the boxes of the YOLO labels in
``fire-smoke/train/labels`` (never ``val/`` or ``videos/``, which measure the model). A flame's
alpha comes from its own colour (bright, red over blue), so it is pasted without the scene it
burnt in; smoke, which has no colour of its own, through a feathered ellipse. One fire is the
frames of one source video, played in turn, so a scene shows one fire flickering rather than a
new fire every moment.

Which boxes are used is fixed by ``footage_picks.tsv`` beside this module: the crops the
packaged model scores highest when pasted small into a generated scene, ranked by
``gridwatch train footage`` (``benchmarks.footage_picks``) and kept with the model. The images
are read at run time from the shared data (``gridwatch.shared_data``); without them ``load``
returns None and the scene draws its flames, with a warning.
"""

from __future__ import annotations

import csv
import functools
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

from gridwatch.shared_data import FIRE_SMOKE

log = logging.getLogger(__name__)
Kind = Literal["fire", "smoke"]
CLASSES: dict[str, Kind] = {"0": "fire", "1": "smoke"}  # the label files' classes
MARGIN = 0.6  # half the crop's side, in box sides: the box and a rim of what surrounds it
MIN_AREA = 0.01  # smaller boxes, as a share of the image, are too blurred to enlarge
PICKS = Path(__file__).with_name("footage_picks.tsv")
FRAME_S = 0.3  # how long each frame of a fire's video shows: a flicker, not a new fire
SMOKE_OPACITY = 0.7  # the sky or hillside shows through
Canvas = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Growth:
    """A pasted fire's or plume's width, as a share of the frame's, from its onset on."""

    start: float
    full: float
    seconds: float

    def at(self, since: float) -> float:
        return self.start + (self.full - self.start) * min(max(since, 0.0) / self.seconds, 1.0)


FIRE = Growth(start=0.07, full=0.12, seconds=5.0)
SMOKE = Growth(start=0.15, full=0.3, seconds=10.0)


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
class Pick:
    """One labelled box: ``group`` is the fire (a source video) its image belongs to."""

    kind: Kind
    group: str
    order: int  # the frame's place in its video
    stem: str
    box: int  # line of the label file
    score: float = 0.0  # the model's, pasted (``benchmarks.footage_picks``)


@dataclass(frozen=True)
class Footage:
    fire: tuple[tuple[Cutout, ...], ...]  # per fire, its frames in playing order
    smoke: tuple[tuple[Cutout, ...], ...]


def candidates(root: Path = FIRE_SMOKE / "train") -> Iterator[Pick]:
    """Every labelled fire or smoke box of ``root`` big enough to paste."""
    sources = root.parent / "SOURCES.tsv"
    groups: dict[str, tuple[str, int]] = {}
    if sources.is_file():
        with sources.open(newline="") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                frame = re.search(r"_f(\d+)", row["original_path"])
                groups[Path(row["file"]).stem] = (row["group"], int(frame[1]) if frame else 0)
    for label in sorted((root / "labels").glob("*.txt")):
        group, order = groups.get(label.stem, (label.stem, 0))
        for line_no, line in enumerate(label.read_text().splitlines()):
            fields = line.split()
            if len(fields) == 5 and fields[0] in CLASSES:
                _, _, w, h = (float(v) for v in fields[1:])
                if w * h >= MIN_AREA:
                    kind = CLASSES[fields[0]]
                    yield Pick(kind=kind, group=group, order=order, stem=label.stem, box=line_no)


def _image_of(root: Path, stem: str) -> Path | None:
    return next(
        (p for p in (root / d / f"{stem}.jpg" for d in ("fire", "smoke")) if p.is_file()), None
    )


def crop(root: Path, pick: Pick) -> Canvas | None:
    """The box with its rim, centred on the box (so a paste at x puts the fire at x)."""
    path = _image_of(root, pick.stem)
    image = None if path is None else cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        return None
    lines = (root / "labels" / f"{pick.stem}.txt").read_text().splitlines()
    xc, yc, bw, bh = (float(v) for v in lines[pick.box].split()[1:5])
    ih, iw = image.shape[:2]
    cx, cy = xc * iw, yc * ih
    hw = min(bw * MARGIN * iw, cx, iw - cx)
    hh = min(bh * MARGIN * ih, cy, ih - cy)
    out = image[round(cy - hh) : round(cy + hh), round(cx - hw) : round(cx + hw)]
    return out.astype(np.float32) if min(out.shape[:2]) >= 16 else None


def _ellipse(shape: tuple[int, ...], axes: float, blur: float) -> Canvas:
    """A feathered ellipse filling ``axes`` of the crop: no straight edge of the crop shows."""
    h, w = shape[:2]
    alpha = np.zeros((h, w), np.float32)
    cv2.ellipse(alpha, (w // 2, h // 2), (round(w * axes), round(h * axes)), 0, 0, 360, 1.0, -1)
    return np.asarray(cv2.GaussianBlur(alpha, (0, 0), max(w, h) * blur), np.float32)


def fire_alpha(image: Canvas) -> Canvas:
    """Opaque where the crop glows like flame (red well over blue and bright, or a white-hot
    core), softened a little and faded out towards the crop's edges."""
    value = image.max(axis=2)
    flame = np.clip((image[..., 2] - image[..., 0] - 30) / 90, 0, 1) * np.clip(
        (value - 100) / 80, 0, 1
    )
    key = np.maximum(flame, np.clip((value - 200) / 40, 0, 1))
    size = max(image.shape[:2])
    key = cv2.dilate(key, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
    key = cv2.GaussianBlur(key, (0, 0), size / 40)
    return np.asarray(np.clip(key * 1.3, 0, 1) * _ellipse(image.shape, 0.45, 1 / 15), np.float32)


def smoke_alpha(image: Canvas) -> Canvas:
    """A feathered ellipse: smoke has no colour to key on."""
    return _ellipse(image.shape, 0.4, 1 / 12)


def smoke_image(image: Canvas) -> Canvas:
    """Mostly grey: what else the crop shows (walls, sky, signs) fades into the plume's haze."""
    grey = image.mean(axis=2, keepdims=True)
    return np.asarray(grey + (image - grey) * 0.35, np.float32)


def cutout(root: Path, pick: Pick) -> Cutout | None:
    image = crop(root, pick)
    if image is None:
        return None
    if pick.kind == "fire":
        return Cutout(image, fire_alpha(image))
    return Cutout(smoke_image(image), smoke_alpha(image))


def read_picks(path: Path = PICKS) -> list[Pick]:
    with path.open(newline="") as f:
        return [
            Pick(
                kind=CLASSES[row["class"]],
                group=row["group"],
                order=int(row["order"]),
                stem=row["stem"],
                box=int(row["box"]),
                score=float(row["score"]),
            )
            for row in csv.DictReader(f, delimiter="\t")
        ]


def write_picks(picks: Iterable[Pick], path: Path = PICKS) -> None:
    number = {kind: cls for cls, kind in CLASSES.items()}
    with path.open("w", newline="") as f:
        out = csv.writer(f, delimiter="\t", lineterminator="\n")
        out.writerow(("class", "group", "order", "stem", "box", "score"))
        for p in picks:
            out.writerow((number[p.kind], p.group, p.order, p.stem, p.box, f"{p.score:.4f}"))


def _loops(root: Path, picks: list[Pick], kind: Kind) -> tuple[tuple[Cutout, ...], ...]:
    groups: dict[str, list[tuple[int, Cutout]]] = {}
    for p in picks:
        if p.kind == kind and (cut := cutout(root, p)) is not None:
            groups.setdefault(p.group, []).append((p.order, cut))
    return tuple(
        tuple(c for _, c in sorted(frames, key=lambda f: f[0]))
        for _, frames in sorted(groups.items())
    )


@functools.cache
def load(root: Path = FIRE_SMOKE / "train", picks: Path = PICKS) -> Footage | None:
    """The picked fires and plumes of the training images, or None without them."""
    if not (root / "labels").is_dir():
        log.warning("no real fire footage in %s: scenes draw their flames", root)
        return None
    chosen = read_picks(picks)
    footage = Footage(_loops(root, chosen, "fire"), _loops(root, chosen, "smoke"))
    if not footage.fire or not footage.smoke:
        log.warning("the picked fire and smoke boxes are not in %s: scenes draw their flames", root)
        return None
    return footage
