"""Kafka clients with the settings every role shares.

kafka-python produces (its consumer-group join does not work on every Kafka-API broker);
aiokafka consumes.
"""

from __future__ import annotations

import asyncio
import importlib.util
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from kafka import KafkaProducer
from kafka.partitioner import DefaultPartitioner, murmur2

from gridwatch.errors import ServiceError

# A broker that holds an empty fetch for the whole wait, instead of answering when data
# arrives, adds that wait to every hop; 100 ms keeps the polling cheap and the hop short.
FETCH_MAX_WAIT_MS = 100


def compression() -> str | None:
    """lz4 when both clients have its codec (kafka-python uses lz4, aiokafka cramjam): cheap on
    CPU, and JSON readings shrink several-fold."""
    codecs = ("lz4", "cramjam")
    return "lz4" if all(importlib.util.find_spec(c) is not None for c in codecs) else None


@lru_cache(maxsize=65536)
def key_hash(key: bytes) -> int:
    """The default partitioners' hash of a key (murmur2, as kafka-python, aiokafka and the Java
    client compute it), remembered: keys are device ids, few and repeated, and the pure-Python
    murmur2 was a tenth of the bridge's time."""
    return int(murmur2(key)) & 0x7FFFFFFF


def partition_of(key: bytes, partitions: int) -> int:
    """The partition the default partitioners give ``key`` among ``partitions``."""
    return key_hash(key) % partitions


class KeyHashCache(DefaultPartitioner):  # type: ignore[misc]
    """kafka-python's default partitioning with ``key_hash``, so readings and Faust's status
    messages and table entries of a device share a partition."""

    def partition(
        self, topic: str, key: Any, serialized_key: bytes | None, value: Any, sv: Any, cluster: Any
    ) -> int:
        partitions = cluster.partitions_for_topic(topic) if serialized_key is not None else None
        if serialized_key is None or not partitions:  # the default's choice, or its error
            return int(super().partition(topic, key, serialized_key, value, sv, cluster))
        ordered = sorted(partitions)
        return int(ordered[partition_of(serialized_key, len(ordered))])


def producer(bootstrap: str, **overrides: object) -> KafkaProducer:
    """An idempotence-free, all-acks producer that batches for throughput."""
    config: dict[str, object] = {
        "bootstrap_servers": bootstrap.split(","),
        "acks": "all",
        # A few ms of linger fills batches under load and costs little latency when idle.
        "linger_ms": 5,
        "batch_size": 256 * 1024,
        "compression_type": compression(),
        "partitioner": KeyHashCache(),
        # Retried until the delivery timeout, not a count: ten retries were spent within a second
        # of a broker restart, and the bridge then held messages it could neither send nor ack.
        "delivery_timeout_ms": 120_000,
        # kafka-python 3 is idempotent by default; its producer id does not survive a broker
        # that lost its state, and every send then fails with UnknownProducerIdError. The
        # consumers are idempotent instead (unique keys, replayable rule states).
        "enable_idempotence": False,
        "max_in_flight_requests_per_connection": 1,  # keeps per-key order across retries
    }
    config.update(overrides)
    return KafkaProducer(**config)


def consumer(bootstrap: str, group_id: str, *topics: str) -> AIOKafkaConsumer:
    """A manually committing consumer that starts from the earliest offset of a new group."""
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        # Short rebalance and session timeouts keep group joins quick on small clusters.
        rebalance_timeout_ms=3000,
        session_timeout_ms=10000,
        heartbeat_interval_ms=1000,
    )


async def read_topic(bootstrap: str, topic: str, timeout_s: float = 60.0) -> list[bytes]:
    """Every message of ``topic``, from its beginning to its end as of the call, partition by
    partition (each in order), without a consumer group."""
    return [raw for _, raw in await read_records(bootstrap, topic, timeout_s)]


async def read_records(
    bootstrap: str, topic: str, timeout_s: float = 60.0
) -> list[tuple[datetime | None, bytes]]:
    """As ``read_topic``, each message with its record's timestamp (None if it has none)."""
    reader = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=FETCH_MAX_WAIT_MS
    )
    await reader.start()
    try:
        await reader.topics()  # metadata for partitions_for_topic
        parts = [TopicPartition(topic, p) for p in sorted(reader.partitions_for_topic(topic) or ())]
        if not parts:
            return []
        reader.assign(parts)
        end = await reader.end_offsets(parts)
        await reader.seek_to_beginning(*parts)
        got: dict[TopicPartition, list[tuple[datetime | None, bytes]]] = {tp: [] for tp in parts}
        deadline = asyncio.get_running_loop().time() + timeout_s
        while [tp for tp in parts if await reader.position(tp) < end[tp]]:
            if asyncio.get_running_loop().time() > deadline:
                raise ServiceError(f"cannot read {topic} to its end within {timeout_s:.0f}s")
            for tp, records in (await reader.getmany(timeout_ms=500)).items():
                got[tp] += [
                    (_time(r.timestamp), r.value or b"") for r in records if r.offset < end[tp]
                ]
        return [record for tp in parts for record in got[tp]]
    finally:
        await reader.stop()


def _time(timestamp_ms: int | None) -> datetime | None:
    if not timestamp_ms or timestamp_ms <= 0:
        return None
    return datetime.fromtimestamp(timestamp_ms / 1000, UTC)
