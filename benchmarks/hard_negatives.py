"""Operators' false alarms as training negatives (``gridwatch train detector --include-feedback``).

Each fire or smoke mark whose snapshot was kept (``gridwatch.store.feedback``) becomes an image
of the ``none`` class: the snapshot cropped around the detection's box with context, as the
model sees a tile of a camera view, or the whole snapshot when the box is unknown. Images are
named by their SHA-256, and one whose bytes are already in the training set or the export is
left out. No torch here: the export runs, and is tested, without the ``train`` extra.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import psycopg

from benchmarks.image_set import LabelledImage
from detectors.frame import Box, Image, grow
from gridwatch.events import DetectionKind
from gridwatch.store.feedback import snapshots

CONTEXT = 0.5
"""Of the box's size added on every side, as the evidence store's crop does."""
MIN_SIDE = 160
"""Smallest crop side in pixels: a box of a few dozen pixels is judged on its surroundings."""
JPEG_QUALITY = 90
MODEL_KINDS = frozenset({DetectionKind.FIRE.value, DetectionKind.SMOKE.value})
"""The detections the fire/smoke model raises: only their rejections teach it."""
PREFIX = "feedback"  # the source group (``<source>_<hash>.jpg``) of every exported image


@dataclass(frozen=True, slots=True)
class Export:
    images: tuple[LabelledImage, ...]  # what was added, in the order marked
    duplicates: int  # the same bytes as an image already in the set or exported before
    unreadable: int  # a kept snapshot that does not decode
    without_snapshot: int  # marks whose snapshot was not found when they were made
    other_kinds: int  # marks of what the model does not judge (a thermal hotspot, a change)

    @property
    def added(self) -> int:
        return len(self.images)


def crop(image: Image, box: Box | None) -> Image:
    """The region the detection was about, with context; the whole image without a box."""
    if box is None:
        return image
    x, y, w, h = grow(box, CONTEXT, image.shape)
    height, width = image.shape[:2]
    w2, h2 = min(width, max(w, MIN_SIDE)), min(height, max(h, MIN_SIDE))
    x = min(max(0, x - (w2 - w) // 2), width - w2)
    y = min(max(0, y - (h2 - h) // 2), height - h2)
    return image[y : y + h2, x : x + w2]


def export_hard_negatives(
    conn: psycopg.Connection, folder: Path, known: Iterable[Path] = ()
) -> Export:
    """Write every kept false alarm as ``folder/none/feedback_<sha256>.jpg`` and return them;
    ``known`` are the training images whose bytes must not come in twice."""
    target = folder / "none"
    target.mkdir(parents=True, exist_ok=True)
    seen = {hashlib.sha256(path.read_bytes()).hexdigest() for path in known}
    added: list[LabelledImage] = []
    kept = duplicates = unreadable = other_kinds = 0
    for mark, data in snapshots(conn):
        kept += 1
        if mark.kind not in MODEL_KINDS:
            other_kinds += 1
            continue
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if decoded is None:
            unreadable += 1
            continue
        ok, encoded = cv2.imencode(
            ".jpg",
            crop(np.asarray(decoded, np.uint8), mark.bbox),
            [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY],
        )
        if not ok:
            unreadable += 1
            continue
        body = encoded.tobytes()
        digest = hashlib.sha256(body).hexdigest()
        if digest in seen:
            duplicates += 1
            continue
        seen.add(digest)
        path = target / f"{PREFIX}_{digest}.jpg"
        path.write_bytes(body)
        added.append(LabelledImage(path=path, label="none"))
    (total,) = conn.execute("SELECT count(*) FROM false_alarms").fetchone() or (0,)
    return Export(
        images=tuple(added),
        duplicates=duplicates,
        unreadable=unreadable,
        without_snapshot=int(total) - kept,
        other_kinds=other_kinds,
    )
