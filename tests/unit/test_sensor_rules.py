from datetime import UTC, datetime, timedelta

from detectors.sensor_rules import ThresholdState, apply_threshold, threshold_level
from gridwatch.events import Level, Reading
from gridwatch.site import Site

T0 = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)


def reading(value: float, seconds: int) -> Reading:
    return Reading(
        device_id="WL-1",
        metric="water_level_m",
        value=value,
        unit="m",
        ts=T0 + timedelta(seconds=seconds),
    )


def run(site: Site, values: list[tuple[float, int]]) -> list[Level | None]:
    sensor = site.sensor("WL-1")
    assert sensor is not None
    rule = sensor.rules[0]
    state = ThresholdState()
    levels = []
    for value, t in values:
        state, detection = apply_threshold(sensor, rule, state, reading(value, t))
        if detection is not None:
            assert detection.source.id == "WL-1"
            assert detection.evidence[0].value == value
            assert detection.cleared == (detection.level is None)
            levels.append(detection.level)
    return levels


def test_rise_through_every_level_and_clear(tiny_site: Site) -> None:
    values = [(2.0, 0), (2.6, 1), (3.1, 2), (3.6, 3), (3.7, 4), (2.0, 5)]
    assert run(tiny_site, values) == [Level.YELLOW, Level.ORANGE, Level.RED, None]


def test_hysteresis_holds_the_level_near_a_threshold(tiny_site: Site) -> None:
    # 0.1 m hysteresis: 2.95 after orange stays orange, 2.85 drops to yellow.
    values = [(3.05, 0), (2.95, 1), (3.02, 2), (2.85, 3)]
    assert run(tiny_site, values) == [Level.ORANGE, Level.YELLOW]


def test_duplicates_and_late_readings_do_not_move_the_state(tiny_site: Site) -> None:
    clean = [(2.0, 0), (2.6, 10), (3.6, 20), (2.0, 30)]
    messy = [(2.0, 0), (2.6, 10), (2.6, 10), (3.6, 20), (1.0, 5), (3.6, 20), (2.0, 30)]
    assert run(tiny_site, messy) == run(tiny_site, clean)


def test_level_function_directly(tiny_site: Site) -> None:
    rule = tiny_site.sensors[0].rules[0]
    assert threshold_level(rule, None, 2.49) is None
    assert threshold_level(rule, None, 2.5) is Level.YELLOW
    assert threshold_level(rule, Level.RED, 3.45) is Level.RED
    assert threshold_level(rule, Level.RED, 3.39) is Level.ORANGE
