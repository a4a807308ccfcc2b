"""The learned detector's tiles, change gating and temporal confirmation, driven by a stand-in
model whose probabilities are the share of painted pixels in each scored view."""

from __future__ import annotations

import numpy as np
import pydantic
import pytest

from detectors.fire_model import Batch, FireSmokeModel
from detectors.frame import Box, Image, Mask
from detectors.learned import LearnedFireSmoke, tiles
from detectors.motion import Motion
from detectors.view import GateView, ViewGeometry, ViewSample
from detectors.zones import ZoneMap
from gridwatch.events import DetectionKind
from gridwatch.site_cameras import ImageZone, Vision
from gridwatch.site_detectors import FireSmokeModelSettings

WORK = (360, 640)
GATE = (180, 320)
FIRE, SMOKE = DetectionKind.FIRE.value, DetectionKind.SMOKE.value


class Painted(FireSmokeModel):
    """Fire = share of pure-red pixels, smoke = share of pure-green ones; no ONNX session."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def run(self, batch: Batch) -> np.ndarray:
        self.batches.append(len(batch))
        fire = (batch[:, 0] > 2.0).mean(axis=(1, 2))  # R of 255 after ImageNet normalising
        smoke = (batch[:, 1] > 2.0).mean(axis=(1, 2))
        return np.stack([fire, smoke], axis=1).astype(np.float32)


def geometry(zones: tuple[ImageZone, ...] = ()) -> ViewGeometry:
    return ViewGeometry(
        work_shape=WORK,
        gate_shape=GATE,
        zones=ZoneMap(zones, WORK),
        gate_zones=ZoneMap(zones, GATE),
        work_horizon=None,
        gate_horizon=None,
    )


def sample(work: Image, changed: Mask | None, ts: float = 0.0) -> ViewSample:
    """A sample whose gate saw ``changed`` (gate size) change; None: no motion gate."""
    if changed is None:
        return ViewSample(ts, work, None)
    grey = np.zeros(GATE, np.uint8)
    flat = np.zeros(GATE, np.float32)
    motion = Motion(changed, changed, float(changed.mean()), (), flat, flat)
    return ViewSample(ts, work, GateView(grey, grey, motion, flat))


def painted(box: Box, channel: int) -> Image:
    image = np.zeros((*WORK, 3), np.uint8)
    x, y, w, h = box
    image[y : y + h, x : x + w, channel] = 255
    return image


def changed_at(box: Box) -> Mask:
    """The gate's change mask over a working-pixel box."""
    mask = np.zeros(GATE, np.bool_)
    x, y, w, h = (v // 2 for v in box)
    mask[y : y + h, x : x + w] = True
    return mask


def detector(model: FireSmokeModel | None = None, **settings: object) -> LearnedFireSmoke:
    config = FireSmokeModelSettings.model_validate(settings)
    return LearnedFireSmoke(config, geometry(), model or Painted())


def steps(d: LearnedFireSmoke, samples: list[ViewSample]) -> list[list[str]]:
    return [[f"{c.kind.value}:{c.state}" for c in d.observe(s)] for s in samples]


def test_tiles_cover_the_view_at_each_scale() -> None:
    boxes = tiles(WORK, (1, 3), 0.25)
    assert boxes[0] == (0, 0, 640, 360) and len(boxes) == 10
    cover = np.zeros(WORK, np.bool_)
    for x, y, w, h in boxes[1:]:
        assert 0 <= x and x + w <= 640 and 0 <= y and y + h <= 360
        assert w < 640 / 2
        cover[y : y + h, x : x + w] = True
    assert cover.all()


def test_the_whole_view_confirms_on_n_of_m_hits_and_never_on_a_flicker() -> None:
    on, off = painted((0, 0, 640, 360), 2), np.zeros((*WORK, 3), np.uint8)
    flicker = [sample(on, None), sample(off, None)] * 4
    assert not any(steps(detector(confirm_n=3, confirm_m=4), flicker))
    steady = [sample(i, None) for i in (on, off, on, on)]
    assert steps(detector(confirm_n=3, confirm_m=4), steady) == [[], [], [], [f"{FIRE}:confirmed"]]


def test_clears_only_after_the_score_stays_below_the_lower_level() -> None:
    def smoke(share: float) -> ViewSample:
        return sample(painted((0, 0, 640, round(360 * share)), 1), None)

    script = [smoke(0.8)] * 2 + [smoke(0.3)] * 3 + [smoke(0.1)] * 2
    d = detector(confirm_n=2, confirm_m=2, clear_misses=2, clear_ratio=0.5)
    # 0.3 is below the threshold but above half of it: the smoke stays confirmed
    assert steps(d, script) == [[], [f"{SMOKE}:confirmed"], [], [], [], [], [f"{SMOKE}:cleared"]]


def test_a_masked_view_is_not_scored() -> None:
    everywhere = ImageZone(kind="mask", polygon=((0, 0), (1, 0), (1, 1), (0, 1)))
    model = Painted()
    d = LearnedFireSmoke(FireSmokeModelSettings(confirm_n=1), geometry((everywhere,)), model)
    assert d.observe(sample(painted((0, 0, 640, 360), 2), None)) == [] and not model.batches


# A small flame (60×40 working pixels): too small for the whole view, most of a 3×3 tile.
FLAME = (300, 200, 60, 40)


def test_a_small_fire_is_confirmed_on_its_tile_where_the_view_changed() -> None:
    d = detector(tile_threshold=0.05, confirm_n=3, confirm_m=5)
    image = painted(FLAME, 2)
    found = [c for _ in range(3) for c in d.observe(sample(image, changed_at(FLAME)))]
    assert [(c.kind, c.state) for c in found] == [(DetectionKind.FIRE, "confirmed")]
    x, y, w, h = found[0].box
    assert w < 640 / 2 and x <= FLAME[0] and x + w >= FLAME[0] + FLAME[2]  # the tile, not the view
    assert found[0].confidence >= 0.05
    assert found[0].box in d.holds()  # the slow background keeps the scene as it was there


def test_a_static_light_is_never_scored_on_tiles() -> None:
    model = Painted()
    d = detector(model, tile_threshold=0.05, confirm_n=1, confirm_m=1)
    image = painted(FLAME, 2)
    # a lamp: always there, so nothing changed against the slow background
    assert not any(steps(d, [sample(image, np.zeros(GATE, np.bool_))] * 5))
    assert model.batches == [1] * 5  # the whole view only


def test_a_moving_view_scores_no_tiles() -> None:
    model = Painted()
    d = detector(model, tile_threshold=0.05, confirm_n=1, confirm_m=1)
    everything = np.ones(GATE, np.bool_)
    assert not any(steps(d, [sample(painted(FLAME, 2), everything)] * 3))
    assert model.batches == [1] * 3


def test_hits_on_different_tiles_do_not_add_up() -> None:
    d = detector(tile_threshold=0.05, confirm_n=3, confirm_m=5, max_tiles=1)
    places = [(20, 20, 60, 40), (560, 20, 60, 40), (20, 300, 60, 40), (560, 300, 60, 40)]
    assert not any(steps(d, [sample(painted(b, 2), changed_at(b)) for b in places]))


def test_at_most_max_tiles_are_scored_a_sample() -> None:
    model = Painted()
    d = detector(model, max_tiles=2)
    d.observe(sample(np.zeros((*WORK, 3), np.uint8), changed_at((0, 0, 200, 100))))
    assert model.batches == [3]


def test_vision_has_one_block_per_detector_and_rejects_unknown_settings() -> None:
    vision = Vision.model_validate(
        {"detectors": {"fire_smoke_model": {"grids": [2]}, "thermal_hotspot": None}}
    )
    assert vision.detectors.fire_smoke_model is not None
    assert vision.detectors.fire_smoke_model.grids == (2,)
    assert vision.detectors.thermal_hotspot is None
    assert vision.detectors.construction_change is not None  # left out: its default
    for bad in (
        {"yolo": {}},
        {"fire_smoke_model": {"fire_treshold": 0.4}},
        {"fire_smoke_model": {"grids": [1]}},
    ):
        with pytest.raises(pydantic.ValidationError):
            Vision.model_validate({"detectors": bad})


def test_a_slow_plume_is_not_gated_out() -> None:
    """A plume brightening 3 grey levels a second never trips frame differencing, but stands out
    against the slow background on every sample, so its tile is scored until it confirms."""
    from datetime import UTC, datetime, timedelta

    import cv2

    from detectors.frame import Frame
    from detectors.scene import SceneAnalyzer

    rng = np.random.default_rng(3)
    fields = cv2.resize(rng.random((45, 80)), (640, 360), interpolation=cv2.INTER_NEAREST)
    ground = 40 * fields[..., None] + (50, 100, 60)  # green fields with sharp edges
    start = datetime(2025, 4, 1, 10, tzinfo=UTC)
    analyzer = SceneAnalyzer(Vision())
    model = Painted()
    scored: list[int] = []
    found = []
    for second in range(50):
        image = ground + rng.normal(0, 2, ground.shape)  # sensor noise: a live stream
        level = min(110 + 3 * second, 250)
        image[220:260, 300:360] = (level, level, 0.8 * level)  # BGR: grey, a little warm
        frame = Frame(
            np.clip(image, 0, 255).astype(np.uint8), start + timedelta(seconds=second), "cam"
        )
        if second == 0:
            analyzer.analyse(frame)
            settings = FireSmokeModelSettings(tile_threshold=0.05)
            analyzer.detectors = [LearnedFireSmoke(settings, analyzer.geometry, model)]
            continue
        analysis = analyzer.analyse(frame)
        assert not analysis.suppressed, analysis.health
        found += [h for h in analysis.hits if h.state == "confirmed"]
        scored.append(model.batches[-1] - 1)
    assert all(scored[5:]), scored  # once it stands out, its tile is scored on every sample
    assert [h.kind for h in found] == [DetectionKind.SMOKE]
    x, y, w, h = found[0].box
    assert w < 640 / 2 and x <= 330 <= x + w and y <= 240 <= y + h  # its tile, not the view


def test_a_tile_too_saturated_to_be_grey_is_no_smoke() -> None:
    d = detector(tile_threshold=0.05, confirm_n=1, confirm_m=1)
    where = changed_at(FLAME)
    coloured = sample(painted(FLAME, 1), where)
    assert coloured.gate is not None
    lit = ViewSample(
        0.0, coloured.work, GateView(coloured.gate.grey, np.full(GATE, 200, np.uint8),
                                     coloured.gate.motion, coloured.gate.background),
    )  # fmt: skip
    assert d.observe(lit) == []  # emergency lights, a sunset: saturated, not smoke
    assert [c.kind for c in d.observe(coloured)] == [DetectionKind.SMOKE]
