"""Where the tables live: Faust's memory store, or its RocksDB store (through the rocksdict
wheel) for a worker whose state must outlast a restart.

Faust's RocksDB store files a write under the partition of the event being processed, and has
none to go by when an agent writes after a batch of events (the sensor rules write each
device's state once per batch). A table partitioned by key (``use_partitioner``) has its
changelog entry in the key's partition whatever the event, so its write is filed there: the
same place a restarted worker finds it and a rebalance hands it over from.
"""

from __future__ import annotations

from faust import stores
from faust.stores import rocksdb

from gridwatch.kafka import partition_of
from gridwatch.settings import TableStore


class RocksDBStore(rocksdb.Store):
    def _set(self, key: bytes, value: bytes | None) -> None:
        if not self.table.use_partitioner:
            super()._set(key, value)
            return
        partition = partition_of(key, self.table.partitions or self.app.conf.topic_partitions)
        self._key_index[key] = partition
        self._db_for_partition(partition).put(key, value)


stores.STORES.aliases["gridwatch-rocksdb"] = f"{__name__}:RocksDBStore"
URLS: dict[TableStore, str] = {"memory": "memory://", "rocksdb": "gridwatch-rocksdb://"}
