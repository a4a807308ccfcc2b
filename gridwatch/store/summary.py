"""What a run produced, read back from the database: the figures of the demo's summary."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

COUNTS_SQL = """
SELECT
  (SELECT count(*) FROM readings)                                  AS readings_stored,
  (SELECT count(*) FROM reading_corrections)                       AS corrections,
  (SELECT count(*) FROM detections)                                AS detections,
  (SELECT count(DISTINCT incident_id) FROM incidents)              AS incidents,
  (SELECT count(*) FROM alerts WHERE state = 'firing')             AS alerts_firing,
  (SELECT count(*) FROM alerts WHERE state = 'resolved')           AS alerts_resolved,
  (SELECT count(*) FROM deadletters)                               AS deadletters
"""

# An alert is its fingerprint: a repeat notification of it is not another alert.
ALERTS_BY_LEVEL_SQL = """
SELECT level, count(DISTINCT fingerprint) FROM alerts WHERE state = 'firing' GROUP BY level
"""

CLOSED_LOOP_COUNTS_SQL = """
SELECT
  (SELECT count(*) FROM cases)                                     AS cases,
  (SELECT count(*) FROM cases WHERE state = 'closed')              AS cases_closed,
  (SELECT count(*) FROM outbox WHERE delivered_at IS NULL)         AS outbox_pending,
  (SELECT count(*) FROM outbox_deadletters)                        AS outbox_dead,
  (SELECT count(*) FROM cases WHERE broadcast = 'pending_approval') AS broadcasts_waiting
"""

# first_alert_s: from the run's first reading reaching the bridge to the incident's first
# firing alert being stored, on the run's own clock (a replay's too).
INCIDENT_LIST_SQL = """
SELECT i.kind, i.level, i.lon, i.lat, i.grid_code, (i.payload ->> 'location_error_m')::float,
       jsonb_array_length(i.payload -> 'sources'),
       ARRAY(SELECT s ->> 'type' || ' ' || (s ->> 'id')
             FROM jsonb_array_elements(i.payload -> 'sources') AS s),
       extract(epoch FROM (SELECT min(a.stored_at) FROM alerts a
                           WHERE a.incident_id = i.incident_id AND a.state = 'firing')
                          - (SELECT min(received_at) FROM readings))::float
FROM incidents_current i ORDER BY i.first_seen
"""

# Sensor to database: when the device stamped the reading to when its row was committed.
READING_LATENCY_SQL = """
SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms),
       percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)
FROM (SELECT extract(epoch FROM stored_at - ts) * 1000 AS ms FROM readings) AS l
"""

# Sensor to alert: from the reading that moved the incident to the alert's row being stored.
ALERT_LATENCY_SQL = """
SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms),
       percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)
FROM (
  SELECT extract(epoch FROM a.stored_at - i.ts) * 1000 AS ms
  FROM alerts a
  JOIN incidents i
    ON i.incident_id = a.incident_id
   AND i.revision = (a.payload ->> 'incident_revision')::int
) AS l
"""

NEW_ALERTS_SQL = """
SELECT stored_at, level, state, kind, grid_code, summary, payload -> 'reasons'
FROM alerts WHERE stored_at > %s ORDER BY stored_at
"""


def counts(conn: psycopg.Connection, query: str = COUNTS_SQL) -> dict[str, int]:
    cur = conn.execute(query)
    row = cur.fetchone()
    assert row is not None and cur.description is not None  # noqa: S101 - one row always
    return {col.name: int(v) for col, v in zip(cur.description, row, strict=True)}


def closed_loop_counts(conn: psycopg.Connection) -> dict[str, int]:
    return counts(conn, CLOSED_LOOP_COUNTS_SQL)


def incident_list(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Every incident as it stands, in the order they were opened."""
    names = ("kind", "level", "lon", "lat", "grid_code", "location_error_m", "sources", "raised_by")
    rows = conn.execute(INCIDENT_LIST_SQL).fetchall()
    return [
        dict(zip(names, row[:-1], strict=True))
        | {"first_alert_s": None if row[-1] is None else round(row[-1], 2)}
        for row in rows
    ]


@dataclass(frozen=True)
class NewAlert:
    stored_at: datetime
    level: str
    state: str
    kind: str
    grid_code: str
    summary: str
    reasons: tuple[str, ...]


def new_alerts(conn: psycopg.Connection, since: datetime) -> list[NewAlert]:
    """The alert notifications stored after ``since``, oldest first."""
    return [
        NewAlert(
            stored_at=stored_at,
            level=level,
            state=state,
            kind=kind,
            grid_code=grid,
            summary=summary,
            reasons=tuple(reasons or ()),
        )
        for stored_at, level, state, kind, grid, summary, reasons in conn.execute(
            NEW_ALERTS_SQL, (since,)
        ).fetchall()
    ]


def collect(conn: psycopg.Connection) -> dict[str, Any]:
    summary: dict[str, Any] = dict(counts(conn))
    summary.update(closed_loop_counts(conn))
    summary["alerts_by_level"] = {
        level: n for level, n in conn.execute(ALERTS_BY_LEVEL_SQL).fetchall()
    }
    summary["cases_by_state"] = dict(
        conn.execute("SELECT state, count(*) FROM cases GROUP BY state").fetchall()
    )
    summary["broadcasts"] = dict(
        conn.execute(
            "SELECT broadcast, count(*) FROM cases WHERE broadcast <> 'none' GROUP BY broadcast"
        ).fetchall()
    )
    summary["incident_list"] = incident_list(conn)
    for name, query in (("reading", READING_LATENCY_SQL), ("alert", ALERT_LATENCY_SQL)):
        row = conn.execute(query).fetchone()
        p50, p99 = row if row else (None, None)
        summary[f"{name}_latency_ms"] = {
            "p50": round(p50, 1) if p50 is not None else None,
            "p99": round(p99, 1) if p99 is not None else None,
        }
    return summary
