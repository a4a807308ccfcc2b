"""Transactional outbox and its relay (DESIGN.md §6).

``enqueue`` writes a message in the caller's transaction, next to the state change it reports,
so either both happen or neither. The relay leases due rows (several relays never send the same
row at once), sends each with its idempotency key, and on failure reschedules it with
exponential backoff and full jitter. After the last attempt, or at once for a permanent
refusal, the row moves to ``outbox_deadletters`` and ``on_dead`` tells the operators. A row
whose handling fails in a way nobody foresaw goes there too, at once, with the reason; only an
unavailable database holds the relay, which retries until it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg

from gridwatch.events import reason_of, storable_text, utcnow
from gridwatch.outages import is_outage
from gridwatch.policy import Delivery

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
LEASE = timedelta(seconds=60)  # longer than any send; a crashed relay's rows come back after it


@dataclass(frozen=True)
class Message:
    id: int
    key: str
    sink: str
    content_type: str
    body: bytes
    case_id: str | None
    attempts: int  # including the one being made


class DeliveryError(Exception):
    """A send that failed; ``permanent`` when retrying cannot help (a 4xx refusal)."""

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.permanent = permanent


Sender = Callable[[Message], Awaitable[None]]


def enqueue(
    conn: psycopg.Connection,
    sink: str,
    key: str,
    content_type: str,
    body: bytes,
    case_id: str | None = None,
) -> bool:
    """Add a message in the caller's transaction; False if that key is already queued."""
    cur = conn.execute(
        "INSERT INTO outbox (idempotency_key, sink, content_type, body, case_id)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (idempotency_key) DO NOTHING",
        (key, sink, content_type, body, case_id),
    )
    return cur.rowcount == 1


def backoff(attempt: int, delivery: Delivery, rng: random.Random) -> timedelta:
    """Full jitter: uniform in [0, min(max, base·2^(attempt-1))], so retries spread out."""
    ceiling = min(delivery.backoff_max_s, delivery.backoff_base_s * 2 ** (attempt - 1))
    return timedelta(seconds=rng.uniform(0, ceiling))


class Relay:
    def __init__(
        self,
        database_url: str,
        senders: Mapping[str, Sender],
        delivery: Delivery,
        *,
        clock: Clock = utcnow,
        rng: random.Random | None = None,
        on_dead: Callable[[Message, str], Awaitable[None]] | None = None,
        batch: int = 20,
    ) -> None:
        self.database_url = database_url
        self.senders = senders
        self.delivery = delivery
        self.clock = clock
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not crypto
        self.on_dead = on_dead
        self.batch = batch
        self.delivered = 0
        self.dead = 0

    async def run(
        self, stop: asyncio.Event, poll_s: float = 0.1, beat: Callable[[], None] | None = None
    ) -> None:
        """Deliver until ``stop``; ``beat`` is called once per turn (the role's liveness)."""
        while not stop.is_set():
            if beat is not None:
                beat()
            try:
                sent = await self.drain_once()
            except Exception as err:
                if not is_outage(err):
                    raise
                log.warning("outbox relay: database unavailable (%s)", reason_of(err))
                sent = 0
            if not sent:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), poll_s)

    async def drain_once(self) -> int:
        """Send every message due now, concurrently; returns how many were attempted."""
        due = await asyncio.to_thread(self._lease)
        await asyncio.gather(*(self._deliver(m) for m in due))
        return len(due)

    def _connect(self) -> psycopg.Connection:
        return psycopg.connect(self.database_url, autocommit=True, connect_timeout=5)

    def _lease(self) -> list[Message]:
        now = self.clock()
        with self._connect() as conn:
            rows = conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = %s"
                " WHERE id IN (SELECT id FROM outbox WHERE delivered_at IS NULL"
                "   AND next_attempt_at <= %s ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED)"
                " RETURNING id, idempotency_key, sink, content_type, body, case_id, attempts",
                (now + LEASE, now, self.batch),
            ).fetchall()
        return sorted((Message(*row) for row in rows), key=lambda m: m.id)

    async def _deliver(self, message: Message) -> None:
        """Send one message, inside the guard that keeps one row from stopping the relay."""
        try:
            await self._attempt(message)
        except Exception as err:
            if is_outage(err):
                raise
            log.exception("outbox %s to %s: handling failed", message.key, message.sink)
            await self._failed(message, reason_of(err), True)

    async def _attempt(self, message: Message) -> None:
        sender = self.senders.get(message.sink)
        try:
            if sender is None:
                raise DeliveryError(f"no sender for sink {message.sink!r}", permanent=True)
            await sender(message)
        except DeliveryError as err:
            await self._failed(message, str(err), err.permanent)
        except Exception as err:  # noqa: BLE001 - any send failure is retried, never lost
            await self._failed(message, repr(err), False)
        else:
            await asyncio.to_thread(self._done, message)
            self.delivered += 1

    def _done(self, message: Message) -> None:
        with self._connect() as conn:
            conn.execute(
                "UPDATE outbox SET delivered_at = %s, last_error = NULL WHERE id = %s",
                (self.clock(), message.id),
            )

    async def _failed(self, message: Message, reason: str, permanent: bool) -> None:
        if permanent or message.attempts >= self.delivery.max_attempts:
            await asyncio.to_thread(self._bury, message, reason)
            self.dead += 1
            log.error(
                "outbox %s to %s dead after %d attempt(s): %s",
                message.key,
                message.sink,
                message.attempts,
                reason,
            )
            if self.on_dead is not None:
                await self.on_dead(message, reason)
            return
        retry_at = self.clock() + backoff(message.attempts, self.delivery, self.rng)
        log.warning(
            "outbox %s to %s failed (attempt %d): %s; retry at %s",
            message.key,
            message.sink,
            message.attempts,
            reason,
            retry_at.isoformat(),
        )
        await asyncio.to_thread(self._reschedule, message, reason, retry_at)

    def _reschedule(self, message: Message, reason: str, retry_at: datetime) -> None:
        with self._connect() as conn:
            conn.execute(
                "UPDATE outbox SET next_attempt_at = %s, last_error = %s WHERE id = %s",
                (retry_at, _storable(reason), message.id),
            )

    def _bury(self, message: Message, reason: str) -> None:
        with self._connect() as conn, conn.transaction():
            conn.execute(
                "INSERT INTO outbox_deadletters (id, idempotency_key, sink, content_type, body,"
                " case_id, attempts, last_error) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (id) DO NOTHING",
                (
                    message.id,
                    message.key,
                    message.sink,
                    message.content_type,
                    message.body,
                    message.case_id,
                    message.attempts,
                    _storable(reason),
                ),
            )
            conn.execute("DELETE FROM outbox WHERE id = %s", (message.id,))


def _storable(reason: str) -> str:
    """A reason a text column takes: receivers' error bodies can hold anything, NUL included."""
    return storable_text(reason[:2000])
