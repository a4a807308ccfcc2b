"""Every sensor rule kind fires and clears as specified, and the outcome does not depend on the
order or the number of times readings arrive (within the allowed lateness)."""

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.sensor_rules import threshold_level
from detectors.sensor_state import (
    DeviceState,
    decisive,
    decode,
    encode,
    on_reading,
    on_status,
    overdue,
)
from gridwatch.events import DetectionKind, DeviceStatus, Level, Point, Reading
from gridwatch.site import Site
from gridwatch.site_sensors import Sensor

T0 = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)


def gauge(*rules: dict[str, object]) -> Sensor:
    return Sensor.model_validate(
        {
            "id": "G-1",
            "kind": "water_level",
            "location": Point(lon=106.6, lat=26.6),
            "metrics": {"water_level_m": {"unit": "m", "min": 0, "max": 15}},
            "rules": list(rules),
        }
    )


def reading(value: float, seconds: float, device: str = "G-1") -> Reading:
    return Reading(
        device_id=device,
        metric="water_level_m",
        value=value,
        unit="m",
        ts=T0 + timedelta(seconds=seconds),
    )


def run(
    sensor: Sensor, values: list[tuple[float, float]], lateness: float = 0.0
) -> list[tuple[str | None, Level | None, float]]:
    """(rule, level, seconds) of every detection, in emission order. The state goes through
    its stored form after every reading, as a worker rebuilding it from the changelog would."""
    state = DeviceState()
    out = []
    for value, t in values:
        found = on_reading(sensor, state, reading(value, t, sensor.id), lateness)
        state = decode(encode(state))
        for d in found:
            assert d.cleared == (d.level is None) and d.evidence
            out.append((d.rule, d.level, (d.ts - T0).total_seconds()))
    return out


THRESHOLD = {"metric": "water_level_m", "yellow": 2.5, "orange": 3.0, "red": 3.5, "hysteresis": 0.1}


def test_threshold_rises_through_every_level_and_clears(tiny_site: Site) -> None:
    sensor = tiny_site.sensor("WL-1")
    assert sensor is not None
    values = [(2.0, 0), (2.6, 1), (3.1, 2), (3.6, 3), (3.7, 4), (2.0, 5)]
    levels = [level for _, level, _ in run(sensor, values)]
    assert levels == [Level.YELLOW, Level.ORANGE, Level.RED, None]


def test_threshold_hysteresis_holds_the_level_near_a_threshold() -> None:
    values = [(3.05, 0), (2.95, 1), (3.02, 2), (2.85, 3)]
    assert [lv for _, lv, _ in run(gauge(THRESHOLD), values)] == [Level.ORANGE, Level.YELLOW]
    rule = gauge(THRESHOLD).rules[0]
    assert threshold_level(rule, Level.RED, 3.45) is Level.RED  # type: ignore[arg-type]
    assert threshold_level(rule, Level.RED, 3.39) is Level.ORANGE  # type: ignore[arg-type]


def test_rate_of_rise_fires_on_a_fast_rise_and_clears_when_it_levels_off() -> None:
    rule = {"type": "rate_of_rise", "metric": "water_level_m", "rise": 0.45, "window": 10,
            "level": "orange"}  # fmt: skip
    # A slow rise (0.05 per 2 s) never rises 0.45 within 10 s; then 0.2 per 2 s does.
    slow = [(1.0 + 0.05 * i, 2 * i) for i in range(10)]
    fast = [(1.45 + 0.2 * i, 20 + 2 * i) for i in range(1, 5)]
    flat = [(2.25, 30 + 2 * i) for i in range(8)]
    found = run(gauge(rule), slow + fast + flat)
    assert found == [
        ("rate_of_rise:water_level_m", Level.ORANGE, 24),
        ("rate_of_rise:water_level_m", None, 34),
    ]


def test_n_of_m_confirms_before_firing_and_clears_when_confirmation_is_lost() -> None:
    rule = {"type": "n_of_m", "metric": "water_level_m", "above": 3.0, "n": 3, "m": 5}
    values = [(3.2, 0), (2.0, 1), (3.3, 2), (2.0, 3), (3.1, 4), (3.1, 5), (2.0, 6), (2.0, 7)]
    # The third high value of five fires; two lows out of the newest five drop below three.
    assert run(gauge(rule), values) == [
        ("n_of_m:water_level_m", Level.YELLOW, 4),
        ("n_of_m:water_level_m", None, 7),
    ]


