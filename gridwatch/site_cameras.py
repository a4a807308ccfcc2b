"""Site configuration of cameras and watchtowers: placement, optics, presets, image zones."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from gridwatch.events import Model, Point, ZoneKind
from gridwatch.site_detectors import Detectors, Fraction

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


class Vision(Model):
    """Per-camera analysis settings; the defaults suit a 1-2 km view from 10-40 m up."""

    horizon: Fraction | None = Field(
        default=None, description="image row (fraction of height) above which there is only sky"
    )
    zones: tuple[ImageZone, ...] = ()
    burst_fps: float = Field(default=5.0, gt=0, description="sampling rate around a candidate")
    burst_s: float = Field(default=6.0, ge=0, description="how long a burst lasts")
    detectors: Detectors = Field(
        default=Detectors(), description="one settings block per detector (site_detectors)"
    )

    @model_validator(mode="after")
    def _traffic_watches_a_road(self) -> Vision:
        if self.detectors.traffic is not None and not any(
            z.kind is ZoneKind.ROAD for z in self.zones
        ):
            raise ValueError("the traffic detector needs a zone of kind road to watch")
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
