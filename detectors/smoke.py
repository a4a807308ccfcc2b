"""Smoke: slow, diffuse change that is grey, brightens the terrain behind it and blurs it, and
that rises and grows from a source on the ground.

Found against the slow background, because a young plume changes too little between samples
for frame differencing. Shadows darken (rejected), clouds drift sideways in the sky (not
anchored below the horizon), fog covers everything at once (too large, and the health gate
calls it low visibility), a swaying tree has no lasting rise or growth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from statistics import median

import cv2
import numpy as np
import numpy.typing as npt

from detectors.frame import Box, Image, Mask, components
from detectors.tracking import Tracker, changes
from detectors.view import Change, Spectrum, ViewGeometry, ViewSample
from gridwatch.events import DetectionKind
from gridwatch.site_detectors import SmokePlumeSettings

MAX_SHARE = 0.3  # a "plume" over a third of the view is weather or a lighting change


@dataclass(frozen=True, slots=True)
class SmokeObservation:
    ts: float
    box: Box  # gate pixels
    area: int
    desaturation: float  # how much greyer than the background
    brightening: float
    edge_ratio: float  # edge energy now over edge energy in the background


def edge_energy(grey: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return np.abs(cv2.Laplacian(grey, cv2.CV_32F, ksize=3))


class SmokeDetector:
    def __init__(self, min_area: int) -> None:
        self.min_area = min_area

    def observe(
        self,
        saturation: Image,
        grey: npt.NDArray[np.float32],
        background: npt.NDArray[np.float32],
        slow: Mask,
        brightening: npt.NDArray[np.float32],
        desaturation: npt.NDArray[np.float32],
        allowed: Mask,
        ts: float,
    ) -> list[SmokeObservation]:
        """Smoke-like regions of the slow-change mask, all at gate size."""
        greyish = (saturation < 110) & (desaturation > 4.0)
        candidate = slow & allowed & greyish & (brightening > 0)
        found = components(candidate, self.min_area)
        if not found:
            return []
        edges_now, edges_bg = edge_energy(grey), edge_energy(background)
        limit = MAX_SHARE * slow.size
        out: list[SmokeObservation] = []
        for box, area in found:
            if area > limit:
                continue
            x, y, w, h = box
            sel = candidate[y : y + h, x : x + w]
            greyer = float(desaturation[y : y + h, x : x + w][sel].mean())
            bright = float(brightening[y : y + h, x : x + w][sel].mean())
            before = float(edges_bg[y : y + h, x : x + w][sel].mean())
            after = float(edges_now[y : y + h, x : x + w][sel].mean())
            ratio = after / before if before > 1.0 else 1.0
            if bright > 2.0 and (greyer > 10.0 or ratio < 0.85):
                out.append(SmokeObservation(ts, box, area, greyer, bright, ratio))
        return out


def _trend(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares slope of ys over xs and the correlation coefficient."""
    x, y = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0, 0.0
    slope = float(np.polyfit(x, y, 1)[0])
    return slope, float(np.corrcoef(x, y)[0, 1])


def judge_smoke(
    history: Sequence[SmokeObservation], horizon_row: int | None, min_span_s: float = 6.0
) -> float | None:
    """Confidence that a tracked region is a rising, growing plume from the ground, or None."""
    span = history[-1].ts - history[0].ts
    if span < min_span_s:
        return None
    ts = [o.ts for o in history]
    tops = [float(o.box[1]) for o in history]
    areas = [float(o.area) for o in history]
    bottoms = [(o.box[0] + o.box[2] / 2, float(o.box[1] + o.box[3])) for o in history]
    width = median(o.box[2] for o in history)
    height = median(o.box[3] for o in history)
    if horizon_row is not None and median(y for _, y in bottoms[-5:]) <= horizon_row:
        return None  # all in the sky: cloud
    base_x = [x for x, _ in bottoms]
    if max(base_x) - min(base_x) > 1.0 * width + 2:
        return None  # the whole thing drifts: cloud, fog bank, vehicle dust trail
    rise_slope, rise_r = _trend(ts, tops)
    grow_slope, grow_r = _trend(ts, areas)
    rising = rise_slope < 0 and rise_r < -0.5 and tops[0] - tops[-1] >= 0.15 * height
    growing = grow_slope > 0 and grow_r > 0.5 and areas[-1] >= 1.25 * areas[0]
    if not (rising or growing):
        return None
    diffuse = median(o.edge_ratio for o in history) < 0.9
    return float(min(0.5 + 0.15 * rising + 0.15 * growing + 0.15 * diffuse, 0.95))


class SmokePlume:
    """``vision.detectors.smoke_plume``: the plume rule at gate size, tracked and judged."""

    spectrum: Spectrum = "visible"

    def __init__(self, settings: SmokePlumeSettings, geometry: ViewGeometry) -> None:
        h, w = geometry.gate_shape
        self.geometry = geometry
        self.detector = SmokeDetector(max(4, round(settings.min_area * h * w)))
        self.tracker: Tracker[SmokeObservation] = Tracker(
            partial(judge_smoke, horizon_row=geometry.gate_horizon),
            settings.confirm_hits,
            settings.clear_misses,
            keep=60,
        )

    @property
    def pending(self) -> bool:
        return self.tracker.pending

    def holds(self) -> list[Box]:
        return [self.geometry.to_work(b) for b in self.tracker.boxes()]

    def reset(self) -> None:
        """Nothing frame-to-frame: the plume rule works against the gate's slow background."""

    def observe(self, sample: ViewSample) -> list[Change]:
        gate = sample.gate
        assert gate is not None  # noqa: S101  (a visible detector)
        found = self.detector.observe(
            gate.saturation,
            cv2.GaussianBlur(gate.grey, (5, 5), 0).astype(np.float32),
            gate.background,
            gate.motion.slow,
            gate.motion.brightening,
            gate.motion.desaturation,
            self.geometry.gate_zones.allowed,
            sample.ts,
        )
        return changes(
            self.tracker.update(found), DetectionKind.SMOKE, 1 / self.geometry.gate_factor
        )
