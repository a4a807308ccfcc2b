"""Fusion agents: check each detection and re-key it by incident kind, then fuse per kind.

Keying by kind (not by grid) lets one incident span grid and community borders and lets tower
bearings, which have no location until triangulated, meet the detections they belong with. A
detection that corroborates other kinds (a gauge beside water on a road) goes to each of them.
A timer finds incidents that stayed quiet past their kind's ``quiet_after`` and sends their
kind a ``QuietCheck``, so the fusion agent, not the timer, ends them (as the sensor heartbeat
does for devices).

Each detection is handled inside a guard: whatever goes wrong with it becomes its dead letter,
except an unavailable broker, which stops the worker before its offset moves past the message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Literal

import faust
from pydantic import AwareDatetime, Field, TypeAdapter, ValidationError

from gridwatch import topics
from gridwatch.errors import PayloadError
from gridwatch.events import (
    Detection,
    Event,
    IncidentKind,
    Point,
    SourceType,
    ZoneKind,
    decode,
    describe_validation_error,
    reason_of,
    utcnow,
)
from gridwatch.geo import GridIndex, ZoneIndex
from gridwatch.outages import is_outage
from streams.context import AGENT_SUPERVISOR, StreamContext
from streams.fusion import FusionContext, FusionState, expire, fuse, kinds_fed, quiet_due

log = logging.getLogger(__name__)

PLACED_TOPIC = "gw.detections-placed"


class QuietCheck(Event):
    """On the internal placed topic only: end the kind's incidents quiet as of ``ts``."""

    schema_: Literal["gw.quiet-check/1"] = Field(default="gw.quiet-check/1", alias="schema")
    ts: AwareDatetime


_PLACED = TypeAdapter[Detection | QuietCheck](
    Annotated[Detection | QuietCheck, Field(discriminator="schema_")]
)


def _placed(raw: bytes) -> Detection | QuietCheck:
    try:
        return _PLACED.validate_json(raw)
    except ValidationError as err:
        raise PayloadError(describe_validation_error(err)) from err


def register_fusion(
    ctx: StreamContext,
    *,
    quiet_check_s: float = 30.0,
    clock: Callable[[], datetime] = utcnow,
) -> None:
    site = ctx.site
    grid_index = GridIndex(site)
    zone_index = ZoneIndex(site.zones)

    def zones_at(point: Point) -> tuple[ZoneKind, ...]:
        return tuple(z.kind for z in zone_index.at(point))

    fusion_ctx = FusionContext(
        locate=grid_index.locate,
        projection=grid_index.projection,
        towers={t.id: t.location for t in site.watchtowers},
        departments=site.departments_for,
        zones_at=zones_at,
        quiet_after=site.policy.incidents.quiet_after,
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
                if detection.location is None:
                    if detection.bearing_deg is None:
                        raise PayloadError("detection has neither a location nor a bearing")
                    if (
                        detection.source.type is not SourceType.WATCHTOWER
                        or detection.source.id not in fusion_ctx.towers
                    ):
                        raise PayloadError(f"bearing from unknown tower {detection.source.id!r}")
                for kind in kinds_fed(detection, fusion_ctx):
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
                message = _placed(raw)
                kind = key.decode()
                state = _state_of(kind)
                if isinstance(message, QuietCheck):
                    quiet = fusion_ctx.quiet_after(IncidentKind(kind))
                    new_state, out = expire(state, message.ts, quiet)
                else:
                    new_state, incident = fuse(state, message, fusion_ctx, IncidentKind(kind))
                    out = [incident] if incident is not None else []
                for incident in out:
                    log.info(
                        "incident %s rev %d %s at %s (±%s m)",
                        incident.id,
                        incident.revision,
                        incident.kind,
                        incident.location,
                        incident.location_error_m,
                    )
                # Acknowledged before the state is written: fused again after a kill, the
                # message gives the same revisions.
                await ctx.send_acknowledged(
                    incidents, ((str(i.id).encode(), i.to_bytes()) for i in out)
                )
                text = new_state.model_dump_json()
                fusion_state[kind] = text
                decoded[kind] = (text, new_state)
            except Exception as err:
                if is_outage(err):
                    raise
                log.exception("fusion failed")
                await ctx.dead(PLACED_TOPIC, raw, reason_of(err))

    def _state_of(kind: str) -> FusionState:
        stored = fusion_state[kind]
        hit = decoded.get(kind)
        if hit is not None and hit[0] == stored:
            return hit[1]
        return FusionState.model_validate_json(stored) if stored else FusionState()

    @ctx.app.timer(quiet_check_s)  # type: ignore[untyped-decorator]
    async def quiet_check() -> None:
        now = clock()
        for kind in list(fusion_state.keys()):
            try:
                due = quiet_due(_state_of(kind), now, fusion_ctx.quiet_after(IncidentKind(kind)))
            except Exception:
                # One kind's unreadable state must not stop the others' checks.
                log.exception("quiet check failed for incident kind %r", kind)
                continue
            if due:
                check = QuietCheck(ts=now)
                await placed_topic.send(key=kind.encode(), value=check.to_bytes())
