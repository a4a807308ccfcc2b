"""Scale-out wiring without a broker: bootstrap lists, Faust's own topics and the table store."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from faust.types import TP

from gridwatch.errors import ServiceError
from gridwatch.kafka import partition_of, servers
from gridwatch.settings import ConsumerGroups
from gridwatch.site import Site
from streams.app import build_app


def test_every_bootstrap_server_is_kept() -> None:
    assert servers(" k1:9092, k2:9092 ,k3:9092") == ["k1:9092", "k2:9092", "k3:9092"]
    with pytest.raises(ServiceError, match="no Kafka bootstrap server"):
        servers(" , ")


def test_the_app_has_every_server_the_partitions_and_the_group_timeouts(
    tiny_site: Site, tmp_path: Path
) -> None:
    groups = ConsumerGroups(session_timeout_s=4, heartbeat_interval_s=0.5, rebalance_timeout_s=2)
    app = build_app(tiny_site, "k1:9092,k2:9093", tmp_path, partitions=4, groups=groups)
    assert [(url.host, url.port) for url in app.conf.broker] == [("k1", 9092), ("k2", 9093)]
    assert app.conf.topic_partitions == 4
    assert (app.conf.broker_session_timeout, app.conf.broker_heartbeat_interval) == (4, 0.5)
    assert app.conf.broker_rebalance_timeout == 2


def test_a_state_written_after_a_batch_is_kept_in_its_keys_partition(
    tiny_site: Site, tmp_path: Path
) -> None:
    # The sensor rules write a device's state after the batch, outside any event: the RocksDB
    # store files it under the partition its changelog entry goes to.
    app = build_app(tiny_site, "k1:9092", tmp_path, partitions=4, store="rocksdb")
    store = app.tables["device-state"].data
    keys = [f"G{i}".encode() for i in range(12)]
    for key in keys:
        store[key] = b"{}"
    for key in keys:
        assert store._db_for_partition(partition_of(key, 4)).get(key) == b"{}"
    assert {partition_of(key, 4) for key in keys} == {0, 1, 2, 3}


def test_a_revoked_partitions_states_leave_the_memory_store(
    tiny_site: Site, tmp_path: Path
) -> None:
    # Written by the worker itself, not recovered from the changelog: Faust's memory store kept
    # these after a rebalance, and the heartbeat check would have judged devices it lost.
    app = build_app(tiny_site, "k1:9092", tmp_path, partitions=4)
    table = app.tables["device-state"]
    store = table.data
    keys = [f"G{i}".encode() for i in range(12)]
    for key in keys:
        store[key] = b"{}"
    revoked = {TP(table.changelog_topic.get_topic_name(), 1), TP("gw.readings", 2)}
    asyncio.run(store.on_rebalance(set(), revoked, set()))
    assert sorted(store.keys()) == sorted(k for k in keys if partition_of(k, 4) != 1)
