"""The learned fire/smoke model as a view detector: the whole view, change-gated tiles, N-of-M
confirmation per region, hysteresis.

Every sample scores the whole working view. Tiles of the configured grids are scored only where
the view changed against the motion gate's slow background (a lamp, a lit sign or a reflection
that is always there never changes, and on real night scenes small tiles of such lights score
as smoke or fire), only while the view as a whole holds still (a moving or re-lit view changes
everywhere, and its tiles say nothing), and at a stricter threshold than the whole view; a
tile too saturated to be grey (emergency lights, a sunset) is no smoke evidence. A
kind is confirmed when one region — the whole view, or one and the same tile — hits in
``confirm_n`` of the last ``confirm_m`` samples, so hits scattered over tiles never add up.
It is cleared after ``clear_misses`` samples in a row whose every score is below
``clear_ratio`` × its threshold (hysteresis: a fire that dims for a moment stays one
detection). Tiles with a hit are held: the slow background does not learn there, so a slow
plume keeps standing out against the scene as it was before it.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt

from detectors.fire_model import DEFAULT_MODEL, FireSmokeModel, preprocess
from detectors.frame import Box, Image, scale_box
from detectors.view import Change, Spectrum, ViewGeometry, ViewSample
from gridwatch.events import DetectionKind
from gridwatch.site_detectors import FireSmokeModelSettings

MIN_ALLOWED = 0.5
"""A tile mostly under a mask is not scored."""

Flags = npt.NDArray[np.bool_]


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


@dataclass(slots=True)
class _Confirmation:
    """One kind's state: per sample, which regions (0 = the whole view, then tiles) hit."""

    window: deque[Flags]
    confirmed: bool = False
    below: int = 0
    region: int = 0
    box: Box = (0, 0, 0, 0)
    track_id: int = 0
    tracks: int = 0

    def hit_counts(self) -> npt.NDArray[np.int64]:
        return np.sum(np.stack(self.window), axis=0) if self.window else np.zeros(1, np.int64)


