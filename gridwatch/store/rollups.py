"""Sensor storage beyond the raw rows: device status, 1-minute and 1-hour rollups, and policies.

Both backends offer the same query surface, ``readings_1m`` and ``readings_1h`` with the columns
``bucket, device_id, metric, n, avg, min, max``:

- TimescaleDB (community edition): continuous aggregates refreshed by policies, compression of
  chunks older than a week and retention of a year.
- Plain PostgreSQL (or Timescale's Apache-licensed edition, which has neither continuous
  aggregates nor compression): rollup tables that ``refresh_rollups`` keeps current on a timer.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import psycopg

log = logging.getLogger(__name__)

DEVICE_STATUS_DDL = """
CREATE TABLE IF NOT EXISTS device_status (
    ts        timestamptz NOT NULL,
    id        uuid        NOT NULL,
    device_id text        NOT NULL,
    online    boolean     NOT NULL,
    cause     text        NOT NULL,
    stored_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (id, ts)
);
"""

TIMESCALE_DDL = """
CREATE MATERIALIZED VIEW IF NOT EXISTS readings_1m WITH (timescaledb.continuous) AS
    SELECT time_bucket('1 minute', ts) AS bucket, device_id, metric,
        count(*) AS n, avg(value) AS avg, min(value) AS min, max(value) AS max
    FROM readings GROUP BY bucket, device_id, metric WITH NO DATA;
CREATE MATERIALIZED VIEW IF NOT EXISTS readings_1h WITH (timescaledb.continuous) AS
    SELECT time_bucket('1 hour', ts) AS bucket, device_id, metric,
        count(*) AS n, avg(value) AS avg, min(value) AS min, max(value) AS max
    FROM readings GROUP BY bucket, device_id, metric WITH NO DATA;
SELECT add_continuous_aggregate_policy('readings_1m', start_offset => INTERVAL '2 hours',
    end_offset => INTERVAL '1 minute', schedule_interval => INTERVAL '1 minute',
    if_not_exists => TRUE);
SELECT add_continuous_aggregate_policy('readings_1h', start_offset => INTERVAL '3 days',
    end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '30 minutes',
    if_not_exists => TRUE);
ALTER TABLE readings SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'device_id, metric', timescaledb.compress_orderby = 'ts');
SELECT add_compression_policy('readings', INTERVAL '7 days', if_not_exists => TRUE);
SELECT add_retention_policy('readings', INTERVAL '365 days', if_not_exists => TRUE);
"""

POSTGRES_DDL = (
    "".join(
        f"""
CREATE TABLE IF NOT EXISTS readings_{name} (
    bucket    timestamptz      NOT NULL,
    device_id text             NOT NULL,
    metric    text             NOT NULL,
    n         bigint           NOT NULL,
    avg       double precision NOT NULL,
    min       double precision NOT NULL,
    max       double precision NOT NULL,
    PRIMARY KEY (bucket, device_id, metric)
);"""
        for name in ("1m", "1h")
    )
    + """
CREATE INDEX IF NOT EXISTS readings_stored_at_brin ON readings USING brin (stored_at);
"""
)

# Recompute every bucket that received a row since ``since`` from the rows themselves, so late
# readings and re-runs give the same figures as one pass over the whole table.
_REFRESH_1M = """
WITH touched AS (
    SELECT DISTINCT date_trunc('minute', ts) AS bucket, device_id, metric
    FROM readings WHERE stored_at >= %(since)s
)
INSERT INTO readings_1m (bucket, device_id, metric, n, avg, min, max)
SELECT t.bucket, t.device_id, t.metric, count(*), avg(r.value), min(r.value), max(r.value)
FROM touched t JOIN readings r
  ON r.device_id = t.device_id AND r.metric = t.metric
 AND r.ts >= t.bucket AND r.ts < t.bucket + INTERVAL '1 minute'
GROUP BY t.bucket, t.device_id, t.metric
ON CONFLICT (bucket, device_id, metric) DO UPDATE
SET n = EXCLUDED.n, avg = EXCLUDED.avg, min = EXCLUDED.min, max = EXCLUDED.max
"""

_REFRESH_1H = """
WITH touched AS (
    SELECT DISTINCT date_trunc('hour', ts) AS bucket, device_id, metric
    FROM readings WHERE stored_at >= %(since)s
)
INSERT INTO readings_1h (bucket, device_id, metric, n, avg, min, max)
SELECT t.bucket, t.device_id, t.metric, sum(m.n), sum(m.avg * m.n) / sum(m.n), min(m.min),
       max(m.max)
FROM touched t JOIN readings_1m m
  ON m.device_id = t.device_id AND m.metric = t.metric
 AND m.bucket >= t.bucket AND m.bucket < t.bucket + INTERVAL '1 hour'
GROUP BY t.bucket, t.device_id, t.metric
ON CONFLICT (bucket, device_id, metric) DO UPDATE
SET n = EXCLUDED.n, avg = EXCLUDED.avg, min = EXCLUDED.min, max = EXCLUDED.max
"""

# A transaction that stamped its rows before the last refresh may commit after it; looking this
# far back again catches its rows (the refresh is idempotent, so the overlap costs only time).
COMMIT_SKEW = timedelta(seconds=30)
_MARK = "rollups_refreshed_at"


def timescale_community(conn: psycopg.Connection) -> bool:
    """Continuous aggregates and compression need the community (Timescale-licensed) edition."""
    row = conn.execute("SELECT current_setting('timescaledb.license', true)").fetchone()
    return row is not None and row[0] == "timescale"


def ensure_rollups(conn: psycopg.Connection, timescale: bool) -> bool:
    """Create the rollups in the caller's transaction; True when they need ``refresh_rollups``."""
    if timescale and timescale_community(conn):
        conn.execute(TIMESCALE_DDL)
        return False
    if timescale:
        log.warning("timescaledb without its community edition: rollups kept by a timer")
    conn.execute(POSTGRES_DDL)
    return True


def refresh_rollups(conn: psycopg.Connection) -> None:
    """Bring the rollup tables up to date with every row stored since the last refresh."""
    with conn.transaction():
        # One refresher at a time; a second one would only redo the same work.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('gridwatch.rollups'))")
        row = conn.execute(
            "SELECT value::timestamptz, clock_timestamp() FROM schema_info WHERE key = %s",
            (_MARK,),
        ).fetchone()
        started: datetime
        if row is None:
            (started,) = conn.execute("SELECT clock_timestamp()").fetchone() or (None,)
            since = datetime.min.replace(tzinfo=started.tzinfo)
        else:
            since, started = row[0] - COMMIT_SKEW, row[1]
        conn.execute(_REFRESH_1M, {"since": since})
        conn.execute(_REFRESH_1H, {"since": since})
        conn.execute(
            "INSERT INTO schema_info (key, value) VALUES (%s, %s)"
            " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            (_MARK, started.isoformat()),
        )


def rollups_need_refresh(conn: psycopg.Connection) -> bool:
    """True on the fallback: the rollups are tables (relkind 'r'), not continuous aggregates."""
    row = conn.execute(
        "SELECT relkind FROM pg_class WHERE relname = 'readings_1m' AND relkind = 'r'"
    ).fetchone()
    return row is not None
