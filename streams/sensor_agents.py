"""Sensor rules on ``gw.readings`` and ``gw.device-status``: one agent, one state per device.

Readings and status changes of a device share its key, so they reach the same partition and are
judged in order by one agent (concurrency 1). The device's whole state is one entry of a
changelogged table, rebuilt from the changelog when a worker restarts. The heartbeat timer only
reads that table: a silent device, or one whose buffered readings have waited out the allowed
lateness, gets a ``DeviceStatus`` message keyed like its readings, so the agent, not the timer,
changes state.

Every message is judged inside a guard: whatever goes wrong with one becomes its dead letter
and the agent goes on. A reading or status stamped further ahead of the worker's clock than
``telemetry.max_ahead_s`` is dead-lettered before it touches the state, since its time would
make every real reading after it look late. Only an unavailable broker is no message's fault:
it stops the agent, and with it the worker, before the offsets move past the batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import cast

import faust

from detectors.sensor_rules import Sample
from detectors.sensor_state import (
    LAST_SEEN_SLACK,
    DeviceState,
    decisive,
    on_sample,
    on_status,
    overdue,
    waiting,
)
from detectors.sensor_state import decode as decode_state
from detectors.sensor_state import encode as encode_state
from gridwatch import topics
from gridwatch.batch_decode import decode_reading_batch
from gridwatch.errors import PayloadError
from gridwatch.events import (
    Detection,
    DeviceStatus,
    ReadingBatch,
    decode,
    reason_of,
    utcnow,
)
from gridwatch.outages import is_outage
from gridwatch.site import Site
from gridwatch.site_sensors import Sensor
from streams.context import AGENT_SUPERVISOR, StreamContext

log = logging.getLogger(__name__)

# A batch closes at this many events or after this long, whichever comes first.
BATCH_MAX = 1000
BATCH_WITHIN_S = 0.01
# Devices the heartbeat check looks at before it lets the agent run.
HEARTBEAT_SLICE = 1000


def register_sensor_rules(
    ctx: StreamContext,
    *,
    heartbeat_check_s: float = 5.0,
    clock: Callable[[], datetime] = utcnow,
) -> None:
    site = ctx.site
    detections = ctx.topic(topics.DETECTIONS)
    statuses = ctx.topic(topics.DEVICE_STATUS)
    # Partitioned by key like the source topics, so a device's changelog entry lands in the
    # partition of its readings whichever event the write follows: the raw key is the device
    # id's bytes, hashed exactly as the bridge hashes it. A value is the state's JSON.
    states = ctx.app.Table(
        "device-state", key_type=bytes, value_type=bytes, default=bytes, use_partitioner=True
    )
    source = ctx.app.topic(
        topics.READINGS, topics.DEVICE_STATUS, key_serializer="raw", value_serializer="raw"
    )

    cache = StateCache(site)

    @ctx.app.agent(source, concurrency=1, supervisor_strategy=AGENT_SUPERVISOR)
    async def sensor_rules(stream: faust.StreamT[bytes]) -> None:
        # Events are judged one by one, in order, but in small batches: a device's state is
        # written to the table (and its changelog) at most once per batch, and only when the
        # table would otherwise lose something (``StateCache.changed``). The batch's
        # detections are acknowledged before its states are written (``send_acknowledged``):
        # never states that have seen a level no detection announced.
        batches = cast("faust.Stream[bytes]", stream).take_events(BATCH_MAX, within=BATCH_WITHIN_S)
        async for events in batches:
            judged = judge_events(
                site, states, cache, [(e.message.topic, e.value) for e in events], clock()
            )
            for topic, raw, reason in judged.dead:
                await ctx.dead(topic, raw, reason)
            await ctx.send_acknowledged(
                detections, ((key, detection.to_bytes()) for key, detection in judged.found)
            )
            for key, stored in judged.writes.items():
                states[key] = stored

    lateness = site.telemetry.allowed_lateness_s

    @ctx.app.timer(heartbeat_check_s)  # type: ignore[untyped-decorator]
    async def heartbeat() -> None:
        now = clock()
        for i, (key, stored) in enumerate(list(states.items())):
            if i % HEARTBEAT_SLICE == HEARTBEAT_SLICE - 1:
                await asyncio.sleep(0)  # let the rules run between slices of a large site
            try:
                status = _status_due(site, cache, key, stored, lateness, now)
            except Exception:
                # One device's unreadable state must not stop every other device's heartbeat.
                log.exception("heartbeat check failed for device %r", key)
                continue
            if status is not None:
                await statuses.send(key=status.device_id.encode(), value=status.to_bytes())


@dataclass
class Judged:
    """What a batch of events came to: dead letters (topic, bytes, reason), the device states
    to write to the table (those it would otherwise lose something of), and the detections."""

    dead: list[tuple[str, bytes, str]]
    writes: dict[bytes, bytes]
    found: list[tuple[bytes, Detection]]


def judge_events(
    site: Site,
    states: Mapping[bytes, bytes],
    cache: StateCache,
    events: Sequence[tuple[str, bytes]],
    now: datetime,
) -> Judged:
    """Judge a batch of (topic, raw) events one by one, in order, each inside its guard; only
    an outage (``is_outage``) is raised. ``states`` is the table, read only."""
    judging = _Round(site, states, cache, now, now + timedelta(seconds=site.telemetry.max_ahead_s))
    dead: list[tuple[str, bytes, str]] = []
    for topic, raw in events:
        try:
            message = _message(topic, raw)
        except Exception as err:
            if is_outage(err):
                raise
            dead.append((topic, raw, reason_of(err)))
            continue
        for failed, why in judging.take(message):
            if not isinstance(why, PayloadError):
                log.error("sensor rules failed on a %s message", topic, exc_info=why)
            dead.append((topic, failed, reason_of(why)))
    writes = {
        sensor.id.encode(): cache.store(sensor.id, state)
        for sensor, state in judging.touched.values()
        if cache.changed(sensor, state)
    }
    return Judged(dead=dead, writes=writes, found=judging.found)


@dataclass
class _Cached:
    stored: bytes  # the table's value this state was decoded from or encoded to
    state: DeviceState  # advanced in place by the readings since
    decisive: int | None  # ``decisive`` of the stored value
    last_seen: datetime | None  # ``last_seen`` of the stored value


class StateCache:
    """The decoded form of each device's stored state, so a reading costs no decode of it, and
    what was stored, so a state is written only when the table would otherwise lose something.

    Only a mirror of the table: an entry is used while the table still holds exactly the value
    it was made from, so a state rebuilt from the changelog or written elsewhere is decoded anew.
    """

    def __init__(self, site: Site) -> None:
        self.site = site
        self._entries: dict[str, _Cached] = {}

    def load(self, device_id: str, stored: bytes) -> DeviceState:
        if not stored:
            return DeviceState()
        hit = self._entries.get(device_id)
        if hit is not None and hit.stored == stored:
            return hit.state
        state = decode_state(stored)
        self._remember(device_id, stored, state)
        return state

    def changed(self, sensor: Sensor, state: DeviceState) -> bool:
        """The table would lose something if it kept the stored value (see ``decisive``)."""
        entry = self._entries.get(sensor.id)
        lateness = self.site.telemetry.allowed_lateness_s
        if entry is None or entry.state is not state or entry.decisive is None:
            return True
        if decisive(sensor, state, lateness) != entry.decisive:
            return True
        slack = timedelta(seconds=self.site.heartbeat_s(sensor) * LAST_SEEN_SLACK)
        seen = state.last_seen
        return seen is not None and (entry.last_seen is None or seen - entry.last_seen >= slack)

    def store(self, device_id: str, state: DeviceState) -> bytes:
        stored = encode_state(state)
        self._remember(device_id, stored, state)
        return stored

    def _remember(self, device_id: str, stored: bytes, state: DeviceState) -> None:
        sensor = self.site.sensor(device_id)
        lateness = self.site.telemetry.allowed_lateness_s
        mark = decisive(sensor, state, lateness) if sensor is not None else None
        self._entries[device_id] = _Cached(stored, state, mark, state.last_seen)


def _status_due(
    site: Site, cache: StateCache, key: bytes, stored: bytes, lateness: float, now: datetime
) -> DeviceStatus | None:
    """The status the heartbeat owes a device now: offline when silent too long, a watermark
    when buffered readings have waited out the allowed lateness; else None."""
    device_id = key.decode()
    sensor = site.sensor(device_id)
    if sensor is None or not stored:
        return None
    state = cache.load(device_id, stored)
    if overdue(state, site.heartbeat_s(sensor), now):
        log.info("device %s silent since %s", device_id, state.last_seen)
        return DeviceStatus(device_id=device_id, online=False, ts=now, cause="heartbeat")
    if waiting(state, lateness, now):
        return DeviceStatus(device_id=device_id, online=state.online, ts=now, cause="watermark")
    return None


def _in_time(ts: datetime, now: datetime, horizon: datetime) -> None:
    """Refuse a time past ``horizon``: the window the site allows ahead of the worker's clock."""
    if ts > horizon:
        lead = (ts - now).total_seconds()
        allowed = (horizon - now).total_seconds()
        raise PayloadError(
            f"ts: {ts.isoformat()} is {lead:.0f} s ahead of the rules worker's clock,"
            f" beyond telemetry.max_ahead_s ({allowed:g} s)"
        )


