"""Where the tables live: Faust's memory store, or its RocksDB store (through the rocksdict
wheel) for a worker whose state must outlast a restart.

Faust's memory store forgets the keys of a partition taken away in a rebalance only if they
came from the changelog: a state the worker wrote itself stayed, and the heartbeat check, which
walks the whole table, would later find that device silent and send an offline status for a
device another worker now judges. This one files every write under its partition and drops a
revoked partition's keys; if the partition comes back, its changelog is replayed as at a start.

Faust's RocksDB store files a write under the partition of the event being processed, and has
none to go by when an agent writes after a batch of events (the sensor rules write each
device's state once per batch). A table partitioned by key (``use_partitioner``) has its
changelog entry in the key's partition whatever the event, so its write is filed there: the
same place a restarted worker finds it and a rebalance hands it over from.

Both count the changelog records a recovery applies and log them when it completes: all of a
table's changelog for the memory store, only what was written after its files for RocksDB.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from faust import stores
from faust.stores import memory, rocksdb
from faust.streams import current_event
from faust.types import TP

from gridwatch.kafka import partition_of
from gridwatch.settings import TableStore


def _key_partition(store: Any, key: bytes) -> int:
    """The changelog partition of a key-partitioned table's ``key``."""
    return partition_of(key, store.table.partitions or store.app.conf.topic_partitions)


log = logging.getLogger(__name__)


class _CountsReplay:
    """Counts the changelog records a recovery applies (``replayed``), and logs them."""

    replayed = 0
    table: Any

    def apply_changelog_batch(self, batch: Iterable[Any], *args: Any, **kwargs: Any) -> None:
        events = list(batch)
        self.replayed += len(events)
        super().apply_changelog_batch(events, *args, **kwargs)  # type: ignore[misc]

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        log.info("table %s: %d changelog records replayed", self.table.name, self.replayed)
        await super().on_recovery_completed(active_tps, standby_tps)  # type: ignore[misc]


class MemoryStore(_CountsReplay, memory.Store[Any, Any]):
    def __setitem__(self, key: Any, value: Any) -> None:
        if self.table.use_partitioner and isinstance(key, bytes):
            self._key_partition[key] = _key_partition(self, key)
        elif (event := current_event()) is not None:
            self._key_partition[key] = event.message.partition
        super().__setitem__(key, value)

    async def on_rebalance(
        self,
        assigned: set[TP],
        revoked: set[TP],
        newly_assigned: set[TP],
        generation_id: int = 0,
    ) -> None:
        topics = self.table.changelog_topic.topics
        gone = {tp.partition for tp in revoked if tp.topic in topics}
        for key in [k for k, p in self._key_partition.items() if p in gone]:
            self.data.pop(key, None)
            del self._key_partition[key]
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)


class RocksDBStore(_CountsReplay, rocksdb.Store):
    def _set(self, key: bytes, value: bytes | None) -> None:
        if not self.table.use_partitioner:
            super()._set(key, value)
            return
        partition = _key_partition(self, key)
        self._key_index[key] = partition
        self._db_for_partition(partition).put(key, value)


stores.STORES.aliases["gridwatch-memory"] = f"{__name__}:MemoryStore"
stores.STORES.aliases["gridwatch-rocksdb"] = f"{__name__}:RocksDBStore"
URLS: dict[TableStore, str] = {"memory": "gridwatch-memory://", "rocksdb": "gridwatch-rocksdb://"}
