"""Site configuration of cameras and watchtowers: placement, optics, presets, image zones."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    Field,
    model_validator,
)

from gridwatch.events import Model, Point, ZoneKind

Fraction = Annotated[float, Field(ge=0, le=1)]
# A camera's or watchtower's id names its directories under GRIDWATCH_EVIDENCE_DIR (evidence
# and baselines): a letter or digit first, then letters, digits, '.', '_' or '-', so never '.'
# or '..', and never a slash or a backslash.
SourceId = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="1-64 letters, digits, '.', '_', '-'; starts with a letter or digit",
    ),
]


class ImageZone(Model):
    """A region of a camera image in fractions of its width and height, (0, 0) at the top left.

    ``mask`` regions are never analysed (a chimney, a road with headlights, a flag); the other
    kinds say what the ground there is, so a fire in ``farmland`` is straw burning, change is
    only sought in ``construction_watch`` and traffic on a ``road`` (``gridwatch.kinds``).
    """

    kind: ZoneKind
    polygon: tuple[tuple[Fraction, Fraction], ...] = Field(min_length=3)
    preset: int | None = Field(default=None, description="watchtower preset; None: every view")
    name: str = ""


class LearnedDetector(Model):
    """The learned fire/smoke model (``detectors/models/fire_smoke.onnx``) on tiles of each view.

    Every analysed view is cut into ``g``×``g`` overlapping tiles for each ``g`` of ``grids``
    (1 = the whole view), so that a distant plume of a few dozen pixels can fill enough of a
    tile to be seen. A kind is confirmed when in at least ``confirm_n`` of the last
    ``confirm_m`` samples some tile scores at or above its threshold, and cleared after
    ``clear_misses`` samples in a row whose best tile is below ``clear_ratio`` × threshold.
    """

    type: Literal["fire_smoke_model"] = "fire_smoke_model"
    fire_threshold: Fraction = Field(default=0.5, description="fire probability of a hit")
    smoke_threshold: Fraction = Field(default=0.5, description="smoke probability of a hit")
    # tiles are opt-in: on real night scenes and emergency lights the packaged model scores
    # small tiles as smoke or fire where the whole view stays quiet
    grids: tuple[int, ...] = Field(
        default=(1,), min_length=1, description="tile grids, e.g. (1, 3); 1 = the whole view"
    )
    overlap: Fraction = Field(default=0.25, description="share of a tile its neighbour covers")
    confirm_n: int = Field(default=3, ge=1, description="hits among the last confirm_m samples")
    confirm_m: int = Field(default=5, ge=1, description="samples the confirmation looks at")
    clear_misses: int = Field(default=5, ge=1, description="samples below the clear level")
    clear_ratio: Fraction = Field(default=0.5, description="clear level, share of the threshold")
    threads: int = Field(default=1, ge=1, description="ONNX Runtime threads of one worker")


class TrafficDetector(Model):
    """Stalled vehicles, obstructions and water inside the view's ``road`` zones.

    Two backgrounds: a short-term one absorbs whatever stops within about ``short_tau_s``, a
    long-term one keeps the empty road (it learns only where nothing stands). What differs from
    the long-term background but belongs to the short-term one has stopped; it is confirmed
    once it has stayed ``stall_s`` and cleared ``clear_s`` after it has gone. Water is road that
    lost its texture and changed its appearance over ``water_share`` of the lane for ``water_s``.
    """

    type: Literal["dual_background"] = "dual_background"
    stall_s: float = Field(default=120.0, gt=0, description="how long an object must stand")
    clear_s: float = Field(default=15.0, gt=0, description="gone this long: cleared")
    short_tau_s: float = Field(default=6.0, gt=0, description="short-term background, s")
    long_tau_s: float = Field(default=900.0, gt=0, description="long-term background, s")
    threshold: float = Field(default=22.0, gt=0, description="grey-level difference of change")
    min_area: Fraction = Field(default=0.0015, description="smallest obstruction, of the frame")
    water_share: Fraction = Field(default=0.3, description="share of the road turned to water")
    water_s: float = Field(default=45.0, gt=0, description="how long the water must stay")
    texture_ratio: Fraction = Field(
        default=0.5, description="water: road texture below this share of the empty road's"
    )


class Vision(Model):
    """Per-camera detector settings; the defaults suit a 1-2 km view from 10-40 m up."""

    horizon: Fraction | None = Field(
        default=None, description="image row (fraction of height) above which there is only sky"
    )
    zones: tuple[ImageZone, ...] = ()
    confirm_hits: int = Field(default=5, ge=2, description="consecutive hits that confirm")
    clear_misses: int = Field(default=8, ge=1, description="consecutive misses that clear")
    burst_fps: float = Field(default=5.0, gt=0, description="sampling rate around a candidate")
    burst_s: float = Field(default=6.0, ge=0, description="how long a burst lasts")
    fire_min_area: float = Field(default=0.00015, gt=0, description="fraction of the frame")
    smoke_min_area: float = Field(default=0.0006, gt=0, description="fraction of the frame")
    thermal_range_c: tuple[float, float] = Field(
        default=(-20.0, 300.0), description="temperatures of grey level 0 and 255"
    )
    thermal_threshold_c: float = Field(default=90.0, description="hotspot temperature")
    thermal_min_px: int = Field(default=4, ge=1, description="smallest hotspot, working pixels")
    construction_days: int = Field(default=3, ge=1, description="days a change must persist")
    learned: LearnedDetector | None = Field(
        default=None,
        description="the learned fire/smoke model; when set it replaces the colour and plume rules",
    )
    traffic: TrafficDetector | None = Field(
        default=None, description="stalled vehicles and water on the view's road zones"
    )

    @model_validator(mode="after")
    def _traffic_watches_a_road(self) -> Vision:
        if self.traffic is not None and not any(z.kind == "road" for z in self.zones):
            raise ValueError("traffic needs a zone of kind road to watch")
        return self


class Camera(Model):
    id: SourceId
    name: str
    url: str
    location: Point
    height_m: float = Field(gt=0)
    heading_deg: float = Field(ge=0, lt=360)
    fov_deg: float = Field(gt=0, le=180)
    sample_fps: float = Field(default=1.0, gt=0)
    tilt_deg: float = Field(default=-8.0, ge=-90, le=90, description="optical axis, up positive")
    vision: Vision = Vision()


class Preset(Model):
    id: int = Field(ge=0)
    pan_deg: float = Field(ge=0, lt=360)
    tilt_deg: float = Field(ge=-90, le=90)
    zoom: float = Field(default=1.0, gt=0)
    fov_deg: float = Field(gt=0, le=180)


class Watchtower(Model):
    id: SourceId
    name: str
    location: Point
    height_m: float = Field(gt=0)
    visible_url: str
    thermal_url: str | None = None
    presets: tuple[Preset, ...] = Field(min_length=1)
    ptz_url: str | None = Field(
        default=None, description="HTTP template that moves to a preset, with {preset}"
    )
    settle_s: float = Field(default=2.0, ge=0, description="wait after a move before analysing")
    dwell_s: float = Field(default=30.0, gt=0, description="time spent on each preset")
    sample_fps: float = Field(default=1.0, gt=0)
    vision: Vision = Vision()
