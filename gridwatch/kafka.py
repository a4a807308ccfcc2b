"""Kafka clients with the settings every role shares.

kafka-python produces (its consumer-group join does not work on every Kafka-API broker);
aiokafka consumes.
"""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer
from kafka import KafkaProducer


def producer(bootstrap: str, **overrides: object) -> KafkaProducer:
    """An idempotence-free, all-acks producer that batches a little for throughput."""
    config: dict[str, object] = {
        "bootstrap_servers": bootstrap.split(","),
        "acks": "all",
        "linger_ms": 5,
        "retries": 10,
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
        # Short rebalance and session timeouts keep group joins quick on small clusters.
        rebalance_timeout_ms=3000,
        session_timeout_ms=10000,
        heartbeat_interval_ms=1000,
    )
