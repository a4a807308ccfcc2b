"""The closed loop on the real database: cases, audit log, outbox, approval, timers, KPIs."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from uuid import UUID

import psycopg
import pytest

from alerts.cap import validate_cap
from alerts.cases import IllegalTransition
from alerts.closed_loop import ClosedLoop, case_id_of, load_audit
from alerts.kpi import compute
from gridwatch.events import Alert, CaseEvent, IncidentKind, Level, Point, Target
from gridwatch.site import Site
from gridwatch.store.schema import ensure_schema

T0 = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)
INCIDENT = UUID("0190a000-0000-7000-8000-0000000000aa")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def alert(level: Level, state: str = "firing") -> Alert:
    return Alert(
        fingerprint=f"fp-{level.value}",
        incident_id=INCIDENT,
        incident_revision=1,
        kind=IncidentKind.FLOOD,
        level=level,
        state=state,  # type: ignore[arg-type]
        targets=(Target(role="grid_worker", id="W01"),),
        summary=f"{level.value}：防汛风险",
        location=Point(lon=106.605, lat=26.605),
        grid_code="52019900300101",
        ts=T0,
        reasons=("observed",),
    )


def callback(case_id: str, action: str, state: str, minutes: float) -> CaseEvent:
    return CaseEvent(
        case_id=case_id,
        seq=0,
        from_state=None,
        to_state=state,
        action=action,
        actor="desk",
        ts=T0 + timedelta(minutes=minutes),
    )


STATE_AFTER = {
    "accept": "accepted",
    "handle": "handling",
    "report": "reported",
    "rework": "handling",
    "verify": "verified",
    "close": "closed",
}


def work_through(
    loop: ClosedLoop, conn: psycopg.Connection, case_id: str, actions: list[str], first_minute: int
) -> None:
    """The desk's callbacks, one a minute; each delivered twice, the second a no-op."""
    for minute, action in enumerate(actions, start=first_minute):
        event = callback(case_id, action, STATE_AFTER[action], minute)
        with conn.transaction():
            assert loop.on_case_event(conn, event) is not None
            assert loop.on_case_event(conn, event) is None  # redelivered callback: no-op


