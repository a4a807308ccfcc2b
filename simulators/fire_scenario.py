"""A scenario's forest fire (``gridwatch.scenario.ForestFire``): watchtowers see smoke, then the
smoke sensor rises.

In the demo's scenario the fire burns just off the smoke sensor, inside the forest. The towers'
detections carry bearings only (preset pan plus pixel offset, as the camera worker computes
them) and are published to ``gw.detections`` as that worker would; the smoke sensor reports over
MQTT like every other device, rising through its thresholds after the towers have spoken.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from kafka import KafkaProducer

from gridwatch import topics
from gridwatch.events import Detection, DetectionKind, Point, SourceRef, SourceType, utcnow
from gridwatch.geo import LocalProjection
from gridwatch.scenario import ForestFire, place_point
from gridwatch.site import Site
from simulators.sensors import Message, Scenario, Truth, messages


@dataclass
class FireTruth:
    fire: Point
    bearings: dict[str, float] = field(default_factory=dict)
    detections_sent: int = 0


def fire_point(site: Site, spec: ForestFire) -> Point:
    return place_point(site, spec.place)


def bearing(tower: Point, target: Point) -> float:
    x, y = LocalProjection(tower).xy(target)
    return math.degrees(math.atan2(x, y)) % 360


def tower_detections(
    site: Site, truth: FireTruth, spec: ForestFire
) -> list[tuple[float, Detection]]:
    """(scenario time, detection) for each sighting, a little noise on each bearing."""
    rng = random.Random(spec.seed)
    towers = {t.id: t for t in site.watchtowers}
    out = []
    for sighting in spec.towers:
        at, tower = sighting.at_s, towers[sighting.tower]
        noise = rng.gauss(0, spec.bearing_noise_deg)
        b = round((bearing(tower.location, truth.fire) + noise) % 360, 2)
        truth.bearings[tower.id] = b
        detection = Detection(
            kind=DetectionKind.SMOKE,
            source=SourceRef(type=SourceType.WATCHTOWER, id=tower.id),
            ts=utcnow(),  # restamped when sent
            confidence=0.8,
            bearing_deg=b,
            bbox=(600, 300, 640, 330),
            rule="smoke:tower",
        )
        out.append((at, detection))
    return out


def sensor_messages(
    site: Site, scenario: Scenario, truth: Truth, spec: ForestFire
) -> Iterator[Message]:
    """Every sensor's telemetry, the smoke sensor's replaced by the fire's rising smoke."""
    others = site.model_copy(
        update={"sensors": tuple(s for s in site.sensors if s.id != spec.smoke_sensor)}
    )
    sensor = site.sensor(spec.smoke_sensor)
    if sensor is None:
        raise ValueError(f"the site has no smoke sensor {spec.smoke_sensor}")
    metric, rule = "smoke_obscuration_pct", sensor.rules[0]
    peak = getattr(rule, "red", 8.0) * spec.smoke_peak
    rise = spec.smoke_rise_s
    street = site.street.code
    steps = int(scenario.duration_s * scenario.rate_hz)
    fire = []
    for step in range(steps):
        at = step / scenario.rate_hz
        span = min(max((at - rise[0]) / (rise[1] - rise[0]), 0.0), 1.0)
        value = round(0.5 + span * (peak - 0.5), 3)
        payload = f'{{"ts":null,"seq":{step},"values":{{"{metric}":{value}}}}}'.encode()
        fire.append(Message(at, f"gw/{street}/{spec.smoke_sensor}/telemetry", payload, 1))
    truth.readings_sent += len(fire)
    merged = sorted([*messages(others, scenario, truth), *fire], key=lambda m: m.at_s)
    yield from merged


async def publish_towers(
    producer: KafkaProducer, detections: list[tuple[float, Detection]], truth: FireTruth
) -> None:
    """Send each tower detection at its scenario time, stamped with the time it is seen."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for at, detection in detections:
        await asyncio.sleep(max(0.0, at - (loop.time() - start)))
        seen = detection.model_copy(update={"ts": utcnow()})
        future = producer.send(
            topics.DETECTIONS, key=seen.source.id.encode(), value=seen.to_bytes()
        )
        await asyncio.to_thread(future.get, 10)
        truth.detections_sent += 1
