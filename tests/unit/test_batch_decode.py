"""The msgspec decode of reading batches accepts only what pydantic accepts, as the same batch,
and every refusal carries pydantic's reason: on a seeded corpus of good and bad batches."""

import json
import random
from datetime import UTC, datetime, timedelta

import pytest

from gridwatch.batch_decode import decode_reading_batch, decode_reading_batches
from gridwatch.errors import PayloadError
from gridwatch.events import ReadingBatch, Report, decode

# Each replaces one piece of a good batch's JSON: the limits of the wire model and the shapes
# where msgspec and pydantic could read a message differently.
SWAPS: dict[str, list[str]] = {
    '"2026-12-01T08:00:00.250000Z"': [
        '"2026-12-01T08:00:00.1234567Z"', '"2026-12-01T08:00:00.9999995Z"',
        '"2026-12-01T08:00:60Z"', '"2026-12-01 08:00:00Z"', '"2026-12-01T08:00:00"',
        '"2026-12-01T08:00:00+24:00"', '"2026-12-01T08:00:00+23:59"', "1764547200",
        '"2026-12-01t08:00:00z"', '"2026-12-01T08:00Z"', '"2026-12-01T08:00:00,5Z"',
        '"2026-12-01T08:00:00+0100"', '"+2026-12-01T08:00:00Z"', '"2026-12-01T24:00:00Z"',
        '"2026-02-30T08:00:00Z"', '"0000-01-01T00:00:00Z"', '"9999-12-31T23:59:59-14:00"',
        '"2026-12-01"', "null", '""',
    ],
    '"seq":7': [
        '"seq":9223372036854775807', '"seq":9223372036854775808', '"seq":-9223372036854775809',
        '"seq":1.0', '"seq":true', '"seq":"7"', '"seq":1e3', '"seq":-0', '"seq":null', '"sq":7',
    ],
    "[2.5,": [
        "[1e999,", "[-1e999,", "[NaN,", "[Infinity,", "[1,", '["1.5",', "[true,", "[null,",
        "[1.7976931348623157e308,", "[123456789012345678901234567890,", "[-0.0,", "[1E400,",
        "[2.12345678901,", "[[2.5],",
    ],
    '"m",': ['"m\\u0000",', '"m\\ud800",', '"m\\ud83d\\ude00",', '"",', "1,", '"m","x",'],
    '"device_id":"D1"': [
        '"device_id":"D\\u0000"', '"device_id":""', '"device_id":"' + "a" * 65 + '"',
        '"device_id":"' + "é" * 64 + '"', '"device_id":"D1","device_id":"D2"', '"device_id":1',
        '"device_id":"D\\\\u0000"', '"device_id":"12:34:56.1234567"',
    ],
    '"level_m":': ['"level_m\\u0000":', '"level_m":[2.5,"m"],"level_m":'],
    '"id":"0193a0b0-0000-7000-8000-000000000001"': [
        '"id":"0193a0b0000070008000000000000001"', '"id":"{0193a0b0-0000-7000-8000-000000000001}"',
        '"id":"urn:uuid:0193a0b0-0000-7000-8000-000000000001"', '"id":"nope"', '"id":7',
    ],
    '"schema":"gw.reading-batch/1"': [
        '"schema":"gw.reading-batch/2"', '"schema":"gw.reading-batch/1","schema":"x"',
        '"schema":"gw.reading-batch/1","extra":1', "",
    ],
    '"received_at":"2026-12-01T08:00:01Z",': ['"received_at":"2026-12-01T08:00:01",'],
    '"reports":[': ['"reports":[],"r":[', '"reports":{}, "r":['],
    "}]}": ["}]", "}]}}", "}]},{}", "}]} ", "}],}", "},{}]}"],
}  # fmt: skip


def _good() -> str:
    return json.dumps(
        {
            "id": "0193a0b0-0000-7000-8000-000000000001",
            "schema": "gw.reading-batch/1",
            "received_at": "2026-12-01T08:00:01Z",
            "reports": [
                {
                    "device_id": "D1",
                    "ts": "2026-12-01T08:00:00.250000Z",
                    "seq": 7,
                    "values": {"level_m": [2.5, "m"], "rain": [0.0, "mm/h"]},
                },
                {"device_id": "D2", "ts": "2026-12-01T08:00:00.5Z", "values": {"m": [1, "-"]}},
            ],
        },
        separators=(",", ":"),
    ).replace('"values":{"m":[1,', '"values":{"m":[2.5,')


def corpus(seed: int = 3, mixed: int = 400) -> list[bytes]:
    """Every swap alone, then ``mixed`` batches of two or three swaps at once."""
    good = _good()
    singles = [(old, new) for old, news in SWAPS.items() for new in news]
    messages = [good.encode()] + [good.replace(old, new, 1).encode() for old, new in singles]
    rng = random.Random(seed)
    for _ in range(mixed):
        text = good
        for old, new in rng.sample(singles, rng.randint(2, 3)):
            text = text.replace(old, new, 1)
        messages.append(text.encode())
    now = datetime.now(UTC)
    made = [
        ReadingBatch(
            received_at=now,
            reports=(Report.trusted("D9", now - timedelta(seconds=i), i, {"m": (i / 3, "-")}),),
        )
        for i in range(5)
    ]
    return messages + [b.to_bytes() for b in made]


def _outcome(decoder: object, data: bytes) -> tuple[str, object]:
    try:
        batch = decoder(data)  # type: ignore[operator]
    except PayloadError as err:
        return "refused", str(err)
    return "accepted", batch.model_dump()


@pytest.mark.parametrize("data", corpus(), ids=lambda d: d.decode(errors="replace")[:70])
def test_msgspec_and_pydantic_agree_on_every_batch(data: bytes) -> None:
    slow = _outcome(lambda d: decode(ReadingBatch, d), data)
    assert _outcome(decode_reading_batch, data) == slow


def test_the_corpus_holds_both_outcomes_and_accepted_batches_decode_at_once() -> None:
    outcomes = {data: _outcome(decode_reading_batch, data) for data in corpus()}
    accepted = [data for data, (what, _) in outcomes.items() if what == "accepted"]
    assert len(accepted) >= 20
    assert len(outcomes) - len(accepted) >= 200
    fast = [data for data in accepted if decode_reading_batches([data]) is not None]
    assert len(fast) >= 10  # msgspec itself takes the batches the bridge writes
    whole = decode_reading_batches(fast)
    assert whole is not None
    assert [b.model_dump() for b in whole] == [outcomes[data][1] for data in fast]


def test_a_batch_array_with_one_message_msgspec_refuses_is_left_to_pydantic() -> None:
    good = _good().encode()
    for data in corpus():
        whole = decode_reading_batches([good, data])
        if whole is not None:  # msgspec took both: pydantic takes both, as the same batches
            assert [b.model_dump() for b in whole] == [
                decode(ReadingBatch, good).model_dump(),
                decode(ReadingBatch, data).model_dump(),
            ]
    assert decode_reading_batches([good, b'{"a":1},{"b":2}']) is None  # two items, one message
