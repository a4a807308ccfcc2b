"""``gridwatch bench restart``: how soon a restarted rules worker judges again, by table store and
by how many devices' state it holds.

For each store and device count, on fresh embedded services: a ``streams worker`` (its own
process, as in production) with a site of that many bench devices judges one reading of each
device, so the ``device-state`` table holds every device's state and its changelog as many
messages; the worker is stopped, one more reading (a gauge crossing its yellow threshold) is
put on ``gw.readings``, and the worker is started again. The figure is the time from that
start to the reading's detection on ``gw.detections``: what an operator waits after a restart.
With the memory store the worker first replays the whole changelog; with RocksDB it reopens
its files under ``--datadir`` and replays only what was written after its last flush.

Reading and validating the site file is part of every start and of the figure; it is also
timed apart in this process (``site_load_s``), to show what the store leaves to it. Where the
rest goes is read off the restarted worker's log: when it has joined the consumer group and
been given its partitions, when its tables are recovered (the changelog replayed, or the
RocksDB files opened and the changelog's tail read), and when it is ready.

The embedded broker (Tansu) reports as a partition's end the first offset of its last record
batch + 1, which Faust takes as the changelog's end: a restarted RocksDB store finds its own
offset beyond it and stops, and a memory store would replay short of the real end. A worker
can send every record in a batch of its own (``GRIDWATCH_STREAMS_ONE_RECORD_PER_BATCH``), but
that took over 300 s here to fill 100,000 devices' changelog. Here the worker
batches as in production, and the last device's reading comes alone after the others are
judged: the changelog's last batch is then that one record, and its end offset the true one,
for both stores alike.
"""

from __future__ import annotations

import asyncio
import json
import re
import tempfile
import time
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar, cast

from aiokafka import AIOKafkaConsumer, TopicPartition

from benchmarks.pipeline import BackgroundLoop, Roles, embedded_pipeline, role_env, write_site
from benchmarks.sensors import RULE, bench_site
from gridwatch import kafka, topics
from gridwatch.events import Detection, ReadingBatch, Report, decode, utcnow
from gridwatch.settings import Settings, TableStore
from gridwatch.site import Site, load_site

# Faust names a table's changelog ``<app id>-<table>-changelog``.
CHANGELOG = "gridwatch-streams-device-state-changelog"
PER_BATCH = 100  # device reports per ``gw.readings`` record, as the bridge packs a gateway's
START_TIMEOUT_S = 300.0
# What the restarted worker logs on its way to judging, in order.
PHASES = {
    "joined": "Executing _on_partitions_assigned",
    "recovered": "Recovery complete",
    "ready": "Worker ready",
}
T = TypeVar("T")


@dataclass
class Restart:
    store: str
    devices: int
    changelog_messages: int  # the device-state changelog when the worker restarts
    changelog_end: int  # its end as the broker lists it, which Faust recovers up to
    site_load_s: float  # reading and validating the site file, in every start
    restart_to_first_judged_s: float | None  # None: no detection (see ``error``)
    # Seconds from the restart until the worker logged each of PHASES.
    phases_s: dict[str, float] = field(default_factory=dict)
    replayed: int | None = None  # device-state changelog records its recovery applied, as logged
    error: str = ""  # why the restarted worker judged nothing, if it died


def _report(device_id: str, value: float) -> Report:
    return Report.trusted(device_id, utcnow(), 0, {str(RULE["metric"]): (value, "-")})


def _fill(bootstrap: str, ids: list[str]) -> None:
    """One reading of each of ``ids``, in the bridge's batches."""
    producer = kafka.producer(bootstrap)
    for first in range(0, len(ids), PER_BATCH):
        batch = ReadingBatch(reports=tuple(_report(i, 1.0) for i in ids[first : first + PER_BATCH]))
        producer.send(topics.READINGS, key=batch.key, value=batch.to_bytes())
    producer.flush()
    producer.close()


