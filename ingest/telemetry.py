"""Device telemetry as it arrives over MQTT (DESIGN.md §3), checked against the site's registry.

Accepted shapes, on ``gw/<street>/<device_id>/telemetry``::

    {"ts": 1764230400000, "seq": 7, "values": {"water_level_m": 2.31}}
    [{"ts": "2026-11-27T08:00:00+08:00", "values": {...}}, ...]

and on ``gw/<street>/gateway/telemetry``: ``{"<device_id>": [{"ts": ..., "values": {...}}]}``.
A device's retained ``gw/<street>/<device_id>/status`` is ``online`` or ``offline`` (its last
will), plain or as ``{"state": "offline", "ts": ...}``.

Input is strict, and a refusal names the field and the rule in one line
(``[0].ts: 4102444800000 is more than 300 s ahead of the receiver's clock …``):

- ``ts`` is an integer of epoch milliseconds or an RFC 3339 time with an offset (not a float,
  a numeric string or a local time), within the site's ``telemetry.max_ahead_s`` and
  ``max_age_s`` of the receiver's clock;
- ``seq`` is a non-negative int64; values are JSON numbers (not strings or booleans), finite and
  within their metric's plausible range, of metrics the device has;
- no key twice in one object (one of the values would be lost), no empty array or object, no
  unknown key, no NUL in the topic.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, NamedTuple

import msgspec
from msgspec import Meta
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    TypeAdapter,
    ValidationError,
)
from pydantic_core import PydanticCustomError

from gridwatch.batch_decode import Finite
from gridwatch.errors import PayloadError, UnknownDeviceError
from gridwatch.events import (
    DeviceStatus,
    FiniteFloat,
    Int64,
    Report,
    describe_validation_error,
    location,
    utcnow,
)
from gridwatch.site import Site
from gridwatch.site_sensors import Sensor, TelemetryPolicy

GATEWAY = "gateway"
Path = tuple[str | int, ...]  # of a value in a message: keys and indexes

# RFC 3339 §5.6 date-time: seconds required, an offset required ("Z" or ±hh:mm).
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)")


def _shown(value: object) -> str:
    """A value as the message had it, short enough for a reason."""
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _timestamp(value: object) -> int | datetime:
    if type(value) is int:  # not a bool, not a float that happens to be whole
        return value
    if type(value) is str and _RFC3339.fullmatch(value):
        try:
            return datetime.fromisoformat(value.upper())
        except ValueError:
            pass  # shaped like a time, but not one (month 13, second 61, offset +25:00)
    raise PydanticCustomError(
        "timestamp",
        "{value} is neither epoch milliseconds (an integer) nor an RFC 3339 time with an offset",
        {"value": _shown(value)},
    )


Timestamp = Annotated[int | datetime, PlainValidator(_timestamp)]
SeqNo = Annotated[Int64, Field(ge=0)]


class TelemetryPoint(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    ts: Timestamp = Field(description="epoch milliseconds or RFC 3339 with offset")
    seq: SeqNo | None = None
    values: dict[str, FiniteFloat] = Field(min_length=1)


class StatusPayload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    state: Literal["online", "offline"]
    ts: Timestamp | None = None


Points = Annotated[list[TelemetryPoint], Field(min_length=1)]
_point = TypeAdapter(TelemetryPoint)
_points = TypeAdapter(Points)
_gateway = TypeAdapter(Annotated[dict[str, Points], Field(min_length=1)])
_ARRAY = re.compile(rb"\s*\[")


class Window:
    """The reading times a receiver accepts, around its own clock."""

    __slots__ = ("earliest_ms", "latest_ms", "now", "policy")  # made once per message

    def __init__(self, now: datetime, policy: TelemetryPolicy) -> None:
        now_ms = int(now.timestamp() * 1000)
        self.now, self.policy = now, policy
        self.earliest_ms = now_ms - int(policy.max_age_s * 1000)
        self.latest_ms = now_ms + int(policy.max_ahead_s * 1000)

    def time(self, ts: int | datetime, where: Path) -> datetime:
        """``ts`` as a UTC time, or PayloadError if it is outside the window."""
        if isinstance(ts, int):
            # Compared as integers: an absurd one never becomes a datetime (which overflows).
            if self.earliest_ms <= ts <= self.latest_ms:
                return datetime.fromtimestamp(ts / 1000, UTC)
            ms = ts
        else:
            ms = (ts - _EPOCH) // _ONE_MS  # exact, and without the overflow of astimezone
            if self.earliest_ms <= ms <= self.latest_ms:
                return ts.astimezone(UTC)
        raise self._outside(ts, ms, where)

    def _outside(self, ts: int | datetime, ms: int, where: Path) -> PayloadError:
        shown = ts.isoformat() if isinstance(ts, datetime) else str(ts)
        clock = f"the receiver's clock ({self.now:%Y-%m-%dT%H:%M:%SZ})"
        if ms > self.latest_ms:
            return PayloadError(
                f"{location(where)}: {shown} is more than {self.policy.max_ahead_s:g} s ahead"
                f" of {clock}"
            )
        if isinstance(ts, int) and self.earliest_ms <= ts * 1000 <= self.latest_ms:
            shown += " (epoch seconds? ts is in milliseconds)"
        return PayloadError(
            f"{location(where)}: {shown} is more than {self.policy.max_age_s:g} s behind {clock}"
        )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


def device_of(topic: str, street: str, channel: str = "telemetry") -> str:
    """The device id in a ``gw/<street>/<device_id>/<channel>`` topic, or PayloadError."""
    if "\x00" in topic:
        raise PayloadError("topic: contains a NUL character, which MQTT forbids in topic names")
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != "gw" or parts[3] != channel or not parts[2]:
        raise PayloadError(f"topic: {topic!r} is not gw/<street>/<device_id>/{channel}")
    if parts[1] != street:
        raise PayloadError(f"topic: {topic!r} is for street {parts[1]!r}, not {street!r}")
    return parts[2]


def _sensor(site: Site, device: str, where: Path) -> Sensor:
    sensor = site.sensor(device)
    if sensor is None:
        raise UnknownDeviceError(
            f"{location(where) if where else 'topic'}: unknown device {device!r}"
            " (not in the site file)"
        )
    return sensor


def parse_status(
    site: Site, topic: str, payload: bytes, received_at: datetime | None = None
) -> DeviceStatus:
    """A device's status message; a last will carries no time, so it takes the arrival time."""
    device = device_of(topic, site.street.code, "status")
    _sensor(site, device, ())
    received_at = received_at or utcnow()
    text = payload.strip()
    if text in (b"online", b"offline"):
        return DeviceStatus(device_id=device, online=text == b"online", ts=received_at)
    try:
        parsed = StatusPayload.model_validate_json(payload)
    except ValidationError as err:
        raise PayloadError(describe_validation_error(err)) from err
    refuse_duplicate_keys(payload, len(parsed.model_fields_set))
    ts = received_at
    if parsed.ts is not None:
        ts = Window(received_at, site.telemetry).time(parsed.ts, ("ts",))
    return DeviceStatus(device_id=device, online=parsed.state == "online", ts=ts)


