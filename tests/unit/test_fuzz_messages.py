"""The fuzz benchmark's messages: seeded, every shape of the hardening issue, good ones that the
bridge's parser accepts as the readings they claim to carry, timed within the accepted window."""

import json
import time
from collections import Counter

import pytest

from benchmarks.fuzz_messages import (
    BIG_ARRAY_POINTS,
    HUGE_BYTES,
    FuzzMessage,
    Outcome,
    generate,
)
from gridwatch.site import Site
from ingest.telemetry import parse_status, parse_telemetry

NOW_MS = int(time.time() * 1000)
# Every shape the issue lists (and a few more), by the kind the generator gives it.
SHAPES = {
    "1 MB payload", "valid array of 17,000 points (~1 MB)", "ts 1e20",
    'ts "9999-12-31T23:59:59-14:00"', "ts in 2100", "ts in year 1", "ts near epoch 0",
    "ts in seconds, not milliseconds", "seq 2**63", "seq 10**30", "seq -1", 'seq "7"',
    "NUL in a metric name", "NUL in a device id", "NUL in the topic", "empty array",
    "empty gateway object", "gateway device with an empty array", "duplicate key in values",
    "duplicate top-level key", 'value "1.75"', "value true", "ts as a string number",
    "ts as a float", "value NaN", "value Infinity", "invalid UTF-8", "not JSON",
    "truncated JSON", "deeply nested JSON", "unknown device", "unknown metric",
    "value outside the plausible range", "wrong street", "good status", "exact repeat",
    "conflicting second value", "good single", "good array", "good gateway",
}  # fmt: skip


@pytest.fixture(scope="module")
def messages(site: Site) -> list[FuzzMessage]:
    return generate(site, 3000, seed=5, now_ms=NOW_MS)


def test_the_same_seed_makes_the_same_messages(site: Site) -> None:
    first = generate(site, 300, seed=9, now_ms=NOW_MS)
    assert first == generate(site, 300, seed=9, now_ms=NOW_MS)
    assert first != generate(site, 300, seed=10, now_ms=NOW_MS)


def test_every_shape_of_the_issue_is_made(messages: list[FuzzMessage]) -> None:
    kinds = Counter(m.kind for m in messages)
    assert SHAPES <= set(kinds), SHAPES - set(kinds)
    assert len(messages) == 3000
    huge = next(m for m in messages if m.kind == "1 MB payload")
    assert len(huge.payload) >= HUGE_BYTES


def test_the_big_array_is_valid_and_about_a_megabyte(
    site: Site, messages: list[FuzzMessage]
) -> None:
    big = next(m for m in messages if m.kind.startswith("valid array"))
    assert 0.9e6 < len(big.payload) < 1.3e6
    assert len(parse_telemetry(site, big.topic, big.payload)) == BIG_ARRAY_POINTS


def test_good_messages_are_accepted_as_the_readings_they_name(
    site: Site, messages: list[FuzzMessage]
) -> None:
    window = (NOW_MS - 300_000) * 1000, (NOW_MS + 300_000) * 1000
    good = [m for m in messages if m.expect is not Outcome.DEADLETTERED]
    assert len(good) > len(messages) / 3
    for message in good:
        if message.status is not None:
            status = parse_status(site, message.topic, message.payload)
            assert (status.device_id, status.online) == (
                message.status.device_id,
                message.status.online,
            )
            continue
        parsed = {
            (r.device_id, metric, int(r.ts.timestamp() * 1_000_000), value)
            for r in parse_telemetry(site, message.topic, message.payload)
            for metric, (value, _unit) in r.values.items()
        }
        assert parsed == {(*f.key, f.value) for f in message.readings}, message.kind
        assert all(window[0] <= f.ts_us <= window[1] for f in message.readings)


def test_two_messages_name_the_same_reading_only_to_repeat_or_correct_it(
    messages: list[FuzzMessage],
) -> None:
    first: dict[tuple[str, str, int], FuzzMessage] = {}
    for message in messages:
        for fact in message.readings:
            earlier = first.setdefault(fact.key, message)
            if earlier is not message and earlier.expect is Outcome.STORED:
                assert message.expect in (Outcome.DUPLICATE, Outcome.CORRECTION), message.kind
                if message.expect is Outcome.DUPLICATE:
                    assert (message.topic, message.payload) == (earlier.topic, earlier.payload)
                else:
                    assert (
                        json.loads(message.payload)["values"]
                        != json.loads(earlier.payload)["values"]
                    )