async def end_offsets(bootstrap: str, topic: str) -> dict[TopicPartition, int]:
    reader = AIOKafkaConsumer(bootstrap_servers=kafka.servers(bootstrap))
    await reader.start()
    try:
        await reader.topics()
        parts = [TopicPartition(topic, p) for p in reader.partitions_for_topic(topic) or ()]
        return dict(await reader.end_offsets(parts)) if parts else {}
    finally:
        await reader.stop()


async def _wait_changelog(bootstrap: str, quiet_s: float, timeout_s: float) -> int:
    """Until the changelog has stopped growing for ``quiet_s`` (the worker has judged the
    fill); then the messages it holds, counted by reading them (the broker's offsets need not
    count records one by one)."""
    deadline = time.monotonic() + timeout_s
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        end = sum((await end_offsets(bootstrap, CHANGELOG)).values())
        if end != last:
            last, since = end, time.monotonic()
        elif end > 0 and time.monotonic() - since >= quiet_s:
            break
        await asyncio.sleep(0.5)
    return len(await kafka.read_topic(bootstrap, CHANGELOG, timeout_s=timeout_s))


async def first_detection(
    bootstrap: str,
    since: dict[TopicPartition, int],
    device_id: str,
    timeout_s: float,
    *,
    cleared: bool = False,
) -> float | None:
    """The monotonic time the first detection of ``device_id`` after ``since`` arrives (one
    that clears a condition, if ``cleared``)."""
    reader = AIOKafkaConsumer(
        bootstrap_servers=kafka.servers(bootstrap), fetch_max_wait_ms=kafka.FETCH_MAX_WAIT_MS
    )
    await reader.start()
    try:
        reader.assign(list(since))
        for tp, offset in since.items():
            reader.seek(tp, offset)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for records in (await reader.getmany(timeout_ms=200)).values():
                for record in records:
                    detection = decode(Detection, record.value or b"")
                    if detection.source.id == device_id and detection.cleared == cleared:
                        return time.monotonic()
        return None
    finally:
        await reader.stop()


async def _phases(log: Path, start: int, t0: float, seen: dict[str, float]) -> None:
    """Fill ``seen`` with the seconds from ``t0`` until each of PHASES first appears in ``log``
    after byte ``start``."""
    while len(seen) < len(PHASES):
        text = log.read_bytes()[start:].decode(errors="replace") if log.exists() else ""
        for name, marker in PHASES.items():
            if name not in seen and marker in text:
                seen[name] = round(time.monotonic() - t0, 2)
        await asyncio.sleep(0.1)


def _while_alive(roles: Roles, future: Future[T], timeout_s: float) -> T:
    """``future``'s result, unless the worker dies first."""
    deadline = time.monotonic() + timeout_s
    while not future.done():
        if roles.deaths:
            future.cancel()
            raise RuntimeError(f"the worker died: {roles.deaths[0]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no result within {timeout_s:.0f}s")
        time.sleep(0.2)
    return future.result()


