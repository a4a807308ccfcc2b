"""Traffic safety on a fixed camera's road zones: stalled vehicles and obstructions, water.

Two backgrounds (Porikli's dual-background scheme): a short-term one absorbs whatever stops
within seconds, a long-term one keeps the empty road and learns only where nothing stands or
moves. Road that differs from the long-term background but matches the short-term one holds
something that has stopped; it is confirmed once it has stayed ``stall_s`` (seen in most of the
samples since), and cleared when it has been gone for ``clear_s``. What fools a single
background is handled before that comparison:

- passing traffic, pedestrians and headlight beams differ from the short-term background too,
  so they are never stationary; a blob that comes and goes (beams in a busy lane) is dropped;
- a cloud shadow, dusk or a road darkened by rain scale a whole neighbourhood: the long-term
  background is compared through a gain map, the median ratio of frame to background over a
  window far wider than a vehicle, and a pixel whose hue and texture stayed is only lit
  differently;
- camera shake: each frame is registered to the long-term background by phase correlation
  (a larger jump is a moved camera, which the health gates report as a global change);
- start-up: the long-term background is the median of the first samples, and a vehicle it
  learnt anyway (parked then, gone now) stands out of the road in the background rather than
  in the frame: it is relearnt, not reported.

Water over the road is road whose texture (|Laplacian| over local brightness, so shadows and
dusk leave it alone) fell below ``texture_ratio`` of the empty road's and whose appearance
changed, over ``water_share`` of the road, for ``water_s``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from detectors.frame import Box, Image, Mask, components, to_work
from detectors.motion import GATE_WIDTH
from detectors.view import Change, Spectrum, ViewGeometry, ViewSample
from gridwatch.events import DetectionKind, ZoneKind
from gridwatch.site_detectors import TrafficDetector

Floats = npt.NDArray[np.float32]
MAX_SHIFT = 0.05
"""Largest registered shake, as a share of the width; beyond it the view itself moved."""
GAIN_WINDOW = 0.2
"""Width of the gain map's median window, as a share of the frame's width."""
TEXTURE_FLOOR = 0.02
"""Road whose empty texture is below this (normalised) tells water from asphalt poorly."""
PRESENCE = 0.6
"""Share of the samples since it stopped in which an obstruction must be seen."""
CLEAR_MISSES = 5
"""Samples in a row without it after which a still object is gone."""
WARM_UP = 15
"""Samples whose median is the first long-term background."""
_KERNEL = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))


@dataclass(slots=True)
class _Still:
    """Something standing on the road, tracked while it stays."""

    id: int
    box: Box
    since: float  # first seen still
    seen: float  # last seen still
    confirmed: bool = False
    samples: int = 0  # samples since it was first seen
    hits: int = 1  # samples it was seen in
    seen_now: bool = True
    missed: int = 0  # samples in a row it was not seen in


@dataclass(slots=True)
class _Water:
    since: float | None = None
    seen: float = -math.inf
    confirmed: bool = False
    box: Box = (0, 0, 0, 0)
    share: float = 0.0
    id: int = 0


def _grey(colour: Floats) -> Floats:
    return np.asarray(cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY), np.float32)


def _chromaticity(colour: Floats) -> Floats:
    """Each channel's share of the pixel's brightness: what a change of light leaves alone."""
    return np.asarray(colour / (colour.sum(axis=2, keepdims=True) + 24.0), np.float32)


def _largest_channel(diff: Floats) -> Floats:
    b, g, r = cv2.split(diff)  # far quicker than numpy's max over the last axis
    return np.asarray(cv2.max(cv2.max(b, g), r), np.float32)


def _standout(colour: Floats, box: Box) -> float:
    """How far a box's mean colour is from the ring of road around it."""
    x, y, w, h = box
    rows, cols = colour.shape[:2]
    x0, y0 = max(0, x - w // 2), max(0, y - h // 2)
    x1, y1 = min(cols, x + w + w // 2), min(rows, y + h + h // 2)
    outer = colour[y0:y1, x0:x1].reshape(-1, 3)
    inner = colour[y : y + h, x : x + w].reshape(-1, 3)
    if len(outer) <= len(inner):
        return 0.0
    ring = (outer.sum(axis=0) - inner.sum(axis=0)) / (len(outer) - len(inner))
    return float(np.abs(inner.mean(axis=0) - ring).max())


def overlap(a: Box, b: Box) -> float:
    """Intersection over the smaller box: a still object seen whole, then in parts."""
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    smaller = min(a[2] * a[3], b[2] * b[3])
    return ix * iy / smaller if smaller else 0.0


def union(a: Box, b: Box) -> Box:
    x0, y0 = min(a[0], b[0]), min(a[1], b[1])
    x1, y1 = max(a[0] + a[2], b[0] + b[2]), max(a[1] + a[3], b[1] + b[3])
    return (x0, y0, x1 - x0, y1 - y0)


def texture(grey: Floats) -> Floats:
    """Local edge energy over local brightness: a lighting change scales both."""
    lap = np.abs(cv2.Laplacian(grey, cv2.CV_32F, ksize=3))
    energy = cv2.blur(lap, (9, 9))
    brightness = cv2.blur(grey, (9, 9))
    # the constant keeps sensor noise on a dark road from counting as texture
    return np.asarray(energy / (brightness + 30.0), np.float32)


class TrafficWatch:
    """The traffic detector of one view: its backgrounds, the still objects and the water."""

    def __init__(self, settings: TrafficDetector, road: Mask) -> None:
        self.settings = settings
        self.road = road
        h, w = road.shape
        self._min_area = max(4, round(settings.min_area * h * w))
        window = max(3, round(GAIN_WINDOW * w)) | 1
        self._gain_window = window
        self._warm: list[Floats] = []
        self._long: Floats | None = None  # BGR, as the frames
        self._short: Floats | None = None
        self._last_ts = 0.0
        self._stills: list[_Still] = []
        self._water = _Water()
        self._ids = 0

    def observe(self, image: Image, ts: float) -> list[Change]:
        """One BGR sample of the road's size; boxes of the changes are in its pixels."""
        s = self.settings
        colour = cv2.GaussianBlur(image, (5, 5), 0).astype(np.float32)
        if self._long is None or self._short is None:
            return self._warm_up(colour, ts)
        colour, valid = self._register(colour)
        dt = max(ts - self._last_ts, 1e-3)
        self._last_ts = ts
        grey, long_grey = _grey(colour), _grey(self._long)
        gain = self._gain(grey, long_grey)
        # a colour channel apart, after the lighting's gain: a red car on grey asphalt differs
        # little in grey levels and a lot in red
        off = _largest_channel(np.abs(colour - self._long * gain[..., None]))
        far = off > np.maximum(s.threshold, 0.15 * long_grey * gain)
        far &= ~self._lit(colour, grey, long_grey)
        moving = _largest_channel(np.abs(colour - self._short)) > s.threshold
        road = self.road & valid
        water = self._water_pixels(grey, long_grey, far, moving, road)
        wet = cv2.dilate(water.astype(np.uint8), _KERNEL, iterations=2).astype(np.bool_)
        if self._water.since is not None:
            # the flooded stretch as a whole: patches that still show texture are water too
            x, y, bw, bh = self._water.box
            wet[y : y + bh, x : x + bw] = True
        still = self._clean(far & ~moving & road & ~wet)
        changes = self._track_stills(still, colour, ts)
        changes += self._track_water(water, road, ts)
        learn = ~far & ~moving & ~wet
        for tracked in self._stills:
            x, y, bw, bh = tracked.box
            learn[y : y + bh, x : x + bw] = False
        a_long = 1.0 - math.exp(-dt / s.long_tau_s)
        a_short = np.float32(1.0 - math.exp(-dt / s.short_tau_s))
        self._short += a_short * (colour - self._short)
        rate = np.where(learn, np.float32(a_long), np.float32(0))[..., None]
        self._long += rate * (colour - self._long)
        return changes

    def _warm_up(self, colour: Floats, ts: float) -> list[Change]:
        """The long-term background starts as the median of the first samples: traffic
        passing then is not in it, as it would be in the first frame alone."""
        self._warm.append(colour)
        self._last_ts = ts
        if len(self._warm) >= WARM_UP:
            self._long = np.median(np.stack(self._warm), axis=0).astype(np.float32)
            self._short = colour.copy()
            self._warm = []
        return []

    def _lit(self, colour: Floats, grey: Floats, long_grey: Floats) -> Mask:
        """Only the light changed: the same hue and the same texture (cloud shadows at their
        edges, where the gain map is too coarse, headlight beams)."""
        assert self._long is not None  # noqa: S101
        hue = _largest_channel(np.abs(_chromaticity(colour) - _chromaticity(self._long)))
        now, then = texture(grey), texture(long_grey)
        same: Mask = (hue < 0.03) & (np.abs(now - then) < 0.5 * then + 0.01)
        return same

    def _register(self, colour: Floats) -> tuple[Floats, Mask]:
        """The frame shifted onto the long-term background, and where it has pixels."""
        assert self._long is not None  # noqa: S101
        h, w = colour.shape[:2]
        window = cv2.createHanningWindow((w, h), cv2.CV_32F)
        # OpenCV applies the window to its inputs in place: give it fresh arrays
        (dx, dy), response = cv2.phaseCorrelate(_grey(self._long), _grey(colour), window)
        valid = np.ones((h, w), np.bool_)
        if response < 0.1 or math.hypot(dx, dy) < 0.5 or math.hypot(dx, dy) > MAX_SHIFT * w:
            return colour, valid
        back = np.array([[1, 0, -dx], [0, 1, -dy]], np.float32)
        moved = np.asarray(cv2.warpAffine(colour, back, (w, h), flags=cv2.INTER_LINEAR))
        inside = cv2.warpAffine(np.ones((h, w), np.uint8), back, (w, h), flags=cv2.INTER_NEAREST)
        margin = math.ceil(max(abs(dx), abs(dy))) + 1
        return moved.astype(np.float32), cv2.erode(inside, _KERNEL, iterations=margin) > 0

    def _gain(self, grey: Floats, long_grey: Floats) -> Floats:
        """Frame over long-term background, median-filtered wider than any vehicle."""
        ratio = np.clip((grey + 8.0) / (long_grey + 8.0) * 64.0, 0, 255).astype(np.uint8)
        # the median runs on a quarter-size map: as wide a window for a sixteenth of the work
        h, w = ratio.shape
        small = cv2.resize(ratio, (max(1, w // 4), max(1, h // 4)), interpolation=cv2.INTER_AREA)
        median = cv2.medianBlur(small, max(3, (self._gain_window // 4) | 1))
        full = cv2.resize(median, (w, h), interpolation=cv2.INTER_LINEAR)
        return np.asarray(full, np.float32) / np.float32(64.0)

    def _water_pixels(
        self, grey: Floats, long_grey: Floats, far: Mask, moving: Mask, road: Mask
    ) -> Mask:
        empty = texture(long_grey)
        smooth = (empty > TEXTURE_FLOOR) & (texture(grey) < self.settings.texture_ratio * empty)
        # water wide enough moves the gain map too: a large raw change also counts
        changed = far | (np.abs(grey - long_grey) > 2 * self.settings.threshold)
        return self._clean(smooth & changed & ~moving & road)

    def _track_stills(self, still: Mask, colour: Floats, ts: float) -> list[Change]:
        s, long = self.settings, self._long
        assert long is not None  # noqa: S101
        changes: list[Change] = []
        # one vehicle seen in parts (glass, body, a passing car in front) is one object
        joined = cv2.dilate(still.astype(np.uint8), _KERNEL, iterations=2)
        for box, _ in components(joined.astype(np.bool_), self._min_area):
            if _standout(colour, box) < 0.5 * _standout(long, box):
                # a ghost: what stood out of the road is in the background, not in the frame
                self._relearn(box, still, colour)
                continue
            match = max(self._stills, key=lambda t: overlap(t.box, box), default=None)
            if match is not None and overlap(match.box, box) > 0.3:
                if not match.confirmed:  # the parts seen in this sample
                    match.box = union(match.box, box) if match.seen_now else box
                match.seen = ts
                match.hits += 0 if match.seen_now else 1
                match.seen_now = True
            else:
                self._ids += 1
                self._stills.append(_Still(self._ids, box, ts, ts))
        kept: list[_Still] = []
        for t in self._stills:
            t.samples += 1
            t.missed = 0 if t.seen_now else t.missed + 1
            steady = t.hits >= PRESENCE * t.samples
            if t.seen_now and steady and not t.confirmed and ts - t.since >= s.stall_s:
                t.confirmed = True
                changes.append(self._change(t, "confirmed", ts))
            t.seen_now = False
            # absence is counted in samples analysed, so that a spell the health gates
            # suppressed is no absence: a transient (beams, a queue that moves on) is
            # forgotten after a few, a confirmed obstruction once it has been gone clear_s
            if t.confirmed:
                gone = ts - t.seen >= s.clear_s and t.missed >= CLEAR_MISSES
            else:
                gone = not steady or t.missed >= CLEAR_MISSES
            if not gone:
                kept.append(t)
            elif t.confirmed:
                changes.append(self._change(t, "cleared", ts))
        self._stills = kept
        return changes

    def _change(self, t: _Still, state: str, ts: float) -> Change:
        held = min((ts - t.since) / self.settings.stall_s, 1.0)
        return Change(
            kind=DetectionKind.TRAFFIC_OBSTRUCTION,
            state="confirmed" if state == "confirmed" else "cleared",
            box=t.box,
            confidence=round(0.6 + 0.3 * held, 3),
            track_id=t.id,
        )

    def _relearn(self, box: Box, still: Mask, colour: Floats) -> None:
        assert self._long is not None  # noqa: S101
        x, y, w, h = box
        region = still[y : y + h, x : x + w]
        self._long[y : y + h, x : x + w][region] = colour[y : y + h, x : x + w][region]

    def _track_water(self, water: Mask, road: Mask, ts: float) -> list[Change]:
        s, state = self.settings, self._water
        area = int(np.count_nonzero(road))
        state.share = float(np.count_nonzero(water)) / area if area else 0.0
        # hysteresis: once confirmed, water stays while half the share is still under it
        if state.share >= s.water_share * (0.5 if state.confirmed else 1.0):
            if state.since is None:
                self._ids += 1
                state.since, state.id = ts, self._ids
            state.seen = ts
            ys, xs = np.nonzero(water)
            box = (int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1)
            state.box = box if not state.confirmed else state.box
            if not state.confirmed and ts - state.since >= s.water_s:
                state.confirmed = True
                return [self._water_change("confirmed")]
        elif ts - state.seen >= s.clear_s and state.since is not None:
            was = state.confirmed
            state.since, state.confirmed = None, False
            if was:
                return [self._water_change("cleared")]
        return []

    def _water_change(self, state: str) -> Change:
        return Change(
            kind=DetectionKind.ROAD_WATER,
            state="confirmed" if state == "confirmed" else "cleared",
            box=self._water.box,
            confidence=round(min(0.5 + self._water.share, 0.95), 3),
            track_id=self._water.id,
        )

    @staticmethod
    def _clean(mask: Mask) -> Mask:
        opened = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, _KERNEL)
        return cv2.dilate(opened, _KERNEL).astype(np.bool_)


class TrafficObstruction:
    """``vision.detectors.traffic``: the view's ``TrafficWatch`` on its road zones at gate size
    (a view without a road zone is refused by the settings)."""

    spectrum: Spectrum = "visible"
    pending = False  # a stall takes minutes: no faster sampling helps confirm it

    def __init__(self, settings: TrafficDetector, geometry: ViewGeometry) -> None:
        road = geometry.gate_zones.mask(ZoneKind.ROAD)
        self.geometry = geometry
        self.watch = None if road is None else TrafficWatch(settings, road)

    def holds(self) -> list[Box]:
        """None: the motion gate's slow background plays no part in the road's two."""
        return []

    def reset(self) -> None:
        """Nothing: each frame is registered to the long-term background, and a lighting switch
        is what the gain map absorbs."""

    def observe(self, sample: ViewSample) -> list[Change]:
        if self.watch is None:
            return []
        found = self.watch.observe(to_work(sample.work, GATE_WIDTH), sample.ts)
        return [
            Change(
                kind=c.kind,
                state=c.state,
                box=self.geometry.to_work(c.box),
                confidence=c.confidence,
                track_id=c.track_id,
            )
            for c in found
        ]
