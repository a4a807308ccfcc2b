"""Schema creation (DESIGN.md §7): TimescaleDB when the extension is available, else PostgreSQL.

Both backends expose the same tables and views, so writers, dashboards and tests do not care.
Every statement is idempotent: ``ensure_schema`` runs at each role's start.
"""

from __future__ import annotations

import logging
from enum import StrEnum

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)


class Backend(StrEnum):
    TIMESCALEDB = "timescaledb"
    POSTGRESQL = "postgresql"


# (table, time column) of every event table; each becomes a hypertable on TimescaleDB.
EVENT_TABLES: tuple[tuple[str, str], ...] = (
    ("readings", "ts"),
    ("detections", "ts"),
    ("incidents", "ts"),
    ("alerts", "ts"),
    ("case_events", "ts"),
    ("deadletters", "ts"),
)

TABLES_DDL = """
CREATE TABLE IF NOT EXISTS readings (
    ts          timestamptz      NOT NULL,
    device_id   text             NOT NULL,
    metric      text             NOT NULL,
    value       double precision NOT NULL,
    unit        text             NOT NULL,
    seq         bigint,
    id          uuid             NOT NULL,
    received_at timestamptz      NOT NULL,
    stored_at   timestamptz      NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (device_id, metric, ts)
);
CREATE TABLE IF NOT EXISTS detections (
    ts          timestamptz NOT NULL,
    id          uuid        NOT NULL,
    kind        text        NOT NULL,
    source_type text        NOT NULL,
    source_id   text        NOT NULL,
    confidence  real        NOT NULL,
    level       text,
    lon         double precision,
    lat         double precision,
    bearing_deg double precision,
    rule        text,
    cleared     boolean     NOT NULL,
    snapshot    text,
    payload     jsonb       NOT NULL,
    stored_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (id, ts)
);
CREATE TABLE IF NOT EXISTS incidents (
    ts              timestamptz NOT NULL,
    id              uuid        NOT NULL,
    incident_id     uuid        NOT NULL,
    revision        integer     NOT NULL,
    kind            text        NOT NULL,
    level           text        NOT NULL,
    confidence      real        NOT NULL,
    lon             double precision NOT NULL,
    lat             double precision NOT NULL,
    community_code  text        NOT NULL,
    grid_code       text        NOT NULL,
    micro_grid_code text,
    first_seen      timestamptz NOT NULL,
    ended           boolean     NOT NULL,
    payload         jsonb       NOT NULL,
    stored_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (incident_id, revision, ts)
);
CREATE TABLE IF NOT EXISTS alerts (
    ts          timestamptz NOT NULL,
    id          uuid        NOT NULL,
    fingerprint text        NOT NULL,
    incident_id uuid        NOT NULL,
    kind        text        NOT NULL,
    level       text        NOT NULL,
    state       text        NOT NULL,
    grid_code   text        NOT NULL,
    lon         double precision NOT NULL,
    lat         double precision NOT NULL,
    summary     text        NOT NULL,
    payload     jsonb       NOT NULL,
    stored_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (id, ts)
);
CREATE TABLE IF NOT EXISTS case_events (
    ts         timestamptz NOT NULL,
    id         uuid        NOT NULL,
    case_id    text        NOT NULL,
    seq        integer     NOT NULL,
    from_state text,
    to_state   text        NOT NULL,
    actor      text        NOT NULL,
    note       text        NOT NULL,
    stored_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (case_id, seq, ts)
);
CREATE TABLE IF NOT EXISTS deadletters (
    ts        timestamptz NOT NULL,
    id        uuid        NOT NULL,
    source    text        NOT NULL,
    reason    text        NOT NULL,
    payload   bytea       NOT NULL,
    stored_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (id, ts)
);
CREATE TABLE IF NOT EXISTS schema_info (
    key   text PRIMARY KEY,
    value text NOT NULL
);
CREATE OR REPLACE VIEW incidents_current AS
    SELECT DISTINCT ON (incident_id) *
    FROM incidents
    ORDER BY incident_id, revision DESC, ts DESC;
"""


def timescaledb_available(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
    ).fetchone()
    return row is not None


def ensure_schema(conn: psycopg.Connection) -> Backend:
    """Create what is missing and return the backend in use. Commits."""
    backend = Backend.TIMESCALEDB if timescaledb_available(conn) else Backend.POSTGRESQL
    with conn.transaction():
        # Concurrent role start-ups race on CREATE ... IF NOT EXISTS; serialise them.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('gridwatch.schema'))")
        if backend is Backend.TIMESCALEDB:
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        conn.execute(TABLES_DDL)
        for table, time_column in EVENT_TABLES:
            if backend is Backend.TIMESCALEDB:
                conn.execute(
                    "SELECT create_hypertable(%s, by_range(%s), if_not_exists => TRUE)",
                    (table, time_column),
                )
            else:
                # Plain PostgreSQL: BRIN keeps time-range scans cheap on append-mostly tables.
                conn.execute(
                    sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING brin ({})").format(
                        sql.Identifier(f"{table}_{time_column}_brin"),
                        sql.Identifier(table),
                        sql.Identifier(time_column),
                    )
                )
        conn.execute(
            "INSERT INTO schema_info (key, value) VALUES ('backend', %s)"
            " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            (backend.value,),
        )
    log.info("schema ready on %s", backend.value)
    return backend
