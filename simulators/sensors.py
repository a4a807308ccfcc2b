"""Simulated IoT sensors that publish over MQTT exactly like real devices (DESIGN.md §3).

A scenario is deterministic from its seed. Every sensor reports at a fixed rate: a diurnal cycle
around a quiet baseline, noise, a slow drift, dropouts, and now and then a message sent twice or
late. Scripted events give the ground truth — a flood rise on a water gauge (through every
threshold), a smoke spike, a PM2.5 plume — and one device goes offline: its connection drops and
the broker publishes its last will. A few bad messages (malformed, unknown device) test the
dead-letter path.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gridwatch.events import Level
from gridwatch.mqtt_access import MqttAccess
from gridwatch.scenario import Scenario as ScenarioFile
from gridwatch.scenario import SensorRise
from gridwatch.site import Site
from gridwatch.site_sensors import Sensor, ThresholdRule


@dataclass(frozen=True)
class Message:
    at_s: float  # when it is sent, from the scenario start
    topic: str
    payload: bytes  # ``"ts":null`` is stamped with the event time when it is sent
    readings: int  # valid readings it carries (0 for a bad or repeated message)
    ts_s: float | None = None  # event time, from the scenario start; None: the send time
    vanish: bool = False  # the device's connection drops here (its last will fires)


@dataclass(frozen=True)
class Scenario:
    duration_s: float = 20.0
    rate_hz: float = 2.0
    seed: int = 7
    rise_start: float = 0.2  # scripted events start and peak at these fractions of the run
    rise_end: float = 0.7
    bad_messages: bool = True
    dropout: float = 0.0  # share of reports a device fails to send
    duplicate: float = 0.0  # share of reports sent twice
    late: float = 0.0  # share of reports sent late, after newer ones
    late_s: float = 1.0
    offline_at: float | None = None  # fraction of the run at which one device vanishes
    events: tuple[Event, ...] | None = None  # scripted events; None: one per metric of EVENTS


@dataclass(frozen=True)
class Event:
    """A scripted event: what should be detected, on which device, from when."""

    name: str
    sensor_id: str
    metric: str
    start_s: float
    peak_s: float
    peak_level: Level


@dataclass
class Truth:
    """What the scenario should make the pipeline see."""

    rising_sensor: str | None = None
    levels: list[Level] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    offline_sensor: str | None = None
    readings_sent: int = 0  # unique valid readings
    bad_sent: int = 0


# Which scripted event a metric's first thresholded sensor plays.
EVENTS = {"water_level_m": "flood rise", "smoke_obscuration_pct": "smoke spike",
          "pm25_ugm3": "PM2.5 plume"}  # fmt: skip


def _threshold(sensor: Sensor, metric: str) -> ThresholdRule | None:
    return next(
        (r for r in sensor.rules if isinstance(r, ThresholdRule) and r.metric == metric), None
    )


def _baseline(sensor: Sensor, metric: str) -> float:
    spec = sensor.metrics[metric]
    rule = _threshold(sensor, metric)
    if rule is not None:
        return max(spec.min, rule.yellow * 0.6)
    return spec.min + (spec.max - spec.min) * 0.1


def plan_events(site: Site, scenario: Scenario) -> list[Event]:
    if scenario.events is not None:
        return list(scenario.events)
    chosen: dict[str, Event] = {}
    start, peak = scenario.rise_start * scenario.duration_s, scenario.rise_end * scenario.duration_s
    for sensor in site.sensors:
        for metric in sensor.metrics:
            if metric in EVENTS and metric not in chosen and _threshold(sensor, metric):
                chosen[metric] = Event(EVENTS[metric], sensor.id, metric, start, peak, Level.RED)
    return list(chosen.values())


def _event_value(event: Event, rule: ThresholdRule, base: float, t: float) -> float:
    """Rises to just over red at the peak; a smoke spike falls back as fast as it rose."""
    span = min(max((t - event.start_s) / (event.peak_s - event.start_s), 0.0), 1.0)
    if event.metric == "smoke_obscuration_pct" and t > event.peak_s:
        span = max(0.0, 1.0 - (t - event.peak_s) / (event.peak_s - event.start_s))
    return base + span * (rule.red * 1.05 - base)


def messages(site: Site, scenario: Scenario, truth: Truth) -> Iterator[Message]:
    """The scenario's messages in send order; fills ``truth`` as it goes."""
    rng = random.Random(scenario.seed)
    street = site.street.code
    truth.events = plan_events(site, scenario)
    flood = next((e for e in truth.events if e.metric == "water_level_m"), None)
    if flood:
        truth.rising_sensor = flood.sensor_id
        truth.levels = [Level.YELLOW, Level.ORANGE, Level.RED]
    by_device = {(e.sensor_id, e.metric): e for e in truth.events}
    truth.offline_sensor = vanishing(site, scenario)
    drift = {s.id: rng.uniform(-1, 1) for s in site.sensors}
    steps = int(scenario.duration_s * scenario.rate_hz)
    held: list[Message] = []  # late messages, sent once their delay has passed
    for step in range(steps):
        at = step / scenario.rate_hz
        frac = step / max(steps - 1, 1)
        yield from _due(held, at)
        for sensor in site.sensors:
            if sensor.id == truth.offline_sensor and scenario.offline_at is not None:
                if frac >= scenario.offline_at:
                    continue
                if (step + 1) / max(steps - 1, 1) >= scenario.offline_at:
                    yield Message(at, f"gw/{street}/{sensor.id}/status", b"", 0, vanish=True)
            scripted_now = any((sensor.id, m) in by_device for m in sensor.metrics)
            if not scripted_now and rng.random() < scenario.dropout:
                continue
            values = {}
            for metric, spec in sensor.metrics.items():
                span = spec.max - spec.min
                base = _baseline(sensor, metric)
                diurnal = 0.02 * span * math.sin(2 * math.pi * frac)
                value = base + diurnal + drift[sensor.id] * 0.01 * span * frac
                value += rng.gauss(0, span * 0.002)
                event = by_device.get((sensor.id, metric))
                rule = _threshold(sensor, metric)
                if event is not None and rule is not None:
                    value = _event_value(event, rule, base, at)
                values[metric] = round(min(max(value, spec.min), spec.max), 4)
            payload = _json({"ts": None, "seq": step, "values": values})
            topic = f"gw/{street}/{sensor.id}/telemetry"
            truth.readings_sent += len(values)
            msg = Message(at, topic, payload, len(values), ts_s=at)
            if rng.random() < scenario.late:
                held.append(Message(at + scenario.late_s, topic, payload, len(values), ts_s=at))
                continue
            yield msg
            if rng.random() < scenario.duplicate:
                yield Message(at, topic, payload, 0, ts_s=at)
        if scenario.bad_messages and step == steps // 2:
            truth.bad_sent += 2
            yield Message(at, f"gw/{street}/{site.sensors[0].id}/telemetry", b'{"ts": "soon"', 0)
            yield Message(
                at,
                f"gw/{street}/GHOST-404/telemetry",
                _json({"ts": None, "values": {"water_level_m": 1.0}}),
                0,
            )
    yield from _due(held, math.inf)


