"""One view's analysis: health gates, motion gate, fire/smoke/thermal detectors, confirmation.

A fixed camera has one view; a watchtower has one per preset (its own background, references
and tracks), because each preset looks at a different scene.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Literal, Protocol

import cv2
import numpy as np

from detectors.fire import FireDetector, FireObservation, judge_fire
from detectors.frame import Box, Frame, Image, Mask, grey_of, scale_box, to_work
from detectors.health import HealthMonitor, Issue
from detectors.learned import Change, LearnedFireSmoke
from detectors.motion import GATE_WIDTH, MotionGate
from detectors.smoke import SmokeDetector, SmokeObservation, judge_smoke
from detectors.thermal import HotspotObservation, ThermalDetector, judge_hotspot
from detectors.tracking import Tracker, TrackEvent
from detectors.traffic import TrafficWatch
from detectors.zones import ZoneMap
from gridwatch.events import DetectionKind
from gridwatch.site_cameras import LearnedDetector, Vision

_DILATE = cv2.getStructuringElement(cv2.MORPH_RECT, (5, 5))


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


class ViewDetector(Protocol):
    """A fire/smoke detector of one view: the working image and where analysis is allowed in,
    confirmed and cleared kinds out, its own temporal state."""

    @property
    def pending(self) -> bool: ...

    def observe(self, work: Image, allowed: Mask) -> list[Change]: ...


def view_detector(settings: LearnedDetector) -> ViewDetector:
    """The detector a ``Vision`` settings block names (by its ``type``)."""
    return LearnedFireSmoke(settings)


class SceneAnalyzer:
    def __init__(self, vision: Vision, preset: int | None = None) -> None:
        self.vision = vision
        self.preset = preset
        self.health = HealthMonitor()
        self.gate = MotionGate()
        self._shape: tuple[int, ...] | None = None
        self._active: set[Issue] = set()
        self.fire_tracker: Tracker[FireObservation] | None = None
        self.smoke_tracker: Tracker[SmokeObservation] | None = None
        self.thermal_tracker: Tracker[HotspotObservation] | None = None
        self.learned = None if vision.learned is None else view_detector(vision.learned)
        self.traffic: TrafficWatch | None = None

    def _setup(self, frame: Frame, work: Image, small: Image) -> None:
        v = self.vision
        self._shape = frame.image.shape
        self._work_zones = ZoneMap(v.zones, work.shape[:2], self.preset)
        self._gate_zones = ZoneMap(v.zones, small.shape[:2], self.preset)
        wh, gh = work.shape[0], small.shape[0]
        self._work_horizon = None if v.horizon is None else round(v.horizon * wh)
        self._gate_horizon = None if v.horizon is None else round(v.horizon * gh)
        work_px, gate_px = work.shape[0] * work.shape[1], small.shape[0] * small.shape[1]
        self.fire = FireDetector(max(4, round(v.fire_min_area * work_px)))
        self.smoke = SmokeDetector(max(4, round(v.smoke_min_area * gate_px)))
        self.thermal = ThermalDetector(v.thermal_range_c, v.thermal_threshold_c, v.thermal_min_px)
        hits, misses = v.confirm_hits, v.clear_misses
        self.fire_tracker = Tracker(
            partial(judge_fire, horizon_row=self._work_horizon), hits, misses
        )
        self.smoke_tracker = Tracker(
            partial(judge_smoke, horizon_row=self._gate_horizon), hits, misses, keep=60
        )
        self.thermal_tracker = Tracker(
            partial(judge_hotspot, threshold_c=v.thermal_threshold_c), hits, misses
        )
        road = self._gate_zones.mask("road")
        if v.traffic is not None and road is not None:
            self.traffic = TrafficWatch(v.traffic, road)
        self.gate.reset()

    def analyse(self, frame: Frame) -> Analysis:
        work = to_work(frame.image)
        small = to_work(work, GATE_WIDTH)
        if frame.image.shape != self._shape:
            self._setup(frame, work, small)
        assert self.fire_tracker and self.smoke_tracker and self.thermal_tracker  # noqa: S101
        grey = grey_of(small)
        ts = frame.seconds
        if frame.thermal:
            issues = self.health.check(small, grey, ts, 0.0) & {Issue.FROZEN}
            changes = self._health_changes(issues)
            if issues:
                return Analysis((), changes, False, True)
            obs = self.thermal.observe(grey_of(work), ts, self._work_zones.allowed)
            hits = self._hits(
                self.thermal_tracker.update(obs), DetectionKind.THERMAL_HOTSPOT, frame, work
            )
            return Analysis(tuple(hits), changes, self.thermal_tracker.pending, False)
        holds = [
            scale_box(b, small.shape[1] / work.shape[1]) for b in self.fire_tracker.boxes()
        ] + self.smoke_tracker.boxes()
        saturation = np.asarray(cv2.cvtColor(small, cv2.COLOR_BGR2HSV)[..., 1], np.uint8)
        motion = self.gate.update(grey, saturation, ts, holds)
        issues = self.health.check(small, grey, ts, motion.changed_fraction)
        changes = self._health_changes(issues)
        if Issue.GLOBAL_CHANGE in issues:
            self.gate.reset()
            self.fire.reset()
        if issues:
            return Analysis((), changes, False, True)
        road_hits = [] if self.traffic is None else self.traffic.observe(small, ts)
        hits = [self._change_hit(c, frame, small) for c in road_hits]
        if self.learned is not None:
            found = self.learned.observe(work, self._work_zones.allowed)
            hits += [self._change_hit(c, frame, work) for c in found]
            return Analysis(tuple(hits), changes, self.learned.pending, False)
        moving = cv2.dilate((motion.fast | motion.slow).astype(np.uint8), _DILATE)
        roi = cv2.resize(moving, (work.shape[1], work.shape[0]), interpolation=cv2.INTER_NEAREST)
        fire_obs = self.fire.observe(work, ts, roi.astype(np.bool_) & self._work_zones.allowed)
        hits += self._hits(self.fire_tracker.update(fire_obs), DetectionKind.FIRE, frame, work)
        background = self.gate.slow_background
        assert background is not None  # noqa: S101
        smoke_obs = self.smoke.observe(
            saturation,
            cv2.GaussianBlur(grey, (5, 5), 0).astype(np.float32),
            background,
            motion.slow,
            motion.brightening,
            motion.desaturation,
            self._gate_zones.allowed,
            ts,
        )
        hits += self._hits(self.smoke_tracker.update(smoke_obs), DetectionKind.SMOKE, frame, small)
        pending = self.fire_tracker.pending or self.smoke_tracker.pending
        return Analysis(tuple(hits), changes, pending, False)

    def _change_hit(self, change: Change, frame: Frame, measured_on: Image) -> Hit:
        box = scale_box(change.box, frame.image.shape[1] / measured_on.shape[1])
        zone_map = self._work_zones if measured_on.shape[1] != GATE_WIDTH else self._gate_zones
        zones = zone_map.kinds_at(change.box)
        return Hit(change.kind, change.state, box, change.confidence, change.track_id, zones)

    def _health_changes(self, issues: set[Issue]) -> tuple[HealthChange, ...]:
        raised = [HealthChange(i, True) for i in sorted(issues - self._active)]
        cleared = [HealthChange(i, False) for i in sorted(self._active - issues)]
        self._active = set(issues)
        return tuple(raised + cleared)

    def _hits(
        self,
        events: list[TrackEvent[FireObservation]]
        | list[TrackEvent[SmokeObservation]]
        | list[TrackEvent[HotspotObservation]],
        kind: DetectionKind,
        frame: Frame,
        measured_on: Image,
    ) -> list[Hit]:
        factor = frame.image.shape[1] / measured_on.shape[1]
        zone_map = self._work_zones if measured_on.shape[1] != GATE_WIDTH else self._gate_zones
        return [
            Hit(
                kind,
                "confirmed" if e.state == "confirmed" else "cleared",
                scale_box(e.track.box, factor),
                e.track.confidence,
                e.track.id,
                zone_map.kinds_at(e.track.box),
            )
            for e in events
        ]
