"""Sensor rules on ``gw.readings`` and ``gw.device-status``: one agent, one state per device.

Readings and status changes of a device share its key, so they reach the same partition and are
judged in order by one agent (concurrency 1). The device's whole state is one entry of a
changelogged table, rebuilt from the changelog when a worker restarts. The heartbeat timer only
reads that table: a silent device, or one whose buffered readings have waited out the allowed
lateness, gets a ``DeviceStatus`` message keyed like its readings, so the agent, not the timer,
changes state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, cast

import faust

from detectors.sensor_state import DeviceState, on_reading, on_status, overdue, waiting
from gridwatch import topics
from gridwatch.errors import PayloadError
from gridwatch.events import Detection, DeviceStatus, Reading, decode, utcnow
from gridwatch.site import Site
from gridwatch.site_sensors import Sensor
from streams.context import StreamContext

log = logging.getLogger(__name__)

# A batch closes at this many events or after this long, whichever comes first.
BATCH_MAX = 1000
BATCH_WITHIN_S = 0.01


def register_sensor_rules(
    ctx: StreamContext,
    *,
    heartbeat_check_s: float = 5.0,
    clock: Callable[[], datetime] = utcnow,
) -> None:
    site = ctx.site
    detections = ctx.topic(topics.DETECTIONS)
    statuses = ctx.topic(topics.DEVICE_STATUS)
    # Partitioned by key like the source topics (same key bytes, same murmur2), so a device's
    # changelog entry lands in the partition of its readings whichever event the write follows.
    states = ctx.app.Table("device-state", default=str, use_partitioner=True)
    source = ctx.app.topic(
        topics.READINGS, topics.DEVICE_STATUS, key_serializer="raw", value_serializer="raw"
    )

    cache = _StateCache()

    @ctx.app.agent(source, concurrency=1)
    async def sensor_rules(stream: faust.StreamT[bytes]) -> None:
        # Events are judged one by one, in order, but in small batches: a device's state is
        # written to the table (and its changelog) once per batch, not once per reading (a
        # gateway message brings every metric of a device together). The states are written
        # before the batch's detections are sent, as they were per event, so a crash can
        # replay readings into a state that has seen them but not repeat a detection.
        batches = cast("faust.Stream[bytes]", stream).take_events(BATCH_MAX, within=BATCH_WITHIN_S)
        async for events in batches:
            changed: dict[str, DeviceState] = {}
            found: list[tuple[bytes, Detection]] = []
            for event in events:
                raw: bytes = event.value
                topic: str = event.message.topic
                try:
                    sensor, state, new_state, judged = _advance(
                        site, states, topic, raw, cache, changed
                    )
                    if new_state is not state and new_state != state:
                        changed[sensor.id] = new_state
                    found += [(sensor.id.encode(), d) for d in judged]
                except PayloadError as err:
                    await ctx.dead(topic, raw, str(err))
                except Exception as err:  # noqa: BLE001 - one bad message must not stop the agent
                    log.exception("sensor rules failed on a %s message", topic)
                    await ctx.dead(topic, raw, f"processing error: {err!r}")
            for device_id, new_state in changed.items():
                states[device_id] = cache.encode(device_id, new_state)
            for key, detection in found:
                await detections.send(key=key, value=detection.to_bytes())

    lateness = site.telemetry.allowed_lateness_s

    @ctx.app.timer(heartbeat_check_s)  # type: ignore[untyped-decorator]
    async def heartbeat() -> None:
        now = clock()
        for device_id, stored in list(states.items()):
            sensor = site.sensor(device_id)
            if sensor is None or not stored:
                continue
            state = cache.decode(device_id, stored)
            status = None
            if overdue(state, site.heartbeat_s(sensor), now):
                log.info("device %s silent since %s", device_id, state.last_seen)
                status = DeviceStatus(device_id=device_id, online=False, ts=now, cause="heartbeat")
            elif waiting(state, lateness, now):
                status = DeviceStatus(
                    device_id=device_id, online=state.online, ts=now, cause="watermark"
                )
            if status is not None:
                await statuses.send(key=device_id.encode(), value=status.to_bytes())


class _StateCache:
    """The decoded form of each device's stored state, so a reading costs no decode of it.

    Only a mirror of the table: an entry is used while the table still holds exactly the text
    it was made from, so a state rebuilt from the changelog or written elsewhere is decoded anew.
    """

    def __init__(self) -> None:
        self._decoded: dict[str, tuple[str, DeviceState]] = {}

    def decode(self, device_id: str, stored: str) -> DeviceState:
        if not stored:
            return DeviceState()
        hit = self._decoded.get(device_id)
        if hit is not None and hit[0] == stored:
            return hit[1]
        state = DeviceState.model_validate_json(stored)
        self._decoded[device_id] = (stored, state)
        return state

    def encode(self, device_id: str, state: DeviceState) -> str:
        text = state.model_dump_json()
        self._decoded[device_id] = (text, state)
        return text


def _advance(
    site: Site,
    states: Any,
    topic: str,
    raw: bytes,
    cache: _StateCache,
    unwritten: dict[str, DeviceState],
) -> tuple[Sensor, DeviceState, DeviceState, list[Detection]]:
    message: Reading | DeviceStatus
    message = decode(Reading, raw) if topic == topics.READINGS else decode(DeviceStatus, raw)
    sensor = site.sensor(message.device_id)
    if sensor is None:
        raise PayloadError(f"unknown device {message.device_id!r}")
    state = unwritten.get(sensor.id)
    if state is None:
        state = cache.decode(sensor.id, states[sensor.id])
    if isinstance(message, Reading):
        new_state, found = on_reading(sensor, state, message, site.telemetry.allowed_lateness_s)
    else:
        new_state, found = on_status(sensor, state, message, site.telemetry.allowed_lateness_s)
    return sensor, state, new_state, found