class LearnedFireSmoke:
    """``vision.detectors.fire_smoke_model``: its own confirmation state, a shared model."""

    spectrum: Spectrum = "visible"

    def __init__(
        self,
        settings: FireSmokeModelSettings,
        geometry: ViewGeometry,
        model: FireSmokeModel | None = None,
    ) -> None:
        self.settings = settings
        self.geometry = geometry
        self.model = model or shared_model(DEFAULT_MODEL, settings.threads)
        allowed = geometry.zones.allowed
        self.regions = [(0, 0, geometry.work_shape[1], geometry.work_shape[0])] + [
            (x, y, w, h)
            for x, y, w, h in tiles(geometry.work_shape, settings.grids, settings.overlap)
            if allowed[y : y + h, x : x + w].mean() >= MIN_ALLOWED
        ]
        self._gate_regions = [scale_box(b, geometry.gate_factor) for b in self.regions]
        self.thresholds = {
            DetectionKind.FIRE: settings.fire_threshold,
            DetectionKind.SMOKE: settings.smoke_threshold,
        }
        self._state = {
            kind: _Confirmation(deque(maxlen=settings.confirm_m)) for kind in self.thresholds
        }

    @property
    def pending(self) -> bool:
        return any(s.hit_counts().any() and not s.confirmed for s in self._state.values())

    def _held(self) -> set[int]:
        """Tiles with a recent hit, and the tile a confirmed kind stands on."""
        held: set[int] = set()
        for state in self._state.values():
            held |= {int(i) for i in np.nonzero(state.hit_counts())[0]}
            if state.confirmed:
                held.add(state.region)
        return held - {0}

    def holds(self) -> list[Box]:
        return [self.regions[i] for i in sorted(self._held())]

    def reset(self) -> None:
        for state in self._state.values():
            if not state.confirmed:
                state.window.clear()

    def chosen(self, sample: ViewSample) -> list[int]:
        """The regions scored on this sample: the whole view, then held and changed tiles."""
        gate, s = sample.gate, self.settings
        if gate is None or len(self.regions) == 1 or s.max_tiles == 0:
            return [0]
        changed = gate.motion.fast | gate.motion.slow
        if changed[self.geometry.gate_zones.allowed].mean() > s.max_view_change:
            return [0]  # the view moves or is re-lit as a whole: its tiles say nothing
        held = self._held()
        share = {
            i: float(changed[y : y + h, x : x + w].mean())
            for i, (x, y, w, h) in enumerate(self._gate_regions)
            if i
        }
        ranked = sorted(
            (i for i, v in share.items() if v >= s.tile_min_change or i in held),
            key=lambda i: (i not in held, -share[i]),
        )
        return [0, *ranked[: s.max_tiles]]

    def scores(self, sample: ViewSample, regions: list[int]) -> npt.NDArray[np.float32]:
        """(fire, smoke) probabilities of each chosen region."""
        work: Image = sample.work
        allowed = self.geometry.zones.allowed
        if not allowed.all():
            # masked ground (a chimney, a lit sign) is painted over, not merely left out
            work = work.copy()
            work[~allowed] = np.asarray(work[allowed].mean(axis=0))
        views = [work[y : y + h, x : x + w] for x, y, w, h in (self.regions[i] for i in regions)]
        return self.model.run(preprocess(views))

    def limits(self, sample: ViewSample, regions: list[int]) -> dict[DetectionKind, list[float]]:
        """Per kind, the probability each region must reach to hit: the view's threshold, the
        stricter tile threshold, never for smoke on a tile too saturated to be grey (coloured
        lights, a sunset)."""
        s = self.settings
        saturation = None if sample.gate is None else sample.gate.saturation
        out: dict[DetectionKind, list[float]] = {}
        for kind, threshold in self.thresholds.items():
            row = [threshold]
            for i in regions[1:]:
                x, y, w, h = self._gate_regions[i]
                grey = saturation is None or (
                    saturation[y : y + h, x : x + w].mean() <= s.tile_smoke_max_saturation
                )
                row.append(s.tile_threshold if grey or kind is DetectionKind.FIRE else math.inf)
            out[kind] = row
        return out

    def observe(self, sample: ViewSample) -> list[Change]:
        if not self.geometry.zones.allowed.any():
            return []
        regions = self.chosen(sample)
        probabilities = self.scores(sample, regions)
        changes: list[Change] = []
        for column, (kind, row) in enumerate(self.limits(sample, regions).items()):
            limit = dict(zip(regions, row, strict=True))
            score = {i: float(p) for i, p in zip(regions, probabilities[:, column], strict=True)}
            change = self._update(kind, score, limit)
            if change is not None:
                changes.append(change)
        return changes

    def _update(
        self, kind: DetectionKind, score: dict[int, float], limit: dict[int, float]
    ) -> Change | None:
        state, s = self._state[kind], self.settings
        hits = np.zeros(len(self.regions), np.bool_)
        hits[[i for i in score if score[i] >= limit[i]]] = True
        state.window.append(hits)
        tiles_hit = [i for i in score if i and hits[i]]
        # where it is seen: the best tile that hit, else the whole view
        best = max(tiles_hit, key=score.__getitem__, default=0)
        if not state.confirmed:
            counts = state.hit_counts()
            confirming = [int(i) for i in np.nonzero(counts >= s.confirm_n)[0]]
            if not confirming:
                return None
            region = 0 if 0 in confirming else max(confirming, key=lambda i: counts[i])
            state.tracks += 1
            state.confirmed, state.below, state.track_id = True, 0, state.tracks
            state.region = region
            state.box = self.regions[region or best]
            confidence = score.get(region, score[best])
            return Change(kind, "confirmed", state.box, confidence, state.track_id)
        if tiles_hit:
            state.box = self.regions[best]
        quiet = all(score[i] < s.clear_ratio * limit[i] for i in score)
        state.below = state.below + 1 if quiet else 0
        if state.below < s.clear_misses:
            return None
        state.confirmed = False
        state.window.clear()
        return Change(kind, "cleared", state.box, score[best], state.track_id)
