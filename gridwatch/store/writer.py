"""Bulk, idempotent writes of events: binary COPY, and for a batch that repeats stored rows a
staging table and INSERT … ON CONFLICT.

Redelivered messages (at-least-once Kafka) hit the tables' unique keys and are skipped, so a
batch can be written again after a crash without duplicating a row. A reading that repeats a
stored one's key with a different value is no redelivery: it is kept in
``reading_corrections`` beside the stored value, which stays as it was.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from gridwatch.events import (
    Alert,
    CaseEvent,
    DeadLetter,
    Detection,
    DeviceStatus,
    Event,
    Incident,
    Reading,
    ReadingBatch,
)

Row = tuple[Any, ...]


@dataclass(frozen=True)
class TableSpec:
    table: str
    columns: tuple[tuple[str, str], ...]  # (name, PostgreSQL type) in COPY order
    row: Callable[[Any], Row]
    # Keeps the staged rows that conflict with a stored row but differ from it; formatted
    # with the staging table as ``{stage}`` and the target as ``{target}``.
    corrections: tuple[str, str] | None = None  # (table, INSERT … SELECT)
    # Set for an event that is stored as several rows (a batch of readings): its rows.
    rows_of: Callable[[Any], list[Row]] | None = None

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.columns]

    def rows(self, events: Sequence[Event]) -> list[Row]:
        if self.rows_of is None:
            return [self.row(e) for e in events]
        return [row for e in events for row in self.rows_of(e)]


def _payload(event: Event) -> Jsonb:
    return Jsonb(event.model_dump(mode="json", by_alias=True))


def _lonlat(event: Detection) -> tuple[float | None, float | None]:
    return (event.location.lon, event.location.lat) if event.location else (None, None)


def _batch_rows(batch: ReadingBatch) -> list[Row]:
    """The ``readings`` rows of a batch, as its ``readings()`` would make them (in the order of
    the Reading spec's row) without a Reading object for each: the writer's busiest line.

    Its times are given the standard library's UTC: psycopg dumps those several times faster
    than the time zone objects pydantic parses them with, and each is dumped once per metric."""
    id_, received_at = batch.id, batch.received_at.astimezone(UTC)
    rows: list[Row] = []
    for report in batch.reports:
        ts, device_id, seq = report.ts.astimezone(UTC), report.device_id, report.seq
        rows += [
            (ts, device_id, metric, value, unit, seq, id_, received_at)
            for metric, (value, unit) in report.values.items()
        ]
    return rows


SPECS: dict[type[Event], TableSpec] = {
    Reading: TableSpec(
        "readings",
        (
            ("ts", "timestamptz"),
            ("device_id", "text"),
            ("metric", "text"),
            ("value", "float8"),
            ("unit", "text"),
            ("seq", "int8"),
            ("id", "uuid"),
            ("received_at", "timestamptz"),
        ),
        lambda r: (r.ts, r.device_id, r.metric, r.value, r.unit, r.seq, r.id, r.received_at),
        corrections=(
            "reading_corrections",
            "INSERT INTO reading_corrections"
            " (ts, device_id, metric, stored_value, value, unit, id, received_at)"
            " SELECT s.ts, s.device_id, s.metric, t.value, s.value, s.unit, s.id, s.received_at"
            " FROM {stage} s JOIN {target} t USING (device_id, metric, ts)"
            " WHERE s.value <> t.value ON CONFLICT DO NOTHING",
        ),
    ),
    Detection: TableSpec(
        "detections",
        (
            ("ts", "timestamptz"),
            ("id", "uuid"),
            ("kind", "text"),
            ("source_type", "text"),
            ("source_id", "text"),
            ("confidence", "float4"),
            ("level", "text"),
            ("lon", "float8"),
            ("lat", "float8"),
            ("bearing_deg", "float8"),
            ("rule", "text"),
            ("cleared", "bool"),
            ("snapshot", "text"),
            ("payload", "jsonb"),
        ),
        lambda d: (
            d.ts,
            d.id,
            d.kind.value,
            d.source.type.value,
            d.source.id,
            d.confidence,
            d.level.value if d.level else None,
            *_lonlat(d),
            d.bearing_deg,
            d.rule,
            d.cleared,
            d.snapshot,
            _payload(d),
        ),
    ),
    Incident: TableSpec(
        "incidents",
        (
            ("ts", "timestamptz"),
            ("id", "uuid"),
            ("incident_id", "uuid"),
            ("revision", "int4"),
            ("kind", "text"),
            ("level", "text"),
            ("confidence", "float4"),
            ("lon", "float8"),
            ("lat", "float8"),
            ("community_code", "text"),
            ("grid_code", "text"),
            ("micro_grid_code", "text"),
            ("first_seen", "timestamptz"),
            ("ended", "bool"),
            ("payload", "jsonb"),
        ),
        # Incident.id names the incident; each revision is its own row keyed by (id, revision).
        lambda i: (
            i.last_seen,
            i.id,
            i.id,
            i.revision,
            i.kind.value,
            i.level.value,
            i.confidence,
            i.location.lon,
            i.location.lat,
            i.community_code,
            i.grid_code,
            i.micro_grid_code,
            i.first_seen,
            i.ended,
            _payload(i),
        ),
    ),
    Alert: TableSpec(
        "alerts",
        (
            ("ts", "timestamptz"),
            ("id", "uuid"),
            ("fingerprint", "text"),
            ("incident_id", "uuid"),
            ("kind", "text"),
            ("level", "text"),
            ("state", "text"),
            ("grid_code", "text"),
            ("lon", "float8"),
            ("lat", "float8"),
            ("summary", "text"),
            ("payload", "jsonb"),
        ),
        lambda a: (
            a.ts,
            a.id,
            a.fingerprint,
            a.incident_id,
            a.kind.value,
            a.level.value,
            a.state,
            a.grid_code,
            a.location.lon,
            a.location.lat,
            a.summary,
            _payload(a),
        ),
    ),
    CaseEvent: TableSpec(
        "case_events",
        (
            ("ts", "timestamptz"),
            ("id", "uuid"),
            ("case_id", "text"),
            ("seq", "int4"),
            ("from_state", "text"),
            ("to_state", "text"),
            ("actor", "text"),
            ("note", "text"),
        ),
        lambda c: (c.ts, c.id, c.case_id, c.seq, c.from_state, c.to_state, c.actor, c.note),
    ),
    DeadLetter: TableSpec(
        "deadletters",
        (
            ("ts", "timestamptz"),
            ("id", "uuid"),
            ("source", "text"),
            ("reason", "text"),
            ("payload", "bytea"),
            ("size", "int8"),
            ("sha256", "text"),
        ),
        lambda d: (d.ts, d.id, d.source, d.reason, d.payload, d.size, d.sha256),
    ),
    DeviceStatus: TableSpec(
        "device_status",
        (
            ("ts", "timestamptz"),
            ("id", "uuid"),
            ("device_id", "text"),
            ("online", "bool"),
            ("cause", "text"),
        ),
        lambda s: (s.ts, s.id, s.device_id, s.online, s.cause),
    ),
}


SPECS[ReadingBatch] = replace(SPECS[Reading], rows_of=_batch_rows)


def copy_insert(conn: psycopg.Connection, spec: TableSpec, rows: Sequence[Row]) -> dict[str, int]:
    """Write rows once each; returns the rows inserted per table (corrections included).

    A batch is COPYed straight into its table under a savepoint: the common case, as fast as
    COPY gets. Only a batch that repeats a stored row (a redelivery after a crash, or a
    correction) or holds one twice fails there on the unique key; it is rolled back to the
    savepoint and goes through a staging table and ``INSERT … ON CONFLICT DO NOTHING``
    instead, in batch order, so of two rows with one key the first is stored. The spec's
    ``corrections`` then keeps the staged rows that differ from what is stored."""
    target = sql.Identifier(spec.table)
    columns = sql.SQL(", ").join(sql.Identifier(n) for n in spec.names)
    try:
        with conn.transaction():
            _copy(conn, spec, target, columns, rows)
        return {spec.table: len(rows)}
    except psycopg.errors.UniqueViolation:
        pass
    staging = sql.Identifier(f"_stage_{spec.table}")
    conn.execute(
        sql.SQL(
            "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        ).format(staging, target)
    )
    _copy(conn, spec, staging, columns, rows)
    with conn.cursor() as cur:
        # One COPY into an emptied table lays rows out in batch order: ctid is that order.
        cur.execute(
            sql.SQL(
                "INSERT INTO {} ({}) SELECT {} FROM {} ORDER BY ctid ON CONFLICT DO NOTHING"
            ).format(target, columns, columns, staging)
        )
        inserted = {spec.table: cur.rowcount}
        if spec.corrections is not None:
            table, statement = spec.corrections
            cur.execute(sql.SQL(statement).format(stage=staging, target=target))
            if cur.rowcount:
                inserted[table] = cur.rowcount
        # ON COMMIT DELETE ROWS empties it at commit; truncate now so a second call in the
        # same transaction does not insert these rows twice.
        cur.execute(sql.SQL("TRUNCATE {}").format(staging))
    return inserted


def _copy(
    conn: psycopg.Connection,
    spec: TableSpec,
    table: sql.Identifier,
    columns: sql.Composable,
    rows: Sequence[Row],
) -> None:
    with (
        conn.cursor() as cur,
        cur.copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(table, columns)) as copy,
    ):
        copy.set_types([t for _, t in spec.columns])
        for row in rows:
            copy.write_row(row)


def write_events(conn: psycopg.Connection, events: Sequence[Event]) -> dict[str, int]:
    """Write a mixed batch in the caller's transaction; returns rows inserted per table."""
    by_type: dict[type[Event], list[Event]] = defaultdict(list)
    for event in events:
        by_type[type(event)].append(event)
    inserted: dict[str, int] = {}
    for event_type, batch in by_type.items():
        spec = SPECS[event_type]
        for table, n in copy_insert(conn, spec, spec.rows(batch)).items():
            inserted[table] = inserted.get(table, 0) + n
    return inserted
