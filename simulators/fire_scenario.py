"""A scenario's forest fire (``gridwatch.scenario.ForestFire``): its smoke sensor's telemetry.

In the demo's scenario the fire burns just off the smoke sensor, inside the forest. The towers
see it in their simulated streams (``simulators.camera_events``); the smoke sensor reports over
MQTT like every other device, rising through its thresholds after the towers have seen it.
"""

from __future__ import annotations

from collections.abc import Iterator

from gridwatch.scenario import ForestFire
from gridwatch.site import Site
from simulators.sensors import Message, Scenario, Truth, messages


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
