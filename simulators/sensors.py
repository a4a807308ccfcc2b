"""Simulated IoT sensors that publish over MQTT exactly like real devices (DESIGN.md §3).

A scenario is deterministic from its seed: every sensor reports at a fixed rate with noise
around a quiet baseline, one gauge rises through all three thresholds (the ground truth), and
a few bad messages (malformed, unknown device) test the dead-letter path.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gridwatch.events import Level
from gridwatch.site import Sensor, Site, ThresholdRule


@dataclass(frozen=True)
class Message:
    at_s: float  # offset from the scenario start
    topic: str
    payload: bytes
    readings: int  # valid readings it carries (0 for a bad message)


@dataclass(frozen=True)
class Scenario:
    duration_s: float = 20.0
    rate_hz: float = 2.0
    seed: int = 7
    rise_start: float = 0.2  # the flood rise starts and ends at these fractions of the run
    rise_end: float = 0.7
    bad_messages: bool = True


@dataclass
class Truth:
    """What the scenario should make the pipeline see."""

    rising_sensor: str | None = None
    levels: list[Level] = field(default_factory=list)
    readings_sent: int = 0
    bad_sent: int = 0


def _rising(site: Site) -> tuple[Sensor, ThresholdRule] | None:
    for sensor in site.sensors:
        for rule in sensor.rules:
            return sensor, rule
    return None


def _baseline(sensor: Sensor, metric: str) -> float:
    spec = sensor.metrics[metric]
    rule = next((r for r in sensor.rules if r.metric == metric), None)
    if rule is not None:
        return max(spec.min, rule.yellow * 0.6)
    return spec.min + (spec.max - spec.min) * 0.1


def messages(site: Site, scenario: Scenario, truth: Truth) -> Iterator[Message]:
    """The scenario's messages in time order; fills ``truth`` as it goes."""
    rng = random.Random(scenario.seed)
    street = site.street.code
    rising = _rising(site)
    if rising:
        truth.rising_sensor = rising[0].id
        truth.levels = [Level.YELLOW, Level.ORANGE, Level.RED]
    steps = int(scenario.duration_s * scenario.rate_hz)
    for step in range(steps):
        at = step / scenario.rate_hz
        frac = step / max(steps - 1, 1)
        for sensor in site.sensors:
            values = {}
            for metric, spec in sensor.metrics.items():
                base = _baseline(sensor, metric)
                value = base + rng.gauss(0, (spec.max - spec.min) * 0.002)
                if rising and sensor.id == rising[0].id and metric == rising[1].metric:
                    rule = rising[1]
                    span = (frac - scenario.rise_start) / (scenario.rise_end - scenario.rise_start)
                    value = base + min(max(span, 0.0), 1.0) * (rule.red * 1.05 - base)
                values[metric] = round(min(max(value, spec.min), spec.max), 4)
            payload = {"ts": None, "seq": step, "values": values}
            truth.readings_sent += len(values)
            yield Message(at, f"gw/{street}/{sensor.id}/telemetry", _json(payload), len(values))
        if scenario.bad_messages and step == steps // 2:
            truth.bad_sent += 2
            yield Message(at, f"gw/{street}/{site.sensors[0].id}/telemetry", b'{"ts": "soon"', 0)
            yield Message(
                at,
                f"gw/{street}/GHOST-404/telemetry",
                _json({"ts": None, "values": {"water_level_m": 1.0}}),
                0,
            )


def _json(payload: Mapping[str, object]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def stamp(payload: bytes, now_ms: int) -> bytes:
    """Devices stamp their readings when they send them."""
    return payload.replace(b'"ts":null', f'"ts":{now_ms}'.encode(), 1)


class MqttPublisher:
    """Publishes scenario messages at their scenario times with QoS 1, like a fleet of devices."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        client_id: str = "gridwatch-sim",
    ) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        if username:
            self.client.username_pw_set(username, password)
        self.client.max_inflight_messages_set(1000)
        self.host, self.port = host, port

    def play(
        self,
        msgs: Iterator[Message],
        stop: threading.Event | None = None,
        on_sent: Callable[[Message], None] | None = None,
    ) -> int:
        """Send every message at its time; returns how many the broker acknowledged."""
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        infos = []
        start = time.monotonic()
        try:
            for msg in msgs:
                if stop is not None and stop.is_set():
                    break
                delay = msg.at_s - (time.monotonic() - start)
                if delay > 0:
                    time.sleep(delay)
                payload = stamp(msg.payload, time.time_ns() // 1_000_000)
                infos.append(self.client.publish(msg.topic, payload, qos=1))
                if on_sent:
                    on_sent(msg)
            for info in infos:
                info.wait_for_publish(timeout=30)
            return sum(1 for info in infos if info.is_published())
        finally:
            self.client.disconnect()
            self.client.loop_stop()
