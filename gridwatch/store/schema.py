"""Schema creation (DESIGN.md §7): TimescaleDB when the extension is available, else PostgreSQL.

Both backends expose the same tables and views, so writers, dashboards and tests do not care.
Every statement is idempotent: ``ensure_schema`` runs at each role's start. It runs them only
when the schema differs from this code's (a fingerprint of the DDL in ``schema_info``): an
``ALTER TABLE`` waits for every open transaction on its table, so a role restarting while an
operator's session holds one would otherwise wait with it.
"""

from __future__ import annotations

import hashlib
import logging
from enum import StrEnum

import psycopg
from psycopg import sql

from gridwatch.store.rollups import DEVICE_STATUS_DDL, POSTGRES_DDL, TIMESCALE_DDL, ensure_rollups

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
    ("device_status", "ts"),
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
-- A second, different value for a stored (device_id, metric, ts): the stored row stays, the
-- value it disagrees with is kept here, once per carrying message (id) and value.
CREATE TABLE IF NOT EXISTS reading_corrections (
    ts           timestamptz      NOT NULL,
    device_id    text             NOT NULL,
    metric       text             NOT NULL,
    stored_value double precision NOT NULL,
    value        double precision NOT NULL,
    unit         text             NOT NULL,
    id           uuid             NOT NULL,
    received_at  timestamptz      NOT NULL,
    stored_at    timestamptz      NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (device_id, metric, ts, id, value)
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
    size      bigint,
    sha256    text,
    stored_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (id, ts)
);
-- payload keeps a bounded prefix of the message; size and sha256 describe the whole of it.
ALTER TABLE deadletters ADD COLUMN IF NOT EXISTS size bigint;
ALTER TABLE deadletters ADD COLUMN IF NOT EXISTS sha256 text;
CREATE TABLE IF NOT EXISTS schema_info (
    key   text PRIMARY KEY,
    value text NOT NULL
);
CREATE OR REPLACE VIEW incidents_current AS
    SELECT DISTINCT ON (incident_id) *
    FROM incidents
    ORDER BY incident_id, revision DESC, ts DESC;
