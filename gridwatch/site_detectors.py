"""Site configuration of a view's detectors: one settings block per detector, under
``vision.detectors`` of a camera or watchtower.

Each block is named for its detector; an absent key keeps that detector's default (on or off),
``null`` switches it off, an unknown key fails at load. ``detectors.scene.DETECTORS`` pairs
each per-sample block with the class that implements it::

    vision:
      horizon: 0.3
      detectors:
        fire_smoke_model: {grids: [2, 3, 4], tile_threshold: 0.95}
        smoke_plume: {}            # the classical plume rule, on beside the model
        construction_change: null  # no construction watch here
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from gridwatch.events import Model

Fraction = Annotated[float, Field(ge=0, le=1)]
REAL_DAY_S = 86400.0


class Confirmation(Model):
    """A tracked region is confirmed after ``confirm_hits`` consecutive hits that pass the
    detector's test, and cleared after ``clear_misses`` consecutive misses."""

    confirm_hits: int = Field(default=5, ge=2, description="consecutive hits that confirm")
    clear_misses: int = Field(default=8, ge=1, description="consecutive misses that clear")


class FireSmokeModelSettings(Model):
    """The learned fire/smoke model (``detectors/models/fire_smoke.onnx``), the default.

    The whole view is scored on every sample. Tiles of each ``g``×``g`` grid of ``grids`` (g > 1)
    let a distant plume of a few dozen pixels fill enough of the model's input to be seen; a
    tile is scored only where the view changed against its slow background (static lamps, lit
    signs and reflections do not), only while the view as a whole holds still, and only up to
    ``max_tiles`` a sample (most changed first); a tile more saturated than
    ``tile_smoke_max_saturation`` is no smoke evidence. A kind is confirmed when the whole
    view, or one and the same tile, hits in ``confirm_n`` of the last ``confirm_m`` samples —
    the view at its threshold, a tile at the stricter ``tile_threshold`` — and cleared after
    ``clear_misses`` samples in a row below ``clear_ratio`` × threshold.
    """

    fire_threshold: Fraction = Field(default=0.5, description="fire probability of a view hit")
    smoke_threshold: Fraction = Field(default=0.5, description="smoke probability of a view hit")
    grids: tuple[Annotated[int, Field(ge=2)], ...] = Field(
        default=(2, 3), description="g×g tile grids scored beside the whole view; () for none"
    )
    overlap: Fraction = Field(default=0.25, description="share of a tile its neighbour covers")
    tile_threshold: Fraction = Field(default=0.9, description="probability of a tile hit")
    tile_smoke_max_saturation: int = Field(
        default=120, ge=0, le=255, description="a tile more saturated (mean HSV S) is not smoke"
    )
    tile_min_change: Fraction = Field(
        default=0.005, description="share of a tile changed against the slow background"
    )
    max_view_change: Fraction = Field(
        default=0.3, description="above this changed share the view moves: no tiles scored"
    )
    max_tiles: int = Field(default=2, ge=0, description="tiles scored per sample, at most")
    confirm_n: int = Field(default=3, ge=1, description="hits among the last confirm_m samples")
    confirm_m: int = Field(default=5, ge=1, description="samples the confirmation looks at")
    clear_misses: int = Field(default=5, ge=1, description="samples below the clear level")
    clear_ratio: Fraction = Field(default=0.5, description="clear level, share of the threshold")
    threads: int = Field(default=1, ge=1, description="ONNX Runtime threads of one worker")


class FireColourSettings(Confirmation):
    """The classical fire rule: fire-coloured moving regions that flicker and stay put."""

    min_area: float = Field(default=0.00015, gt=0, description="fraction of the frame")


class SmokePlumeSettings(Confirmation):
    """The classical smoke rule: slow grey change that rises or grows from the ground."""

    min_area: float = Field(default=0.0006, gt=0, description="fraction of the frame")


class ThermalHotspotSettings(Confirmation):
    """Hotspots on thermal frames: a physical temperature threshold, size-filtered."""

    range_c: tuple[float, float] = Field(
        default=(-20.0, 300.0), description="temperatures of grey level 0 and 255"
    )
    threshold_c: float = Field(default=90.0, description="hotspot temperature")
    min_px: int = Field(default=4, ge=1, description="smallest hotspot, working pixels")


class ConstructionChangeSettings(Model):
    """Lasting change inside ``construction_watch`` zones against a per-view baseline, from one
    registered frame a day (run by the construction patrol, not on every sample).

    ``day_s`` is the length of an observed day: a real day on a site; a simulated run compresses
    time so that days pass in seconds (the patrol then logs compressed days, never dates)."""

    days: int = Field(default=3, ge=1, description="days a change must persist")
    day_s: float = Field(
        default=REAL_DAY_S, gt=0, description="length of an observed day, s; less: compressed time"
    )


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


class Detectors(Model):
    """The detectors of a view; ``None`` switches one off."""

    fire_smoke_model: FireSmokeModelSettings | None = FireSmokeModelSettings()
    fire_colour: FireColourSettings | None = Field(
        default=None, description="off: on real negatives it adds false alarms, no recall"
    )
    smoke_plume: SmokePlumeSettings | None = Field(
        default=None, description="off: on real negatives it adds false alarms, no recall"
    )
    thermal_hotspot: ThermalHotspotSettings | None = ThermalHotspotSettings()
    construction_change: ConstructionChangeSettings | None = ConstructionChangeSettings()
    traffic: TrafficDetector | None = Field(
        default=None, description="stalled vehicles and water on road zones (needs a road zone)"
    )
