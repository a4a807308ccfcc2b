"""The messages of ``gridwatch bench fuzz``: bad and good device messages from a seeded
generator, every shape the hardening issue names and more, for the devices of a site.

Each message says what it should become (``expect``) and which facts it names: the readings a
lenient reader would take from it (a value of ``"1.75"`` names the reading 1.75), or the status.
The bench does not trust these expectations: it looks each fact up in the database, and an
expectation that the database contradicts is reported as a disagreement. Good readings are timed
within a few minutes before now, every message at an instant of its own, so that no two
messages name the same reading unless one is meant to repeat or correct the other.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from typing import Any

from gridwatch.site import Site

GATEWAY = "gateway"
# Good readings start this far before now and take one millisecond each from there on.
FIRST_READING_S = 240
BIG_ARRAY_POINTS = 17_000  # a valid array of about 1 MB
HUGE_BYTES = 1 << 20
DEEP = 20_000  # nesting levels of the deepest message
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Outcome(StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    CORRECTION = "correction"
    DEADLETTERED = "dead-lettered"
    UNACCOUNTED = "unaccounted"


@dataclass(frozen=True)
class ReadingFact:
    device_id: str
    metric: str
    ts_us: int  # microseconds since the epoch: years 1 to 9999 and beyond fit
    value: float

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.device_id, self.metric, self.ts_us)


@dataclass(frozen=True)
class StatusFact:
    device_id: str
    online: bool
    ts_us: int | None  # None: the message carries no time, the bridge stamps its arrival


@dataclass(frozen=True)
class FuzzMessage:
    kind: str
    topic: str
    payload: bytes
    expect: Outcome
    readings: tuple[ReadingFact, ...] = ()
    status: StatusFact | None = None


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _us(dt: datetime) -> int:
    """Microseconds since the epoch, exact, also for instants a datetime in UTC cannot hold."""
    delta = dt - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _rfc3339(ms: int, offset_h: int) -> str:
    dt = datetime.fromtimestamp(ms / 1000, timezone(timedelta(hours=offset_h)))
    return dt.isoformat(timespec="milliseconds")


class Generator:
    """Messages for ``site``'s devices; ``now_ms`` anchors the good readings' times."""

    def __init__(self, site: Site, seed: int, now_ms: int) -> None:
        self.rng = random.Random(seed)
        self.street = site.street.code
        self.channels = [
            (sensor.id, metric, spec.min, spec.max)
            for sensor in site.sensors
            for metric, spec in sensor.metrics.items()
        ]
        self.now_ms = now_ms
        self.cursor = now_ms - FIRST_READING_S * 1000
        self.n = 0  # messages made so far: makes the odd timestamps unique too
        self.singles: list[FuzzMessage] = []  # good one-reading messages, to repeat or correct
        self.corrected: set[tuple[str, str, int]] = set()

    # Building blocks -----------------------------------------------------------------------

    def topic(self, device: str, channel: str = "telemetry") -> str:
        return f"gw/{self.street}/{device}/{channel}"

    def ts(self) -> int:
        self.cursor += 1
        return self.cursor

    def channel(self) -> tuple[str, str, float, float]:
        return self.rng.choice(self.channels)

    def value(self, low: float, high: float) -> float:
        return round(self.rng.uniform(low, low + (high - low) / 10), 3)

    def reading(self, ts_ms: int | None = None) -> tuple[str, str, int, float]:
        device, metric, low, high = self.channel()
        return device, metric, self.ts() if ts_ms is None else ts_ms, self.value(low, high)

    def point(self, metric: str, value: Any, ts: Any, seq: Any = None) -> dict[str, Any]:
        body: dict[str, Any] = {"ts": ts}
        if seq is not None:
            body["seq"] = seq
        body["values"] = {metric: value}
        return body

    def bad(
        self,
        kind: str,
        topic: str,
        payload: bytes,
        *facts: ReadingFact,
        status: StatusFact | None = None,
    ) -> FuzzMessage:
        return FuzzMessage(kind, topic, payload, Outcome.DEADLETTERED, facts, status)

    def bad_point(self, kind: str, **changes: Any) -> FuzzMessage:
        """A good single reading with some fields replaced; it names the reading leniently read
        (``lenient``: the value and time a coercing reader would see), if any."""
        device, metric, ts, value = self.reading()
        lenient = changes.pop("lenient", (value, ts * 1000))
        body = {**self.point(metric, value, ts, self.n), **changes}
        facts = () if lenient is None else (ReadingFact(device, metric, lenient[1], lenient[0]),)
        return self.bad(kind, self.topic(device), _json(body), *facts)

    # Good messages ---------------------------------------------------------------------------

    def good_single(self) -> FuzzMessage:
        device, metric, ts, value = self.reading()
        message = FuzzMessage(
            "good single",
            self.topic(device),
            _json(self.point(metric, value, ts, self.n)),
            Outcome.STORED,
            (ReadingFact(device, metric, ts * 1000, value),),
        )
        self.singles.append(message)
        return message

    def good_rfc3339(self) -> FuzzMessage:
        device, metric, ts, value = self.reading()
        offset = self.rng.choice([-5, 0, 8, 14])
        body = self.point(metric, value, _rfc3339(ts, offset))
        fact = ReadingFact(device, metric, ts * 1000, value)
        return FuzzMessage(
            "good RFC 3339 time", self.topic(device), _json(body), Outcome.STORED, (fact,)
        )

    def good_array(self, points: int | None = None, kind: str = "good array") -> FuzzMessage:
        device, metric, low, high = self.channel()
        body, facts = [], []
        for i in range(points or self.rng.randint(2, 6)):
            ts, value = self.ts(), self.value(low, high)
            body.append(self.point(metric, value, ts, i))
            facts.append(ReadingFact(device, metric, ts * 1000, value))
        return FuzzMessage(kind, self.topic(device), _json(body), Outcome.STORED, tuple(facts))

    def big_array(self) -> FuzzMessage:
        """Valid readings in more bytes than the bridge takes in one message."""
        array = self.good_array(BIG_ARRAY_POINTS, "valid array of 17,000 points (~1 MB)")
        return dataclasses.replace(array, expect=Outcome.DEADLETTERED, readings=())

    def good_gateway(self) -> FuzzMessage:
        devices = self.rng.sample(self.channels, self.rng.randint(2, min(5, len(self.channels))))
        body: dict[str, list[dict[str, Any]]] = {}
        facts = []
        for device, metric, low, high in devices:
            for _ in range(self.rng.randint(1, 2)):
                ts, value = self.ts(), self.value(low, high)
                body.setdefault(device, []).append(self.point(metric, value, ts))
                facts.append(ReadingFact(device, metric, ts * 1000, value))
        return FuzzMessage(
            "good gateway", self.topic(GATEWAY), _json(body), Outcome.STORED, tuple(facts)
        )

    def good_status(self) -> FuzzMessage:
        device, *_ = self.channel()
        online = self.rng.random() < 0.5
        state = "online" if online else "offline"
        if self.rng.random() < 0.5:
            payload, ts_us = state.encode(), None
        else:
            ts = self.ts()
            payload, ts_us = _json({"state": state, "ts": ts}), ts * 1000
        return FuzzMessage(
            "good status",
            self.topic(device, "status"),
            payload,
            Outcome.STORED,
            status=StatusFact(device, online, ts_us),
        )

    def seq_minus_one(self) -> FuzzMessage:
        device, metric, ts, value = self.reading()
        return FuzzMessage(
            "seq -1",
            self.topic(device),
            _json(self.point(metric, value, ts, -1)),
            Outcome.DEADLETTERED,  # a sequence number counts up from 0
        )

    def duplicate(self) -> FuzzMessage:
        original = self.rng.choice(self.singles)
        return replace(original, kind="exact repeat", expect=Outcome.DUPLICATE)

    def correction(self) -> FuzzMessage:
        open_ = [m for m in self.singles if m.readings[0].key not in self.corrected]
        if not open_:
            return self.good_single()
        original = self.rng.choice(open_)
        fact = original.readings[0]
        low, high = next((lo, hi) for d, m, lo, hi in self.channels if (d, m) == fact.key[:2])
        value = fact.value
        while value == fact.value:
            value = self.value(low, high)
        self.corrected.add(fact.key)
        body = self.point(fact.metric, value, fact.ts_us // 1000)
        return FuzzMessage(
            "conflicting second value",
            original.topic,
            _json(body),
            Outcome.CORRECTION,
            (replace(fact, value=value),),
        )

    # Bad messages ----------------------------------------------------------------------------

    def huge_payload(self) -> FuzzMessage:
        device, metric, ts, value = self.reading()
        if self.rng.random() < 0.5:
            body = {**self.point(metric, value, ts), "pad": "x" * HUGE_BYTES}
            return self.bad(
                "1 MB payload",
                self.topic(device),
                _json(body),
                ReadingFact(device, metric, ts * 1000, value),
            )
        return self.bad("1 MB payload", self.topic(device), self.rng.randbytes(HUGE_BYTES))

    def times(self) -> list[tuple[str, Any, int | None]]:
        """(kind, ts as sent, the instant a lenient reader takes it for in µs) of bad times."""
        n, now_s = self.n, self.now_ms // 1000
        year1 = datetime(1, 1, 1, tzinfo=UTC) + timedelta(milliseconds=n)
        y2100 = int(datetime(2100, 1, 1, tzinfo=UTC).timestamp() * 1000) + n
        far = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-14)))
        good = self.ts()
        return [
            ("ts 1e20", 1e20, None),
            ('ts "9999-12-31T23:59:59-14:00"', far.isoformat(), _us(far)),
            ("ts in 2100", y2100, y2100 * 1000),
            ("ts in year 1", year1.isoformat().replace("+00:00", "Z"), _us(year1)),
            ("ts near epoch 0", n, n * 1000),
            ("ts in seconds, not milliseconds", now_s - n, (now_s - n) * 1000),
            ("ts negative", -1000 - n, (-1000 - n) * 1000),
            ("ts as a string number", str(good), good * 1000),
            ("ts as a float", good + 0.5, good * 1000 + 500),
            ("ts as an integral float", float(good), good * 1000),
            ("ts without offset", _rfc3339(good, 0)[:-6], None),
            ("ts as a boolean", True, 1000),
        ]

    def bad_time(self) -> FuzzMessage:
        kind, ts, lenient_us = self.rng.choice(self.times())
        device, metric, _, value = self.reading()
        facts = () if lenient_us is None else (ReadingFact(device, metric, lenient_us, value),)
        body = self.point(metric, value, ts)
        return self.bad(kind, self.topic(device), _json(body), *facts)

    def bad_seq(self) -> FuzzMessage:
        kind, seq = self.rng.choice(
            [
                ("seq 2**63", 2**63),
                ("seq 10**30", 10**30),
                ('seq "7"', "7"),
                ("seq 7.5", 7.5),
                ("seq true", True),
            ]
        )
        return self.bad_point(kind, seq=seq)

    def bad_value(self) -> FuzzMessage:
        device, metric, ts, value = self.reading()
        kind, sent, lenient = self.rng.choice(
            [
                ('value "1.75"', "1.75", 1.75),
                ("value true", True, 1.0),
                ("value null", None, None),
                ("value as an object", {"v": value}, None),
                ("value as a list", [value], None),
                ('value "1\\u0000"', "1\x00", None),
            ]
        )
        body = self.point(metric, sent, ts)
        facts = () if lenient is None else (ReadingFact(device, metric, ts * 1000, lenient),)
        return self.bad(kind, self.topic(device), _json(body), *facts)

    def non_finite(self) -> FuzzMessage:
        device, metric, ts, _ = self.reading()
        literal = self.rng.choice(["NaN", "Infinity", "-Infinity", "1e400"])
        text = f'{{"ts":{ts},"values":{{"{metric}":{literal}}}}}'
        return self.bad(f"value {literal}", self.topic(device), text.encode())

    def duplicate_key(self) -> FuzzMessage:
        device, metric, ts, value = self.reading()
        other = round(value + 1, 3)
        if self.rng.random() < 0.5:
            text = f'{{"ts":{ts},"values":{{"{metric}":{value},"{metric}":{other}}}}}'
            return self.bad(
                "duplicate key in values",
                self.topic(device),
                text.encode(),
                ReadingFact(device, metric, ts * 1000, other),
            )
        later = self.ts()
        text = f'{{"ts":{ts},"ts":{later},"values":{{"{metric}":{value}}}}}'
        return self.bad(
            "duplicate top-level key",
            self.topic(device),
            text.encode(),
            ReadingFact(device, metric, later * 1000, value),
        )

    def nul(self) -> FuzzMessage:
        device, metric, ts, value = self.reading()
        choice = self.rng.randrange(3)
        if choice == 0:
            body = self.point(metric[:3] + "\x00" + metric[3:], value, ts)
            return self.bad("NUL in a metric name", self.topic(device), _json(body))
        if choice == 1:
            body_gw = {device[:2] + "\x00" + device[2:]: [self.point(metric, value, ts)]}
            return self.bad("NUL in a device id", self.topic(GATEWAY), _json(body_gw))
        topic = self.topic(device + "\x00x")
        return self.bad("NUL in the topic", topic, _json(self.point(metric, value, ts)))

    def empty(self) -> FuzzMessage:
        device, metric, *_ = self.channel()
        kind, topic, payload = self.rng.choice(
            [
                ("empty array", self.topic(device), b"[]"),
                ("empty gateway object", self.topic(GATEWAY), b"{}"),
                ("gateway device with an empty array", self.topic(GATEWAY), _json({device: []})),
                ("empty values", self.topic(device), _json({"ts": self.ts(), "values": {}})),
                ("no values", self.topic(device), _json({"ts": self.ts()})),
                ("empty payload", self.topic(device), b""),
            ]
        )
        return self.bad(kind, topic, payload)

    def not_json(self) -> FuzzMessage:
        device, metric, ts, value = self.reading()
        good = _json(self.point(metric, value, ts))
        kind, payload = self.rng.choice(
            [
                ("not JSON", b"water level high"),
                ("not JSON", self.rng.randbytes(self.rng.randint(1, 200))),
                ("truncated JSON", good[: self.rng.randint(1, len(good) - 1)]),
                ("invalid UTF-8", good.replace(b'"values"', b'"values\xff\xfe"')),
                ("lone surrogate", f'{{"ts":{ts},"values":{{"\\ud800":{value}}}}}'.encode()),
                ("JSON null", b"null"),
                ("JSON number", b"42"),
                ("JSON string", b'"online"'),
            ]
        )
        return self.bad(kind, self.topic(device), payload)

    def deep(self) -> FuzzMessage:
        device, *_ = self.channel()
        if self.rng.random() < 0.5:
            payload = b"[" * DEEP + b"]" * DEEP
        else:
            payload = b'{"ts":1,"values":' + b'{"a":' * DEEP + b"1" + b"}" * (DEEP + 1)
        return self.bad("deeply nested JSON", self.topic(device), payload)

    def stranger(self) -> FuzzMessage:
        device, metric, ts, value = self.reading()
        choice = self.rng.randrange(5)
        if choice == 0:
            unknown = f"ZZ-{self.n:05d}"
            return self.bad(
                "unknown device",
                self.topic(unknown),
                _json(self.point(metric, value, ts)),
                ReadingFact(unknown, metric, ts * 1000, value),
            )
        if choice == 1:
            unknown = f"ZZ-{self.n:05d}"
            return self.bad(
                "unknown device in a gateway message",
                self.topic(GATEWAY),
                _json({unknown: [self.point(metric, value, ts)]}),
                ReadingFact(unknown, metric, ts * 1000, value),
            )
        if choice == 2:
            return self.bad(
                "unknown metric",
                self.topic(device),
                _json(self.point("humidity_pct", value, ts)),
                ReadingFact(device, "humidity_pct", ts * 1000, value),
            )
        if choice == 3:
            return self.bad_point("extra field", firmware="1.2.3")
        return self.bad(
            "wrong street",
            f"gw/999999999/{device}/telemetry",
            _json(self.point(metric, value, ts)),
            ReadingFact(device, metric, ts * 1000, value),
        )

    def out_of_range(self) -> FuzzMessage:
        device, metric, low, high = self.channel()
        value = round(
            self.rng.choice([high + 1 + self.rng.random() * high, low - 1 - self.rng.random()]), 3
        )
        ts = self.ts()
        return self.bad(
            "value outside the plausible range",
            self.topic(device),
            _json(self.point(metric, value, ts)),
            ReadingFact(device, metric, ts * 1000, value),
        )

    def bad_status(self) -> FuzzMessage:
        device, *_ = self.channel()
        topic = self.topic(device, "status")
        kind, payload, fact = self.rng.choice(
            [
                ("status with an unknown state", _json({"state": "maybe"}), None),
                ("status ts 1e20", _json({"state": "online", "ts": 1e20}), None),
                (
                    'status ts "9999-12-31T23:59:59-14:00"',
                    _json({"state": "offline", "ts": "9999-12-31T23:59:59-14:00"}),
                    None,
                ),
                (
                    "status with an extra field",
                    _json({"state": "online", "battery": 3}),
                    StatusFact(device, True, None),
                ),
                ("status not JSON", b"onlin", None),
                ("status empty", b"", None),
            ]
        )
        if self.rng.random() < 0.2:
            unknown = f"ZZ-{self.n:05d}"
            kind, topic = "status of an unknown device", self.topic(unknown, "status")
            payload, fact = b"online", StatusFact(unknown, True, None)
        return self.bad(kind, topic, payload, status=fact)


# What each kind of message is made by, with its weight among the messages. The heavy ones
# (a megabyte each, or 17,000 readings) come at most once per HEAVY_EVERY messages.
MAKERS: dict[str, tuple[Callable[[Generator], FuzzMessage], float]] = {
    "good single": (Generator.good_single, 14),
    "good RFC 3339 time": (Generator.good_rfc3339, 3),
    "good array": (Generator.good_array, 6),
    "good gateway": (Generator.good_gateway, 6),
    "good status": (Generator.good_status, 4),
    "seq -1": (Generator.seq_minus_one, 1),
    "exact repeat": (Generator.duplicate, 5),
    "conflicting second value": (Generator.correction, 4),
    "bad time": (Generator.bad_time, 10),
    "bad seq": (Generator.bad_seq, 4),
    "bad value": (Generator.bad_value, 5),
    "non-finite value": (Generator.non_finite, 3),
    "duplicate key": (Generator.duplicate_key, 3),
    "NUL": (Generator.nul, 3),
    "empty": (Generator.empty, 4),
    "not JSON": (Generator.not_json, 5),
    "stranger": (Generator.stranger, 6),
    "out of range": (Generator.out_of_range, 3),
    "bad status": (Generator.bad_status, 3),
    "deeply nested": (Generator.deep, 0.5),
    "1 MB payload": (Generator.huge_payload, 0),
    "valid ~1 MB array": (Generator.big_array, 0),
}
HEAVY = ("1 MB payload", "valid ~1 MB array")
HEAVY_EVERY = 2500


def generate(site: Site, count: int, seed: int, now_ms: int) -> list[FuzzMessage]:
    """``count`` messages: good ones first (something to repeat and correct), one of each
    maker as soon as ``count`` allows, the rest drawn by weight, in a seeded order."""
    gen = Generator(site, seed, now_ms)
    opening = ["good single", "good array", "good gateway"]
    rest = [name for name in MAKERS if name not in opening]
    heavy = max(1, count // HEAVY_EVERY)
    drawn = [n for n in rest if n not in HEAVY] + [h for h in HEAVY for _ in range(heavy)]
    names = [n for n, (_, w) in MAKERS.items() if w > 0]
    weights = [MAKERS[n][1] for n in names]
    fill = max(0, count - len(opening) - len(drawn))
    order = drawn + gen.rng.choices(names, weights, k=fill)
    gen.rng.shuffle(order)
    messages = []
    for name in (opening + order)[:count]:
        messages.append(MAKERS[name][0](gen))
        gen.n += 1
    return messages
