"""What the console shows, read from the database the roles write: alerts, cases and their
audit trail, broadcasts waiting for approval, detections with their snapshots."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row

from gridwatch.store.feedback import CAMERA_SOURCES

Row = dict[str, Any]
ALERT_COLUMNS = (
    "stored_at, ts, fingerprint, incident_id, kind, level, state, grid_code, summary,"
    " payload -> 'reasons' AS reasons"
)


def _rows(conn: psycopg.Connection, query: str, params: tuple[Any, ...] = ()) -> list[Row]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        return cur.fetchall()


def recent_alerts(conn: psycopg.Connection, limit: int = 100) -> list[Row]:
    """The newest notifications first."""
    return _rows(
        conn,
        f"SELECT {ALERT_COLUMNS} FROM alerts ORDER BY stored_at DESC LIMIT %s",  # noqa: S608
        (limit,),
    )


def alerts_since(conn: psycopg.Connection, after: datetime) -> list[Row]:
    """Notifications stored after ``after``, oldest first (the order they are pushed in)."""
    return _rows(
        conn,
        f"SELECT {ALERT_COLUMNS} FROM alerts WHERE stored_at > %s"  # noqa: S608
        " ORDER BY stored_at LIMIT 500",
        (after,),
    )


def latest_stored(conn: psycopg.Connection) -> datetime | None:
    row = conn.execute("SELECT max(stored_at) FROM alerts").fetchone()
    return row[0] if row else None


CASE_COLUMNS = (
    "case_id, incident_id, kind, level, tier, state, grid_code, opened_at, accept_by, due_at,"
    " overdue, closed_at, broadcast, alert ->> 'summary' AS summary"
)


def cases(conn: psycopg.Connection, limit: int = 200) -> list[Row]:
    """Open cases first (overdue ones at the top), then the newest closed ones."""
    return _rows(
        conn,
        f"SELECT {CASE_COLUMNS} FROM cases"  # noqa: S608
        " ORDER BY state = 'closed', overdue DESC, opened_at DESC LIMIT %s",
        (limit,),
    )


def case(conn: psycopg.Connection, case_id: str) -> Row | None:
    found = _rows(conn, f"SELECT {CASE_COLUMNS} FROM cases WHERE case_id = %s", (case_id,))  # noqa: S608
    return found[0] if found else None


def timeline(conn: psycopg.Connection, case_id: str) -> list[Row]:
    return _rows(
        conn,
        "SELECT seq, action, from_state, to_state, actor, ts, tier, level, due_at, note"
        " FROM case_audit WHERE case_id = %s ORDER BY seq",
        (case_id,),
    )


def cases_of_incident(conn: psycopg.Connection, incident_id: UUID) -> list[Row]:
    return _rows(
        conn,
        f"SELECT {CASE_COLUMNS} FROM cases WHERE incident_id = %s"  # noqa: S608
        " ORDER BY opened_at DESC",
        (incident_id,),
    )


def recent_detections(conn: psycopg.Connection, limit: int = 50) -> list[Row]:
    """The newest camera and watchtower detections, each with its false-alarm mark if any."""
    return _rows(
        conn,
        "SELECT d.id, d.ts, d.kind, d.source_type, d.source_id, d.confidence, d.snapshot,"
        " f.operator AS marked_by FROM detections d"
        " LEFT JOIN false_alarms f ON f.detection_id = d.id"
        " WHERE NOT d.cleared AND d.source_type = ANY(%s) ORDER BY d.ts DESC LIMIT %s",
        (list(CAMERA_SOURCES), limit),
    )


def snapshot_of(conn: psycopg.Connection, detection_id: UUID) -> str | None:
    row = conn.execute(
        "SELECT snapshot FROM detections WHERE id = %s AND snapshot IS NOT NULL"
        " ORDER BY ts DESC LIMIT 1",
        (detection_id,),
    ).fetchone()
    return str(row[0]) if row else None
