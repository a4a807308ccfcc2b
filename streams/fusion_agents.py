"""Placement of detections in the grid, then fusion into incidents, keyed by (kind, grid)."""

from __future__ import annotations

import logging

import faust

from gridwatch import topics
from gridwatch.errors import PayloadError
from gridwatch.events import Detection, decode
from gridwatch.geo import GridIndex
from streams.context import StreamContext
from streams.fusion import INCIDENT_OF, FusionState, Placed, fuse

log = logging.getLogger(__name__)

PLACED_TOPIC = "gw.detections-placed"


def register_fusion(ctx: StreamContext) -> None:
    site = ctx.site
    grid_index = GridIndex(site)
    placed_topic = ctx.topic(PLACED_TOPIC, internal=True)
    incidents = ctx.topic(topics.INCIDENTS)
    fusion_state = ctx.app.Table("fusion-state", default=str)

    @ctx.app.agent(ctx.topic(topics.DETECTIONS), concurrency=1)
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
                await ctx.dead(topics.DETECTIONS, raw, str(err))
            except Exception as err:  # noqa: BLE001 - one bad message must not stop the agent
                log.exception("placing a detection failed")
                await ctx.dead(topics.DETECTIONS, raw, f"processing error: {err!r}")

    @ctx.app.agent(placed_topic, concurrency=1)
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
                await ctx.dead(PLACED_TOPIC, raw, f"processing error: {err!r}")
