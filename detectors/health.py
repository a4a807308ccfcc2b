"""Camera health gates. While one is active, detection is suppressed and the worker publishes a
camera-health detection instead: a broken picture must not look like a quiet scene, nor like a
fire.

References (sharpness, contrast, colour) are learnt from the camera's own healthy frames and
drift slowly, so dusk is not blur while a lens knocked out of focus or fog rolling in is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import cv2
import numpy as np

from detectors.frame import Image


class Issue(StrEnum):
    STREAM_LOST = "stream_lost"
    FROZEN = "frozen"
    BLUR = "blur"
    LOW_VISIBILITY = "low_visibility"
    IR_MODE = "ir_mode"
    GLOBAL_CHANGE = "global_change"
    STUCK_PTZ = "stuck_ptz"


@dataclass(frozen=True, slots=True)
class Picture:
    """What the gates measure on one gate-size frame."""

    mean: float
    contrast: float
    sharpness: float  # edge energy over contrast: blur lowers it, fog and dusk do not
    colour: float  # mean chroma distance from grey

    @classmethod
    def of(cls, small: Image, grey: Image) -> Picture:
        mean, std = cv2.meanStdDev(grey)
        contrast = float(std[0, 0])
        edges = float(np.abs(cv2.Laplacian(grey, cv2.CV_16S, ksize=3)).mean())
        if small.ndim == 3:
            ycrcb = cv2.cvtColor(small, cv2.COLOR_BGR2YCrCb).astype(np.int16)
            colour = float(np.abs(ycrcb[..., 1:] - 128).mean())
        else:
            colour = 0.0
        return cls(float(mean[0, 0]), contrast, edges / (contrast + 1.0), colour)


def same_view(a: Image, b: Image, tolerance: float = 2.0) -> bool:
    """Two grey frames show the same picture (a PTZ that did not move).

    Compared at 80 pixels wide, where sensor noise and compression average out while two
    presets' different scenes still differ by tens of grey levels."""
    if a.shape != b.shape:
        return False
    h, w = a.shape[:2]
    size = (min(w, 80), max(1, round(h * min(w, 80) / w)))
    small_a = cv2.resize(a, size, interpolation=cv2.INTER_AREA)
    small_b = cv2.resize(b, size, interpolation=cv2.INTER_AREA)
    return float(cv2.absdiff(small_a, small_b).mean()) < tolerance


class HealthMonitor:
    def __init__(
        self,
        frozen_s: float = 10.0,
        blur_ratio: float = 0.45,
        visibility_ratio: float = 0.45,
        global_change: float = 0.5,
        settle_s: float = 3.0,
        tau_s: float = 900.0,
    ) -> None:
        self.frozen_s = frozen_s
        self.blur_ratio = blur_ratio
        self.visibility_ratio = visibility_ratio
        self.global_change = global_change
        self.settle_s = settle_s
        self.tau_s = tau_s
        self._reference: Picture | None = None
        self._previous: Image | None = None
        self._still_since: float | None = None
        self._changed_at: float | None = None
        self._last_ts = 0.0
        self.active: set[Issue] = set()

    def check(self, small: Image, grey: Image, ts: float, changed_fraction: float) -> set[Issue]:
        """The issues this frame shows. ``changed_fraction`` comes from the motion gate."""
        picture = Picture.of(small, grey)
        issues: set[Issue] = set()
        if self._previous is not None and float(cv2.absdiff(grey, self._previous).mean()) < 0.15:
            self._still_since = self._still_since if self._still_since is not None else ts
            if ts - self._still_since >= self.frozen_s:
                issues.add(Issue.FROZEN)
        else:
            self._still_since = None
        self._previous = grey
        if changed_fraction >= self.global_change:
            self._changed_at = ts
        if self._changed_at is not None and ts - self._changed_at < self.settle_s:
            issues.add(Issue.GLOBAL_CHANGE)
        ref = self._reference
        if ref is not None:
            if picture.sharpness < self.blur_ratio * ref.sharpness:
                issues.add(Issue.BLUR)
            if (
                picture.contrast < self.visibility_ratio * ref.contrast
                and picture.mean >= 0.8 * ref.mean
            ):
                issues.add(Issue.LOW_VISIBILITY)
            if ref.colour > 4.0 and picture.colour < 1.0 and small.ndim == 3:
                issues.add(Issue.IR_MODE)
        if not issues or ref is None:
            self._learn(picture, ts)
        self._last_ts = ts
        self.active = issues
        return issues

    def _learn(self, picture: Picture, ts: float) -> None:
        ref = self._reference
        if ref is None:
            self._reference = picture
            return
        a = 1.0 - math.exp(-max(ts - self._last_ts, 0.0) / self.tau_s)
        self._reference = Picture(
            ref.mean + a * (picture.mean - ref.mean),
            ref.contrast + a * (picture.contrast - ref.contrast),
            ref.sharpness + a * (picture.sharpness - ref.sharpness),
            ref.colour + a * (picture.colour - ref.colour),
        )
