"""Persistence: every topic into the database, in batches, exactly once per row.

A batching aiokafka consumer (not a per-message agent): decode a batch, write it with binary
COPY and an idempotent insert, commit the database, then commit the Kafka offsets. A crash in
between redelivers the batch, and the unique keys turn the replay into a no-op. While the
database is down the batch is held and retried with backoff; nothing is consumed past it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import psycopg
from pydantic import TypeAdapter, ValidationError

from gridwatch import kafka, topics
from gridwatch.errors import PayloadError
from gridwatch.events import DeadLetter, Event, ReadingBatch, decode
from gridwatch.liveness import Heartbeat
from gridwatch.store.rollups import refresh_rollups, rollups_need_refresh
from gridwatch.store.writer import write_events

log = logging.getLogger(__name__)


@dataclass
class PersistStats:
    batches: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    undecodable: int = 0
    db_retries: int = 0


_arrays: dict[type[Event], TypeAdapter[list[Event]]] = {}


def _array_of(model: type[Event]) -> TypeAdapter[list[Event]]:
    if model not in _arrays:
        _arrays[model] = TypeAdapter(list[model])  # type: ignore[valid-type]
    return _arrays[model]


def decode_batch(records: Sequence[tuple[str, bytes]]) -> tuple[list[Event], int]:
    """Events to store; a message that does not decode is stored as a dead letter instead.

    Each topic's messages are decoded as one JSON array, a single call into pydantic instead of
    one per message; a batch holding a bad message is decoded again one message at a time to
    find it, so the dead letter carries that message's bytes and reason. A batch of readings
    is stored as its readings.
    """
    by_topic: dict[str, list[bytes]] = {}
    for topic, raw in records:
        by_topic.setdefault(topic, []).append(raw)
    events: list[Event] = []
    bad = 0
    for topic, raws in by_topic.items():
        model = topics.MODELS[topic]
        try:
            decoded = _array_of(model).validate_json(b"[" + b",".join(raws) + b"]")
        except ValidationError:
            decoded = []
        if len(decoded) != len(raws):
            decoded = []
            for raw in raws:
                try:
                    decoded.append(decode(model, raw))
                except PayloadError as err:
                    bad += 1
                    decoded.append(DeadLetter.of(f"kafka:{topic}", raw, str(err)))
        for event in decoded:
            if isinstance(event, ReadingBatch):
                events += event.readings()
            else:
                events.append(event)
    return events, bad


class DatabaseWriter:
    """Holds one connection and reconnects, with capped exponential backoff, while it fails."""

    def __init__(
        self, database_url: str, max_backoff: float = 10.0, heartbeat: Heartbeat | None = None
    ) -> None:
        self.database_url = database_url
        self.max_backoff = max_backoff
        self.heartbeat = heartbeat  # waiting for the database is work, not a stuck loop
        self._conn: psycopg.Connection | None = None
        self.retries = 0

    def write(self, events: Sequence[Event], stop: asyncio.Event | None = None) -> dict[str, int]:
        delay = 0.2
        while True:
            try:
                conn = self._connection()
                with conn.transaction():
                    return write_events(conn, events)
            except psycopg.OperationalError as err:
                self.retries += 1
                self.close()
                if stop is not None and stop.is_set():
                    raise
                log.warning("database unavailable (%s); retrying in %.1fs", err, delay)
                if self.heartbeat is not None:
                    self.heartbeat.beat()
                # Full jitter keeps several writers from reconnecting in lockstep.
                time.sleep(random.uniform(0, delay))  # noqa: S311 - jitter, not crypto
                delay = min(delay * 2, self.max_backoff)

    def refresh_rollups(self) -> bool:
        """Keep the fallback's rollup tables current; False while the database is away (the
        next tick catches up, since a refresh covers everything stored since the last one)."""
        try:
            conn = self._connection()
            if rollups_need_refresh(conn):
                refresh_rollups(conn)
            conn.commit()
        except psycopg.OperationalError as err:
            log.warning("rollup refresh skipped: %s", err)
            self.close()
            return False
        return True

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.database_url, connect_timeout=5)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None


async def run_persist(
    database_url: str,
    bootstrap: str,
    stop: asyncio.Event,
    group_id: str = "gridwatch-store",
    topic_names: Sequence[str] = topics.ALL,
    max_records: int = 5000,
    ready: asyncio.Event | None = None,
    rollup_every_s: float = 30.0,
    heartbeat: Heartbeat | None = None,
) -> PersistStats:
    """Store batches until ``stop`` is set; ``ready`` is set once partitions are assigned.

    Every ``rollup_every_s``, and once more on stopping, the fallback's rollup tables are
    brought up to date. A refresh recomputes every minute that received rows, so each row is
    aggregated about (period + commit skew) / period times: more often would cost the database
    more than the rows themselves, and the dashboards read the newest minutes from raw rows."""
    stats = PersistStats()
    next_rollup = time.monotonic() + rollup_every_s
    writer = DatabaseWriter(database_url, heartbeat=heartbeat)
    # Refreshes run on their own connection beside the writes: one takes long enough that
    # fresh rows (and detections) waiting behind it showed as latency.
    rollups = DatabaseWriter(database_url)
    refresh: asyncio.Future[bool] | None = None
    consumer = kafka.consumer(bootstrap, group_id, *topic_names)
    await consumer.start()
    try:
        while not stop.is_set():
            if heartbeat is not None:
                heartbeat.beat()
            batches = await consumer.getmany(timeout_ms=200, max_records=max_records)
            if ready is not None and consumer.assignment():
                ready.set()
            if refresh is not None and refresh.done():
                refresh.result()  # a refresh that failed for another reason than an outage ends us
            if time.monotonic() >= next_rollup and (refresh is None or refresh.done()):
                refresh = asyncio.ensure_future(asyncio.to_thread(rollups.refresh_rollups))
                next_rollup = time.monotonic() + rollup_every_s
            records = [(r.topic, r.value or b"") for rs in batches.values() for r in rs]
            if not records:
                continue
            events, bad = decode_batch(records)
            inserted = await asyncio.to_thread(writer.write, events, stop)
            await consumer.commit()
            stats.batches += 1
            stats.undecodable += bad
            stats.db_retries = writer.retries
            for table, n in inserted.items():
                stats.rows[table] = stats.rows.get(table, 0) + n
        if refresh is not None:
            await refresh
        await asyncio.to_thread(rollups.refresh_rollups)
    finally:
        if refresh is not None and not refresh.done():
            await asyncio.wait([refresh])
        await consumer.stop()
        writer.close()
        rollups.close()
    return stats
