"""A batch of readings is judged and stored as its readings one by one would be, without a
Reading object per value on the way."""

import json
from datetime import UTC, datetime, timedelta

from detectors.sensor_state import DeviceState, decode, on_reading
from gridwatch.events import Reading, ReadingBatch, Report
from gridwatch.site import Site
from gridwatch.store.writer import SPECS
from streams.sensor_agents import StateCache, _Round

T0 = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)


def batch(values: list[tuple[str, float]], step: int, *, ahead_s: float = 0.0) -> ReadingBatch:
    reports = tuple(
        Report.trusted(
            device, T0 + timedelta(seconds=step + ahead_s), step, {"water_level_m": (value, "m")}
        )  # fmt: skip
        for device, value in values
    )
    return ReadingBatch(received_at=T0 + timedelta(seconds=step), reports=reports)


def test_a_batch_is_stored_as_the_rows_of_its_readings() -> None:
    readings = batch([("WL-1", 2.0), ("WL-2", 3.1)], 0)
    rows = SPECS[ReadingBatch].rows([readings])
    assert rows == [SPECS[Reading].row(r) for r in readings.readings()]


def test_a_batch_is_judged_as_its_readings_one_by_one(tiny_site: Site) -> None:
    steps = [[("WL-1", 2.0), ("WL-2", 2.6)], [("WL-1", 3.6), ("WL-2", 2.6)],
             [("WL-1", 1.0), ("WL-2", 3.1)]]  # fmt: skip
    table: dict[bytes, bytes] = {}
    cache = StateCache(tiny_site)
    alone: dict[str, DeviceState] = {"WL-1": DeviceState(), "WL-2": DeviceState()}
    for step, values in enumerate(steps):
        judging = _Round(tiny_site, _Table(table), cache, T0, T0 + timedelta(seconds=300))
        message = batch(values, step)
        assert judging.take(message) == []
        for sensor, state in judging.touched.values():
            table[sensor.id.encode()] = cache.store(sensor.id, state)
        expected = []
        for reading in message.readings():
            sensor = tiny_site.sensor(reading.device_id)
            assert sensor is not None
            for d in on_reading(sensor, alone[reading.device_id], reading):
                expected.append((reading.device_id.encode(), d.rule, d.level, d.evidence))
        got = [(key, d.rule, d.level, d.evidence) for key, d in judging.found]
        assert got == expected and got
    assert decode(table[b"WL-1"]) == alone["WL-1"]


def test_a_reading_that_fails_comes_back_alone_as_the_reading_it_is(tiny_site: Site) -> None:
    judging = _Round(tiny_site, _Table({}), StateCache(tiny_site), T0, T0 + timedelta(seconds=1))
    message = batch([("WL-1", 2.0), ("GHOST", 1.0)], 0)
    ahead = batch([("WL-2", 2.0)], 0, ahead_s=60)
    failed = judging.take(message) + judging.take(ahead)
    ghost, early = message.readings()[1], ahead.readings()[0]
    assert [(raw, str(err)) for raw, err in failed] == [
        (ghost.to_bytes(), "unknown device 'GHOST'"),
        (early.to_bytes(), "ts: 2026-07-01T08:01:00+00:00 is 60 s ahead of the rules worker's"
                           " clock, beyond telemetry.max_ahead_s (1 s)"),
    ]  # fmt: skip
    assert list(judging.touched) == ["WL-1"]


def test_a_state_stored_with_whole_readings_still_loads() -> None:
    reading = Reading(device_id="WL-1", metric="water_level_m", value=2.0, unit="m", ts=T0)
    metric = {"pending": [], "history": [json.loads(reading.to_bytes())], "levels": [None],
              "late": 0, "conflicts": 0}  # fmt: skip
    old = {"metrics": {"water_level_m": metric}, "last_seen": T0.isoformat(), "online": True,
           "since": None}  # fmt: skip
    (sample,) = decode(json.dumps(old)).metrics["water_level_m"].history
    assert sample.reading("WL-1", "water_level_m") == reading


class _Table(dict[bytes, bytes]):
    """A Faust table as the agent reads it: an unknown key is an empty state."""

    def __missing__(self, key: bytes) -> bytes:
        return b""
