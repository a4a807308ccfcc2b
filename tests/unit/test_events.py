import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from gridwatch.errors import PayloadError
from gridwatch.events import DeadLetter, Level, Reading, decode


def test_reading_round_trip_keeps_schema_tag_and_time() -> None:
    r = Reading(
        device_id="WL-1",
        metric="water_level_m",
        value=1.5,
        unit="m",
        ts=datetime(2026, 7, 1, tzinfo=UTC),
    )
    data = json.loads(r.to_bytes())
    assert data["schema"] == "gw.reading/1"
    assert decode(Reading, r.to_bytes()) == r


def test_ids_are_time_ordered() -> None:
    ids = [DeadLetter.of("t", b"x", "r").id for _ in range(50)]
    assert ids == sorted(ids)
    assert all(i.version == 7 for i in ids)


def test_models_are_frozen_and_strict() -> None:
    r = Reading(device_id="d", metric="m", value=1, unit="u", ts=datetime(2026, 1, 1, tzinfo=UTC))
    with pytest.raises(ValidationError):
        r.value = 2  # type: ignore[misc]
    with pytest.raises(PayloadError, match="colour: Extra inputs"):
        decode(Reading, r.to_bytes().replace(b'"unit"', b'"colour":1,"unit"'))


def test_naive_times_are_rejected() -> None:
    with pytest.raises(ValidationError, match="timezone"):
        Reading(device_id="d", metric="m", value=1, unit="u", ts=datetime(2026, 1, 1))  # noqa: DTZ001


def test_dead_letter_keeps_original_bytes() -> None:
    raw = b"\xff\x00not json"
    letter = decode(DeadLetter, DeadLetter.of("mqtt:gw/x", raw, "bad").to_bytes())
    assert letter.payload == raw


def test_level_order_and_raise() -> None:
    assert Level.YELLOW.raised() is Level.ORANGE
    assert Level.ORANGE.raised(5) is Level.RED
    assert sorted([Level.RED, Level.YELLOW, Level.ORANGE], key=lambda x: x.rank) == list(Level)