def test_flatline_fires_on_a_stuck_value_and_clears_when_it_moves() -> None:
    rule = {"type": "flatline", "metric": "water_level_m", "window": 30, "tolerance": 0.001}
    values = [(1.0 + 0.01 * (i % 3), 10 * i) for i in range(4)]  # alive
    values += [(1.5, 40 + 10 * i) for i in range(5)]  # stuck from t=40
    values += [(1.6, 90)]
    found = run(gauge(rule), values)
    assert found == [
        ("flatline:water_level_m", Level.YELLOW, 70),
        ("flatline:water_level_m", None, 90),
    ]
    sensor = gauge(rule)
    assert sensor.rules[0].detection_kind is DetectionKind.SENSOR_FAULT


def test_out_of_range_fires_outside_the_operating_range() -> None:
    rule = {"type": "out_of_range", "metric": "water_level_m", "low": 0.2, "high": 8.0}
    values = [(1.0, 0), (0.1, 1), (0.05, 2), (1.0, 3), (9.0, 4)]
    assert [(lv, t) for _, lv, t in run(gauge(rule), values)] == [
        (Level.YELLOW, 1),
        (None, 3),
        (Level.YELLOW, 4),
    ]


ALL_RULES = (
    THRESHOLD,
    {"type": "rate_of_rise", "metric": "water_level_m", "rise": 0.4, "window": 5},
    {"type": "n_of_m", "metric": "water_level_m", "above": 2.8, "n": 2, "m": 4},
    {"type": "flatline", "metric": "water_level_m", "window": 4},
    {"type": "out_of_range", "metric": "water_level_m", "low": 0.5, "high": 3.6},
)


