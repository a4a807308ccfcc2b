"""Motion gate: cheap change detection on a downscaled frame, with two background rates.

A fast background (seconds) finds what moves now: flames, people, cars, swaying branches. A slow
background (a minute) finds what changed slowly: a plume thickening over tens of seconds is
invisible frame to frame but stands out against the scene as it was. The slow background does
not learn inside held regions (live tracks), so a smoke column is never absorbed while watched.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from detectors.frame import Box, Image, Mask, components

GATE_WIDTH = 320
_KERNEL = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))


@dataclass(frozen=True, slots=True)
class Motion:
    fast: Mask  # changed against the fast background, at gate size
    slow: Mask  # changed against the slow background, at gate size
    changed_fraction: float  # share of the frame that changed since the last sample
    boxes: tuple[Box, ...]  # regions of fast or slow change, at gate size
    brightening: npt.NDArray[np.float32]  # frame minus slow background, grey levels
    desaturation: npt.NDArray[np.float32]  # slow background's saturation minus the frame's


class MotionGate:
    def __init__(
        self, tau_fast_s: float = 1.5, tau_slow_s: float = 90.0, threshold: float = 9.0
    ) -> None:
        self.tau_fast_s = tau_fast_s
        self.tau_slow_s = tau_slow_s
        self.threshold = threshold
        self._fast: npt.NDArray[np.float32] | None = None
        self._slow: npt.NDArray[np.float32] | None = None
        self._last: npt.NDArray[np.float32] | None = None
        self._saturation: npt.NDArray[np.float32] | None = None
        self._last_ts = 0.0

    def reset(self) -> None:
        """Forget the scene (after a lighting switch or a preset move)."""
        self._fast = self._slow = self._last = self._saturation = None

    @property
    def slow_background(self) -> npt.NDArray[np.float32] | None:
        return self._slow

    def update(self, grey: Image, saturation: Image, ts: float, hold: Iterable[Box] = ()) -> Motion:
        """Gate-size grey and HSV saturation; ``hold`` boxes (gate size) keep the slow
        background as it was: smoke lowers saturation, which lighting alone does not."""
        g = cv2.GaussianBlur(grey, (5, 5), 0).astype(np.float32)
        sat = cv2.GaussianBlur(saturation, (5, 5), 0).astype(np.float32)
        if (
            self._fast is None
            or self._slow is None
            or self._last is None
            or self._saturation is None
        ):
            self._fast, self._slow, self._last, self._last_ts = g.copy(), g.copy(), g, ts
            self._saturation = sat.copy()
        dt = max(ts - self._last_ts, 1e-3)
        fast_diff = np.abs(g - self._fast)
        slow_diff = g - self._slow
        desaturation = self._saturation - sat
        step = np.abs(g - self._last)
        fast = self._clean(fast_diff > self.threshold)
        slow = self._clean(np.abs(slow_diff) > self.threshold)
        changed = float(np.count_nonzero(step > 2 * self.threshold)) / step.size
        a_fast = 1.0 - math.exp(-dt / self.tau_fast_s)
        a_slow = 1.0 - math.exp(-dt / self.tau_slow_s)
        self._fast += a_fast * (g - self._fast)
        learn = np.full(g.shape, a_slow, np.float32)
        for x, y, w, h in hold:
            learn[y : y + h, x : x + w] = 0.0
        self._slow += learn * (g - self._slow)
        self._saturation += learn * (sat - self._saturation)
        self._last, self._last_ts = g, ts
        boxes = tuple(box for box, _ in components(fast | slow, 2))
        return Motion(fast, slow, changed, boxes, slow_diff, desaturation)

    @staticmethod
    def _clean(mask: Mask) -> Mask:
        opened = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, _KERNEL)
        return cv2.dilate(opened, _KERNEL).astype(np.bool_)
