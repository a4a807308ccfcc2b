"""The learned fire/smoke model as a view detector: multi-scale tiles, N-of-M confirmation.

Each sample scores the whole working view and its tiles in one batch. Per kind, the sample's
evidence is its best tile: a hit when that tile's probability reaches the threshold. A kind is
confirmed when ``confirm_n`` of the last ``confirm_m`` samples hit (a flicker of one frame
never alarms), and cleared only after ``clear_misses`` samples in a row fall below a lower
level (hysteresis: a fire that dims for a moment stays one detection).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

import numpy as np

from detectors.fire_model import DEFAULT_MODEL, FireSmokeModel, preprocess
from detectors.frame import Box, Image, Mask
from gridwatch.events import DetectionKind
from gridwatch.site_cameras import LearnedDetector

MIN_ALLOWED = 0.5
"""A tile mostly under a mask is not scored."""


@cache
def shared_model(path: Path = DEFAULT_MODEL, threads: int = 1) -> FireSmokeModel:
    """One ONNX session per process and model: every view of a worker shares it."""
    return FireSmokeModel(path, threads)


def tiles(shape: tuple[int, ...], grids: tuple[int, ...], overlap: float) -> list[Box]:
    """Boxes of a ``g``×``g`` grid of overlapping tiles for each ``g`` (1 = the whole view)."""
    h, w = shape[:2]
    out: list[Box] = []
    for g in grids:
        span = g - (g - 1) * overlap
        tw, th = round(w / span), round(h / span)
        for row in range(g):
            for col in range(g):
                x = min(w - tw, round(col * tw * (1 - overlap)))
                y = min(h - th, round(row * th * (1 - overlap)))
                out.append((x, y, tw, th))
    return out


@dataclass(frozen=True, slots=True)
class Change:
    """A kind confirmed or cleared on this view; the box is in pixels of the image observed."""

    kind: DetectionKind
    state: Literal["confirmed", "cleared"]
    box: Box
    confidence: float
    track_id: int


@dataclass(slots=True)
class _Confirmation:
    window: deque[bool]
    confirmed: bool = False
    below: int = 0
    box: Box = (0, 0, 0, 0)
    track_id: int = 0
    tracks: int = 0


class LearnedFireSmoke:
    """The ``learned`` detector of a view: its own confirmation state, a shared model."""

    def __init__(self, settings: LearnedDetector, model: FireSmokeModel | None = None) -> None:
        self.settings = settings
        self.model = model or shared_model(DEFAULT_MODEL, settings.threads)
        self.thresholds = {
            DetectionKind.FIRE: settings.fire_threshold,
            DetectionKind.SMOKE: settings.smoke_threshold,
        }
        self._state = {
            kind: _Confirmation(deque(maxlen=settings.confirm_m)) for kind in self.thresholds
        }
        self._tiles: list[Box] = []
        self._shape: tuple[int, ...] | None = None

    @property
    def pending(self) -> bool:
        return any(any(s.window) and not s.confirmed for s in self._state.values())

    def scores(self, work: Image, allowed: Mask) -> tuple[list[Box], np.ndarray]:
        """The scored tiles and their (fire, smoke) probabilities."""
        if work.shape != self._shape:
            self._shape = work.shape
            self._tiles = tiles(work.shape, self.settings.grids, self.settings.overlap)
        if not allowed.all():
            # masked ground (a chimney, a lit sign) is painted over, not merely left out
            work = work.copy()
            work[~allowed] = np.asarray(work[allowed].mean(axis=0) if allowed.any() else 0)
        boxes = [
            (x, y, w, h)
            for x, y, w, h in self._tiles
            if allowed[y : y + h, x : x + w].mean() >= MIN_ALLOWED
        ]
        if not boxes:
            return [], np.zeros((0, 2), np.float32)
        views = [work[y : y + h, x : x + w] for x, y, w, h in boxes]
        return boxes, self.model.run(preprocess(views))

    def observe(self, work: Image, allowed: Mask) -> list[Change]:
        boxes, probabilities = self.scores(work, allowed)
        changes: list[Change] = []
        for column, (kind, threshold) in enumerate(self.thresholds.items()):
            state = self._state[kind]
            if boxes:
                best = int(np.argmax(probabilities[:, column]))
                score, box = float(probabilities[best, column]), boxes[best]
            else:
                score, box = 0.0, state.box
            state.window.append(score >= threshold)
            if not state.confirmed:
                if sum(state.window) >= self.settings.confirm_n:
                    state.tracks += 1
                    state.confirmed, state.below, state.box = True, 0, box
                    state.track_id = state.tracks
                    changes.append(Change(kind, "confirmed", box, score, state.track_id))
                continue
            if score >= threshold:
                state.box = box
            state.below = state.below + 1 if score < threshold * self.settings.clear_ratio else 0
            if state.below >= self.settings.clear_misses:
                state.confirmed = False
                state.window.clear()
                changes.append(Change(kind, "cleared", state.box, score, state.track_id))
        return changes
