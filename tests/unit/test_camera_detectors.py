"""The classical detectors and health gates on generated frames: every positive is confirmed,
every negative stays quiet or raises its camera-health issue instead. Small frames keep this
fast. The generated scenes test the pipeline's logic with the colour and plume rules on; the
learned model is judged on real media (test_fire_model_real.py, ``gridwatch eval``)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest

from detectors.construction import ConstructionWatch
from detectors.fire import fire_pixels
from detectors.frame import Frame
from detectors.health import same_view
from detectors.scene import SceneAnalyzer
from gridwatch.events import DetectionKind
from gridwatch.site_detectors import Detectors, FireColourSettings, SmokePlumeSettings
from simulators.camera_scenes import Scenario, catalogue, render, render_thermal
from simulators.camera_sites import SiteScenario, render_days

START = datetime(2025, 4, 1, 10, tzinfo=UTC)
SCENARIOS = {s.element: s for s in catalogue(seed=2, per_kind=1, duration_s=60.0)}
RULES = Detectors(
    fire_smoke_model=None, fire_colour=FireColourSettings(), smoke_plume=SmokePlumeSettings()
)


def small(sc: Scenario) -> Scenario:
    """At 320×180, with the colour and plume rules instead of the model."""
    return Scenario(
        sc.name,
        sc.label,
        sc.element,
        sc.seed,
        sc.duration_s,
        sc.fps,
        sc.onset_s,
        sc.expect_health,
        sc.thermal,
        sc.source,
        (320, 180),
        sc.vision.model_copy(update={"detectors": RULES}),
    )


def play(sc: Scenario) -> tuple[set[DetectionKind], set[str], float | None]:
    """Sample at 1 fps, bursting to every frame while a candidate is watched."""
    analyzer = SceneAnalyzer(sc.vision)
    kinds: set[DetectionKind] = set()
    issues: set[str] = set()
    first: float | None = None
    pending = False
    frames = render_thermal(sc) if sc.thermal else render(sc)
    for i, (t, image) in enumerate(frames):
        if not pending and i % round(sc.fps):
            continue
        result = analyzer.analyse(
            Frame(image, START + timedelta(seconds=t), "cam", thermal=sc.thermal)
        )
        pending = result.pending
        for hit in result.hits:
            if hit.state == "confirmed":
                kinds.add(hit.kind)
                first = t if first is None else first
        issues |= {c.issue.value for c in result.health if c.active}
    return kinds, issues, first


@pytest.mark.parametrize(
    ("element", "expected"),
    [
        ("fire", {DetectionKind.FIRE}),
        ("smoke", {DetectionKind.SMOKE}),
        ("fire_and_smoke", {DetectionKind.FIRE, DetectionKind.SMOKE}),
        ("hotspot", {DetectionKind.THERMAL_HOTSPOT}),
    ],
)
def test_positives_are_confirmed_after_onset(element: str, expected: set[DetectionKind]) -> None:
    sc = small(SCENARIOS[element])
    kinds, issues, first = play(sc)
    assert expected <= kinds and not issues
    assert first is not None and sc.onset_s is not None and sc.onset_s <= first <= sc.onset_s + 30


def test_fire_in_farmland_is_straw_burning() -> None:
    sc = small(SCENARIOS["farm_fire"])
    analyzer = SceneAnalyzer(sc.vision)
    zones: set[str] = set()
    for t, image in render(sc):
        for hit in analyzer.analyse(Frame(image, START + timedelta(seconds=t), "cam")).hits:
            zones |= set(hit.zones)
    assert "farmland" in zones


@pytest.mark.parametrize(
    "element",
    [
        "clouds",
        "sun_glare",
        "night_traffic",
        "swaying_trees",
        "steam",
        "cloud_shadows",
        "red_car",
        "thermal_quiet",
    ],
)
def test_negatives_raise_nothing(element: str) -> None:
    kinds, issues, _ = play(small(SCENARIOS[element]))
    assert not kinds and not issues


@pytest.mark.parametrize(
    ("element", "issue"),
    [("fog", "low_visibility"), ("ir_switch", "ir_mode"), ("frozen", "frozen")],
)
def test_health_gates_suppress_and_report(element: str, issue: str) -> None:
    kinds, issues, _ = play(small(SCENARIOS[element]))
    assert issue in issues and not kinds


def test_global_change_is_a_health_issue_not_a_detection() -> None:
    sc = small(SCENARIOS["clouds"])
    analyzer = SceneAnalyzer(sc.vision)
    images = [image for _, image in render(sc)][:10]
    for i, image in enumerate(images[:5]):
        analyzer.analyse(Frame(image, START + timedelta(seconds=i), "cam"))
    switched = np.clip(images[5].astype(np.int16) + 90, 0, 255).astype(np.uint8)
    result = analyzer.analyse(Frame(switched, START + timedelta(seconds=5), "cam"))
    assert result.suppressed and {c.issue.value for c in result.health} == {"global_change"}


def test_blur_gate() -> None:
    import cv2

    sc = small(SCENARIOS["clouds"])
    analyzer = SceneAnalyzer(sc.vision)
    issues: set[str] = set()
    for i, (t, image) in enumerate(render(sc)):
        if i % 5:
            continue
        if t > 20:
            image = cv2.GaussianBlur(image, (0, 0), 4)
        result = analyzer.analyse(Frame(image, START + timedelta(seconds=t), "cam"))
        issues |= {c.issue.value for c in result.health if c.active}
    assert "blur" in issues


def test_stuck_ptz_is_the_same_view_twice() -> None:
    a = next(iter(render(small(SCENARIOS["clouds"]))))[1]
    b = next(iter(render(small(SCENARIOS["fire"]))))[1]
    grey = a[..., 1]
    assert same_view(grey, grey.copy()) and not same_view(grey, b[..., 1])


def test_fire_colour_rejects_pure_red_and_white() -> None:
    patch = np.zeros((3, 1, 3), np.uint8)
    patch[0, 0] = (30, 140, 240)  # orange flame
    patch[1, 0] = (30, 30, 220)  # red sign or tail light
    patch[2, 0] = (250, 250, 250)  # headlight
    assert fire_pixels(patch)[:, 0].tolist() == [True, False, False]


def _site_days(builds: bool) -> list[np.ndarray]:
    sc = SiteScenario("site", seed=9, builds=builds, days=7, size=(320, 180))
    return [image for _, image in render_days(sc)]


@pytest.mark.parametrize("builds", [True, False])
def test_construction_needs_lasting_change(builds: bool) -> None:
    days = _site_days(builds)
    zone = np.zeros(days[0].shape[:2], np.bool_)
    zone[70:160, 90:230] = True
    watch = ConstructionWatch(days[0], zone, days=3)
    confirmed = [
        bool(watch.observe(image, date(2025, 4, 1) + timedelta(days=d)).confirmed)
        for d, image in enumerate(days[1:], start=1)
    ]
    assert any(confirmed) == builds
    if builds:
        assert not any(confirmed[:3])  # the first days of change are not yet an alarm


def test_acknowledged_construction_becomes_the_baseline() -> None:
    days = _site_days(True)
    watch = ConstructionWatch(days[0], None, days=2)
    watch.acknowledge(days[-1])
    report = watch.observe(days[-1], date(2025, 4, 30))
    assert report.registered and report.changed_blocks == 0
