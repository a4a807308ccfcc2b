"""Device telemetry as it arrives over MQTT (DESIGN.md §3), checked against the site's registry.

Accepted shapes, on ``gw/<street>/<device_id>/telemetry``::

    {"ts": 1764230400000, "seq": 7, "values": {"water_level_m": 2.31}}
    [{"ts": "2026-11-27T08:00:00+08:00", "values": {...}}, ...]

and on ``gw/<street>/gateway/telemetry``: ``{"<device_id>": [{"ts": ..., "values": {...}}]}``.
A device's retained ``gw/<street>/<device_id>/status`` is ``online`` or ``offline`` (its last
will), plain or as ``{"state": "offline", "ts": ...}``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from gridwatch.errors import PayloadError, UnknownDeviceError
from gridwatch.events import DeviceStatus, FiniteFloat, Report, describe_validation_error, utcnow
from gridwatch.site import Site

GATEWAY = "gateway"


class TelemetryPoint(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ts: int | AwareDatetime = Field(description="epoch milliseconds or RFC 3339 with offset")
    seq: int | None = None
    values: dict[str, FiniteFloat] = Field(min_length=1)

    @property
    def time(self) -> datetime:
        return _epoch_or_aware(self.ts)


class StatusPayload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    state: Literal["online", "offline"]
    ts: int | AwareDatetime | None = None


_points = TypeAdapter(TelemetryPoint | list[TelemetryPoint])
_gateway = TypeAdapter(dict[str, list[TelemetryPoint]])


def device_of(topic: str, street: str, channel: str = "telemetry") -> str:
    """The device id in a ``gw/<street>/<device_id>/<channel>`` topic, or PayloadError."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != "gw" or parts[3] != channel or not parts[2]:
        raise PayloadError(f"topic {topic!r} is not gw/<street>/<device_id>/{channel}")
    if parts[1] != street:
        raise PayloadError(f"topic {topic!r} is for street {parts[1]!r}, not {street!r}")
    return parts[2]


def _epoch_or_aware(ts: int | datetime) -> datetime:
    if isinstance(ts, datetime):
        return ts.astimezone(UTC)
    return datetime.fromtimestamp(ts / 1000, UTC)


def parse_status(
    site: Site, topic: str, payload: bytes, received_at: datetime | None = None
) -> DeviceStatus:
    """A device's status message; a last will carries no time, so it takes the arrival time."""
    device = device_of(topic, site.street.code, "status")
    if site.sensor(device) is None:
        raise UnknownDeviceError(f"unknown device {device!r}")
    text = payload.strip()
    try:
        if text in (b"online", b"offline"):
            parsed = StatusPayload(state=text.decode())
        else:
            parsed = StatusPayload.model_validate_json(text)
    except ValidationError as err:
        raise PayloadError(describe_validation_error(err)) from err
    ts = _epoch_or_aware(parsed.ts) if parsed.ts is not None else received_at or utcnow()
    return DeviceStatus(device_id=device, online=parsed.state == "online", ts=ts)


def parse_telemetry(site: Site, topic: str, payload: bytes) -> list[Report]:
    """Every device report in one MQTT message, its values checked against the registry and
    given their units, or PayloadError with the reason (nothing partial)."""
    device = device_of(topic, site.street.code)
    try:
        if device == GATEWAY:
            batches = _gateway.validate_json(payload)
        else:
            parsed = _points.validate_json(payload)
            batches = {device: parsed if isinstance(parsed, list) else [parsed]}
    except ValidationError as err:
        raise PayloadError(describe_validation_error(err)) from err
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PayloadError(f"not UTF-8 JSON: {err}") from err
    return [
        _report(site, device_id, point) for device_id, points in batches.items() for point in points
    ]


def _report(site: Site, device_id: str, point: TelemetryPoint) -> Report:
    sensor = site.sensor(device_id)
    if sensor is None:
        raise UnknownDeviceError(f"unknown device {device_id!r}")
    values = {}
    for metric, value in point.values.items():
        spec = sensor.metrics.get(metric)
        if spec is None:
            raise PayloadError(f"device {device_id!r} does not report metric {metric!r}")
        if not spec.min <= value <= spec.max:
            raise PayloadError(
                f"{device_id}.{metric}={value} outside plausible range [{spec.min}, {spec.max}]"
            )
        values[metric] = (value, spec.unit)
    return Report.trusted(device_id, point.time, point.seq, values)
