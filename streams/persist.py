"""Persistence: every topic into the database, in batches, exactly once per row.

A batching aiokafka consumer (not a per-message agent): decode a batch, write it with binary
COPY and an idempotent insert, commit the database, then commit the Kafka offsets. A crash in
between redelivers the batch, and the unique keys turn the replay into a no-op. While the
database is down the batch is held and retried with backoff; nothing is consumed past it.

A message the database refuses for any other reason must not stop the writes: a batch that
fails so is split in halves, down to single messages, to find the ones at fault. Those are
stored as dead letters (their bytes and the reason), the rest as usual, in the same
transaction, and only then are the offsets committed.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

import psycopg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from pydantic import TypeAdapter, ValidationError

from gridwatch import kafka, topics
from gridwatch.batch_decode import decode_reading_batch, decode_reading_batches
from gridwatch.events import DeadLetter, Event, ReadingBatch, decode, reason_of
from gridwatch.liveness import Heartbeat
from gridwatch.outages import is_outage
from gridwatch.settings import ConsumerGroups
from gridwatch.store.rollups import refresh_rollups, rollups_need_refresh
from gridwatch.store.writer import write_events

log = logging.getLogger(__name__)


@dataclass
class PersistStats:
    batches: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    undecodable: int = 0
    refused: int = 0  # decoded, but refused by the database: stored as dead letters
    db_retries: int = 0


_arrays: dict[type[Event], TypeAdapter[list[Event]]] = {}


def _array_of(model: type[Event]) -> TypeAdapter[list[Event]]:
    if model not in _arrays:
        _arrays[model] = TypeAdapter(list[model])  # type: ignore[valid-type]
    return _arrays[model]


@dataclass(frozen=True, slots=True)
class Span:
    """One Kafka message of a batch and where its event is in the batch's list."""

    topic: str
    raw: bytes
    index: int


@dataclass
class Decoded:
    events: list[Event]  # what to store, one event per message
    spans: list[Span]  # the message each event came from
    bad: int  # messages that did not decode, among ``events`` as dead letters

    def events_of(self, spans: Sequence[Span]) -> list[Event]:
        return [self.events[s.index] for s in spans]


def _decode_array(model: type[Event], raws: list[bytes]) -> list[Event]:
    """The messages of one topic as one JSON array (one call into the decoder, not one per
    message), or as many as decoded if any does not."""
    if model is ReadingBatch:
        return list(decode_reading_batches(raws) or ())
    try:
        return _array_of(model).validate_json(b"[" + b",".join(raws) + b"]")
    except ValidationError:
        return []


def decode_batch(records: Sequence[tuple[str, bytes]]) -> Decoded:
    """Events to store; a message that does not decode is stored as a dead letter instead.

    Each topic's messages are decoded as one JSON array, a single call into the decoder instead
    of one per message (msgspec for readings, ``gridwatch.batch_decode``); a batch holding a bad
    message is decoded again one message at a time to find it, so the dead letter carries that
    message's bytes and reason. A batch of readings is one event, which the writer stores as its
    readings' rows.
    """
    by_topic: dict[str, list[bytes]] = {}
    for topic, raw in records:
        by_topic.setdefault(topic, []).append(raw)
    events: list[Event] = []
    spans: list[Span] = []
    bad = 0
    for topic, raws in by_topic.items():
        model = topics.MODELS[topic]
        decoded: list[Event] = _decode_array(model, raws)
        if len(decoded) != len(raws):
            one = decode_reading_batch if model is ReadingBatch else partial(decode, model)
            decoded = []
            for raw in raws:
                try:
                    decoded.append(one(raw))
                except Exception as err:  # noqa: BLE001 - any failure is this message's reason
                    bad += 1
                    decoded.append(DeadLetter.of_error(f"kafka:{topic}", raw, err))
        for raw, event in zip(raws, decoded, strict=True):
            spans.append(Span(topic=topic, raw=raw, index=len(events)))
            events.append(event)
    return Decoded(events=events, spans=spans, bad=bad)


@dataclass
class Written:
    rows: dict[str, int]  # rows inserted per table, dead letters of refused messages included
    refused: int  # messages the database refused, stored as dead letters


