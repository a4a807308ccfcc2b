"""Construction watch in the live worker: one registered daily frame per view, per-view baseline.

A view (a watchtower preset, or a fixed camera) takes part when its vision has a
``construction_watch`` zone for it and ``detectors.construction_change`` is on. The first
healthy, settled frame of each day is registered onto the view's baseline and compared inside
the watch zones; a change that persists for ``detectors.construction_change.days`` observed
days is reported once, and again only after an operator has acknowledged a new baseline
(``gridwatch cameras ack-baseline``), which the store versions.

A day is ``construction_change.day_s`` long, counted in the frame's own time zone: one real day
on a site, a few seconds in a simulated run (compressed time), where the patrol's log speaks of
compressed days. The store keeps the calendar date a frame was taken either way.

A fixed camera places a change on the ground through its optics; a watchtower's bearing alone
fixes no range, so the patrol places it where the bearing first crosses one of the site's
``construction_watch`` map zones (``ground``), preferring the map zone the preset's image zone
is named for (``gridwatch.geo.ray_through``: the middle of the crossing).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import date, datetime

import shapely

from detectors.construction import ChangeReport, ConstructionWatch
from detectors.frame import Box, Frame, Image, Mask, scale_box, to_work
from detectors.zones import ZoneMap
from gridwatch.events import Point
from gridwatch.geo import ray_through
from gridwatch.site import Zone
from gridwatch.site_cameras import ImageZone, Vision
from gridwatch.site_detectors import REAL_DAY_S, ConstructionChangeSettings
from ingest.camera_evidence import BaselineStore

log = logging.getLogger(__name__)

WATCH_KIND = "construction_watch"


def day_of(ts: datetime, day_s: float = REAL_DAY_S) -> int:
    """The observed day ``ts`` falls in, counted from the epoch in ``ts``'s time zone: with a
    real day, the day of its calendar date."""
    offset = ts.utcoffset()
    local = ts.timestamp() + (offset.total_seconds() if offset is not None else 0.0)
    return math.floor(local / day_s)


@dataclass(frozen=True, slots=True)
class ConstructionChange:
    """A lasting change to report, in pixels of the frame as captured."""

    box: Box
    confidence: float
    report: ChangeReport


@dataclass
class _ViewState:
    watch: ConstructionWatch
    version: int
    reported: bool = False


@dataclass
class ConstructionPatrol:
    source_id: str
    vision: Vision
    store: BaselineStore
    ground: tuple[Zone, ...] = ()  # the site's construction_watch map zones
    _views: dict[int | None, _ViewState] = field(default_factory=dict)
    _seen: dict[int | None, int] = field(default_factory=dict)

    def watches(self, preset: int | None) -> bool:
        if self.vision.detectors.construction_change is None:
            return False
        return bool(self._image_zones(preset))

    def place(self, origin: Point, bearing_deg: float, preset: int | None) -> Point | None:
        """Where a change seen at ``bearing_deg`` from ``origin`` lies: the middle of the
        nearest crossing of a watched map zone, those the preset's image zones are named for
        first; None when the bearing crosses none."""
        names = {z.name for z in self._image_zones(preset)}
        named = [z for z in self.ground if z.name in names]
        for zones in (named, [z for z in self.ground if z not in named]):
            crossings = [
                hit
                for z in zones
                if (hit := ray_through(origin, bearing_deg, shapely.Polygon(z.polygon)))
            ]
            if crossings:
                return min(crossings, key=lambda hit: hit[1])[0]
        log.warning(
            "camera %s preset %s: bearing %.1f° crosses no construction-watch zone of the site",
            self.source_id,
            preset,
            bearing_deg,
        )
        return None

    def _image_zones(self, preset: int | None) -> list[ImageZone]:
        return [
            z
            for z in self.vision.zones
            if z.kind == WATCH_KIND and (z.preset is None or z.preset == preset)
        ]

    def due(self, frame: Frame) -> bool:
        """This view watches for construction and has not been observed today."""
        if frame.thermal or frame.image.ndim != 3 or not self.watches(frame.preset):
            return False
        return self._seen.get(frame.preset) != day_of(frame.ts, self.day_s)

    def observe(self, frame: Frame) -> ConstructionChange | None:
        """Take the day's frame for this view; a change to report, or None."""
        preset, day, taken = frame.preset, day_of(frame.ts, self.day_s), frame.ts.date()
        self._seen[preset] = day
        work = to_work(frame.image)
        self.store.save_daily(self.source_id, preset, work, taken)
        state = self._state(preset, work, taken)
        if state is None:
            return None
        if state.watch.baseline.shape != work.shape:
            log.warning(
                "camera %s preset %s: frame size changed, acknowledge a new baseline",
                self.source_id,
                preset,
            )
            return None
        report = state.watch.observe(work, day)
        log.info(
            "camera %s preset %s construction, %s %d: registered=%s (%s %.2f) changed=%d"
            " lasting=%d",
            self.source_id,
            preset,
            "day" if self.day_s == REAL_DAY_S else f"compressed day ({self.day_s:g} s)",
            day,
            report.registered,
            report.method,
            report.alignment,
            report.changed_blocks,
            len(report.confirmed),
        )
        if not report.confirmed or state.reported:
            return None
        state.reported = True
        xs = [b[0] for b in report.confirmed] + [b[0] + b[2] for b in report.confirmed]
        ys = [b[1] for b in report.confirmed] + [b[1] + b[3] for b in report.confirmed]
        box = (min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys))
        factor = frame.image.shape[1] / work.shape[1]
        confidence = min(0.6 + 0.05 * len(report.confirmed) + 0.2 * report.registered, 0.95)
        return ConstructionChange(scale_box(box, factor), confidence, report)

    def _state(self, preset: int | None, work: Image, day: date) -> _ViewState | None:
        """The view's watch, rebuilt when the stored baseline's version moved on."""
        record = self.store.record(self.source_id, preset)
        if record is None:
            self.store.start(self.source_id, preset, work, day)
            self._views.pop(preset, None)
            return None  # nothing to compare the first view with
        state = self._views.get(preset)
        if state is not None and state.version == record.version:
            return state
        baseline = self.store.baseline(self.source_id, preset)
        if baseline is None:
            return None
        watch = ConstructionWatch(baseline, self._mask(baseline.shape[:2], preset), days=self.days)
        state = _ViewState(watch, record.version)
        self._views[preset] = state
        return state

    @property
    def days(self) -> int:
        return self._settings.days

    @property
    def day_s(self) -> float:
        return self._settings.day_s

    @property
    def _settings(self) -> ConstructionChangeSettings:
        settings = self.vision.detectors.construction_change
        assert settings is not None  # noqa: S101  (only a watching view gets here)
        return settings

    def _mask(self, shape: tuple[int, int], preset: int | None) -> Mask | None:
        return ZoneMap(self.vision.zones, shape, preset).mask(WATCH_KIND)
