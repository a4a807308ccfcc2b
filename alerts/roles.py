"""The alerting roles as long-running loops: the engine, the closed loop and the outbox relay.

Each consumes with aiokafka and commits only after its effects are durable (alerts in Kafka,
case changes and outbox rows in PostgreSQL). ``clock`` is injectable everywhere.

Every message is handled inside a guard: whatever goes wrong with it (a bad payload, an
illegal transition, an error nobody foresaw) sends it to ``gw.deadletter`` with the reason, and
the role goes on; its offset is committed after that. An unavailable database or broker is no
message's fault: it stops the role before the commit, and the restarted role reads it again.
Each loop beats its role's ``heartbeat`` once per turn; an error that escapes a loop ends the
role, so its supervisor restarts it from the committed offsets.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime

import psycopg
from kafka import KafkaProducer

from alerts.closed_loop import ClosedLoop
from alerts.engine import AlertEngine
from alerts.outbox import Message, Relay
from alerts.silences import Silence, current_silences
from alerts.sinks import BROADCAST, DISPATCH, HttpSender
from gridwatch import kafka, topics
from gridwatch.errors import PayloadError
from gridwatch.events import Alert, CaseEvent, DeadLetter, Incident, decode, reason_of, utcnow
from gridwatch.liveness import Heartbeat
from gridwatch.outages import is_outage
from gridwatch.settings import ConsumerGroups
from gridwatch.site import Site
from gridwatch.xml_signature import XmlSigner

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
SILENCE_REFRESH_S = 2.0
TIMER_PERIOD_S = 1.0
# The relay role's two loops, each of which must beat for the role to be alive.
CASES_LOOP, OUTBOX_LOOP = "cases", "outbox"
RELAY_LOOPS = (CASES_LOOP, OUTBOX_LOOP)


def _dead(producer: KafkaProducer, source: str, raw: bytes, reason: str) -> None:
    letter = DeadLetter.of(source, raw, reason)
    producer.send(topics.DEADLETTER, key=source.encode(), value=letter.to_bytes())


def _refuse(producer: KafkaProducer, topic: str, raw: bytes, err: Exception) -> None:
    """The per-message guard's verdict: dead-letter the message, unless the failure was an
    outage (re-raised, so the role stops with the offset uncommitted)."""
    if is_outage(err):
        raise err
    log.warning("%s message dead-lettered: %s", topic, reason_of(err))
    _dead(producer, f"kafka:{topic}", raw, reason_of(err))


async def run_engine(
    site: Site,
    bootstrap: str,
    producer: KafkaProducer,
    stop: asyncio.Event,
    *,
    database_url: str | None = None,
    clock: Clock = utcnow,
    group_id: str = "gridwatch-alerts",
    groups: ConsumerGroups | None = None,
    ready: asyncio.Event | None = None,
    heartbeat: Heartbeat | None = None,
) -> None:
    """Incidents in, notifications out; silences are re-read from the database every few s."""
    engine = AlertEngine(site)
    for alert in await _restore(engine, bootstrap, clock()):
        log.info("alert %s %s %s (due at restart)", alert.fingerprint, alert.level, alert.state)
        producer.send(topics.ALERTS, key=alert.fingerprint.encode(), value=alert.to_bytes())
    await asyncio.to_thread(producer.flush)
    consumer = kafka.consumer(bootstrap, group_id, topics.INCIDENTS, groups=groups)
    await consumer.start()
    silences_at = 0.0
    try:
        while not stop.is_set():
            if heartbeat is not None:
                heartbeat.beat()
            if database_url and time.monotonic() - silences_at > SILENCE_REFRESH_S:
                engine.silences = await asyncio.to_thread(
                    _silences, database_url, clock(), engine.silences
                )
                silences_at = time.monotonic()
            batches = await consumer.getmany(timeout_ms=100, max_records=500)
            if ready is not None and consumer.assignment():
                ready.set()
            out: list[Alert] = []
            for record in (r for rs in batches.values() for r in rs):
                raw = record.value or b""
                try:
                    out += engine.on_incident(decode(Incident, raw), clock())
                except Exception as err:
                    _refuse(producer, topics.INCIDENTS, raw, err)
            out += engine.tick(clock())
            for alert in out:
                log.info("alert %s %s %s", alert.fingerprint, alert.level, alert.state)
                producer.send(topics.ALERTS, key=alert.fingerprint.encode(), value=alert.to_bytes())
            if batches or out:
                await asyncio.to_thread(producer.flush)
            if batches:
                await consumer.commit()
    finally:
        await consumer.stop()


async def _restore(engine: AlertEngine, bootstrap: str, now: datetime) -> list[Alert]:
    """The engine's state from every incident and notification so far, each at its record's
    time (see ``restore``): all partitions, as the one engine of a site (the compose file runs
    one) owns them all."""
    incidents: list[tuple[datetime | None, Incident]] = []
    sent: list[tuple[datetime | None, Alert]] = []
    for at, raw in await kafka.read_records(bootstrap, topics.INCIDENTS):
        with contextlib.suppress(PayloadError):  # dead-lettered when it first came
            incidents.append((at, decode(Incident, raw)))
    for at, raw in await kafka.read_records(bootstrap, topics.ALERTS):
        with contextlib.suppress(PayloadError):
            sent.append((at, decode(Alert, raw)))
    due = engine.restore(incidents, sent, now)
    log.info("alert engine restored from %d incidents and %d notifications", len(incidents),
             len(sent))  # fmt: skip
    return due


def _silences(database_url: str, now: datetime, current: list[Silence]) -> list[Silence]:
    """The silences in force; the last ones known while the database is away, which must not
    stop alerting."""
    try:
        with psycopg.connect(database_url, connect_timeout=5) as conn:
            return current_silences(conn, now)
    except psycopg.OperationalError as err:
        log.warning("silences not refreshed, database unavailable: %s", err)
        return current


async def run_closed_loop(
    site: Site,
    database_url: str,
    bootstrap: str,
    producer: KafkaProducer,
    stop: asyncio.Event,
    *,
    clock: Clock = utcnow,
    group_id: str = "gridwatch-cases",
    groups: ConsumerGroups | None = None,
    ready: asyncio.Event | None = None,
    heartbeat: Heartbeat | None = None,
) -> None:
    """Alerts open cases, callbacks move them, the timers escalate them."""
    loop = ClosedLoop(site, clock)
    consumer = kafka.consumer(bootstrap, group_id, topics.ALERTS, topics.CASE_EVENTS, groups=groups)
    await consumer.start()
    timers_at = 0.0
    try:
        with psycopg.connect(database_url, connect_timeout=5) as conn:
            while not stop.is_set():
                if heartbeat is not None:
                    heartbeat.beat(CASES_LOOP)
                batches = await consumer.getmany(timeout_ms=100, max_records=200)
                if ready is not None and consumer.assignment():
                    ready.set()
                records = [(r.topic, r.value or b"") for rs in batches.values() for r in rs]
                if records:
                    await asyncio.to_thread(_apply_all, loop, conn, producer, records)
                    await consumer.commit()
                if time.monotonic() - timers_at > TIMER_PERIOD_S:
                    await asyncio.to_thread(_timers, loop, conn)
                    timers_at = time.monotonic()
    finally:
        await consumer.stop()


def _apply_all(
    loop: ClosedLoop,
    conn: psycopg.Connection,
    producer: KafkaProducer,
    records: list[tuple[str, bytes]],
) -> None:
    for topic, raw in records:
        try:
            with conn.transaction():
                if topic == topics.ALERTS:
                    loop.on_alert(conn, decode(Alert, raw))
                else:
                    loop.on_case_event(conn, decode(CaseEvent, raw))
        except Exception as err:
            _refuse(producer, topic, raw, err)
    producer.flush()


def _timers(loop: ClosedLoop, conn: psycopg.Connection) -> None:
    with conn.transaction():
        loop.run_timers(conn)


async def run_relay(
    site: Site,
    database_url: str,
    producer: KafkaProducer,
    secrets: Mapping[str, bytes],
    stop: asyncio.Event,
    *,
    cap_signer: XmlSigner | None = None,
    clock: Clock = utcnow,
    heartbeat: Heartbeat | None = None,
) -> Relay:
    """Deliver the outbox to the dispatch and broadcast systems until ``stop``; CAP documents
    are signed by ``cap_signer`` (without one they are refused, never sent unsigned)."""
    policy = site.policy
    broadcast = policy.broadcast
    senders = {
        DISPATCH: HttpSender(policy.dispatch.url, secrets[DISPATCH], policy.dispatch.timeout_s),
        BROADCAST: HttpSender(
            broadcast.url, secrets[BROADCAST], broadcast.timeout_s, cap_signer=cap_signer
        ),
    }

    async def on_dead(message: Message, reason: str) -> None:
        # Operators see it on the dead-letter dashboard, with the case and the last error.
        text = f"delivery to {message.sink} failed after {message.attempts} attempts: {reason}"
        await asyncio.to_thread(
            _dead, producer, f"outbox:{message.sink}:{message.case_id}", message.body, text
        )

    relay = Relay(database_url, senders, policy.delivery, clock=clock, on_dead=on_dead)
    try:
        beat = functools.partial(heartbeat.beat, OUTBOX_LOOP) if heartbeat else None
        await relay.run(stop, beat=beat)
    finally:
        for sender in senders.values():
            await sender.close()
    return relay
