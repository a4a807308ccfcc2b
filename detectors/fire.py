"""Open flame: emissive fire colours in moving regions, confirmed by flicker and anchoring.

The colour rule follows the classic RGB/YCbCr fire-pixel rules (Chen 2004, Celik 2009): red
dominates, green clearly above blue (orange to yellow, which rejects pure-red signs, tail lights
and flags), and red chroma above blue chroma. A flame also has a bright core, flickers (its
pixels switch on and off between samples far more than a rigid object's do) and stays where it
burns, which a passing red car or a tail light does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from statistics import mean, median

import cv2
import numpy as np

from detectors.frame import Box, Image, Mask, components
from detectors.tracking import Tracker, changes
from detectors.view import Change, Spectrum, ViewGeometry, ViewSample
from gridwatch.events import DetectionKind
from gridwatch.site_detectors import FireColourSettings

_DILATE = cv2.getStructuringElement(cv2.MORPH_RECT, (5, 5))


@dataclass(frozen=True, slots=True)
class FireObservation:
    ts: float
    box: Box  # working-frame pixels
    area: int
    toggle: float  # share of the region's fire pixels that switched since the last sample
    core_row: float | None  # mean row of near-white / saturated-yellow pixels: the emitter


def fire_pixels(image: Image) -> Mask:
    """Per-pixel fire colour test on a BGR image."""
    b, g, r = (image[..., i].astype(np.int16) for i in range(3))
    ycrcb = cv2.cvtColor(image, cv2.COLOR_BGR2YCrCb)
    cr, cb = ycrcb[..., 1].astype(np.int16), ycrcb[..., 2].astype(np.int16)
    colour = (r > 150) & (r >= g) & (g > b + 20) & (r - b > 70) & (cr - cb > 25)
    hot = (r > 235) & (g > 190)  # the white-yellow core saturates the sensor
    return colour | (hot & (b < g))


class FireDetector:
    def __init__(self, min_area: int) -> None:
        self.min_area = min_area
        self._previous: Mask | None = None

    def reset(self) -> None:
        self._previous = None

    def observe(self, image: Image, ts: float, roi: Mask) -> list[FireObservation]:
        """Fire-coloured regions inside ``roi`` (moving, unmasked pixels) of a working frame."""
        mask = np.zeros(roi.shape, np.bool_)
        ys, xs = np.nonzero(roi)
        if len(ys):
            y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
            mask[y0:y1, x0:x1] = fire_pixels(image[y0:y1, x0:x1]) & roi[y0:y1, x0:x1]
        previous = self._previous if self._previous is not None else mask
        self._previous = mask
        out: list[FireObservation] = []
        for box, area in components(mask, self.min_area):
            x, y, w, h = box
            now, before = mask[y : y + h, x : x + w], previous[y : y + h, x : x + w]
            union = np.count_nonzero(now | before)
            toggle = np.count_nonzero(now ^ before) / union if union else 0.0
            crop = image[y : y + h, x : x + w]
            rows = np.nonzero((crop[..., 2] > 235) & (crop[..., 1] > 180))[0]
            core_row = float(y + rows.mean()) if len(rows) else None
            out.append(FireObservation(ts, box, area, toggle, core_row))
        return out


def judge_fire(history: Sequence[FireObservation], horizon_row: int | None) -> float | None:
    """Confidence that a tracked region is a flame, or None."""
    recent = history[-12:]
    first, last = recent[0], recent[-1]
    width = median(o.box[2] for o in recent)
    height = median(o.box[3] for o in recent)
    bottoms = [(o.box[0] + o.box[2] / 2, o.box[1] + o.box[3]) for o in recent]
    drift = max(
        max(x for x, _ in bottoms) - min(x for x, _ in bottoms),
        max(y for _, y in bottoms) - min(y for _, y in bottoms) - height / 2,
    )
    if drift > 0.75 * width + 3:
        return None  # moves like an object, not a fire burning in place
    cores = [o.core_row for o in recent if o.core_row is not None]
    if len(cores) < len(recent) / 2:
        return None  # no bright emitter: a lit or painted surface
    if horizon_row is not None and median(cores) <= horizon_row:
        return None  # the bright part is in the sky: the sun, its glare, a lit cloud
    flicker = mean(o.toggle for o in recent[1:])
    areas = [o.area for o in recent]
    spread = float(np.std(areas) / max(mean(areas), 1.0))
    if flicker < 0.2 and spread < 0.12:
        return None  # steady: a lamp, a lit sign
    if last.area < 0.4 * first.area:
        return None  # dying away
    growth = min(max(last.area / max(first.area, 1) - 1.0, 0.0), 1.0)
    return float(min(0.55 + 0.25 * min(flicker / 0.4, 1.0) + 0.15 * growth, 0.99))


class FireColour:
    """``vision.detectors.fire_colour``: the colour rule on moving pixels, tracked and judged."""

    spectrum: Spectrum = "visible"

    def __init__(self, settings: FireColourSettings, geometry: ViewGeometry) -> None:
        h, w = geometry.work_shape
        self.geometry = geometry
        self.detector = FireDetector(max(4, round(settings.min_area * h * w)))
        self.tracker: Tracker[FireObservation] = Tracker(
            partial(judge_fire, horizon_row=geometry.work_horizon),
            settings.confirm_hits,
            settings.clear_misses,
        )

    @property
    def pending(self) -> bool:
        return self.tracker.pending

    def holds(self) -> list[Box]:
        return self.tracker.boxes()

    def reset(self) -> None:
        self.detector.reset()

    def observe(self, sample: ViewSample) -> list[Change]:
        assert sample.gate is not None  # noqa: S101  (a visible detector)
        motion = sample.gate.motion
        moving = cv2.dilate((motion.fast | motion.slow).astype(np.uint8), _DILATE)
        h, w = self.geometry.work_shape
        roi = cv2.resize(moving, (w, h), interpolation=cv2.INTER_NEAREST).astype(np.bool_)
        found = self.detector.observe(sample.work, sample.ts, roi & self.geometry.zones.allowed)
        return changes(self.tracker.update(found), DetectionKind.FIRE, 1.0)
