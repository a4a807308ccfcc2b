"""``gridwatch eval images DIR --tiles``: what the fire/smoke model's tiles add on still images.

Each image is one view of ``LearnedFireSmoke`` with the given settings: the whole view at its
threshold, and every tile at the tile threshold with the smoke saturation guard, as if every
tile had changed (the worst case: in the camera pipeline a tile is scored only where the view
changed against its slow background, which a still image never does). Per class: recall of the
whole view alone and with tiles, overall and by the size of the image's own largest labelled
box; on ``none/`` (and its surveillance-camera sources apart): the share of images a tile
alone would flag. Temporal confirmation is not applied: each image stands for one sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from benchmarks.eval_images import DOMAINS
from benchmarks.image_set import LabelledImage, read
from detectors.fire_model import FireSmokeModel
from detectors.frame import grey_of, to_work
from detectors.learned import LearnedFireSmoke
from detectors.motion import GATE_WIDTH, Motion
from detectors.view import GateView, ViewGeometry, ViewSample
from detectors.zones import ZoneMap
from gridwatch.events import DetectionKind
from gridwatch.site_detectors import FireSmokeModelSettings

BOX_SIZES = ((0.0, 0.01), (0.01, 0.03), (0.03, 1.01))
"""Buckets of the largest own-class box, as a share of the image: small objects first."""


@dataclass(frozen=True, slots=True)
class TileHits:
    item: LabelledImage
    view: dict[DetectionKind, bool]
    tile: dict[DetectionKind, bool]


def hits_of(
    model: FireSmokeModel, settings: FireSmokeModelSettings, item: LabelledImage
) -> TileHits:
    work = to_work(read(item.path))
    small = to_work(work, GATE_WIDTH)
    shape, gate_shape = (work.shape[0], work.shape[1]), (small.shape[0], small.shape[1])
    geometry = ViewGeometry(
        work_shape=shape,
        gate_shape=gate_shape,
        zones=ZoneMap((), shape),
        gate_zones=ZoneMap((), gate_shape),
        work_horizon=None,
        gate_horizon=None,
    )
    detector = LearnedFireSmoke(settings, geometry, model)
    everywhere = np.ones(gate_shape, np.bool_)
    flat = np.zeros(gate_shape, np.float32)
    saturation = np.asarray(cv2.cvtColor(small, cv2.COLOR_BGR2HSV)[..., 1], np.uint8)
    motion = Motion(everywhere, everywhere, 1.0, (), flat, flat)
    sample = ViewSample(0.0, work, GateView(grey_of(small), saturation, motion, flat))
    regions = list(range(len(detector.regions)))
    probabilities = detector.scores(sample, regions)
    view: dict[DetectionKind, bool] = {}
    tile: dict[DetectionKind, bool] = {}
    for column, (kind, limit) in enumerate(detector.limits(sample, regions).items()):
        reached = probabilities[:, column] >= np.asarray(limit, np.float32)
        view[kind], tile[kind] = bool(reached[0]), bool(reached[1:].any())
    return TileHits(item, view, tile)


def _recall(rows: Sequence[TileHits], kind: DetectionKind) -> dict[str, Any]:
    if not rows:
        return {"images": 0}
    view = sum(r.view[kind] for r in rows)
    either = sum(r.view[kind] or r.tile[kind] for r in rows)
    return {
        "images": len(rows),
        "recall_view": round(view / len(rows), 4),
        "recall_view_or_tile": round(either / len(rows), 4),
    }


def _flagged(rows: Sequence[TileHits]) -> dict[str, Any]:
    out: dict[str, Any] = {"images": len(rows)}
    for kind in (DetectionKind.FIRE, DetectionKind.SMOKE):
        name = kind.value
        out[f"{name}_fpr_view"] = round(sum(r.view[kind] for r in rows) / max(len(rows), 1), 4)
        out[f"{name}_fpr_any_tile"] = round(sum(r.tile[kind] for r in rows) / max(len(rows), 1), 4)
    return out


def tile_report(
    model: FireSmokeModel, settings: FireSmokeModelSettings, images: Sequence[LabelledImage]
) -> dict[str, Any]:
    rows = [hits_of(model, settings, item) for item in images]
    report: dict[str, Any] = {
        "grids": list(settings.grids),
        "view_thresholds": {"fire": settings.fire_threshold, "smoke": settings.smoke_threshold},
        "tile_threshold": settings.tile_threshold,
    }
    for label, kind in (("fire", DetectionKind.FIRE), ("smoke", DetectionKind.SMOKE)):
        own = [r for r in rows if r.item.label == label]
        by_size = {
            f"box_{lo:g}-{min(hi, 1):g}": _recall(
                [
                    r
                    for r in own
                    if r.item.largest_box is not None and lo <= r.item.largest_box < hi
                ],
                kind,
            )
            for lo, hi in BOX_SIZES
        }
        report[label] = {**_recall(own, kind), "by_largest_box": by_size}
    negatives = [r for r in rows if r.item.label == "none"]
    report["none"] = _flagged(negatives)
    for name, sources in DOMAINS.items():
        report[f"none_{name}"] = _flagged([r for r in negatives if r.item.source in sources])
    return report