def _as_set(found: list[tuple[str | None, Level | None, float]]) -> list[tuple[str, str, float]]:
    return sorted((str(r), str(lv), t) for r, lv, t in found)


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.floats(min_value=0.0, max_value=4.0), min_size=5, max_size=30),
    seed=st.integers(0, 10_000),
)
def test_disorder_and_duplicates_within_the_lateness_change_nothing(
    values: list[float], seed: int
) -> None:
    sensor = gauge(*ALL_RULES)
    clean = [(round(v, 2), float(i)) for i, v in enumerate(values)]
    rng = random.Random(seed)
    messy = clean + rng.sample(clean, k=len(clean) // 3)  # redeliveries
    # Shuffle only within windows of 3 s: disorder that a 3 s lateness absorbs.
    messy.sort(key=lambda vt: vt[1] + rng.uniform(0, 2.9))
    # The last clean reading flushes the buffer the same way in both runs.
    tail = [(1.0, clean[-1][1] + 10)]
    assert _as_set(run(sensor, messy + tail, 3.0)) == _as_set(run(sensor, clean + tail, 3.0))


@settings(max_examples=80, deadline=None)
@given(
    values=st.lists(st.sampled_from([1.0, 2.45, 2.6, 2.95, 3.1, 3.45, 3.6]), min_size=2,
                    max_size=40),
    data=st.data(),
)  # fmt: skip
def test_a_state_stored_only_when_decisive_changes_replays_to_the_same_detections(
    values: list[float], data: st.DataObject
) -> None:
    """A worker stores a threshold gauge's state only when ``decisive`` changes, after sending
    the reading's detections. Restarted from the last state it stored, and fed from any offset
    it may have committed, it emits exactly the detections, ids and all, that the live worker
    emitted after that state, and none for readings before it."""
    sensor = gauge(THRESHOLD, {"type": "out_of_range", "metric": "water_level_m", "low": 0.5,
                               "high": 3.5, "level": "yellow"})  # fmt: skip
    live, emitted, stored = DeviceState(), [], []
    mark, kept = decisive(sensor, live, 0.0), encode(live)
    assert mark is not None
    for i, value in enumerate(values):
        emitted.append(
            [(d.rule, d.level, d.id) for d in on_reading(sensor, live, reading(value, i))]
        )
        if decisive(sensor, live, 0.0) != mark:
            mark, kept = decisive(sensor, live, 0.0), encode(live)
        stored.append(kept)
    crash = data.draw(st.integers(0, len(values) - 1), label="crash after reading")
    committed = data.draw(st.integers(0, crash + 1), label="first reading replayed")
    restored = decode(stored[crash])
    for i in range(committed, len(values)):
        found = [
            (d.rule, d.level, d.id) for d in on_reading(sensor, restored, reading(values[i], i))
        ]
        assert found == (emitted[i] if i > crash else [])


def _kept(state: DeviceState) -> tuple[object, ...]:
    """What a replay could not rebuild of a threshold gauge's state: levels, liveness, counts
    (a metric with no level raised and nothing counted is what a replay makes of it anyway)."""
    metrics = tuple(
        (n, tuple(m.levels), m.late, m.conflicts)
        for n, m in state.metrics.items()
        if any(m.levels) or m.late or m.conflicts
    )
    return state.online, state.since, metrics


@settings(max_examples=80, deadline=None)
@given(
    events=st.lists(
        st.one_of(
            st.tuples(st.sampled_from([1.0, 2.6, 3.1, 3.6]), st.integers(0, 30)),
            st.tuples(st.booleans(), st.integers(0, 30)),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_decisive_moves_whenever_what_a_replay_cannot_rebuild_changes(
    events: list[tuple[float | bool, int]],
) -> None:
    """Readings in and out of order, repeated and corrected, and statuses: ``decisive`` (a
    counter) changes at least whenever the levels, liveness or counts did."""
    sensor = gauge(THRESHOLD)
    state = DeviceState()
    for value, t in events:
        before, mark = _kept(state), decisive(sensor, state, 0.0)
        if isinstance(value, bool):
            ts = T0 + timedelta(seconds=t)
            on_status(sensor, state, DeviceStatus(device_id=sensor.id, online=value, ts=ts))
        else:
            on_reading(sensor, state, reading(value, t))
        if _kept(state) != before:
            assert decisive(sensor, state, 0.0) != mark


def test_only_memoryless_rules_without_lateness_store_the_state_sparingly() -> None:
    assert decisive(gauge(THRESHOLD), DeviceState(), 0.0) is not None
    assert decisive(gauge(THRESHOLD), DeviceState(), 1.0) is None
    n_of_m = {"type": "n_of_m", "metric": "water_level_m", "above": 2.0, "n": 2, "m": 3,
              "level": "yellow"}  # fmt: skip
    assert decisive(gauge(THRESHOLD, n_of_m), DeviceState(), 0.0) is None


def test_readings_older_than_the_lateness_are_counted_not_judged() -> None:
    sensor = gauge(THRESHOLD)
    state = DeviceState()
    for value, t in [(2.0, 0), (2.0, 10), (3.6, 2)]:
        found = on_reading(sensor, state, reading(value, t), 1.0)
        assert not found
    assert state.metrics["water_level_m"].late == 1


def test_a_second_value_for_a_held_time_is_counted_and_changes_no_decision(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sensor = gauge(THRESHOLD)
    state = DeviceState()
    assert on_reading(sensor, state, reading(2.0, 0)) == []
    stored = decisive(sensor, state, 0.0)
    # A red value for the same time: the first value stands, the conflict is kept in view.
    assert on_reading(sensor, state, reading(3.6, 0)) == []
    assert on_reading(sensor, state, reading(2.0, 0)) == []  # a plain redelivery
    metric = decode(encode(state)).metrics["water_level_m"]
    assert (metric.conflicts, metric.late, metric.levels) == (1, 0, [None])
    assert decisive(sensor, state, 0.0) != stored  # so the worker stores the count
    assert "second value 3.6 ignored, 2.0 stands" in caplog.text


def test_offline_from_last_will_and_heartbeat_and_back() -> None:
    sensor = gauge(THRESHOLD)
    state = DeviceState()
    on_reading(sensor, state, reading(1.0, 0), 0.0)
    assert not overdue(state, 60, T0 + timedelta(seconds=60))
    assert overdue(state, 60, T0 + timedelta(seconds=61))
    will = DeviceStatus(device_id="G-1", online=False, ts=T0 + timedelta(seconds=61))
    found = on_status(sensor, state, will)
    assert [(d.kind, d.level, d.rule) for d in found] == [
        (DetectionKind.DEVICE_OFFLINE, Level.YELLOW, "offline:status")
    ]
    # The retained will again (a bridge restart), or a heartbeat, changes nothing.
    again = DeviceStatus(
        device_id="G-1", online=False, ts=T0 + timedelta(seconds=70), cause="heartbeat"
    )
    before = encode(state)
    assert on_status(sensor, state, again) == []
    assert encode(state) == before
    assert not overdue(state, 60, T0 + timedelta(seconds=500))
    # A reading from before it went offline does not bring it back; a newer one does.
    found = on_reading(sensor, state, reading(1.0, 30), 0.0)
    assert not found and not state.online
    found = on_reading(sensor, state, reading(1.0, 80), 0.0)
    assert [(d.kind, d.cleared) for d in found] == [(DetectionKind.DEVICE_OFFLINE, True)]
    assert state.online
