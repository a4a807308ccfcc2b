"""``gridwatch train footage``: the training crops the generated scenes paste, ranked by the model.

Every labelled fire and smoke box of ``train/`` is pasted, as a scene pastes it
(``simulators.camera_footage``) at its size one moment after onset, into a quiet generated
landscape, and the packaged model scores the tile-sized window around it: a crop the model
sees when it is that small is one a camera worker will confirm. A fire (a source video) is
ranked by its ``frames``-th best frame, so every frame it flickers through scores well; the
best ``fires`` of each kind are kept, each with its best ``frames`` frames, and written to
``simulators/footage_picks.tsv``. Train images only: ``val/`` measures the model.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np

from detectors.fire_model import FireSmokeModel
from detectors.frame import Image
from detectors.learned import tiles
from gridwatch.site_detectors import FireSmokeModelSettings
from simulators import camera_footage
from simulators.camera_footage import Kind, Pick
from simulators.camera_scenes import Scenario, render

log = logging.getLogger(__name__)
SIZE = (640, 360)
GROUND = 0.7  # where the fire stands, as a share of the frame's height
RANKED_AT_S = 1.0  # crops are scored at their size this long after onset: a fire is seen small


def _landscape() -> np.ndarray:
    quiet = Scenario("quiet", "none", "quiet", seed=1, duration_s=1.0, fps=1.0, size=SIZE)
    return next(iter(render(quiet)))[1].astype(np.float32)


def _window(image: Image, x: float, y: float) -> Image:
    """The finest grid's tile, centred on (x, y) and kept inside the frame."""
    settings = FireSmokeModelSettings()
    _, _, tw, th = tiles(image.shape, (max(settings.grids),), settings.overlap)[0]
    left = int(np.clip(round(x - tw / 2), 0, image.shape[1] - tw))
    top = int(np.clip(round(y - th / 2), 0, image.shape[0] - th))
    return image[top : top + th, left : left + tw]


def score(
    model: FireSmokeModel, landscape: np.ndarray, cut: camera_footage.Cutout, kind: Kind
) -> float:
    """The model's probability of ``kind`` for the window around ``cut`` pasted small."""
    w, h = SIZE
    x, y = w / 2, GROUND * h
    growth, opacity = (
        (camera_footage.FIRE, 1.0)
        if kind == "fire"
        else (camera_footage.SMOKE, camera_footage.SMOKE_OPACITY)
    )
    width = growth.at(RANKED_AT_S) * w
    image = landscape.copy()
    cut.paste(image, x, y, width, opacity)
    middle = y - width * cut.alpha.shape[0] / cut.alpha.shape[1] / 2
    view = np.clip(image, 0, 255).astype(np.uint8)
    scores = model.score([_window(view, x, middle)])[0]
    return scores.fire if kind == "fire" else scores.smoke


def _frames(picks: list[Pick], frames: int) -> list[Pick]:
    """The best ``frames`` images of one fire, the best box of each (one image may show two
    fires: a loop of one fire takes one of them)."""
    out: dict[str, Pick] = {}
    for p in sorted(picks, key=lambda p: (-p.score, p.stem, p.box)):
        out.setdefault(p.stem, p)
    return list(out.values())[:frames]


def rank(root: Path, model: FireSmokeModel, fires: int, frames: int) -> list[Pick]:
    """The best ``fires`` groups of each kind, their best ``frames`` frames each."""
    landscape = _landscape()
    groups: dict[tuple[Kind, str], list[Pick]] = defaultdict(list)
    for n, pick in enumerate(camera_footage.candidates(root)):
        cut = camera_footage.cutout(root, pick)
        if cut is not None:
            ranked = replace(pick, score=score(model, landscape, cut, pick.kind))
            groups[pick.kind, pick.group].append(ranked)
        if n % 500 == 499:
            log.info("%d crops scored", n + 1)
    out: list[Pick] = []
    for kind in ("fire", "smoke"):
        best = {
            group: _frames(picks, frames)
            for (k, group), picks in groups.items()
            if k == kind and len({p.stem for p in picks}) >= frames
        }
        order = sorted(best, key=lambda g: (-best[g][-1].score, g))[:fires]
        log.info("%s: %d fires, the worst kept frame scores %.3f", kind, len(order),
                 min((best[g][-1].score for g in order), default=0.0))  # fmt: skip
        out += [p for g in sorted(order) for p in sorted(best[g], key=lambda p: p.order)]
    return out
