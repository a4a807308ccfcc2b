"""One view's analysis: health gates, the motion gate, then the view's configured detectors.

A fixed camera has one view; a watchtower has one per preset (its own background, references
and detector state), because each preset looks at a different scene. The detectors are built
from ``vision.detectors`` through ``DETECTORS``, the registry of settings class →
implementation; ``detectors.view`` describes the seam a new detector plugs into.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np

from detectors.fire import FireColour
from detectors.frame import Box, Frame, Image, grey_of, scale_box, to_work
from detectors.health import HealthMonitor, Issue
from detectors.learned import LearnedFireSmoke
from detectors.motion import GATE_WIDTH, MotionGate
from detectors.smoke import SmokePlume
from detectors.thermal import ThermalHotspots
from detectors.traffic import TrafficObstruction
from detectors.view import Change, GateView, ViewDetector, ViewGeometry, ViewSample
from detectors.zones import ZoneMap
from gridwatch.events import DetectionKind
from gridwatch.site_cameras import Vision
from gridwatch.site_detectors import (
    ConstructionChangeSettings,
    Detectors,
    FireColourSettings,
    FireSmokeModelSettings,
    SmokePlumeSettings,
    ThermalHotspotSettings,
    TrafficDetector,
)

DETECTORS: Mapping[type[Any], Callable[[Any, ViewGeometry], ViewDetector]] = {
    FireSmokeModelSettings: LearnedFireSmoke,
    FireColourSettings: FireColour,
    SmokePlumeSettings: SmokePlume,
    ThermalHotspotSettings: ThermalHotspots,
    TrafficDetector: TrafficObstruction,
}
"""Per-sample view detectors by settings class, one per block of ``Detectors``."""

DAILY: frozenset[type[Any]] = frozenset({ConstructionChangeSettings})
"""Blocks of ``Detectors`` run once a day, not per sample (``ingest.camera_construction``)."""


def view_detectors(detectors: Detectors, geometry: ViewGeometry) -> list[ViewDetector]:
    """One detector per configured per-sample block, in ``Detectors`` field order."""
    blocks = (getattr(detectors, name) for name in type(detectors).model_fields)
    return [
        DETECTORS[type(b)](b, geometry) for b in blocks if b is not None and type(b) not in DAILY
    ]


@dataclass(frozen=True, slots=True)
class Hit:
    """A confirmed detection starting, or one ending."""

    kind: DetectionKind
    state: Literal["confirmed", "cleared"]
    box: Box  # pixels of the frame as captured
    confidence: float
    track_id: int
    zones: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class HealthChange:
    issue: Issue
    active: bool


@dataclass(frozen=True, slots=True)
class Analysis:
    hits: tuple[Hit, ...]
    health: tuple[HealthChange, ...]
    pending: bool  # a candidate is being watched: sample faster
    suppressed: bool  # a health gate is active: nothing was detected


class SceneAnalyzer:
    def __init__(self, vision: Vision, preset: int | None = None) -> None:
        self.vision = vision
        self.preset = preset
        self.health = HealthMonitor()
        self.gate = MotionGate()
        self._shape: tuple[int, ...] | None = None
        self._active: set[Issue] = set()
        self.detectors: list[ViewDetector] = []

    def _setup(self, frame: Frame, work: Image, small: Image) -> None:
        v = self.vision
        self._shape = frame.image.shape
        wh, gh = work.shape[0], small.shape[0]
        self.geometry = ViewGeometry(
            work_shape=(work.shape[0], work.shape[1]),
            gate_shape=(small.shape[0], small.shape[1]),
            zones=ZoneMap(v.zones, work.shape[:2], self.preset),
            gate_zones=ZoneMap(v.zones, small.shape[:2], self.preset),
            work_horizon=None if v.horizon is None else round(v.horizon * wh),
            gate_horizon=None if v.horizon is None else round(v.horizon * gh),
        )
        self.detectors = view_detectors(v.detectors, self.geometry)
        self.gate.reset()

    def analyse(self, frame: Frame) -> Analysis:
        work = to_work(frame.image)
        small = to_work(work, GATE_WIDTH)
        if frame.image.shape != self._shape:
            self._setup(frame, work, small)
        grey = grey_of(small)
        ts = frame.seconds
        spectrum = "thermal" if frame.thermal else "visible"
        active = [d for d in self.detectors if d.spectrum == spectrum]
        if frame.thermal:
            issues = self.health.check(small, grey, ts, 0.0) & {Issue.FROZEN}
            changes = self._health_changes(issues)
            if issues:
                return Analysis(hits=(), health=changes, pending=False, suppressed=True)
            sample = ViewSample(ts, work, None)
            return self._detect(active, sample, frame, changes)
        factor = self.geometry.gate_factor
        holds = [scale_box(b, factor) for d in active for b in d.holds()]
        saturation = np.asarray(cv2.cvtColor(small, cv2.COLOR_BGR2HSV)[..., 1], np.uint8)
        motion = self.gate.update(grey, saturation, ts, holds)
        issues = self.health.check(small, grey, ts, motion.changed_fraction)
        changes = self._health_changes(issues)
        if Issue.GLOBAL_CHANGE in issues:
            self.gate.reset()
            for detector in active:
                detector.reset()
        if issues:
            return Analysis(hits=(), health=changes, pending=False, suppressed=True)
        background = self.gate.slow_background
        assert background is not None  # noqa: S101
        sample = ViewSample(ts, work, GateView(grey, saturation, motion, background))
        return self._detect(active, sample, frame, changes)

    def _detect(
        self,
        active: list[ViewDetector],
        sample: ViewSample,
        frame: Frame,
        health: tuple[HealthChange, ...],
    ) -> Analysis:
        hits = [self._hit(c, frame) for d in active for c in d.observe(sample)]
        pending = any(d.pending for d in active)
        return Analysis(hits=tuple(hits), health=health, pending=pending, suppressed=False)

    def _hit(self, change: Change, frame: Frame) -> Hit:
        box = scale_box(change.box, frame.image.shape[1] / self.geometry.work_shape[1])
        zones = self.geometry.zones.kinds_at(change.box)
        return Hit(
            kind=change.kind,
            state=change.state,
            box=box,
            confidence=change.confidence,
            track_id=change.track_id,
            zones=zones,
        )

    def _health_changes(self, issues: set[Issue]) -> tuple[HealthChange, ...]:
        raised = [HealthChange(i, True) for i in sorted(issues - self._active)]
        cleared = [HealthChange(i, False) for i in sorted(self._active - issues)]
        self._active = set(issues)
        return tuple(raised + cleared)
