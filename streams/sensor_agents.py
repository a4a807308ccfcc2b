"""Sensor rules on ``gw.readings``: each rule's state lives in a changelogged table."""

from __future__ import annotations

import logging

import faust

from detectors.sensor_rules import ThresholdState, apply_threshold
from gridwatch import topics
from gridwatch.errors import PayloadError
from gridwatch.events import Reading, decode
from streams.context import StreamContext

log = logging.getLogger(__name__)


def register_sensor_rules(ctx: StreamContext) -> None:
    site = ctx.site
    detections = ctx.topic(topics.DETECTIONS)
    rule_state = ctx.app.Table("rule-state", default=str)

    @ctx.app.agent(ctx.topic(topics.READINGS), concurrency=1)
    async def sensor_rules(stream: faust.StreamT[bytes]) -> None:
        async for _key, raw in stream.items():
            try:
                reading = decode(Reading, raw)
                sensor = site.sensor(reading.device_id)
                if sensor is None:
                    raise PayloadError(f"unknown device {reading.device_id!r}")
                for rule in sensor.rules:
                    if rule.metric != reading.metric:
                        continue
                    key = f"{reading.device_id}|{rule.metric}"
                    stored = rule_state[key]
                    state = (
                        ThresholdState.model_validate_json(stored) if stored else ThresholdState()
                    )
                    new_state, detection = apply_threshold(sensor, rule, state, reading)
                    if new_state != state:
                        rule_state[key] = new_state.model_dump_json()
                    if detection is not None:
                        await detections.send(key=sensor.id.encode(), value=detection.to_bytes())
            except PayloadError as err:
                await ctx.dead(topics.READINGS, raw, str(err))
            except Exception as err:  # noqa: BLE001 - one bad message must not stop the agent
                log.exception("sensor rule failed on a reading")
                await ctx.dead(topics.READINGS, raw, f"processing error: {err!r}")
