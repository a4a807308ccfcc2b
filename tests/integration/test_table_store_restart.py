"""A rules worker restarted on the RocksDB table store judges from the state it kept on disk,
without reading back the changelog its first run wrote; and why the embedded broker needs the
worker's records one to a produce batch for that (its end offset counts batches).

A short version of ``gridwatch bench restart --store rocksdb`` (benchmarks/restart.py).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import uuid
from pathlib import Path
from typing import Any, cast

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from benchmarks.restart import end_offsets, first_detection
from benchmarks.sensors import RULE, bench_site
from gridwatch import kafka, topics
from gridwatch.events import ReadingBatch, Report, utcnow
from gridwatch.services import ServiceUrls, create_topics
from gridwatch.site import Site
from streams.app import build_app

DEVICES = 200
PER_BATCH = 100

pytestmark = pytest.mark.timeout(120)


def _reading(device_id: str, value: float) -> ReadingBatch:
    return ReadingBatch(
        reports=(Report.trusted(device_id, utcnow(), 0, {str(RULE["metric"]): (value, "-")}),)
    )


def _produce(bootstrap: str, batches: list[ReadingBatch]) -> None:
    producer = kafka.producer(bootstrap)
    try:
        for batch in batches:
            producer.send(topics.READINGS, key=batch.key, value=batch.to_bytes())
        producer.flush(30)
    finally:
        producer.close()


async def _changelog_holds(bootstrap: str, topic: str, records: int) -> None:
    while sum((await end_offsets(bootstrap, topic)).values()) < records:
        await asyncio.sleep(0.2)


def _worker(site: Site, bootstrap: str, datadir: Path, app_id: str, ready: Any, done: Any,
            replayed: Any) -> None:  # fmt: skip
    """A RocksDB rules worker in a process of its own, as a restart gets one: it reports the
    changelog records its recovery applied, judges until ``done``, and stops."""

    async def run() -> None:
        app = build_app(
            site, bootstrap, datadir, app_id=app_id, offset_reset="latest",
            heartbeat_check_s=3600, quiet_check_s=3600, store="rocksdb",
            one_record_per_batch=True,
        )  # fmt: skip
        store = app.tables["device-state"].data
        await app.start()
        while not (app.consumer.assignment() and app.tables.recovery.completed.is_set()):
            await asyncio.sleep(0.1)
        replayed.value = store.replayed
        ready.set()
        while not done.is_set():
            await asyncio.sleep(0.1)
        await app.stop()

    asyncio.run(run())


class _Worker:
    def __init__(self, *args: Any) -> None:
        context = multiprocessing.get_context("spawn")
        self.ready, self.done = context.Event(), context.Event()
        self.replayed = context.Value("i", -1)
        self.process = context.Process(
            target=_worker, args=(*args, self.ready, self.done, self.replayed), daemon=True
        )
        self.process.start()
        assert self.ready.wait(90), "the worker did not start"

    def stop(self) -> None:
        self.done.set()
        self.process.join(30)
        if self.process.is_alive():  # stopping is not under test; the next start is
            self.process.kill()
            self.process.join(10)


def test_a_restarted_rocksdb_worker_judges_from_its_files_not_the_changelog(
    kafka_bootstrap: str, tiny_site: Site, tmp_path: Path
) -> None:
    site = bench_site(tiny_site, DEVICES)
    ids = [sensor.id for sensor in site.sensors]
    probe, yellow = ids[0], cast(float, RULE["yellow"])
    app_id = f"t-rocks-{uuid.uuid4().hex[:8]}"
    changelog = f"{app_id}-device-state-changelog"

    def judged(value: float, *, cleared: bool) -> float | None:
        since = asyncio.run(end_offsets(kafka_bootstrap, topics.DETECTIONS))
        found = first_detection(kafka_bootstrap, since, probe, 30, cleared=cleared)

        async def send_and_wait() -> float | None:
            waiting = asyncio.ensure_future(found)
            await asyncio.sleep(0.5)  # the reader is in place
            _produce(kafka_bootstrap, [_reading(probe, value)])
            return await waiting

        return asyncio.run(send_and_wait())

    first = _Worker(site, kafka_bootstrap, tmp_path, app_id)
    try:
        _produce(kafka_bootstrap, [
            ReadingBatch(reports=tuple(_reading(i, 1.0).reports[0] for i in ids[n : n + PER_BATCH]))
            for n in range(0, DEVICES, PER_BATCH)
        ])  # fmt: skip
        asyncio.run(asyncio.wait_for(_changelog_holds(kafka_bootstrap, changelog, DEVICES), 60))
        assert judged(yellow + 0.2, cleared=False) is not None, "the probe crossed nothing"
        asyncio.run(asyncio.wait_for(_changelog_holds(kafka_bootstrap, changelog, DEVICES + 1), 60))
    finally:
        first.stop()
    assert first.process.exitcode == 0, "the first run did not stop cleanly"

    again = _Worker(site, kafka_bootstrap, tmp_path, app_id)
    try:
        assert again.replayed.value == 0
        # The probe's yellow state came from the files: its fall clears the condition (a worker
        # without that state would see a normal reading and judge nothing).
        assert judged(1.0, cleared=True) is not None, "the restarted worker forgot the state"
    finally:
        again.stop()


async def _end_after_two_batches(bootstrap: str, max_batch_size: int) -> tuple[int, int]:
    """Twenty records sent as two batches of ten (or one a batch): the last acknowledged offset
    + 1, and the end offset the broker lists."""
    topic = f"t-batches-{uuid.uuid4().hex[:8]}"
    create_topics(bootstrap, [topic], 1)
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka.servers(bootstrap), linger_ms=50, max_batch_size=max_batch_size
    )
    await producer.start()
    try:
        acked = []
        for first in (0, 10):
            sent = [await producer.send(topic, value=b"%d" % i, partition=0)
                     for i in range(first, first + 10)]  # fmt: skip
            await producer.flush()
            acked += [(await s).offset for s in sent]
    finally:
        await producer.stop()
    reader = AIOKafkaConsumer(bootstrap_servers=kafka.servers(bootstrap))
    await reader.start()
    try:
        tp = TopicPartition(topic, 0)
        return max(acked) + 1, (await reader.end_offsets([tp]))[tp]
    finally:
        await reader.stop()


def test_the_embedded_broker_counts_batches_in_its_end_offset(services: ServiceUrls) -> None:
    if "kafka" not in services.embedded:
        pytest.skip("the Kafka broker is not the embedded one")
    # If this fails, the broker counts records and one record a batch is no longer needed.
    assert asyncio.run(_end_after_two_batches(services.kafka_bootstrap, 16384)) == (20, 11)
    assert asyncio.run(_end_after_two_batches(services.kafka_bootstrap, 1)) == (20, 20)