def _message(topic: str, raw: bytes) -> ReadingBatch | DeviceStatus:
    if topic == topics.READINGS:
        return decode_reading_batch(raw)
    return decode(DeviceStatus, raw)


Failed = list[tuple[bytes, Exception]]  # a reading's or status's bytes, and what went wrong


@dataclass
class _Round:
    """One batch of events being judged: the states it touched and the detections it found.

    Each reading is judged inside its own guard, as if it had come alone: one that fails is
    returned by ``take`` as the bytes of that reading, and the rest of its batch goes on. A
    batch's readings are taken report by report, as samples: a ``Reading`` is made only for a
    reading's evidence or its dead letter."""

    site: Site
    states: Mapping[bytes, bytes]  # the Faust table
    cache: StateCache
    now: datetime
    horizon: datetime  # the latest time a reading or status may have
    touched: dict[str, tuple[Sensor, DeviceState]] = field(default_factory=dict)
    found: list[tuple[bytes, Detection]] = field(default_factory=list)

    def take(self, message: ReadingBatch | DeviceStatus) -> Failed:
        """Judge every reading of a batch, or a status; the ones that failed."""
        lateness = self.site.telemetry.allowed_lateness_s
        if isinstance(message, DeviceStatus):
            try:
                _in_time(message.ts, self.now, self.horizon)
                sensor, state = self._state_of(message.device_id)
                self._found(sensor, on_status(sensor, state, message, lateness))
            except Exception as err:
                if is_outage(err):
                    raise
                return [(message.to_bytes(), err)]
            return []
        failed: Failed = []
        batch = message
        # Times in the standard library's UTC compare several times faster than in the time
        # zone objects pydantic parses them with (one per message), and each is compared often.
        received_at = batch.received_at.astimezone(UTC)
        batch_id = batch.id
        for report in batch.reports:
            ts = report.ts.astimezone(UTC)
            try:
                _in_time(ts, self.now, self.horizon)
                sensor, state = self._state_of(report.device_id)
            except Exception as err:
                if is_outage(err):
                    raise
                failed += [(reading.to_bytes(), err) for reading in batch.readings_of(report)]
                continue
            seq = report.seq
            for metric, (value, unit) in report.values.items():
                sample = Sample(ts, value, unit, seq, batch_id, received_at)
                try:
                    detections = on_sample(sensor, state, metric, sample, lateness)
                except Exception as err:
                    if is_outage(err):
                        raise
                    failed.append((sample.reading(report.device_id, metric).to_bytes(), err))
                    continue
                if detections:
                    self._found(sensor, detections)
        return failed

    def _found(self, sensor: Sensor, detections: list[Detection]) -> None:
        if detections:
            key = sensor.id.encode()
            self.found += [(key, d) for d in detections]

    def _state_of(self, device_id: str) -> tuple[Sensor, DeviceState]:
        """The device's sensor and its state, marked as touched by this batch."""
        touched = self.touched.get(device_id)
        if touched is not None:
            return touched
        sensor = self.site.sensor(device_id)
        if sensor is None:
            raise PayloadError(f"unknown device {device_id!r}")
        stored = self.states[device_id.encode()]
        self.touched[device_id] = sensor, self.cache.load(device_id, stored)
        return self.touched[device_id]