def write_guarded(conn: psycopg.Connection, batch: Decoded) -> Written:
    """Write the batch in the caller's transaction; a message the database refuses (for any
    reason but being unavailable) becomes a dead letter and the rest is written.

    The whole batch is tried first, under a savepoint: the common case pays nothing more."""
    try:
        with conn.transaction():
            return Written(rows=write_events(conn, batch.events), refused=0)
    except Exception as err:
        if is_outage(err):
            raise
        log.warning("a batch was refused (%s); looking for the messages at fault", reason_of(err))
        first = err
    rows: dict[str, int] = {}
    letters: list[Event] = []
    _split(conn, batch, batch.spans, first, rows, letters)
    _add(rows, write_events(conn, letters))
    return Written(rows=rows, refused=len(letters))


def _split(
    conn: psycopg.Connection,
    batch: Decoded,
    spans: Sequence[Span],
    err: Exception,
    rows: dict[str, int],
    letters: list[Event],
) -> None:
    """``spans`` failed with ``err``: write each half on its own, and split a failing half
    again, down to the single messages at fault, which become dead letters."""
    if len(spans) == 1:
        span = spans[0]
        letter = DeadLetter.of_error(f"kafka:{span.topic}", span.raw, err)
        log.warning("dead-lettering a %s message: %s", span.topic, letter.reason)
        letters.append(letter)
        return
    middle = len(spans) // 2
    for half in (spans[:middle], spans[middle:]):
        try:
            with conn.transaction():
                _add(rows, write_events(conn, batch.events_of(half)))
        except Exception as half_err:
            if is_outage(half_err):
                raise
            _split(conn, batch, half, half_err, rows, letters)


async def _commit(consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
    """Commit a written batch's offsets. A rebalance since the batch was fetched refuses the commit:
    the batch is in the database already, and whichever writer now holds its partitions reads
    it again from the last committed offset, where the unique keys make the repeat a no-op.
    The writer goes on; only a broker that is away (any other error) ends it."""
    if not offsets:
        return
    try:
        await consumer.commit(offsets)
    except (CommitFailedError, IllegalStateError) as err:
        log.info("offsets not committed, the group rebalanced meanwhile: %s", err)


def _add(total: dict[str, int], more: dict[str, int]) -> None:
    for table, n in more.items():
        total[table] = total.get(table, 0) + n


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

    def write(self, batch: Decoded, stop: asyncio.Event | None = None) -> Written:
        delay = 0.2
        while True:
            try:
                conn = self._connection()
                with conn.transaction():
                    return write_guarded(conn, batch)
            except Exception as err:
                if not is_outage(err):
                    raise
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


@dataclass
class _Writing:
    """A batch the database is writing, and the offsets that follow it."""

    done: asyncio.Future[Written]
    batch: Decoded
    offsets: dict[TopicPartition, int]

    async def settle(self, consumer: AIOKafkaConsumer, stats: PersistStats, retries: int) -> None:
        """Wait for the write, then commit its offsets (those of partitions still ours: a
        partition taken away meanwhile is replayed by its new owner, and the unique keys make
        that a no-op)."""
        written = await self.done
        mine = consumer.assignment()
        await _commit(consumer, {tp: n for tp, n in self.offsets.items() if tp in mine})
        stats.batches += 1
        stats.undecodable += self.batch.bad
        stats.refused += written.refused
        stats.db_retries = retries
        _add(stats.rows, written.rows)


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
    groups: ConsumerGroups | None = None,
) -> PersistStats:
    """Store batches until ``stop`` is set; ``ready`` is set once partitions are assigned.

    Several writers in one ``group_id`` share the partitions (``groups``: the group's
    timeouts); see ``_commit`` for a rebalance between a write and its commit.

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
    writing: _Writing | None = None
    consumer = kafka.consumer(bootstrap, group_id, *topic_names, groups=groups)
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
            # A batch is decoded while the database writes the one before it (decoding was a
            # third of the writer's time, with the database idle meanwhile); only one write is
            # in flight, and a batch's offsets are committed once it is written.
            batch = decode_batch(records) if records else None
            if writing is not None:
                await writing.settle(consumer, stats, writer.retries)
                writing = None
            if batch is not None:
                done = asyncio.ensure_future(asyncio.to_thread(writer.write, batch, stop))
                offsets = {tp: rs[-1].offset + 1 for tp, rs in batches.items() if rs}
                writing = _Writing(done, batch, offsets)
        if writing is not None:
            await writing.settle(consumer, stats, writer.retries)
            writing = None
        if refresh is not None:
            await refresh
        await asyncio.to_thread(rollups.refresh_rollups)
    finally:
        if writing is not None and not writing.done.done():
            await asyncio.wait([writing.done])
        if refresh is not None and not refresh.done():
            await asyncio.wait([refresh])
        await consumer.stop()
        writer.close()
        rollups.close()
    return stats