@pytest.fixture
def conn(fresh_database_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(fresh_database_url) as connection:
        ensure_schema(connection)
        yield connection


def outbox(conn: psycopg.Connection) -> list[tuple[str, str, bytes]]:
    rows = conn.execute("SELECT idempotency_key, content_type, body FROM outbox ORDER BY id")
    return [(k, t, bytes(b)) for k, t, b in rows.fetchall()]


def test_red_case_through_the_loop_with_approval_and_cancel(
    conn: psycopg.Connection, tiny_site: Site
) -> None:
    clock = Clock()
    loop = ClosedLoop(tiny_site, clock)
    with conn.transaction():
        loop.on_alert(conn, alert(Level.YELLOW))
    case_id = case_id_of(alert(Level.YELLOW))
    assert [k for k, _, _ in outbox(conn)] == [f"{case_id}:2"]  # dispatched, seq 2
    clock.now += timedelta(minutes=1)
    with conn.transaction():
        loop.on_alert(conn, alert(Level.RED))
        loop.on_alert(conn, alert(Level.RED))  # a redelivery changes nothing
    row = conn.execute("SELECT level, tier, broadcast FROM cases").fetchone()
    assert row == ("red", "street", "pending_approval")  # red waits for the operator
    with conn.transaction():
        loop.approve_broadcast(conn, case_id, "值班员")
    keys = [k for k, _, _ in outbox(conn)]
    assert keys == [f"{case_id}:2", f"{case_id}:3", f"{case_id}.alert:cap", f"{case_id}.alert:ebm"]
    work_through(
        loop,
        conn,
        case_id,
        ["accept", "handle", "report", "rework", "report", "verify", "close"],
        first_minute=2,
    )
    caps = [(k, b) for k, t, b in outbox(conn) if t == "application/cap+xml"]
    assert [k for k, _ in caps] == [f"{case_id}.alert:cap", f"{case_id}.cancel:cap"]
    for _, body in caps:
        validate_cap(body)
    assert b"<references>" in caps[1][1] and b"<msgType>Cancel</msgType>" in caps[1][1]
    with conn.transaction(), pytest.raises(IllegalTransition, match="cannot handle"):
        loop.on_case_event(conn, callback(case_id, "handle", "handling", 9))
    audit = load_audit(conn)
    assert [e.action.value for e in audit] == [
        "receive",
        "register",
        "dispatch",
        "regrade",
        "approve_broadcast",
        "accept",
        "handle",
        "report",
        "rework",
        "report",
        "verify",
        "close",
    ]
    assert audit[4].actor == "值班员"
    kpis = compute(audit, as_of=T0 + timedelta(days=1))
    assert (kpis.due, kpis.closed, kpis.closed_on_time, kpis.rework_rate) == (1, 1, 1, 100.0)
    with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
        conn.execute("UPDATE case_audit SET actor = 'someone else'")
    conn.rollback()


def test_an_incident_that_worsens_after_its_case_closed_opens_a_follow_up(
    conn: psycopg.Connection, tiny_site: Site
) -> None:
    clock = Clock()
    loop = ClosedLoop(tiny_site, clock)
    with conn.transaction():
        loop.on_alert(conn, alert(Level.YELLOW))
    first = case_id_of(alert(Level.YELLOW))
    work_through(
        loop, conn, first, ["accept", "handle", "report", "verify", "close"], first_minute=1
    )
    clock.now += timedelta(minutes=6)
    with conn.transaction():
        loop.on_alert(conn, alert(Level.YELLOW))  # the same colour again: nothing new
        loop.on_alert(conn, alert(Level.RED))
        loop.on_alert(conn, alert(Level.RED))  # a redelivery changes nothing
    rows = conn.execute("SELECT case_id, state, level, broadcast FROM cases ORDER BY opened_at")
    assert rows.fetchall() == [
        (first, "closed", "yellow", "none"),
        (f"{first}-2", "dispatched", "red", "pending_approval"),
    ]


def test_an_unaccepted_case_escalates_on_the_clock(
    conn: psycopg.Connection, tiny_site: Site
) -> None:
    clock = Clock()
    loop = ClosedLoop(tiny_site, clock)
    with conn.transaction():
        loop.on_alert(conn, alert(Level.YELLOW))
    clock.now += timedelta(minutes=29)
    with conn.transaction():
        assert loop.run_timers(conn) == []
    clock.now += timedelta(minutes=1)  # yellow: 30 minutes to accept
    with conn.transaction():
        [entry] = loop.run_timers(conn)
    assert (entry.action.value, entry.tier.value, entry.level.value) == (
        "escalate",
        "community",
        "orange",
    )
    clock.now += timedelta(minutes=15)  # orange: 15 minutes
    with conn.transaction():
        [entry] = loop.run_timers(conn)
    assert entry.tier.value == "street"
    dispatches = [k for k, _, _ in outbox(conn)]
    assert len(dispatches) == 3  # the first dispatch and one per escalation


def test_a_device_fault_alert_opens_and_dispatches_a_case(
    conn: psycopg.Connection, tiny_site: Site
) -> None:
    loop = ClosedLoop(tiny_site, Clock())
    fault = alert(Level.YELLOW).model_copy(update={"kind": IncidentKind.DEVICE_FAULT})
    with conn.transaction():
        loop.on_alert(conn, fault)
    assert conn.execute("SELECT kind, state FROM cases").fetchall() == [
        ("device_fault", "dispatched")
    ]
    [(key, _, body)] = outbox(conn)
    assert key == f"{case_id_of(fault)}:2" and b'"kind": "device_fault"' in body
