"""The detector seam: every settings block of ``Detectors`` has its implementation, and a view's
analyser builds exactly the configured detectors."""

from __future__ import annotations

import typing
from datetime import UTC, datetime

import numpy as np

from detectors.fire import FireColour
from detectors.frame import Frame
from detectors.learned import LearnedFireSmoke
from detectors.scene import DAILY, DETECTORS, SceneAnalyzer
from detectors.smoke import SmokePlume
from detectors.thermal import ThermalHotspots
from gridwatch.site_cameras import Vision
from gridwatch.site_detectors import Detectors, SmokePlumeSettings

START = datetime(2025, 4, 1, 10, tzinfo=UTC)


def test_every_block_has_its_detector() -> None:
    hints = typing.get_type_hints(Detectors)
    for name in Detectors.model_fields:
        (settings,) = (a for a in typing.get_args(hints[name]) if a is not type(None))
        assert (settings in DETECTORS) != (settings in DAILY), name


def _built(vision: Vision) -> list[type]:
    analyzer = SceneAnalyzer(vision)
    analyzer.analyse(Frame(np.zeros((180, 320, 3), np.uint8), START, "cam"))
    return [type(d) for d in analyzer.detectors]


def test_the_default_view_runs_the_model_and_thermal_hotspots() -> None:
    assert _built(Vision()) == [LearnedFireSmoke, ThermalHotspots]


def test_a_settings_block_switches_a_detector_on_or_off() -> None:
    rules = Detectors(fire_smoke_model=None, smoke_plume=SmokePlumeSettings())
    assert _built(Vision(detectors=rules)) == [SmokePlume, ThermalHotspots]
    everything = Vision.model_validate(
        {"detectors": {"fire_colour": {}, "smoke_plume": {}, "thermal_hotspot": None}}
    )
    assert _built(everything) == [LearnedFireSmoke, FireColour, SmokePlume]
