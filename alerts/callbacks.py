"""Status callbacks from the dispatch system and the broadcast system, into ``gw.case-events``.

The API listens on one configured address, over HTTPS when given a certificate. Each route
checks the signature with its own key (the dispatch key on the dispatch route, the
broadcast key on the broadcast route; ``gridwatch.signing``, replays refused), validates the
body strictly (a 400 names the field and the rule) and answers 200 only after Kafka has
acknowledged the ``CaseEvent``, so a callback is never lost: the caller retries until then.
The callback's ``event_id`` becomes the event id, which makes a retried callback a no-op.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Annotated, TypeVar
from uuid import UUID

from aiohttp import web
from kafka import KafkaProducer
from pydantic import (
    AfterValidator,
    AwareDatetime,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from alerts.cases import EXTERNAL_ACTIONS, Action, State
from alerts.sinks import BROADCAST, DISPATCH
from gridwatch import topics
from gridwatch.errors import ConfigError
from gridwatch.events import (
    CaseEvent,
    Int32,
    Model,
    Resolution,
    Text,
    describe_validation_error,
)
from gridwatch.signing import Verifier

log = logging.getLogger(__name__)

BROADCAST_STATE = {1: "received", 2: "playing", 3: "played", 4: "failed"}
ROUTES = {DISPATCH: "/v1/callbacks/dispatch", BROADCAST: "/v1/callbacks/broadcast"}
CaseId = Annotated[Text, Field(min_length=1, max_length=200)]
# What a dispatch system may report (broadcast states come on their own route); the other
# actions and states are gridwatch's own.
CALLBACK_ACTIONS = EXTERNAL_ACTIONS - {Action.BROADCAST_STATE}
CALLBACK_STATES = frozenset(State) - {State.RECEIVED, State.DISPATCHED}

Member = TypeVar("Member", Action, State)


def _one_of(allowed: frozenset[Member]) -> Callable[[Member], Member]:
    def check(value: Member) -> Member:
        if value not in allowed:
            names = ", ".join(sorted(allowed))
            raise ValueError(f"{value.value!r} is not reported by callbacks (one of {names})")
        return value

    return check


class Callback(Model):
    """No coercion: ``"7"`` is not a number and ``1`` is not a string (docs/dispatch-api.yaml)."""

    model_config = ConfigDict(strict=True)


class DispatchCallback(Callback):
    event_id: UUID
    case_id: CaseId
    seq: Int32 = Field(ge=0)
    action: Annotated[Action, AfterValidator(_one_of(CALLBACK_ACTIONS))]
    state: Annotated[State, AfterValidator(_one_of(CALLBACK_STATES))]
    from_state: Text | None = None
    actor: Text = Field(min_length=1)
    ts: AwareDatetime
    note: Text = ""
    resolution: Resolution | None = None

    @model_validator(mode="after")
    def _resolution_closes(self) -> DispatchCallback:
        if self.resolution is not None and self.state is not State.CLOSED:
            raise ValueError("resolution: only a callback that closes the case has one")
        return self

    def event(self) -> CaseEvent:
        return CaseEvent(
            id=self.event_id,
            case_id=self.case_id,
            seq=self.seq,
            from_state=self.from_state,
            to_state=self.state.value,
            action=self.action.value,
            actor=self.actor,
            ts=self.ts,
            note=self.note,
            resolution=self.resolution,
        )


class BroadcastCallback(Callback):
    event_id: UUID
    case_id: CaseId
    seq: Int32 = Field(default=0, ge=0)
    EBMID: Text = ""  # the EBM profile's own field names
    BrdState: int = Field(ge=1, le=4, description="EBM state: 1 received … 4 failed")
    actor: Text = Field(default="broadcast", min_length=1)
    ts: AwareDatetime

    def event(self) -> CaseEvent:
        return CaseEvent(
            id=self.event_id,
            case_id=self.case_id,
            seq=self.seq,
            from_state=None,
            to_state=BROADCAST_STATE[self.BrdState],
            action="broadcast_state",
            actor=self.actor,
            ts=self.ts,
            note=f"{self.EBMID} BrdState={self.BrdState}",
        )


Parse = Callable[[bytes], CaseEvent]
PARSERS: dict[str, Parse] = {
    DISPATCH: lambda body: DispatchCallback.model_validate_json(body).event(),
    BROADCAST: lambda body: BroadcastCallback.model_validate_json(body).event(),
}


def tls_context(certificate: Path | None, key: Path | None) -> ssl.SSLContext | None:
    """The HTTPS context of the callback API from PEM files; None (plain HTTP) without them."""
    if certificate is None and key is None:
        return None
    if certificate is None or key is None:
        raise ConfigError("set both GRIDWATCH_CALLBACK_TLS_CERT and GRIDWATCH_CALLBACK_TLS_KEY")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(certificate, key)
    except (OSError, ssl.SSLError) as err:
        raise ConfigError(f"callback TLS certificate {certificate} or key {key}: {err}") from err
    return context


class CallbackServer:
    """The callback API; ``keys`` holds the HMAC key of each route (``DISPATCH``, ``BROADCAST``)."""

    def __init__(self, keys: Mapping[str, bytes], producer: KafkaProducer) -> None:
        self.producer = producer
        self.app = web.Application()
        for route, path in ROUTES.items():
            self.app.router.add_post(path, self._handler(route, Verifier(keys[route])))
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self, host: str, port: int = 0, *, tls: ssl.SSLContext | None = None) -> str:
        """Listen on ``host`` only (HTTPS with ``tls``); returns the base URL."""
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=tls)
        await site.start()
        bound = self._runner.addresses[0][1]
        self.url = f"{'https' if tls else 'http'}://{host}:{bound}"
        log.info("callback API listening on %s", self.url)
        return self.url

    @property
    def addresses(self) -> list[str]:
        """The addresses it listens on."""
        return [] if self._runner is None else [str(a[0]) for a in self._runner.addresses]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _handler(
        self, route: str, verifier: Verifier
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        parse = PARSERS[route]

        async def accept(request: web.Request) -> web.Response:
            body = await request.read()
            refusal = verifier.verify(request.method, request.raw_path, request.headers, body)
            if refusal is not None:
                log.warning("%s callback refused: %s", route, refusal.reason)
                return web.json_response({"error": refusal.reason}, status=refusal.status)
            try:
                event = parse(body)
            except ValidationError as err:
                reason = describe_validation_error(err)
                log.warning("%s callback rejected: %s", route, reason)
                return web.json_response({"error": reason}, status=400)
            future = self.producer.send(
                topics.CASE_EVENTS, key=event.case_id.encode(), value=event.to_bytes()
            )
            await asyncio.to_thread(future.get, 10)
            return web.json_response({"accepted": str(event.id)})

        return accept