def parse_telemetry(
    site: Site, topic: str, payload: bytes, received_at: datetime | None = None
) -> list[Report]:
    """Every device report in one MQTT message, its values checked against the registry and
    given their units, or PayloadError with the reason (nothing partial)."""
    device = device_of(topic, site.street.code)
    if device != GATEWAY:
        _sensor(site, device, ())
    single = device != GATEWAY and not _ARRAY.match(payload)
    decoded = _by_msgspec(device, payload, single)
    if decoded is None:
        try:
            decoded = _by_pydantic(device, payload, single)
        except ValidationError as err:
            raise PayloadError(describe_validation_error(err)) from err
    points, keys = decoded
    window = Window(received_at or utcnow(), site.telemetry)
    reports = []
    for device_id, batch in points.items():
        prefix: Path = (device_id,) if device == GATEWAY else ()
        sensor = _sensor(site, device_id, prefix)
        for i, point in enumerate(batch):
            keys += point.keys
            reports.append(_report(sensor, point, prefix if single else (*prefix, i), window))
    refuse_duplicate_keys(payload, keys)
    return reports


class _Point(NamedTuple):
    """A point as validated, whichever decoder read it."""

    ts: int | datetime
    seq: int | None
    values: dict[str, float]
    keys: int  # in the message: its fields and its values


Decoded = tuple[dict[str, list[_Point]], int]  # the points by device, and the top-level keys


def _by_pydantic(device: str, payload: bytes, single: bool) -> Decoded:
    """The points of a message, or ValidationError: the decoder whose errors are the reasons."""
    if device == GATEWAY:
        by_device = _gateway.validate_json(payload)
    elif single:
        by_device = {device: [_point.validate_json(payload)]}
    else:
        by_device = {device: _points.validate_json(payload)}
    points = {
        device_id: [
            _Point(p.ts, p.seq, p.values, len(p.model_fields_set) + len(p.values)) for p in batch
        ]
        for device_id, batch in by_device.items()
    }
    return points, len(points) if device == GATEWAY else 0


