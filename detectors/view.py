"""The detector seam: what a per-sample detector of one view takes and gives.

A view detector turns one analysed sample of a view (``ViewSample``: the working image, where
analysis is allowed, the motion gate's change masks) into confirmed and cleared detections
(``Change``), keeping its own temporal state. ``SceneAnalyzer`` builds one of each configured
detector per view from ``vision.detectors`` through ``detectors.scene.DETECTORS`` (settings
class → implementation); health gates, masks, zones and the horizon are applied around it, so
a detector only judges its own evidence.

A new detector is one module and one settings block:

1. ``gridwatch/site_detectors.py``: a settings model (``Model`` subclass, fields with a
   description) and a field for it in ``Detectors`` (``None`` to leave it off by default).
2. ``detectors/<name>.py``: a class with ``__init__(settings, geometry: ViewGeometry)`` and the
   ``ViewDetector`` members below; boxes in working pixels. Zone masks it needs (a road zone,
   say) come from ``geometry.zones.mask(kind)``.
3. One line in ``detectors.scene.DETECTORS``. ``tests/unit/test_detector_seam.py`` checks that
   every block of ``Detectors`` has its entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from detectors.frame import Box, Image, scale_box
from detectors.motion import Motion
from detectors.zones import ZoneMap
from gridwatch.events import DetectionKind

Spectrum = Literal["visible", "thermal"]


@dataclass(frozen=True, slots=True)
class ViewGeometry:
    """One view at one frame size: working and gate image shapes, zones, the horizon row."""

    work_shape: tuple[int, int]
    gate_shape: tuple[int, int]
    zones: ZoneMap  # at working size
    gate_zones: ZoneMap  # at gate size
    work_horizon: int | None  # working-image row above which there is only sky
    gate_horizon: int | None

    @property
    def gate_factor(self) -> float:
        """Gate pixels per working pixel."""
        return self.gate_shape[1] / self.work_shape[1]

    def to_work(self, gate_box: Box) -> Box:
        return scale_box(gate_box, 1 / self.gate_factor)


@dataclass(frozen=True, slots=True)
class GateView:
    """The motion gate's picture of a visible sample, at gate size."""

    grey: Image
    saturation: Image  # HSV saturation
    motion: Motion
    background: npt.NDArray[np.float32]  # the slow background, grey levels


@dataclass(frozen=True, slots=True)
class ViewSample:
    """One analysed frame of a view, as every detector of that view sees it."""

    ts: float  # seconds
    work: Image  # BGR at working width, or one channel for a thermal frame
    gate: GateView | None  # None on thermal frames


@dataclass(frozen=True, slots=True)
class Change:
    """A detection confirmed or cleared on this view; the box is in working-image pixels."""

    kind: DetectionKind
    state: Literal["confirmed", "cleared"]
    box: Box
    confidence: float
    track_id: int


class ViewDetector(Protocol):
    """A per-sample detector of one view: a sample in, confirmed and cleared changes out."""

    spectrum: Spectrum  # the frames it looks at

    @property
    def pending(self) -> bool:
        """A candidate is being watched: the worker samples faster while this holds."""
        ...

    def holds(self) -> list[Box]:
        """Working-pixel regions the slow background must not learn (live candidates)."""
        ...

    def reset(self) -> None:
        """The whole scene changed at once (a lighting switch): forget frame-to-frame state."""
        ...

    def observe(self, sample: ViewSample) -> list[Change]: ...
