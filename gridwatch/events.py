"""The wire contracts (DESIGN.md §3): every message on a topic is one of these, as UTF-8 JSON.

Models are frozen and reject unknown fields; each carries a ``schema`` tag with its version, a
time-ordered id (UUIDv7; UUIDv8 from event time and content for what a replay derives again)
and timezone-aware times. Event time (``ts``) drives rules and windows.
"""

from __future__ import annotations

import base64
import hashlib
import random
import re
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal, TypeVar
from uuid import UUID, SafeUUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from gridwatch.errors import PayloadError

_VERSION_VARIANT = (0x7 << 76) | (0x2 << 62)
_RAND_B = (1 << 62) - 1
_id_lock = threading.Lock()
_last_id = 0  # milliseconds, rand_a and rand_b of the previous id, packed without gaps


def new_id() -> UUID:
    """A time-ordered id (UUIDv7, RFC 9562): sorts by creation time, indexes well.

    48 bits of Unix milliseconds, the sub-millisecond fraction in ``rand_a`` (method 3) and 62
    random bits; an id that would not sort after the previous one in this process takes the
    previous one plus one. Ids need uniqueness and order, not secrecy, so the random bits come
    from the fast Mersenne Twister rather than the OS (which was a tenth of the bridge's time).
    """
    global _last_id
    ms, sub = divmod(time.time_ns(), 1_000_000)
    value = (ms << 74) | ((sub * 4096 // 1_000_000) << 62) | random.getrandbits(62)  # noqa: S311
    with _id_lock:
        if value <= _last_id:
            value = _last_id + 1
        _last_id = value
    packed = ((value >> 74) << 80) | (((value >> 62) & 0xFFF) << 64) | (value & _RAND_B)
    uid = UUID.__new__(UUID)  # UUID(int=...) range-checks what is in range by construction
    object.__setattr__(uid, "int", packed | _VERSION_VARIANT)
    object.__setattr__(uid, "is_safe", SafeUUID.unknown)
    return uid


def derived_id(ts: datetime, *parts: object) -> UUID:
    """The id of a message that a replay derives again from the same input (UUIDv8, RFC 9562):
    48 bits of ``ts`` in Unix milliseconds, so it sorts by event time as ``new_id`` sorts by
    creation, then 74 bits of the SHA-256 of ``parts``. Derived twice, a detection or an
    incident has one id, and the store and its consumers take it once."""
    ms = max(0, int(ts.timestamp() * 1000)) & ((1 << 48) - 1)
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    bits = int.from_bytes(digest[:10], "big")
    rand_a, rand_b = (bits >> 62) & 0xFFF, bits & _RAND_B
    return UUID(int=(ms << 80) | (0x8 << 76) | (rand_a << 64) | (0x2 << 62) | rand_b)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Level(StrEnum):
    """三色预警: yellow → grid worker, orange → community and department, red → command center."""

    YELLOW = "yellow"
    ORANGE = "orange"
    RED = "red"

    @property
    def rank(self) -> int:
        return _LEVEL_RANK[self]

    def raised(self, steps: int = 1) -> Level:
        return _LEVELS[max(0, min(self.rank + steps, len(_LEVELS) - 1))]


_LEVELS = (Level.YELLOW, Level.ORANGE, Level.RED)
_LEVEL_RANK = {level: i for i, level in enumerate(_LEVELS)}


class IncidentKind(StrEnum):
    FOREST_FIRE = "forest_fire"
    STRAW_BURNING = "straw_burning"
    ILLEGAL_CONSTRUCTION = "illegal_construction"
    FLOOD = "flood"
    TRAFFIC_SAFETY = "traffic_safety"
    DEVICE_FAULT = "device_fault"


class DetectionKind(StrEnum):
    FIRE = "fire"
    SMOKE = "smoke"
    THERMAL_HOTSPOT = "thermal_hotspot"
    CONSTRUCTION_CHANGE = "construction_change"
    TRAFFIC_OBSTRUCTION = "traffic_obstruction"
    ROAD_WATER = "road_water"
    WATER_LEVEL = "water_level"
    RAINFALL = "rainfall"
    SMOKE_SENSOR = "smoke_sensor"
    PM25 = "pm25"
    TEMPERATURE = "temperature"
    DEVICE_OFFLINE = "device_offline"
    SENSOR_FAULT = "sensor_fault"
    CAMERA_HEALTH = "camera_health"


class ZoneKind(StrEnum):
    """What the ground in a zone is: a site zone on the map, a camera's image zone, a zone a
    detection lies in (``gridwatch.kinds`` says what each means for an incident). ``mask`` is
    only an image zone: a region never analysed."""

    MASK = "mask"
    FOREST = "forest"
    FARMLAND = "farmland"
    CONSTRUCTION_WATCH = "construction_watch"
    SCHOOL = "school"
    DENSE_HOUSING = "dense_housing"
    ROAD = "road"


class SourceType(StrEnum):
    SENSOR = "sensor"
    CAMERA = "camera"
    WATCHTOWER = "watchtower"


# What PostgreSQL can store, checked when a message is validated rather than found at COPY
# time: text without NUL, integers within int8 (int4 where the column is int4).
Text = Annotated[str, Field(pattern=r"^[^\x00]*$")]
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
Int32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
# JSON parsing takes 1e999 as infinity, which jsonb and the rules cannot use.
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
Lon = Annotated[float, Field(ge=-180, le=180)]
Lat = Annotated[float, Field(ge=-90, le=90)]


class Model(BaseModel):
    """Base of every wire and config model: immutable, strict about unknown keys."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Point(Model):
    lon: Lon
    lat: Lat


class Event(Model):
    """A message on a topic. Subclasses pin ``schema`` to their name and version."""

    id: UUID = Field(default_factory=new_id)

    def to_bytes(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


class Reading(Event):
    """One value of one metric of one device at one instant. A reading that came in a
    ``ReadingBatch`` carries the batch's id and arrival time."""

    schema_: Literal["gw.reading/1"] = Field(default="gw.reading/1", alias="schema")
    device_id: Text = Field(min_length=1, max_length=64)
    metric: Text = Field(min_length=1, max_length=64)
    value: FiniteFloat
    unit: Text
    ts: AwareDatetime
    seq: Int64 | None = None
    received_at: AwareDatetime = Field(default_factory=utcnow)

    @property
    def dedup_key(self) -> tuple[str, str, datetime]:
        """Readings are delivered at least once; this triple makes a redelivery a no-op."""
        return (self.device_id, self.metric, self.ts)

    @classmethod
    def trusted(
        cls,
        *,
        device_id: str,
        metric: str,
        value: float,
        unit: str,
        ts: datetime,
        seq: int | None,
        id: UUID,  # noqa: A002 - the field's name
        received_at: datetime,
    ) -> Reading:
        """A reading from fields validated already (a batch's, or a rule state's)."""
        return _trusted(cls, {"id": id, "schema_": "gw.reading/1", "device_id": device_id,
                              "metric": metric, "value": value, "unit": unit, "ts": ts,
                              "seq": seq, "received_at": received_at})  # fmt: skip


_set = object.__setattr__
M = TypeVar("M", bound=BaseModel)


def _trusted(model: type[M], fields: dict[str, object]) -> M:
    """An instance from fields validated already, filled as ``model_construct`` does but
    without its per-field work: readings are made tens of thousands of times a second."""
    instance = model.__new__(model)
    _set(instance, "__dict__", fields)
    _set(instance, "__pydantic_fields_set__", set(fields))
    _set(instance, "__pydantic_extra__", None)
    _set(instance, "__pydantic_private__", None)
    return instance


class Report(Model):
    """One device's values at one instant as it reported them, each with its metric's unit."""

    device_id: Text = Field(min_length=1, max_length=64)
    ts: AwareDatetime
    seq: Int64 | None = None
    values: dict[Text, tuple[FiniteFloat, Text]] = Field(min_length=1, description="value, unit")

    @classmethod
    def trusted(
        cls, device_id: str, ts: datetime, seq: int | None, values: dict[str, tuple[float, str]]
    ) -> Report:
        """A report from values the registry has checked already."""
        return _trusted(cls, {"device_id": device_id, "ts": ts, "seq": seq, "values": values})


class ReadingBatch(Event):
    """The reports of one MQTT message whose devices share a ``gw.readings`` partition, as one
    record keyed by the first device's id (so the default partitioner routes it to that shared
    partition). A device's readings thus stay in one partition and in order, as with a record
    per reading; but every Kafka client and stream processor pays its per-record cost once per
    batch instead of once per data point, and a device's id, time and sequence number travel
    once per report instead of once per metric."""

    schema_: Literal["gw.reading-batch/1"] = Field(default="gw.reading-batch/1", alias="schema")
    received_at: AwareDatetime = Field(default_factory=utcnow)
    reports: tuple[Report, ...] = Field(min_length=1)

    @classmethod
    def trusted(
        cls,
        *,
        id: UUID,  # noqa: A002 - the field's name
        received_at: datetime,
        reports: tuple[Report, ...],
    ) -> ReadingBatch:
        """A batch from fields validated already (by ``gridwatch.batch_decode``)."""
        return _trusted(cls, {"id": id, "schema_": "gw.reading-batch/1",
                              "received_at": received_at, "reports": reports})  # fmt: skip

    @property
    def key(self) -> bytes:
        return self.reports[0].device_id.encode()

    def readings(self) -> list[Reading]:
        """Every value as a Reading, in report order."""
        return [reading for report in self.reports for reading in self.readings_of(report)]

    def readings_of(self, report: Report) -> list[Reading]:
        """The values of one of the batch's reports as Readings."""
        return [
            Reading.trusted(
                device_id=report.device_id,
                metric=metric,
                value=value,
                unit=unit,
                ts=report.ts,
                seq=report.seq,
                id=self.id,
                received_at=self.received_at,
            )  # fmt: skip
            for metric, (value, unit) in report.values.items()
        ]


class DeviceStatus(Event):
    """A device's liveness: its retained MQTT status (and last will), a missed heartbeat, or a
    tick (``watermark``) that lets rules judge the readings of a device that went quiet."""

    schema_: Literal["gw.device-status/1"] = Field(default="gw.device-status/1", alias="schema")
    device_id: Text = Field(min_length=1, max_length=64)
    online: bool
    ts: AwareDatetime
    cause: Literal["status", "heartbeat", "watermark"] = "status"


class SourceRef(Model):
    type: SourceType
    id: Text


class Detection(Event):
    """Something a detector or a sensor rule saw, with the evidence for it.

    Version 2 added ``zones``; a version 1 message is read as having none."""

    schema_: Literal["gw.detection/2", "gw.detection/1"] = Field(
        default="gw.detection/2", alias="schema"
    )
    kind: DetectionKind
    source: SourceRef
    ts: AwareDatetime
    confidence: float = Field(ge=0, le=1)
    level: Level | None = Field(default=None, description="severity the rule itself observed")
    location: Point | None = None
    bearing_deg: float | None = Field(default=None, ge=0, lt=360)
    bbox: tuple[int, int, int, int] | None = None
    snapshot: Text | None = None
    rule: Text | None = None
    evidence: tuple[Reading, ...] = ()
    cleared: bool = Field(default=False, description="the condition has ended")
    zones: tuple[ZoneKind, ...] = Field(
        default=(), description="kinds of the camera's image zones the detection lies in"
    )


class Incident(Event):
    """One real-world event, fused from detections of one kind close in space and time.

    ``id`` is the incident's identity; ``revision`` counts its updates (each is a new message).
    ``level`` is the severity observed by the detections; the alert engine grades the alert.
    """

    schema_: Literal["gw.incident/1"] = Field(default="gw.incident/1", alias="schema")
    revision: Int32 = Field(default=1, ge=1)
    kind: IncidentKind
    location: Point
    community_code: Text
    grid_code: Text
    micro_grid_code: Text | None
    level: Level
    confidence: float = Field(ge=0, le=1)
    sources: tuple[SourceRef, ...]
    detection_ids: tuple[UUID, ...]
    departments: tuple[Text, ...] = ()
    first_seen: AwareDatetime
    last_seen: AwareDatetime
    ended: bool = False
    location_error_m: FiniteFloat | None = Field(
        default=None, ge=0, description="one-sigma error of a triangulated location"
    )
    growth: FiniteFloat = Field(
        default=1.0, gt=0, description="largest growth of one source's evidence"
    )


class Target(Model):
    """Who an alert goes to: a grid worker, a community, a department or the command center."""

    role: Literal["grid_worker", "community", "department", "command_center"]
    id: Text


class Alert(Event):
    """One colour of one incident, firing or resolved. Version 2 added ``incident_level``; a
    version 1 message is read as not saying it."""

    schema_: Literal["gw.alert/2", "gw.alert/1"] = Field(default="gw.alert/2", alias="schema")
    fingerprint: Text
    incident_id: UUID
    incident_revision: Int32
    kind: IncidentKind
    level: Level
    state: Literal["firing", "resolved"]
    targets: tuple[Target, ...]
    summary: Text
    location: Point
    grid_code: Text
    ts: AwareDatetime
    reasons: tuple[Text, ...] = ()
    incident_level: Level | None = Field(
        default=None,
        description="the incident's colour when the alert was made; None once it has ended",
    )


class Resolution(StrEnum):
    """How a case ended, as the desk says when it closes it."""

    HANDLED = "handled"  # 已处置
    FALSE_ALARM = "false_alarm"  # 误报: its camera detections become hard negatives


class CaseEvent(Event):
    schema_: Literal["gw.case-event/1"] = Field(default="gw.case-event/1", alias="schema")
    case_id: Text
    seq: Int32 = Field(ge=0)
    from_state: Text | None
    to_state: Text
    actor: Text
    ts: AwareDatetime
    note: Text = ""
    action: Text | None = Field(
        default=None, description="what the actor did (accept, rework, …); None: a state report"
    )
    resolution: Resolution | None = Field(default=None, description="set by a close only")


DEADLETTER_KEEP_BYTES = 16 * 1024
REASON_MAX_CHARS = 2000
SOURCE_MAX_CHARS = 300


def storable_text(text: str) -> str:
    """Text PostgreSQL can store: NUL (which no text column takes) and lone surrogates (which
    UTF-8 cannot encode) are written as backslash escapes instead."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def reason_of(err: BaseException) -> str:
    """One line for a dead letter: a PayloadError's own words, else the error's type and text
    (an error we did not foresee is still a reason, not a crash)."""
    text = str(err) if isinstance(err, PayloadError) else f"processing error: {err!r}"
    return " ".join(text.split())


class DeadLetter(Event):
    """A message gridwatch could not accept, with the reason. Bounded: the first
    ``DEADLETTER_KEEP_BYTES`` of the payload are kept, with the whole payload's size and SHA-256,
    so a dead letter of any message fits on a topic and in a row."""

    schema_: Literal["gw.deadletter/2"] = Field(default="gw.deadletter/2", alias="schema")
    source: str = Field(description="where it came from: an MQTT or Kafka topic")
    reason: str
    payload_b64: str = Field(description="the payload's first DEADLETTER_KEEP_BYTES bytes")
    size: int = Field(ge=0, description="the whole payload's size in bytes")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="the whole payload's SHA-256")
    ts: AwareDatetime = Field(default_factory=utcnow)

    @classmethod
    def of(cls, source: str, payload: bytes, reason: str) -> DeadLetter:
        return cls(
            source=source,
            reason=reason,
            payload_b64=base64.b64encode(payload[:DEADLETTER_KEEP_BYTES]).decode(),
            size=len(payload),
            sha256=hashlib.sha256(payload).hexdigest(),
        )

    @classmethod
    def of_error(cls, source: str, payload: bytes, err: BaseException) -> DeadLetter:
        return cls.of(source, payload, reason_of(err))

    @property
    def payload(self) -> bytes:
        """What is kept of the payload: all of it unless ``truncated``."""
        return base64.b64decode(self.payload_b64)

    @property
    def truncated(self) -> bool:
        return self.size > len(self.payload)

    @field_validator("reason")
    @classmethod
    def _short_reason(cls, value: str) -> str:
        return storable_text(value[:REASON_MAX_CHARS])

    @field_validator("source")
    @classmethod
    def _short_source(cls, value: str) -> str:
        return storable_text(value[:SOURCE_MAX_CHARS])


E = TypeVar("E", bound=Event)


def decode(model: type[E], data: bytes) -> E:
    """Parse one message, turning any validation failure into a one-line PayloadError."""
    try:
        return model.model_validate_json(data)
    except ValidationError as err:
        raise PayloadError(describe_validation_error(err)) from err


_NAME = re.compile(r"[A-Za-z0-9_-]+")


def location(path: Sequence[str | int], whole: str = "message") -> str:
    """A place in a message (or a site file) as a reason names it: ``[0].values.water_level_m``;
    a key that is not a plain name is quoted (``values['a.b\\x00']``), so the text shows what is
    there; ``whole`` names the empty path."""
    where = ""
    for part in path:
        if isinstance(part, int):
            where += f"[{part}]"
        elif _NAME.fullmatch(part):
            where += f".{part}" if where else part
        else:
            where += f"[{part!r}]"
    return where or whole


def describe_validation_error(err: ValidationError) -> str:
    """'field.path: problem; …' — short enough for a dead letter, precise enough to act on."""
    return "; ".join(f"{location(e['loc'])}: {e['msg']}" for e in err.errors(include_url=False))
