"""The closed loop on the real database: cases, audit log, outbox, approval, timers, KPIs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from uuid import UUID

import psycopg
import pytest
from lxml import etree

from alerts.cap import CAP_NS, validate_cap
from alerts.cases import IllegalTransition
from alerts.closed_loop import ClosedLoop, case_id_of, load_audit
from alerts.kpi import compute
from gridwatch.errors import ConfigError
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


def alert(level: Level, state: str = "firing", graded: Level | None = None) -> Alert:
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
        incident_level=graded if state == "resolved" else level,
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


def test_a_returned_case_goes_to_the_next_department_then_back_to_the_desk(
    conn: psycopg.Connection, tiny_site: Site
) -> None:
    assert tiny_site.departments_for(IncidentKind.FLOOD) == ("water", "emergency")
    loop = ClosedLoop(tiny_site, Clock())
    with conn.transaction():
        loop.on_alert(conn, alert(Level.YELLOW))
    case_id = case_id_of(alert(Level.YELLOW))

    def case() -> tuple[str, str | None]:
        row = conn.execute("SELECT state, department FROM cases").fetchone()
        assert row is not None
        return row[0], row[1]

    assert case() == ("dispatched", "water")
    with conn.transaction():
        loop.on_case_event(conn, callback(case_id, "return", "registered", 1))
    assert case() == ("dispatched", "emergency")
    with conn.transaction():
        loop.on_case_event(conn, callback(case_id, "accept", "accepted", 2))
        loop.on_case_event(conn, callback(case_id, "return", "registered", 3))
    assert case() == ("registered", None)  # nobody left on the route: the desk decides
    messages = [json.loads(b) for _, t, b in outbox(conn) if t == "application/json"]
    assert [(m["action"], m["department"]) for m in messages] == [
        ("dispatch", "water"),
        ("dispatch", "emergency"),
        ("to_desk", None),
    ]
    audit = [(e.action.value, e.to_state.value, e.note) for e in load_audit(conn)][2:]
    assert audit == [
        ("dispatch", "dispatched", ""),
        ("return", "registered", ""),
        ("dispatch", "dispatched", "returned by water"),
        ("accept", "accepted", ""),
        ("return", "registered", ""),
        ("to_desk", "registered", "returned by emergency"),
    ]


def _cap_chain(conn: psycopg.Connection) -> list[tuple[str, str, str, list[str]]]:
    """Each CAP message queued: identifier, msgType, severity and its references."""
    out = []
    for _, content_type, body in outbox(conn):
        if content_type != "application/cap+xml":
            continue
        validate_cap(body)
        root = etree.fromstring(body)
        ns = {"cap": CAP_NS}
        refs = (root.findtext("cap:references", namespaces=ns) or "").split()
        out.append(
            (
                str(root.findtext("cap:identifier", namespaces=ns)),
                str(root.findtext("cap:msgType", namespaces=ns)),
                str(root.findtext("cap:info/cap:severity", namespaces=ns)),
                [r.split(",")[1] for r in refs],
            )
        )
    return out


def test_every_regrade_on_air_sends_an_update_referencing_the_messages_before(
    conn: psycopg.Connection, tiny_site: Site
) -> None:
    clock = Clock()
    loop = ClosedLoop(tiny_site, clock)
    with conn.transaction():
        loop.on_alert(conn, alert(Level.RED))
    case_id = case_id_of(alert(Level.RED))
    assert loop.pending_approvals(conn) == [case_id]
    with conn.transaction():
        loop.approve_broadcast(conn, case_id, "值班员")
    assert loop.pending_approvals(conn) == []
    clock.now += timedelta(minutes=1)
    with conn.transaction():  # graded down to orange: an Update at once, no approval
        loop.on_alert(conn, alert(Level.RED, "resolved", graded=Level.ORANGE))
        loop.on_alert(conn, alert(Level.RED, "resolved", graded=Level.ORANGE))  # redelivered
    assert conn.execute("SELECT level FROM cases").fetchone() == ("orange",)
    alert_id, update_id = f"{case_id}.alert", f"{case_id}.update.4"
    assert _cap_chain(conn) == [
        (alert_id, "Alert", "Extreme", []),
        (update_id, "Update", "Severe", [alert_id]),
    ]
    clock.now += timedelta(minutes=1)
    with conn.transaction():  # red again: the Update waits for the operator
        loop.on_alert(conn, alert(Level.RED))
    assert len(_cap_chain(conn)) == 2 and loop.pending_approvals(conn) == [case_id]
    with conn.transaction():
        loop.approve_broadcast(conn, case_id, "值班员")
    clock.now += timedelta(minutes=1)
    with conn.transaction():  # the incident ended: a Cancel referencing all before it
        loop.on_alert(conn, alert(Level.RED, "resolved", graded=None))
    chain = _cap_chain(conn)
    second_update = f"{case_id}.update.6"
    assert chain[2:] == [
        (second_update, "Update", "Extreme", [alert_id, update_id]),
        (f"{case_id}.cancel", "Cancel", "Extreme", [alert_id, update_id, second_update]),
    ]
    row = conn.execute("SELECT broadcast, broadcast_level FROM cases").fetchone()
    assert row == ("cancelled", "red")


def test_a_downgrade_before_approval_withdraws_the_request(
    conn: psycopg.Connection, tiny_site: Site
) -> None:
    loop = ClosedLoop(tiny_site, Clock())
    with conn.transaction():
        loop.on_alert(conn, alert(Level.RED))
        loop.on_alert(conn, alert(Level.RED, "resolved", graded=Level.YELLOW))
    assert loop.pending_approvals(conn) == []
    assert conn.execute("SELECT level, broadcast FROM cases").fetchone() == ("yellow", "none")
    assert _cap_chain(conn) == []


def test_a_closed_loop_without_a_cap_sender_refuses_to_start(tiny_site: Site) -> None:
    broadcast = tiny_site.policy.broadcast.model_copy(update={"sender": None})
    policy = tiny_site.policy.model_copy(update={"broadcast": broadcast})
    with pytest.raises(ConfigError, match="policy.broadcast.sender"):
        ClosedLoop(tiny_site.model_copy(update={"policy": policy}))