def _due(held: list[Message], now: float) -> Iterable[Message]:
    due = [m for m in held if m.at_s <= now]
    for m in due:
        held.remove(m)
    return due


def _json(payload: Mapping[str, object]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def stamp(payload: bytes, ts_ms: int) -> bytes:
    """Devices stamp their readings with the time they were taken."""
    return payload.replace(b'"ts":null', f'"ts":{ts_ms}'.encode(), 1)


class MqttPublisher:
    """Publishes scenario messages at their scenario times with QoS 1, like a fleet of devices.

    A device that vanishes in the scenario has a connection of its own, with a retained last
    will "offline" and a retained "online" status, and its socket is dropped without a
    DISCONNECT, so the broker itself announces it offline."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        access: MqttAccess | None = None,
        client_id: str = "gridwatch-sim",
    ) -> None:
        self.host, self.port = host, port
        self.access = access or MqttAccess()
        self.client_id = client_id
        self.client = self._client(client_id)
        self.client.max_inflight_messages_set(1000)

    def _client(self, client_id: str) -> mqtt.Client:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self.access.apply(client)
        return client

    def device(self, status_topic: str) -> mqtt.Client:
        """A device's own connection: retained last will "offline", then "online"."""
        client = self._client(f"{self.client_id}-{status_topic.split('/')[2]}")
        client.will_set(status_topic, b"offline", qos=1, retain=True)
        client.connect(self.host, self.port, keepalive=30)
        client.loop_start()
        client.publish(status_topic, b"online", qos=1, retain=True).wait_for_publish(10)
        return client

    def play(
        self,
        msgs: Iterator[Message],
        stop: threading.Event | None = None,
        on_sent: Callable[[Message], None] | None = None,
        devices: Iterable[str] = (),
    ) -> int:
        """Send every message at its time; returns how many the broker acknowledged.
        ``devices`` are the status topics of devices with a connection of their own."""
        connections = {topic: self.device(topic) for topic in devices}
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        infos = []
        start = time.monotonic()
        start_ms = time.time_ns() // 1_000_000
        try:
            for msg in msgs:
                if stop is not None and stop.is_set():
                    break
                delay = msg.at_s - (time.monotonic() - start)
                if delay > 0:
                    time.sleep(delay)
                if msg.vanish:
                    _drop(connections.pop(msg.topic, None))
                    continue
                ts_ms = start_ms + int((msg.ts_s if msg.ts_s is not None else msg.at_s) * 1000)
                infos.append(self.client.publish(msg.topic, stamp(msg.payload, ts_ms), qos=1))
                if on_sent:
                    on_sent(msg)
            for info in infos:
                info.wait_for_publish(timeout=30)
            return sum(1 for info in infos if info.is_published())
        finally:
            self.client.disconnect()
            self.client.loop_stop()
            for client in connections.values():
                client.disconnect()
                client.loop_stop()


def _drop(client: mqtt.Client | None) -> None:
    """Lose the connection the way a device losing power does: no DISCONNECT packet."""
    if client is None:
        return
    client.loop_stop()
    sock = client.socket()
    if sock is not None:
        sock.close()


def vanishing(site: Site, scenario: Scenario) -> str | None:
    """The device that goes offline in the scenario: the last one no event is scripted on."""
    if scenario.offline_at is None:
        return None
    scripted = {e.sensor_id for e in plan_events(site, scenario)}
    quiet = [s.id for s in site.sensors if s.id not in scripted]
    return quiet[-1] if quiet else None


def status_topics(site: Site, scenario: Scenario) -> list[str]:
    """Status topics of the devices that need a connection of their own."""
    device = vanishing(site, scenario)
    return [f"gw/{site.street.code}/{device}/status"] if device else []


def sensor_scenario(spec: ScenarioFile) -> Scenario:
    """The sensor half of a scenario file: its rises, rate, seed and bad messages."""
    events = tuple(
        Event(
            name=e.name if sensor == e.sensor else f"{e.name} ({sensor})",
            sensor_id=sensor,
            metric=metric,
            start_s=e.start_s,
            peak_s=e.peak_s,
            peak_level=e.expect.level,
        )
        for e in spec.events
        if isinstance(e, SensorRise)
        for sensor, metric in ((e.sensor, e.metric), *((a.sensor, a.metric) for a in e.along))
    )
    return Scenario(
        duration_s=spec.duration_s,
        rate_hz=spec.rate_hz,
        seed=spec.seed,
        bad_messages=spec.bad_messages,
        events=events,
    )
