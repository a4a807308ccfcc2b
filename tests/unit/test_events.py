import hashlib
import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from gridwatch.errors import PayloadError
from gridwatch.events import (
    DEADLETTER_KEEP_BYTES,
    DeadLetter,
    Level,
    Reading,
    decode,
    derived_id,
    reason_of,
)


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


def test_a_derived_id_repeats_for_the_same_parts_and_sorts_by_event_time() -> None:
    t0 = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)
    t1 = datetime(2026, 7, 1, 8, 0, 0, 1000, tzinfo=UTC)  # a millisecond later
    first = derived_id(t0, "water_level", "WL-001", "red")
    assert first == derived_id(t0, "water_level", "WL-001", "red")
    assert first.version == 8
    assert first != derived_id(t0, "water_level", "WL-001", "orange")
    assert first != derived_id(t1, "water_level", "WL-001", "red")
    assert sorted([derived_id(t1, "a"), derived_id(t0, "z")]) == [
        derived_id(t0, "z"),
        derived_id(t1, "a"),
    ]


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


def test_dead_letter_of_a_large_message_is_bounded_with_size_and_digest() -> None:
    raw = b"[" + b'{"ts":1,"values":{"x":1}},' * 50_000 + b"]"
    letter = decode(DeadLetter, DeadLetter.of("mqtt:gw/x", raw, "too large").to_bytes())
    assert letter.size == len(raw) and letter.truncated
    assert letter.payload == raw[:DEADLETTER_KEEP_BYTES]
    assert letter.sha256 == hashlib.sha256(raw).hexdigest()
    assert len(letter.to_bytes()) < 2 * DEADLETTER_KEEP_BYTES


def test_dead_letter_text_is_storable_in_postgresql() -> None:
    letter = DeadLetter.of("mqtt:gw/x/a\x00b/telemetry", b"{}", "metric 'a\x00b\ud800' unknown")
    assert "\x00" not in letter.source + letter.reason
    assert letter.reason == "metric 'a\\x00b\\ud800' unknown"
    (letter.source + letter.reason).encode("utf-8")


def test_an_unforeseen_error_is_a_reason_on_one_line() -> None:
    assert reason_of(PayloadError("seq: too large")) == "seq: too large"
    assert reason_of(OverflowError("date\nvalue out of range")) == (
        "processing error: OverflowError('date\\nvalue out of range')"
    )


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("seq", 2**63, "less than or equal to 9223372036854775807"),
        ("seq", -(2**63) - 1, "greater than or equal to"),
        ("metric", "water\x00level", "should match pattern"),
        ("unit", "m\x00", "should match pattern"),
    ],
)
def test_values_postgresql_cannot_store_are_refused_at_validation(
    field: str, value: object, problem: str
) -> None:
    fields = {"device_id": "d", "metric": "m", "value": 1.0, "unit": "u", "seq": 1}
    fields[field] = value
    with pytest.raises(ValidationError, match=problem):
        Reading(ts=datetime(2026, 1, 1, tzinfo=UTC), **fields)  # type: ignore[arg-type]


def test_an_infinite_float_is_refused_at_validation() -> None:
    r = Reading(device_id="d", metric="m", value=1, unit="u", ts=datetime(2026, 1, 1, tzinfo=UTC))
    with pytest.raises(PayloadError, match="value: Input should be a finite number"):
        decode(Reading, r.to_bytes().replace(b'"value":1.0', b'"value":1e999'))