class _FastPoint(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """``TelemetryPoint`` for msgspec, with its limits; ``ts`` is checked by ``_timestamp``."""

    ts: int | str
    values: Annotated[dict[str, Finite], Meta(min_length=1)]
    seq: Annotated[int, Meta(ge=0, le=2**63 - 1)] | None | msgspec.UnsetType = msgspec.UNSET


_FastPoints = Annotated[list[_FastPoint], Meta(min_length=1)]
_fast_point = msgspec.json.Decoder(_FastPoint)
_fast_points = msgspec.json.Decoder(_FastPoints)
_fast_gateway = msgspec.json.Decoder(Annotated[dict[str, _FastPoints], Meta(min_length=1)])


def _by_msgspec(device: str, payload: bytes, single: bool) -> Decoded | None:
    """``_by_pydantic`` by msgspec, several times faster; None where msgspec refuses, so that
    pydantic takes the message or gives the reason (``tests/unit/test_telemetry_decode.py``
    holds the two to the same outcome on the fuzz corpus)."""
    try:
        if device == GATEWAY:
            by_device = _fast_gateway.decode(payload)
        elif single:
            by_device = {device: [_fast_point.decode(payload)]}
        else:
            by_device = {device: _fast_points.decode(payload)}
        points = {
            device_id: [
                _Point(
                    _timestamp(p.ts),
                    None if isinstance(p.seq, msgspec.UnsetType) else p.seq,
                    p.values,
                    (2 if isinstance(p.seq, msgspec.UnsetType) else 3) + len(p.values),
                )
                for p in batch
            ]
            for device_id, batch in by_device.items()
        }
    except (msgspec.MsgspecError, PydanticCustomError):
        return None
    return points, len(points) if device == GATEWAY else 0


def _report(sensor: Sensor, point: _Point, where: Path, window: Window) -> Report:
    device_id = sensor.id
    values = {}
    for metric, value in point.values.items():
        spec = sensor.metrics.get(metric)
        if spec is None:
            raise PayloadError(
                f"{location((*where, 'values', metric))}: device {device_id!r} does not report"
                f" metric {metric!r}"
            )
        if not spec.min <= value <= spec.max:
            raise PayloadError(
                f"{location((*where, 'values', metric))}: {value} outside plausible range"
                f" [{spec.min}, {spec.max}] of {device_id}"
            )
        values[metric] = (value, spec.unit)
    ts = point.ts
    if type(ts) is int and window.earliest_ms <= ts <= window.latest_ms:  # the usual case, inline
        time = datetime.fromtimestamp(ts / 1000, UTC)
    else:
        time = window.time(ts, (*where, "ts"))
    return Report.trusted(device_id, time, point.seq, values)


# A message that passed validation has only known names as keys (fields, metrics, device ids),
# each followed by '":' once whitespace is taken out, and nowhere else does '":' occur (values
# are numbers, times have no quotes): so that count is its number of keys.
_WHITESPACE = b" \t\n\r"


def refuse_duplicate_keys(payload: bytes, keys: int) -> None:
    """PayloadError if an object of ``payload`` has a key twice, given that the parsed message
    (which kept one value of each) has ``keys`` keys. A byte count in the usual case; only a
    count that does not add up parses the message again, keeping every pair."""
    if payload.translate(None, _WHITESPACE).count(b'":') == keys:
        return
    found = _duplicate(json.loads(payload, object_pairs_hook=_Object.of), ())
    if found is not None:
        where, key = found
        raise PayloadError(
            f"{location(where)}: key {key!r} appears more than once (one value would be lost)"
        )


class _Object(dict[str, Any]):
    duplicate: str | None = None

    @classmethod
    def of(cls, pairs: list[tuple[str, Any]]) -> _Object:
        made = cls(pairs)
        if len(made) < len(pairs):
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    made.duplicate = key
                    break
                seen.add(key)
        return made


def _duplicate(node: object, where: Path) -> tuple[Path, str] | None:
    """The place and key of the first duplicate key in a parsed document, if any."""
    if isinstance(node, _Object):
        if node.duplicate is not None:
            return where, node.duplicate
        children: Sequence[tuple[str | int, object]] = list(node.items())
    elif isinstance(node, list):
        children = list(enumerate(node))
    else:
        return None
    for key, child in children:
        found = _duplicate(child, (*where, key))
        if found is not None:
            return found
    return None
