"""Thermal hotspots on a watchtower's radiometric (or calibrated grey) thermal frames.

Grey levels map linearly onto the configured temperature range. Sun-warmed rock and roofs stay
below the threshold; a single hot pixel is sensor noise (size filter); a hotspot covering a
large share of the view is the sun or a calibration fault, not a fire.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from detectors.frame import Box, Image, Mask, components, grey_of
from detectors.tracking import Tracker, changes
from detectors.view import Change, Spectrum, ViewGeometry, ViewSample
from gridwatch.events import DetectionKind
from gridwatch.site_detectors import ThermalHotspotSettings

MAX_SHARE = 0.05


@dataclass(frozen=True, slots=True)
class HotspotObservation:
    ts: float
    box: Box  # working pixels
    area: int
    peak_c: float


class ThermalDetector:
    def __init__(self, range_c: tuple[float, float], threshold_c: float, min_px: int) -> None:
        low, high = range_c
        self._scale = (high - low) / 255.0
        self._low = low
        self.threshold_c = threshold_c
        self.min_px = min_px

    def temperature(self, grey: Image) -> np.ndarray[tuple[int, ...], np.dtype[np.float32]]:
        return (grey.astype(np.float32) * self._scale + self._low).astype(np.float32)

    def observe(self, grey: Image, ts: float, allowed: Mask) -> list[HotspotObservation]:
        celsius = self.temperature(grey)
        hot = (celsius >= self.threshold_c) & allowed
        limit = MAX_SHARE * hot.size
        out: list[HotspotObservation] = []
        for box, area in components(hot, self.min_px):
            if area > limit:
                continue
            x, y, w, h = box
            peak = float(celsius[y : y + h, x : x + w].max())
            out.append(HotspotObservation(ts, box, area, peak))
        return out


def judge_hotspot(history: Sequence[HotspotObservation], threshold_c: float) -> float | None:
    """A hotspot that stays put is a fire; one that moves is a vehicle or an animal."""
    xs = [o.box[0] + o.box[2] / 2 for o in history]
    ys = [o.box[1] + o.box[3] / 2 for o in history]
    size = max(max(o.box[2], o.box[3]) for o in history)
    if max(xs) - min(xs) > size + 2 or max(ys) - min(ys) > size + 2:
        return None
    excess = max(o.peak_c for o in history) - threshold_c
    return float(min(0.6 + excess / 400.0, 0.99))


class ThermalHotspots:
    """``vision.detectors.thermal_hotspot``: hot regions of thermal frames that stay put."""

    spectrum: Spectrum = "thermal"

    def __init__(self, settings: ThermalHotspotSettings, geometry: ViewGeometry) -> None:
        self.geometry = geometry
        self.detector = ThermalDetector(settings.range_c, settings.threshold_c, settings.min_px)
        self.tracker: Tracker[HotspotObservation] = Tracker(
            partial(judge_hotspot, threshold_c=settings.threshold_c),
            settings.confirm_hits,
            settings.clear_misses,
        )

    @property
    def pending(self) -> bool:
        return self.tracker.pending

    def holds(self) -> list[Box]:
        return []  # thermal frames have no motion gate

    def reset(self) -> None:
        """Nothing frame-to-frame: each thermal frame is judged on its own temperatures."""

    def observe(self, sample: ViewSample) -> list[Change]:
        found = self.detector.observe(grey_of(sample.work), sample.ts, self.geometry.zones.allowed)
        return changes(self.tracker.update(found), DetectionKind.THERMAL_HOTSPOT, 1.0)
