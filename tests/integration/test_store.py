"""Schema and bulk writer against a real PostgreSQL (the plain-PostgreSQL fallback here)."""

from datetime import UTC, datetime, timedelta

import psycopg

from gridwatch.events import (
    DeadLetter,
    Detection,
    DetectionKind,
    Level,
    Point,
    Reading,
    SourceRef,
    SourceType,
)
from gridwatch.store.schema import EVENT_TABLES, Backend, ensure_schema, timescaledb_available
from gridwatch.store.writer import write_events

T0 = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)


def readings(n: int, device: str = "WL-1") -> list[Reading]:
    return [
        Reading(
            device_id=device,
            metric="water_level_m",
            value=1 + i / 100,
            unit="m",
            ts=T0 + timedelta(seconds=i),
            seq=i,
        )
        for i in range(n)
    ]


def test_schema_falls_back_to_postgresql_and_is_idempotent(fresh_database_url: str) -> None:
    with psycopg.connect(fresh_database_url) as conn:
        available = timescaledb_available(conn)
        backend = ensure_schema(conn)
        assert backend is (Backend.TIMESCALEDB if available else Backend.POSTGRESQL)
        assert ensure_schema(conn) is backend  # a second start-up changes nothing
        tables = {
            r[0]
            for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
        assert {t for t, _ in EVENT_TABLES} <= tables
        (stored,) = conn.execute("SELECT value FROM schema_info WHERE key = 'backend'").fetchone()
        assert stored == backend.value
        if backend is Backend.POSTGRESQL:
            brin = {
                r[0]
                for r in conn.execute(
                    "SELECT indexname FROM pg_indexes WHERE indexdef LIKE '%USING brin%'"
                )
            }
            assert {f"{t}_{c}_brin" for t, c in EVENT_TABLES} <= brin


def test_a_current_schema_starts_without_waiting_for_open_transactions(
    fresh_database_url: str,
) -> None:
    with psycopg.connect(fresh_database_url) as conn:
        backend = ensure_schema(conn)
    # An operator's idle session inside a transaction that has read the cases.
    with psycopg.connect(fresh_database_url) as idle, psycopg.connect(fresh_database_url) as role:
        idle.execute("SELECT count(*) FROM cases").fetchone()
        role.execute("SET lock_timeout = '2s'")  # DDL here would wait for the idle session
        assert ensure_schema(role) is backend


def test_a_schema_of_other_code_is_brought_up_to_date(fresh_database_url: str) -> None:
    with psycopg.connect(fresh_database_url) as conn:
        ensure_schema(conn)
        with conn.transaction():
            conn.execute("UPDATE schema_info SET value = 'older' WHERE key = 'ddl_sha256'")
            conn.execute("ALTER TABLE cases DROP COLUMN resolution")
        ensure_schema(conn)
        columns = {
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'cases'"
            )
        }
        assert "resolution" in columns


def test_copy_writer_is_idempotent_across_redelivery(fresh_database_url: str) -> None:
    batch = readings(500)
    with psycopg.connect(fresh_database_url) as conn:
        ensure_schema(conn)
        with conn.transaction():
            assert write_events(conn, batch) == {"readings": 500}
        # A redelivered batch overlapping the first one, with duplicates inside it.
        again = batch[400:] + readings(600)[500:] + batch[450:460]
        with conn.transaction():
            assert write_events(conn, again) == {"readings": 100}
        (count,) = conn.execute("SELECT count(*) FROM readings").fetchone()
        assert count == 600


def test_mixed_batch_and_rollback_loses_nothing(fresh_database_url: str) -> None:
    detection = Detection(
        kind=DetectionKind.WATER_LEVEL,
        source=SourceRef(type=SourceType.SENSOR, id="WL-1"),
        ts=T0,
        confidence=0.9,
        level=Level.RED,
        location=Point(lon=106.6, lat=26.6),
        evidence=tuple(readings(2)),
    )
    letter = DeadLetter.of("mqtt:gw/x/y/telemetry", b"\x00\xffbroken", "not UTF-8 JSON")
    with psycopg.connect(fresh_database_url) as conn:
        ensure_schema(conn)
        try:
            with conn.transaction():
                write_events(conn, [*readings(3), detection, letter])
                raise RuntimeError("crash before commit")
        except RuntimeError:
            pass
        assert conn.execute("SELECT count(*) FROM readings").fetchone() == (0,)
        with conn.transaction():
            inserted = write_events(conn, [*readings(3), detection, letter])
        assert inserted == {"readings": 3, "detections": 1, "deadletters": 1}
        level, evidence = conn.execute(
            "SELECT level, payload -> 'evidence' FROM detections"
        ).fetchone()
        assert level == "red" and len(evidence) == 2
        (payload,) = conn.execute("SELECT payload FROM deadletters").fetchone()
        assert bytes(payload) == b"\x00\xffbroken"