def measure(base: Site, devices: int, store: TableStore) -> Restart:
    """One store and device count on fresh services."""
    site = bench_site(base, devices)
    with tempfile.TemporaryDirectory(prefix="gridwatch-restart-") as tmp:
        work = Path(tmp)
        settings = Settings(_env_file=None, kafka_bootstrap=None, mqtt_url=None)
        with embedded_pipeline(work, settings) as (_, urls):
            site_file = write_site(site, work)
            started = time.monotonic()
            load_site(site_file)
            site_load_s = time.monotonic() - started
            env = role_env(urls, site_file, GRIDWATCH_TABLE_STORE=store)
            loop = BackgroundLoop()
            try:
                roles = Roles(["streams-worker"], env, work, max_restarts=0)
                try:
                    if not roles.wait_logged("streams-worker", "Worker ready", START_TIMEOUT_S):
                        raise RuntimeError(f"the worker did not start (logs: {work})")
                    # The last device alone, after the others are judged: its state is the
                    # changelog's last batch, of one record, so the broker's end is the true one.
                    ids = [sensor.id for sensor in site.sensors]
                    for part in (ids[:-1], ids[-1:]):
                        _fill(urls.kafka_bootstrap, part)
                        filled = loop.spawn(_wait_changelog(urls.kafka_bootstrap, 5.0, 300))
                        held = _while_alive(roles, filled, 310)
                    end = sum(loop.run(end_offsets(urls.kafka_bootstrap, CHANGELOG)).values())
                    time.sleep(3)  # the worker commits its offsets
                finally:
                    roles.stop()
                since = loop.run(end_offsets(urls.kafka_bootstrap, topics.DETECTIONS))
                probe = site.sensors[0].id
                producer = kafka.producer(urls.kafka_bootstrap)
                batch = ReadingBatch(reports=(_report(probe, cast(float, RULE["yellow"]) + 0.2),))
                producer.send(topics.READINGS, key=batch.key, value=batch.to_bytes())
                producer.flush()
                producer.close()
                judged = loop.spawn(
                    first_detection(urls.kafka_bootstrap, since, probe, START_TIMEOUT_S)
                )
                time.sleep(1.0)  # the detection reader is in place before the start
                log = work / "streams-worker.log"
                logged = log.stat().st_size if log.exists() else 0
                restarted = time.monotonic()
                roles = Roles(["streams-worker"], env, work, max_restarts=0)
                phases: dict[str, float] = {}
                watching = loop.spawn(_phases(log, logged, restarted, phases))
                at, error = None, ""
                try:
                    at = _while_alive(roles, judged, START_TIMEOUT_S + 10)
                except RuntimeError as err:
                    error = f"{err} ({_cause(roles.roles['streams-worker'].log)})"
                finally:
                    roles.stop()
                    watching.cancel()
                replayed = _replayed(log, logged)
            finally:
                loop.close()
    return Restart(
        store=store,
        devices=devices,
        changelog_messages=held,
        changelog_end=end,
        site_load_s=round(site_load_s, 2),
        restart_to_first_judged_s=None if at is None else round(at - restarted, 2),
        phases_s=phases,
        replayed=replayed,
        error=error,
    )


def _replayed(log: Path, start: int) -> int | None:
    """The device-state changelog records the store says its recovery applied after byte
    ``start`` of ``log``."""
    text = log.read_bytes()[start:].decode(errors="replace")
    found = re.search(r"table device-state: (\d+) changelog records replayed", text)
    return int(found.group(1)) if found else None


def _cause(log: Path) -> str:
    """The last exception line a crashed worker wrote (Faust logs its cause before stopping)."""
    lines = [line for line in log.read_text(errors="replace").splitlines() if "Error:" in line]
    return lines[0].strip()[:200] if lines else "no exception logged"


def run(base: Site, devices: list[int], stores: list[TableStore]) -> list[Restart]:
    return [measure(base, n, store) for n in devices for store in stores]


def report(results: list[Restart], json_path: Path | None) -> str:
    if json_path is not None:
        document = [asdict(r) for r in results]
        json_path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    head = f"{'store':8} {'devices':>8} {'changelog':>9} {'its end':>8} {'site load s':>11}"
    lines = [
        f"{head} {'replayed':>8} {'restart → judged s':>19}  then: " + ", ".join(PHASES) + " s"
    ]
    for r in results:
        judged = (
            "-" if r.restart_to_first_judged_s is None else f"{r.restart_to_first_judged_s:.2f}"
        )
        lines.append(
            f"{r.store:8} {r.devices:>8} {r.changelog_messages:>9} {r.changelog_end:>8} "
            f"{r.site_load_s:>11.2f} {'-' if r.replayed is None else r.replayed:>8} "
            f"{judged:>19}  "
            + ", ".join(f"{r.phases_s.get(p, '-')}" for p in PHASES)
            + (f"  {r.error}" if r.error else "")
        )
    return "\n".join(lines)
