"""Temporal confirmation: regions tracked across frames, confirmed after N consecutive hits
that also pass the detector's own test over the track, ended only after M consecutive misses
(hysteresis), so one odd frame neither raises nor clears an alarm."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from detectors.frame import Box, iou, scale_box
from detectors.view import Change
from gridwatch.events import DetectionKind


class Observed(Protocol):
    @property
    def box(self) -> Box: ...

    @property
    def ts(self) -> float: ...


Obs = TypeVar("Obs", bound=Observed)

Judge = Callable[[Sequence[Obs]], float | None]
"""Looks at a track's observations; a confidence when they show the thing, else None."""


@dataclass
class Track(Generic[Obs]):
    id: int
    history: list[Obs] = field(default_factory=list)
    misses: int = 0
    confirmed: bool = False
    confidence: float = 0.0

    @property
    def box(self) -> Box:
        return self.history[-1].box


@dataclass(frozen=True, slots=True)
class TrackEvent(Generic[Obs]):
    track: Track[Obs]
    state: str  # "confirmed" or "cleared"


_ids = itertools.count(1)


class Tracker(Generic[Obs]):
    def __init__(
        self, judge: Judge[Obs], hits: int, misses: int, keep: int = 40, match_iou: float = 0.05
    ) -> None:
        self._judge = judge
        self._hits = hits
        self._misses = misses
        self._keep = keep
        self._match_iou = match_iou
        self.tracks: list[Track[Obs]] = []

    @property
    def pending(self) -> bool:
        """A candidate is being watched: the worker samples faster while this holds."""
        return any(not t.confirmed for t in self.tracks)

    def boxes(self) -> list[Box]:
        return [t.box for t in self.tracks]

    def update(self, observations: Sequence[Obs]) -> list[TrackEvent[Obs]]:
        events: list[TrackEvent[Obs]] = []
        free = list(observations)
        for track in sorted(self.tracks, key=lambda t: not t.confirmed):
            best = max(free, key=lambda o: _overlap(track.box, o.box), default=None)
            if best is not None and _overlap(track.box, best.box) >= self._match_iou:
                free.remove(best)
                track.history = [*track.history[-self._keep + 1 :], best]
                track.misses = 0
            else:
                track.misses += 1
        for obs in free:
            self.tracks.append(Track(next(_ids), [obs]))
        alive: list[Track[Obs]] = []
        for track in self.tracks:
            if track.confirmed:
                if track.misses >= self._misses:
                    events.append(TrackEvent(track, "cleared"))
                    continue
            elif track.misses:
                continue  # hits must be consecutive
            elif len(track.history) >= self._hits:
                verdict = self._judge(track.history)
                if verdict is not None:
                    track.confirmed, track.confidence = True, verdict
                    events.append(TrackEvent(track, "confirmed"))
            alive.append(track)
        self.tracks = alive
        return events

    def reset(self) -> list[TrackEvent[Obs]]:
        """Drop every track; confirmed ones are reported cleared."""
        ended = [TrackEvent(t, "cleared") for t in self.tracks if t.confirmed]
        self.tracks = []
        return ended


def changes(events: Sequence[TrackEvent[Obs]], kind: DetectionKind, factor: float) -> list[Change]:
    """Track events as a view detector's changes, boxes scaled by ``factor`` to working pixels."""
    return [
        Change(
            kind,
            "confirmed" if e.state == "confirmed" else "cleared",
            scale_box(e.track.box, factor),
            e.track.confidence,
            e.track.id,
        )
        for e in events
    ]


def _overlap(a: Box, b: Box) -> float:
    """IoU of the two boxes, each grown by half: flames and plumes change shape every frame."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    grown_a = (ax - aw // 4, ay - ah // 4, aw + aw // 2, ah + ah // 2)
    grown_b = (bx - bw // 4, by - bh // 4, bw + bw // 2, bh + bh // 2)
    return iou(grown_a, grown_b)
