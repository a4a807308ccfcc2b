"""``gridwatch bench store``: the store writer alone, against its ceiling, on embedded services.

``gw.readings`` is filled first with ``rows`` readings in batches as the bridge makes them (a
hundred four-metric reports each). Then, in the same run on the same server: the ceiling —
psycopg binary COPY of exactly those rows, already in memory, into a table of the readings'
shape (its indexes and defaults included) — and the writer (``run_persist``, the code of
``gridwatch store writer``) consuming the topic from the start as fast as it takes it: decoding,
validating, COPY, commits of the database and of the offsets.

The writer's time runs from the moment its consumer holds the partitions to the last row's
``stored_at``; its CPU is this process's meanwhile (it runs here, alone), PostgreSQL's is its
server processes'. Two figures per 1000 rows, so they compare across loaded machines.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg import sql

from benchmarks.pipeline import embedded_pipeline
from benchmarks.sensors import METRICS, PER_MESSAGE, _cpu_by_role
from gridwatch import kafka, topics
from gridwatch.cli.common import steady_memory
from gridwatch.events import ReadingBatch, Report
from gridwatch.settings import ConsumerGroups
from gridwatch.store.writer import SPECS, Row
from streams.persist import run_persist

CEILING_TABLE = "readings_ceiling"
CEILING_ROWS_PER_COPY = 100_000  # one transaction each, about the writer's batch
PROGRESS_SQL = "SELECT n_tup_ins FROM pg_stat_user_tables WHERE relname = 'readings'"
STORED_SQL = """
SELECT count(*), count(DISTINCT (device_id, metric, ts)), max(stored_at)
FROM readings WHERE starts_with(device_id, %s)
"""


@dataclass
class Result:
    rows: int
    records: int  # Kafka records (batches of PER_MESSAGE reports) the writer consumed
    rows_stored: int
    lost: int
    duplicated: int
    writer_rows_per_s: float
    raw_copy_rows_per_s: float
    writer_vs_raw_copy: float
    cpu_s_per_1000_rows_writer: float
    cpu_s_per_1000_rows_raw_copy: float
    cpu_s_per_1000_rows_postgresql_writer: float
    cpu_s_per_1000_rows_postgresql_raw_copy: float


def batches(rows: int, prefix: str = "S") -> list[ReadingBatch]:
    """``rows`` readings (rounded up to whole batches) as the bridge batches them: each batch a
    hundred devices' reports of every metric, a second apart per device; the devices' ids
    start with ``prefix``."""
    start = datetime.now(UTC) - timedelta(days=1)
    received = datetime.now(UTC)
    per_report = len(METRICS)
    out: list[ReadingBatch] = []
    for n in range(-(-rows // (PER_MESSAGE * per_report))):
        step, block = divmod(n, 100)  # 100 blocks of devices, then the next second
        reports = tuple(
            Report.trusted(
                f"{prefix}{block * PER_MESSAGE + i:05d}",
                start + timedelta(seconds=step),
                step,
                {
                    m: (lo + (step + i) % 10 / 10 * (hi - lo), "-")
                    for m, (lo, hi) in METRICS.items()
                },
            )
            for i in range(PER_MESSAGE)
        )
        out.append(ReadingBatch(received_at=received, reports=reports))
    return out


def fill(bootstrap: str, records: list[bytes]) -> None:
    producer = kafka.producer(bootstrap)
    try:
        for value in records:
            producer.send(topics.READINGS, key=b"S", value=value)
        producer.flush(timeout=120)
    finally:
        producer.close()


def raw_copy(database_url: str, rows: list[Row]) -> tuple[float, float, float]:
    """Binary COPY of ``rows`` into a table shaped as ``readings``: (seconds, this process's
    CPU seconds, PostgreSQL's CPU seconds)."""
    spec = SPECS[ReadingBatch]
    table = sql.Identifier(CEILING_TABLE)
    columns = sql.SQL(", ").join(sql.Identifier(n) for n in spec.names)
    with psycopg.connect(database_url) as conn:
        conn.execute(sql.SQL("CREATE TABLE {} (LIKE readings INCLUDING ALL)").format(table))
        conn.commit()
        pg_before, cpu_before = _postgres_cpu(), time.process_time()
        start = time.perf_counter()
        for first in range(0, len(rows), CEILING_ROWS_PER_COPY):
            with (
                conn.cursor() as cur,
                cur.copy(
                    sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(table, columns)
                ) as copy,
            ):
                copy.set_types([t for _, t in spec.columns])
                for row in rows[first : first + CEILING_ROWS_PER_COPY]:
                    copy.write_row(row)
            conn.commit()
        elapsed = time.perf_counter() - start
        cpu, pg = time.process_time() - cpu_before, _postgres_cpu() - pg_before
        conn.execute(sql.SQL("DROP TABLE {}").format(table))
        conn.commit()
    return elapsed, cpu, pg


async def _write_all(
    database_url: str, bootstrap: str, rows: int, prefix: str, groups: ConsumerGroups | None
) -> tuple[datetime, float, float]:
    """Run the writer until the ``rows`` rows of devices ``prefix…`` are in ``readings``: (when
    its consumer held the partitions, CPU seconds of this process from then, PostgreSQL's)."""
    stop, ready = asyncio.Event(), asyncio.Event()
    writer = asyncio.ensure_future(
        run_persist(database_url, bootstrap, stop, group_id=f"bench-store-{uuid.uuid4().hex[:8]}",
                    topic_names=(topics.READINGS,), ready=ready, groups=groups)
    )  # fmt: skip
    await asyncio.wait([asyncio.ensure_future(ready.wait()), writer], timeout=120,
                       return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
    started, cpu_before, pg_before = datetime.now(UTC), time.process_time(), _postgres_cpu()
    with psycopg.connect(database_url, autocommit=True) as conn:
        last, since = -1, time.monotonic()
        while not writer.done() and time.monotonic() - since < 20:
            (inserted,) = conn.execute(PROGRESS_SQL).fetchone() or (0,)
            # Cheap statistics first; the rows themselves once they can be all there.
            if inserted >= rows and _stored(conn, prefix)[1] >= rows:
                break
            if inserted != last:
                last, since = inserted, time.monotonic()
            await asyncio.sleep(0.2)
    cpu, pg = time.process_time() - cpu_before, _postgres_cpu() - pg_before
    stop.set()
    await writer
    return started, cpu, pg


def _stored(conn: psycopg.Connection, prefix: str) -> tuple[int, int, datetime | None]:
    """Rows of devices ``prefix…`` in ``readings``: all, distinct, and the last one's time."""
    count, unique, last = conn.execute(STORED_SQL, (prefix,)).fetchone() or (0, 0, None)
    return int(count), int(unique), last


def _checkpoint(database_url: str) -> None:
    """Flush what the server has written so far, so that neither measurement pays for the WAL
    and dirty pages of the one before it (a checkpoint the ceiling's million rows set off
    fell in the writer's run)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        try:
            conn.execute("CHECKPOINT")
        except psycopg.errors.InsufficientPrivilege:
            pass  # a server of someone else's (the tests' external TimescaleDB): measured as is


def _postgres_cpu() -> float:
    return _cpu_by_role(os.getpid()).get("postgresql", 0.0)


def run(rows: int) -> Result:
    """The whole benchmark on fresh embedded services."""
    made = batches(rows)
    with tempfile.TemporaryDirectory(prefix="gridwatch-bench-") as tmp:
        with embedded_pipeline(Path(tmp)) as (_, urls):
            steady_memory()  # as the writer role does once it has started
            return measure(urls.database_url, urls.kafka_bootstrap, made)


def measure(
    database_url: str, bootstrap: str, made: list[ReadingBatch], prefix: str = "S",
    groups: ConsumerGroups | None = None,
) -> Result:  # fmt: skip
    """The ceiling and the writer on ``made`` (of devices ``prefix…``), through
    ``gw.readings`` into ``readings`` (``groups``: the writer's group timeouts)."""
    records = [b.to_bytes() for b in made]
    fill(bootstrap, records)
    data = SPECS[ReadingBatch].rows(made)
    rows = len(data)
    _checkpoint(database_url)
    copy_s, copy_cpu, copy_pg = raw_copy(database_url, data)
    # The writer runs without the ceiling's rows in memory, as a writer role does: else the
    # garbage collector's full passes over them are billed to the writer.
    del data
    gc.collect()
    _checkpoint(database_url)
    started, cpu, pg = asyncio.run(_write_all(database_url, bootstrap, rows, prefix, groups))
    with psycopg.connect(database_url) as conn:
        count, unique, last = _stored(conn, prefix)
    elapsed = (last - started).total_seconds() if last else float("inf")
    writer_rate, copy_rate = unique / max(elapsed, 1e-9), rows / copy_s
    per_1000 = 1000 / max(unique, 1)
    return Result(
        rows=rows, records=len(records), rows_stored=unique, lost=rows - unique,
        duplicated=count - unique, writer_rows_per_s=round(writer_rate, 1),
        raw_copy_rows_per_s=round(copy_rate, 1),
        writer_vs_raw_copy=round(writer_rate / copy_rate, 3),
        cpu_s_per_1000_rows_writer=round(cpu * per_1000, 4),
        cpu_s_per_1000_rows_raw_copy=round(copy_cpu * 1000 / rows, 4),
        cpu_s_per_1000_rows_postgresql_writer=round(pg * per_1000, 4),
        cpu_s_per_1000_rows_postgresql_raw_copy=round(copy_pg * 1000 / rows, 4),
    )  # fmt: skip


def report(result: Result, json_path: Path | None) -> str:
    if json_path is not None:
        json_path.write_text(json.dumps(asdict(result), indent=2) + "\n", encoding="utf-8")
    return "\n".join(f"{name:40} {value}" for name, value in asdict(result).items())
