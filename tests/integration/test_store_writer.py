"""The store writer against bad records put straight on the topics, as a foreign producer
would: real Kafka-API broker, real PostgreSQL, the real ``run_persist`` role."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from gridwatch import topics
from gridwatch.events import (
    Incident,
    IncidentKind,
    Level,
    Point,
    SourceRef,
    SourceType,
    new_id,
)
from gridwatch.store.schema import ensure_schema
from gridwatch.store.summary import counts
from tests.integration.sensor_pipeline import BackgroundLoop, Writer, produce, wait_for

RUN = uuid.uuid4().hex[:6]
KEY = RUN.encode()
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
READINGS_SQL = "SELECT value, seq FROM readings WHERE device_id = %s ORDER BY ts"
LETTERS_SQL = "SELECT sha256, source, reason, payload FROM deadletters WHERE sha256 = ANY(%s)"


def report(device: str, at: datetime, values: dict[str, float], seq: Any = None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "device_id": device,
        "ts": at.isoformat(),
        "values": {metric: [value, "m"] for metric, value in values.items()},
    }
    if seq is not None:
        entry["seq"] = seq
    return entry


def batch(*reports: dict[str, Any], batch_id: uuid.UUID | None = None) -> bytes:
    """A ``gw.readings`` record as JSON text, written by hand as another producer would."""
    return json.dumps(
        {
            "schema": "gw.reading-batch/1",
            "id": str(batch_id or new_id()),
            "received_at": datetime.now(UTC).isoformat(),
            "reports": list(reports),
        }
    ).encode()


def sha(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


@pytest.fixture
def store(fresh_database_url: str) -> Iterator[tuple[BackgroundLoop, str]]:
    with psycopg.connect(fresh_database_url) as conn:
        ensure_schema(conn)
        # A constraint of the operator's: the kind of refusal only the database can make.
        conn.execute("ALTER TABLE readings ADD CONSTRAINT gauge_range CHECK (value < 1000)")
        conn.commit()
    loop = BackgroundLoop()
    try:
        yield loop, fresh_database_url
    finally:
        loop.close()


def test_a_message_the_database_refuses_is_dead_lettered_and_the_writes_go_on(
    store: tuple[BackgroundLoop, str], kafka_bootstrap: str
) -> None:
    loop, url = store
    device = f"{RUN}-refused"
    good = [batch(report(device, T0 + timedelta(seconds=i), {"water_level_m": i})) for i in (0, 2)]
    refused = batch(report(device, T0 + timedelta(seconds=1), {"water_level_m": 5000.0}))
    # 1e999 parses as infinity, which jsonb refuses at COPY time: now refused when decoded.
    incident = Incident(
        kind=IncidentKind.FLOOD,
        location=Point(lon=106.6, lat=26.6),
        community_code="520199003001",
        grid_code="52019900300101",
        micro_grid_code=None,
        level=Level.YELLOW,
        confidence=0.9,
        sources=(SourceRef(type=SourceType.SENSOR, id=device),),
        detection_ids=(),
        first_seen=T0,
        last_seen=T0,
    ).to_bytes()
    infinite = incident.replace(b'"growth":1.0', b'"growth":1e999')
    assert infinite != incident
    writer = Writer(loop, url, kafka_bootstrap, topics.ALL)
    produce(
        kafka_bootstrap,
        [
            (topics.READINGS, KEY, good[0]),
            (topics.READINGS, KEY, refused),
            (topics.INCIDENTS, KEY, infinite),
            (topics.READINGS, KEY, good[1]),
        ],
    )
    bad = [sha(refused), sha(infinite)]
    stored = wait_for(url, READINGS_SQL, (device,), lambda rows: len(rows) == 2, timeout=30)
    assert stored == [(0.0, None), (2.0, None)]
    letters = wait_for(url, LETTERS_SQL, (bad,), lambda rows: len(rows) == 2, timeout=10)
    by_sha = {s: (source, reason, bytes(p)) for s, source, reason, p in letters}
    source, reason, payload = by_sha[sha(refused)]
    assert (source, payload) == (f"kafka:{topics.READINGS}", refused)
    assert "gauge_range" in reason and "\n" not in reason
    source, reason, payload = by_sha[sha(infinite)]
    assert (source, payload) == (f"kafka:{topics.INCIDENTS}", infinite)
    assert reason.startswith("growth:") and "finite" in reason
    stats = writer.close()
    assert stats.refused >= 1 and stats.rows["readings"] >= 2

    # Restarted in the same group, the writer goes on after them: their offsets were committed.
    again = Writer(loop, url, kafka_bootstrap, topics.ALL, group=writer.group)
    later = batch(report(device, T0 + timedelta(seconds=3), {"water_level_m": 3.0}))
    produce(kafka_bootstrap, [(topics.READINGS, KEY, later)])
    wait_for(url, READINGS_SQL, (device,), lambda rows: len(rows) == 3, timeout=30)
    assert again.close().refused == 0
    with psycopg.connect(url) as conn:
        (n,) = conn.execute(
            "SELECT count(*) FROM deadletters WHERE sha256 = ANY(%s)", (bad,)
        ).fetchone() or (0,)
    assert n == 2


def test_values_postgresql_cannot_store_are_dead_lettered_with_a_storable_reason(
    store: tuple[BackgroundLoop, str], kafka_bootstrap: str
) -> None:
    loop, url = store
    device = f"{RUN}-strange"
    at = T0 + timedelta(seconds=10)
    beyond_int8 = batch(report(device, at, {"water_level_m": 1.0}, seq=2**63))
    far_beyond = batch(report(device, at, {"water_level_m": 1.0}, seq=10**30))
    nul_metric = batch(report(device, at, {"water_\u0000level_m": 1.0}))
    good = batch(report(device, at, {"water_level_m": 1.5}, seq=7))
    # A dead letter from elsewhere whose topic (its source) and reason hold a NUL.
    foreign = json.dumps(
        {
            "schema": "gw.deadletter/2",
            "source": f"mqtt:gw/{RUN}/\u0000/telemetry",
            "reason": "bad \u0000 byte",
            "payload_b64": "AA==",
            "size": 1,
            "sha256": sha(f"{RUN}-foreign".encode()),
        }
    ).encode()
    writer = Writer(loop, url, kafka_bootstrap, topics.ALL)
    produce(
        kafka_bootstrap,
        [
            (topics.READINGS, KEY, beyond_int8),
            (topics.READINGS, KEY, far_beyond),
            (topics.READINGS, KEY, nul_metric),
            (topics.DEADLETTER, KEY, foreign),
            (topics.READINGS, KEY, good),
        ],
    )
    assert wait_for(url, READINGS_SQL, (device,), lambda rows: len(rows) == 1) == [(1.5, 7)]
    bad = [sha(beyond_int8), sha(far_beyond), sha(nul_metric), sha(f"{RUN}-foreign".encode())]
    letters = wait_for(url, LETTERS_SQL, (bad,), lambda rows: len(rows) == 4, timeout=10)
    by_sha = {s: (source, reason) for s, source, reason, _ in letters}
    assert "seq" in by_sha[sha(beyond_int8)][1] and "seq" in by_sha[sha(far_beyond)][1]
    source, reason = by_sha[sha(nul_metric)]
    assert source == f"kafka:{topics.READINGS}" and "water_\\x00level_m" in reason
    source, reason = by_sha[sha(f"{RUN}-foreign".encode())]
    assert (source, reason) == (f"mqtt:gw/{RUN}/\\x00/telemetry", "bad \\x00 byte")
    writer.close()


CORRECTIONS_SQL = (
    "SELECT extract(epoch FROM ts - %s)::int, stored_value, value, id FROM reading_corrections"
    " WHERE device_id = %s ORDER BY ts, value"
)


def test_a_second_different_value_for_a_stored_reading_is_kept_as_a_correction(
    store: tuple[BackgroundLoop, str], kafka_bootstrap: str
) -> None:
    loop, url = store
    device = f"{RUN}-corrected"
    first = batch(report(device, T0, {"water_level_m": 1.0}))
    second_id = new_id()
    second = batch(report(device, T0, {"water_level_m": 1.25}), batch_id=second_id)
    repeat = batch(report(device, T0, {"water_level_m": 1.0}))  # a duplicate: silent
    # Two values for one time in one message: the first is stored, the second a correction.
    twice_id = new_id()
    twice = batch(
        report(device, T0 + timedelta(seconds=1), {"water_level_m": 2.0}),
        report(device, T0 + timedelta(seconds=1), {"water_level_m": 2.5}),
        batch_id=twice_id,
    )
    writer = Writer(loop, url, kafka_bootstrap, topics.ALL)
    produce(kafka_bootstrap, [(topics.READINGS, KEY, first)])
    wait_for(url, READINGS_SQL, (device,), lambda rows: len(rows) == 1, timeout=30)
    produce(kafka_bootstrap, [(topics.READINGS, KEY, raw) for raw in (second, repeat, twice)])
    expected = [(0, 1.0, 1.25, second_id), (1, 2.0, 2.5, twice_id)]
    found = wait_for(url, CORRECTIONS_SQL, (T0, device), lambda rows: len(rows) >= 2, timeout=30)
    assert found == expected
    assert wait_for(url, READINGS_SQL, (device,), lambda rows: len(rows) == 2) == [
        (1.0, None),
        (2.0, None),
    ]
    stats = writer.close()
    assert stats.rows["reading_corrections"] == 2

    # Everything redelivered (a new group reads the topic again): no correction twice.
    again = Writer(loop, url, kafka_bootstrap, topics.ALL)
    produce(kafka_bootstrap, [(topics.READINGS, KEY, second)])
    done = batch(report(device, T0 + timedelta(seconds=2), {"water_level_m": 3.0}))
    produce(kafka_bootstrap, [(topics.READINGS, KEY, done)])
    wait_for(url, READINGS_SQL, (device,), lambda rows: len(rows) == 3, timeout=30)
    again.close()
    found = wait_for(url, CORRECTIONS_SQL, (T0, device), lambda rows: True)
    assert found == expected
    with psycopg.connect(url) as conn:
        assert counts(conn)["corrections"] == 2
