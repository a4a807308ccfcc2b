"""The Faust app: sensor rules on ``gw.readings`` and fusion of ``gw.detections`` into incidents.

Agents run with concurrency 1 and keep their state in changelogged tables, so a restarted
worker rebuilds it. A message that cannot be processed goes to ``gw.deadletter`` with the
reason; the agent carries on with the next one.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import faust

from detectors.sensor_rules import ThresholdState, apply_threshold
from gridwatch import topics
from gridwatch.errors import PayloadError
from gridwatch.events import DeadLetter, Detection, Reading, decode
from gridwatch.geo import GridIndex
from gridwatch.site import Site
from streams.fusion import INCIDENT_OF, FusionState, Placed, fuse

log = logging.getLogger(__name__)

PLACED_TOPIC = "gw.detections-placed"


def build_app(
    site: Site, bootstrap: str, datadir: Path, *, app_id: str = "gridwatch-streams"
) -> faust.App:
    app = faust.App(
        app_id,
        broker=f"kafka://{bootstrap.split(',')[0]}",
        store="memory://",
        datadir=str(datadir),
        web_enabled=False,
        topic_partitions=1,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        # Short rebalance and session timeouts keep group joins quick on small clusters.
        broker_rebalance_timeout=3,
        broker_session_timeout=10,
        broker_heartbeat_interval=1,
        producer_acks=-1,
    )
    grid_index = GridIndex(site)

    def raw_topic(name: str, *, internal: bool = False) -> Any:
        return app.topic(name, key_serializer="raw", value_serializer="raw", internal=internal)

    readings = raw_topic(topics.READINGS)
    detections = raw_topic(topics.DETECTIONS)
    placed_topic = raw_topic(PLACED_TOPIC, internal=True)
    incidents = raw_topic(topics.INCIDENTS)
    deadletter = raw_topic(topics.DEADLETTER)
    rule_state = app.Table("rule-state", default=str)
    fusion_state = app.Table("fusion-state", default=str)

    async def dead(source: str, payload: bytes, reason: str) -> None:
        log.warning("dead-lettering %s message: %s", source, reason)
        letter = DeadLetter.of(f"kafka:{source}", payload, reason)
        await deadletter.send(key=source.encode(), value=letter.to_bytes())

    @app.agent(readings, concurrency=1)
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
                await dead(topics.READINGS, raw, str(err))
            except Exception as err:  # noqa: BLE001 - one bad message must not stop the agent
                log.exception("sensor rule failed on a reading")
                await dead(topics.READINGS, raw, f"processing error: {err!r}")

    @app.agent(detections, concurrency=1)
    async def place(stream: faust.StreamT[bytes]) -> None:
        """Put each detection in its grid and re-key it by (incident kind, grid) for fusion."""
        async for _key, raw in stream.items():
            try:
                detection = decode(Detection, raw)
                if detection.location is None:
                    raise PayloadError("detection has no location to place it in a grid")
                if detection.kind not in INCIDENT_OF:
                    raise PayloadError(f"no incident kind for detection kind {detection.kind}")
                match = grid_index.locate(detection.location)
                placed = Placed(
                    detection=detection,
                    community_code=match.community_code,
                    grid_code=match.grid_code,
                    micro_grid_code=match.micro_grid_code if match.inside else None,
                )
                await placed_topic.send(
                    key=placed.fusion_key.encode(), value=placed.model_dump_json().encode()
                )
            except PayloadError as err:
                await dead(topics.DETECTIONS, raw, str(err))
            except Exception as err:  # noqa: BLE001 - one bad message must not stop the agent
                log.exception("placing a detection failed")
                await dead(topics.DETECTIONS, raw, f"processing error: {err!r}")

    @app.agent(placed_topic, concurrency=1)
    async def fusion(stream: faust.StreamT[bytes]) -> None:
        async for key, raw in stream.items():
            try:
                placed = Placed.model_validate_json(raw)
                stored = fusion_state[key.decode()]
                state = FusionState.model_validate_json(stored) if stored else FusionState()
                new_state, incident = fuse(
                    state, placed, site.departments_for(placed.incident_kind)
                )
                fusion_state[key.decode()] = new_state.model_dump_json()
                if incident is not None:
                    await incidents.send(key=str(incident.id).encode(), value=incident.to_bytes())
            except Exception as err:  # noqa: BLE001 - one bad message must not stop the agent
                log.exception("fusion failed")
                await dead(PLACED_TOPIC, raw, f"processing error: {err!r}")

    return app