"""


# The closed loop's system of record (DESIGN.md §6): plain tables on both backends, since cases
# are updated in place and the outbox is a work queue, neither an append-only time series.
CLOSED_LOOP_DDL = """
CREATE TABLE IF NOT EXISTS cases (
    case_id        text PRIMARY KEY,
    incident_id    uuid        NOT NULL,
    kind           text        NOT NULL,
    level          text        NOT NULL,
    tier           text        NOT NULL,
    state          text        NOT NULL,
    seq            integer     NOT NULL,
    community_code text        NOT NULL,
    grid_code      text        NOT NULL,
    opened_at      timestamptz NOT NULL,
    accept_by      timestamptz,
    due_at         timestamptz NOT NULL,
    overdue        boolean     NOT NULL DEFAULT false,
    closed_at      timestamptz,
    broadcast      text        NOT NULL DEFAULT 'none',
    broadcast_at   timestamptz,
    broadcast_level text,
    broadcast_refs jsonb       NOT NULL DEFAULT '[]',
    approval_pending boolean   NOT NULL DEFAULT false,
    department     text,
    drill          boolean     NOT NULL DEFAULT false,
    alert          jsonb       NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- Columns added since the table was first made, for databases that have it already.
ALTER TABLE cases ADD COLUMN IF NOT EXISTS broadcast_level text;
ALTER TABLE cases ADD COLUMN IF NOT EXISTS broadcast_refs jsonb NOT NULL DEFAULT '[]';
ALTER TABLE cases ADD COLUMN IF NOT EXISTS approval_pending boolean NOT NULL DEFAULT false;
ALTER TABLE cases ADD COLUMN IF NOT EXISTS department text;
CREATE INDEX IF NOT EXISTS cases_open ON cases (state) WHERE state <> 'closed';
-- An incident may outlive its case: when it worsens after the case closed, a follow-up case opens.
CREATE INDEX IF NOT EXISTS cases_incident ON cases (incident_id, opened_at);
CREATE TABLE IF NOT EXISTS case_audit (
    case_id     text        NOT NULL REFERENCES cases (case_id),
    seq         integer     NOT NULL,
    action      text        NOT NULL,
    from_state  text,
    to_state    text        NOT NULL,
    actor       text        NOT NULL,
    ts          timestamptz NOT NULL,
    tier        text        NOT NULL,
    level       text        NOT NULL,
    due_at      timestamptz NOT NULL,
    note        text        NOT NULL DEFAULT '',
    event_id    uuid        UNIQUE,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (case_id, seq)
);
CREATE OR REPLACE FUNCTION case_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'case_audit is append-only';
END $$;
CREATE OR REPLACE TRIGGER case_audit_append_only BEFORE UPDATE OR DELETE ON case_audit
    FOR EACH ROW EXECUTE FUNCTION case_audit_append_only();
CREATE TABLE IF NOT EXISTS outbox (
    id              bigserial PRIMARY KEY,
    idempotency_key text        NOT NULL UNIQUE,
    sink            text        NOT NULL,
    content_type    text        NOT NULL,
    body            bytea       NOT NULL,
    case_id         text,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    delivered_at    timestamptz,
    last_error      text
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (next_attempt_at) WHERE delivered_at IS NULL;
CREATE TABLE IF NOT EXISTS outbox_deadletters (
    id              bigint      PRIMARY KEY,
    idempotency_key text        NOT NULL UNIQUE,
    sink            text        NOT NULL,
    content_type    text        NOT NULL,
    body            bytea       NOT NULL,
    case_id         text,
    attempts        integer     NOT NULL,
    last_error      text        NOT NULL,
    failed_at       timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- How a closed case ended, as the desk reported it (handled, or false_alarm: 误报).
ALTER TABLE cases ADD COLUMN IF NOT EXISTS resolution text;
CREATE TABLE IF NOT EXISTS silences (
    id         uuid PRIMARY KEY,
    matchers   jsonb       NOT NULL,
    starts_at  timestamptz NOT NULL,
    ends_at    timestamptz NOT NULL,
    author     text        NOT NULL,
    comment    text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK (ends_at > starts_at)
);
"""


# Operators' feedback (gridwatch.store.feedback): a camera detection rejected as a false alarm,
# once per detection, with what the detection said. Plain tables on both backends: rows are
# few, and they must outlive the detections' own retention.
FEEDBACK_DDL = """
CREATE TABLE IF NOT EXISTS false_alarms (
    detection_id uuid        PRIMARY KEY,
    detection_ts timestamptz NOT NULL,
    source_type  text        NOT NULL,
    source_id    text        NOT NULL,
    kind         text        NOT NULL,
    confidence   real        NOT NULL,
    bbox         integer[],
    snapshot     text,
    operator     text        NOT NULL,
    reason       text        NOT NULL,
    case_id      text,
    marked_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS false_alarms_detection_ts ON false_alarms (detection_ts);
-- The snapshot's bytes, copied when it is marked: the evidence store may be pruned, and
-- training reads them from here. Apart from false_alarms so that Grafana's role never reads them.
CREATE TABLE IF NOT EXISTS false_alarm_snapshots (
    detection_id uuid  PRIMARY KEY REFERENCES false_alarms (detection_id),
    image        bytea NOT NULL,
    sha256       text  NOT NULL
);
CREATE TABLE IF NOT EXISTS operator_audit (
    id      bigserial   PRIMARY KEY,
    ts      timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor   text        NOT NULL,
    action  text        NOT NULL,
    subject text        NOT NULL,
    note    text        NOT NULL DEFAULT ''
);
CREATE OR REPLACE FUNCTION append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END $$;
CREATE OR REPLACE TRIGGER operator_audit_append_only BEFORE UPDATE OR DELETE ON operator_audit
    FOR EACH ROW EXECUTE FUNCTION append_only();
"""


# The duty officer's console: operators (argon2 hashes only) and their sessions (the
# cookie's SHA-256, never the cookie); what they do goes to case_audit or operator_audit.
CONSOLE_DDL = """
CREATE TABLE IF NOT EXISTS operators (
    name          text PRIMARY KEY,
    role          text        NOT NULL CHECK (role IN ('duty_officer', 'viewer')),
    password_hash text        NOT NULL CHECK (password_hash LIKE '$argon2%'),
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE IF NOT EXISTS console_sessions (
    token_sha256 text PRIMARY KEY,
    operator     text        NOT NULL REFERENCES operators (name) ON DELETE CASCADE,
    csrf_token   text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at   timestamptz NOT NULL
);
"""


def timescaledb_available(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
    ).fetchone()
    return row is not None


def ensure_schema(conn: psycopg.Connection) -> Backend:
    """Create what is missing and return the backend in use. Commits."""
    backend = Backend.TIMESCALEDB if timescaledb_available(conn) else Backend.POSTGRESQL
    fingerprint = _fingerprint(backend)
    with conn.transaction():
        current = _stored_fingerprint(conn) == fingerprint
    if current:
        return backend
    with conn.transaction():
        # Concurrent role start-ups race on CREATE ... IF NOT EXISTS; serialise them.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('gridwatch.schema'))")
        if _stored_fingerprint(conn) == fingerprint:  # another role has just made it
            return backend
        if backend is Backend.TIMESCALEDB:
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        conn.execute(TABLES_DDL)
        conn.execute(CLOSED_LOOP_DDL)
        conn.execute(FEEDBACK_DDL)
        conn.execute(CONSOLE_DDL)
        conn.execute(DEVICE_STATUS_DDL)
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
        ensure_rollups(conn, timescale=backend is Backend.TIMESCALEDB)
        conn.execute(
            "INSERT INTO schema_info (key, value) VALUES ('backend', %s), (%s, %s)"
            " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            (backend.value, _FINGERPRINT, fingerprint),
        )
    log.info("schema ready on %s", backend.value)
    return backend


_FINGERPRINT = "ddl_sha256"


def _fingerprint(backend: Backend) -> str:
    """What this code's schema is: every DDL text, the event tables and the backend."""
    parts = (
        TABLES_DDL,
        CLOSED_LOOP_DDL,
        FEEDBACK_DDL,
        CONSOLE_DDL,
        DEVICE_STATUS_DDL,
        TIMESCALE_DDL,
        POSTGRES_DDL,
        repr(EVENT_TABLES),
        backend.value,
    )
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def _stored_fingerprint(conn: psycopg.Connection) -> str | None:
    """The fingerprint of the schema in the database; None before the first start-up."""
    row = conn.execute("SELECT to_regclass('schema_info') IS NOT NULL").fetchone()
    if row is None or not row[0]:
        return None
    found = conn.execute("SELECT value FROM schema_info WHERE key = %s", (_FINGERPRINT,)).fetchone()
    return None if found is None else str(found[0])
