"""Fusion agents: check each detection and re-key it by incident kind, then fuse per kind.

Keying by kind (not by grid) lets one incident span grid and community borders and lets tower
bearings, which have no location until triangulated, meet the detections they belong with.

Each detection is handled inside a guard: whatever goes wrong with it becomes its dead letter,
except an unavailable broker, which stops the worker before its offset moves past the message.
"""

from __future__ import annotations

import logging

import faust

from gridwatch import topics
from gridwatch.errors import PayloadError
from gridwatch.events import Detection, SourceType, decode, reason_of
from gridwatch.geo import GridIndex
from gridwatch.outages import is_outage
from streams.context import AGENT_SUPERVISOR, StreamContext
from streams.fusion import INCIDENT_OF, FusionContext, FusionState, fuse

log = logging.getLogger(__name__)

PLACED_TOPIC = "gw.detections-placed"


def register_fusion(ctx: StreamContext) -> None:
    site = ctx.site
    grid_index = GridIndex(site)
    fusion_ctx = FusionContext(
        locate=grid_index.locate,
        projection=grid_index.projection,
        towers={t.id: t.location for t in site.watchtowers},
        departments=site.departments_for,
    )
    placed_topic = ctx.topic(PLACED_TOPIC, internal=True)
    incidents = ctx.topic(topics.INCIDENTS)
    fusion_state = ctx.app.Table("fusion-state", default=str)
    # Each kind's state decoded, while the table still holds the text it came from: a busy
    # kind's state holds every open detection, and decoding it per detection was most of the
    # agent's time. A state rebuilt from the changelog differs, and is decoded anew.
    decoded: dict[str, tuple[str, FusionState]] = {}

    @ctx.app.agent(
        ctx.topic(topics.DETECTIONS), concurrency=1, supervisor_strategy=AGENT_SUPERVISOR
    )
    async def place(stream: faust.StreamT[bytes]) -> None:
        """Accept a detection that can be placed, directly or by triangulation; key it by kind."""
        async for _key, raw in stream.items():
            try:
                detection = decode(Detection, raw)
                if detection.kind not in INCIDENT_OF:
                    raise PayloadError(f"no incident kind for detection kind {detection.kind}")
                if detection.location is None:
                    if detection.bearing_deg is None:
                        raise PayloadError("detection has neither a location nor a bearing")
                    if (
                        detection.source.type is not SourceType.WATCHTOWER
                        or detection.source.id not in fusion_ctx.towers
                    ):
                        raise PayloadError(f"bearing from unknown tower {detection.source.id!r}")
                kind = INCIDENT_OF[detection.kind]
                await placed_topic.send(key=kind.value.encode(), value=raw)
            except PayloadError as err:
                await ctx.dead(topics.DETECTIONS, raw, str(err))
            except Exception as err:
                if is_outage(err):
                    raise
                log.exception("placing a detection failed")
                await ctx.dead(topics.DETECTIONS, raw, reason_of(err))

    @ctx.app.agent(placed_topic, concurrency=1, supervisor_strategy=AGENT_SUPERVISOR)
    async def fusion(stream: faust.StreamT[bytes]) -> None:
        async for key, raw in stream.items():
            try:
                detection = decode(Detection, raw)
                kind = key.decode()
                stored = fusion_state[kind]
                hit = decoded.get(kind)
                if hit is not None and hit[0] == stored:
                    state = hit[1]
                else:
                    state = FusionState.model_validate_json(stored) if stored else FusionState()
                new_state, incident = fuse(state, detection, fusion_ctx)
                text = new_state.model_dump_json()
                fusion_state[kind] = text
                decoded[kind] = (text, new_state)
                if incident is not None:
                    log.info(
                        "incident %s rev %d %s at %s (±%s m)",
                        incident.id,
                        incident.revision,
                        incident.kind,
                        incident.location,
                        incident.location_error_m,
                    )
                    await incidents.send(key=str(incident.id).encode(), value=incident.to_bytes())
            except Exception as err:
                if is_outage(err):
                    raise
                log.exception("fusion failed")
                await ctx.dead(PLACED_TOPIC, raw, reason_of(err))
