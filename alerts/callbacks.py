"""Status callbacks from the dispatch system and the broadcast system, into ``gw.case-events``.

Both endpoints check the HMAC signature, turn the body into a ``CaseEvent`` and answer 200 only
after Kafka has acknowledged it, so a callback is never lost: the caller retries until then.
The callback's ``event_id`` becomes the event id, which makes a retried callback a no-op.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime
from typing import Any
from uuid import UUID

from aiohttp import web
from kafka import KafkaProducer
from pydantic import ValidationError

from gridwatch import topics
from gridwatch.events import CaseEvent, describe_validation_error
from gridwatch.signing import verify

log = logging.getLogger(__name__)

BROADCAST_STATE = {1: "received", 2: "playing", 3: "played", 4: "failed"}


def dispatch_event(body: dict[str, Any]) -> CaseEvent:
    return CaseEvent(
        id=UUID(str(body["event_id"])),
        case_id=str(body["case_id"]),
        seq=int(body["seq"]),
        from_state=body.get("from_state"),
        to_state=str(body["state"]),
        action=body.get("action"),
        actor=str(body["actor"]),
        ts=datetime.fromisoformat(str(body["ts"])),
        note=str(body.get("note", "")),
    )


def broadcast_event(body: dict[str, Any]) -> CaseEvent:
    state = int(body["BrdState"])
    return CaseEvent(
        id=UUID(str(body["event_id"])),
        case_id=str(body["case_id"]),
        seq=int(body.get("seq", 0)),
        from_state=None,
        to_state=BROADCAST_STATE[state],
        action="broadcast_state",
        actor=str(body.get("actor", "broadcast")),
        ts=datetime.fromisoformat(str(body["ts"])),
        note=f"{body.get('EBMID', '')} BrdState={state}",
    )


class CallbackServer:
    def __init__(self, secret: bytes, producer: KafkaProducer) -> None:
        self.secret = secret
        self.producer = producer
        self.app = web.Application()
        self.app.router.add_post("/v1/callbacks/dispatch", self._dispatch)
        self.app.router.add_post("/v1/callbacks/broadcast", self._broadcast)
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0][1]
        self.url = f"http://{host}:{bound}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _dispatch(self, request: web.Request) -> web.Response:
        return await self._accept(request, dispatch_event)

    async def _broadcast(self, request: web.Request) -> web.Response:
        return await self._accept(request, broadcast_event)

    async def _accept(self, request: web.Request, parse: Any) -> web.Response:
        body = await request.read()
        problem = verify(self.secret, request.headers, body)
        if problem is not None:
            log.warning("callback refused: %s", problem)
            return web.json_response({"error": problem}, status=401)
        try:
            event: CaseEvent = parse(json.loads(body))
        except ValidationError as err:
            return web.json_response({"error": describe_validation_error(err)}, status=422)
        except (ValueError, KeyError, TypeError) as err:
            return web.json_response({"error": f"bad callback: {err!r}"}, status=422)
        future = self.producer.send(
            topics.CASE_EVENTS, key=event.case_id.encode(), value=event.to_bytes()
        )
        await asyncio.to_thread(future.get, 10)
        return web.json_response({"accepted": str(event.id)})
