"""The store benchmark's short version: what it feeds the writer is stored once each, and both
rates it compares come from that same run."""

import uuid

import psycopg

from benchmarks.store import batches, measure
from gridwatch.store.schema import ensure_schema
from tests.conftest import GROUPS


def test_the_writer_stores_every_row_it_is_fed_and_is_measured_against_copy(
    fresh_database_url: str, kafka_bootstrap: str
) -> None:
    with psycopg.connect(fresh_database_url) as conn:
        ensure_schema(conn)
    prefix = f"BS{uuid.uuid4().hex[:6]}-"
    made = batches(2000, prefix)
    assert sum(len(r.values) for b in made for r in b.reports) == 2000
    result = measure(fresh_database_url, kafka_bootstrap, made, prefix, GROUPS)
    assert (result.rows, result.rows_stored, result.lost, result.duplicated) == (2000, 2000, 0, 0)
    assert result.records == len(made) == 5
    assert result.writer_rows_per_s > 0 and result.raw_copy_rows_per_s > 0
    with psycopg.connect(fresh_database_url) as conn:
        ceiling = conn.execute("SELECT to_regclass('readings_ceiling')").fetchone()
    assert ceiling == (None,)  # the ceiling's table is gone again
