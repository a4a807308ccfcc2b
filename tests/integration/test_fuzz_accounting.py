"""The fuzz benchmark's accounting reads what the database holds and gives each message exactly
one outcome: a row is needed for every message, a repeat needs its own dead letter, a drop
leaves the message unaccounted."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from benchmarks.fuzz import account, read_tables
from benchmarks.fuzz_messages import FuzzMessage, Outcome, ReadingFact, StatusFact
from gridwatch.events import DeadLetter, DeviceStatus, Event, Reading, storable_text
from gridwatch.store.schema import ensure_schema
from gridwatch.store.writer import write_events

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
TOPIC = "gw/520199003/WL-001/telemetry"


def fact(ms: int, value: float, device: str = "WL-001") -> ReadingFact:
    return ReadingFact(device, "water_level_m", int((T0.timestamp() * 1000 + ms) * 1000), value)


def message(kind: str, expect: Outcome, *facts: ReadingFact, payload: bytes = b"{}") -> FuzzMessage:
    return FuzzMessage(kind, TOPIC, payload + kind.encode(), expect, facts)


def reading(f: ReadingFact) -> Reading:
    ts = datetime.fromtimestamp(f.ts_us / 1e6, UTC)
    return Reading(device_id=f.device_id, metric=f.metric, value=f.value, unit="m", ts=ts)


@pytest.fixture
def conn(fresh_database_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(fresh_database_url, autocommit=True) as conn:
        ensure_schema(conn)
        yield conn


def store(conn: psycopg.Connection, events: list[Event]) -> None:
    with conn.transaction():
        write_events(conn, events)


def test_each_message_gets_the_outcome_the_rows_show(conn: psycopg.Connection) -> None:
    good = message("good", Outcome.STORED, fact(1, 1.5))
    repeat = FuzzMessage("repeat", good.topic, good.payload, Outcome.DUPLICATE, good.readings)
    gateway = message("gateway", Outcome.STORED, fact(2, 1.0), fact(2, 2.0, "WL-002"))
    partial = message("partly stored", Outcome.STORED, fact(3, 1.0), fact(3, 2.0, "WL-002"))
    conflict = message("conflict", Outcome.CORRECTION, fact(1, 2.5))
    dropped = message("dropped conflict", Outcome.CORRECTION, fact(2, 9.0))
    bad = message("bad", Outcome.DEADLETTERED, payload=b"[]")
    bad_again = FuzzMessage("bad again", bad.topic, bad.payload, Outcome.DEADLETTERED)
    lax = message("lax", Outcome.DEADLETTERED, fact(4, 1.75))
    nul = FuzzMessage("nul", "gw/520199003/WL\x00/telemetry", b"{}", Outcome.DEADLETTERED)
    downstream = message("dead-lettered downstream", Outcome.DEADLETTERED, payload=b"x")
    status_ts = FuzzMessage("status", "gw/s/WL-001/status", b"{}", Outcome.STORED,
                            status=StatusFact("WL-001", True, fact(5, 0).ts_us))  # fmt: skip
    status_plain = FuzzMessage("plain", "gw/s/WL-001/status", b"offline", Outcome.STORED,
                               status=StatusFact("WL-001", False, None))  # fmt: skip
    status_lost = FuzzMessage("plain lost", "gw/s/WL-001/status", b"online", Outcome.STORED,
                              status=StatusFact("WL-001", False, None))  # fmt: skip
    messages = [good, repeat, gateway, partial, conflict, dropped, bad, bad_again, lax, nul,
                downstream, status_ts, status_plain, status_lost]  # fmt: skip
    store(conn, [reading(f) for f in (*good.readings, *gateway.readings, partial.readings[0],
                                      *lax.readings)])  # fmt: skip
    store(conn, [
        DeadLetter.of(f"mqtt:{bad.topic}", bad.payload, "empty"),
        DeadLetter.of(storable_text(f"mqtt:{nul.topic}"), nul.payload, "NUL"),
        DeadLetter.of(f"kafka:{TOPIC}", downstream.payload, "somewhere else"),
        DeviceStatus(device_id="WL-001", online=True, ts=T0 + timedelta(milliseconds=5)),
        DeviceStatus(device_id="WL-001", online=False, ts=T0),
    ])  # fmt: skip
    store(conn, [reading(fact(1, 2.5))])  # the writer keeps it as a correction

    outcomes = account(messages, read_tables(conn)).outcomes

    assert dict(zip([m.kind for m in messages], outcomes, strict=True)) == {
        "good": Outcome.STORED,
        "repeat": Outcome.DUPLICATE,
        "gateway": Outcome.STORED,
        "partly stored": Outcome.UNACCOUNTED,
        "conflict": Outcome.CORRECTION,
        "dropped conflict": Outcome.UNACCOUNTED,
        "bad": Outcome.DEADLETTERED,
        "bad again": Outcome.UNACCOUNTED,  # one dead letter is one message's
        "lax": Outcome.STORED,  # the database says stored, whatever was expected
        "nul": Outcome.DEADLETTERED,
        "dead-lettered downstream": Outcome.UNACCOUNTED,
        "status": Outcome.STORED,
        "plain": Outcome.STORED,
        "plain lost": Outcome.UNACCOUNTED,
    }
