"""The closed loop on PostgreSQL: alerts open and regrade cases, callbacks move them, timers
escalate them, and every change writes its audit entry and its outbox messages in one
transaction (the caller's: each function runs inside ``conn.transaction()``).

A case is dispatched to the first department of its kind's route (``Site.departments_for``);
a department that returns it (回退) passes it to the next one, and when none is left the case
waits at 立案 for the desk. A regrade while a broadcast is on air sends a CAP Update that
references every earlier message of the case; an upgrade to red waits for an operator's
approval (``policy.broadcast.approval_required``), a downgrade does not.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from alerts import cap
from alerts.cases import (
    EXTERNAL_ACTIONS,
    TRANSITIONS,
    Action,
    AuditEntry,
    Case,
    IllegalTransition,
    State,
    apply,
    open_case,
    timer_action,
)
from alerts.outbox import enqueue
from alerts.sinks import BROADCAST, DISPATCH
from gridwatch import kinds
from gridwatch.errors import ConfigError
from gridwatch.events import Alert, CaseEvent, Level, Resolution, utcnow
from gridwatch.geo import GridIndex
from gridwatch.site import Site
from gridwatch.store.feedback import mark_incident_false_alarms

log = logging.getLogger(__name__)

# A broadcast is on air from its sending until it is cancelled, whatever the receiver reports.
ON_AIR = frozenset({"sent", "received", "playing", "played", "failed"})
CASE_COLUMNS = (
    "case_id, kind, level, tier, state, seq, opened_at, accept_by, due_at, overdue, closed_at,"
    " department"
)


def case_id_of(alert: Alert) -> str:
    return f"GW-{alert.incident_id.hex[:20]}"


@dataclass
class ClosedLoop:
    site: Site
    clock: Callable[[], datetime] = utcnow
    grid_index: GridIndex = field(init=False)

    def __post_init__(self) -> None:
        if not self.site.policy.broadcast.sender:
            raise ConfigError(
                "policy.broadcast.sender: set the street's CAP sender (its alerting authority's"
                " address) in the site file; without it no broadcast can be made"
            )
        self.grid_index = GridIndex(self.site)

    # -- alerts ---------------------------------------------------------------------------

    def on_alert(self, conn: psycopg.Connection, alert: Alert) -> None:
        now = self.clock()
        row = self._row(conn, "incident_id = %s ORDER BY opened_at DESC LIMIT 1", alert.incident_id)
        if alert.state == "resolved":
            if row is not None:
                self._resolved(conn, _case(row), row, alert, now)
            return
        if row is None:
            self._open(conn, alert, now, case_id_of(alert))
            return
        case = _case(row)
        if alert.level.rank <= case.level.rank:
            return  # a repeat, or a lower colour of an incident already handled higher
        if case.state is State.CLOSED:
            # The hazard worsened after its case was closed: that is new work, not a footnote.
            (count,) = conn.execute(
                "SELECT count(*) FROM cases WHERE incident_id = %s", (alert.incident_id,)
            ).fetchone() or (0,)
            self._open(conn, alert, now, f"{case_id_of(alert)}-{count + 1}")
            return
        case, entry = apply(case, Action.REGRADE, "system", now, level=alert.level)
        self._save(conn, case, entry, alert=alert)
        self._dispatch(conn, case, alert, entry)
        row = self._row(conn, "case_id = %s", case.case_id)
        assert row is not None  # noqa: S101 - locked in this transaction
        if row["broadcast"] in ON_AIR:
            self._regraded_on_air(conn, case, row)
        elif alert.level is Level.RED:
            self._request_broadcast(conn, case, row)

    def _resolved(
        self, conn: psycopg.Connection, case: Case, row: dict[str, Any], alert: Alert, now: datetime
    ) -> None:
        """The case's colour resolved: the incident ended (cancel what is on air), or it was
        graded lower (regrade the case down; an Update, without approval, if on air)."""
        lower = alert.incident_level
        if lower is None:
            if row["broadcast"] in ON_AIR:
                self._broadcast(conn, case, row, "Cancel", "system")
            return
        if alert.level is not case.level or lower.rank >= case.level.rank:
            return  # a lower colour of a regrade already applied, or a redelivery
        if case.state is State.CLOSED:
            return
        case, entry = apply(case, Action.REGRADE, "system", now, level=lower)
        self._save(conn, case, entry, alert=alert)
        self._dispatch(conn, case, alert, entry)
        now_row = self._row(conn, "case_id = %s", case.case_id)
        assert now_row is not None  # noqa: S101 - locked in this transaction
        row = now_row
        if row["approval_pending"] and lower is not Level.RED:
            conn.execute(
                "UPDATE cases SET approval_pending = false, broadcast ="
                " CASE WHEN broadcast = 'pending_approval' THEN 'none' ELSE broadcast END"
                " WHERE case_id = %s",
                (case.case_id,),
            )
            log.info("case %s: no longer red, its broadcast approval is withdrawn", case.case_id)
        if row["broadcast"] in ON_AIR:
            self._broadcast(conn, case, row, "Update", "system")

    def _regraded_on_air(self, conn: psycopg.Connection, case: Case, row: dict[str, Any]) -> None:
        """An upgrade while a broadcast is on air: an Update, after approval if it is to red."""
        if case.level is Level.RED and self.site.policy.broadcast.approval_required:
            conn.execute(
                "UPDATE cases SET approval_pending = true WHERE case_id = %s", (case.case_id,)
            )
            log.warning("case %s: the update to red waits for an operator's approval", case.case_id)
        else:
            self._broadcast(conn, case, row, "Update", "system")

    def _open(self, conn: psycopg.Connection, alert: Alert, now: datetime, case_id: str) -> None:
        limits = self.site.policy.cases
        within = timedelta(hours=limits.close_within_h(alert.kind, alert.level))
        case, received = open_case(case_id, alert.kind, alert.level, now, within)
        conn.execute(
            "INSERT INTO cases (case_id, incident_id, kind, level, tier, state, seq,"
            " community_code, grid_code, opened_at, due_at, drill, alert)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                case.case_id,
                alert.incident_id,
                case.kind.value,
                case.level.value,
                case.tier.value,
                case.state.value,
                case.seq,
                alert.grid_code[:12],
                alert.grid_code,
                case.opened_at,
                case.due_at,
                self.site.policy.broadcast.drill,
                Jsonb(alert.model_dump(mode="json")),
            ),
        )
        _audit(conn, received)
        case, registered = apply(case, Action.REGISTER, "system", now)
        self._save(conn, case, registered)
        route = self.site.departments_for(case.kind)
        case, dispatched = apply(
            case,
            Action.DISPATCH,
            "system",
            now,
            accept_within=self._accept_within(case.level),
            department=route[0] if route else None,
        )
        self._save(conn, case, dispatched)
        self._dispatch(conn, case, alert, dispatched)
        log.info(
            "case %s opened for incident %s (%s)", case.case_id, alert.incident_id, alert.level
        )
        if alert.level is Level.RED:
            self._request_broadcast(conn, case, self._row(conn, "case_id = %s", case.case_id))

    def _accept_within(self, level: Level) -> timedelta:
        return timedelta(minutes=self.site.escalation.accept_minutes[level])

    # -- operators and callbacks ------------------------------------------------------------

    def approve_broadcast(self, conn: psycopg.Connection, case_id: str, actor: str) -> None:
        """An operator approves a red case's broadcast; a second approval re-issues it."""
        row = self._row(conn, "case_id = %s", case_id)
        if row is None:
            raise IllegalTransition(f"no case {case_id}")
        if row["broadcast"] != "pending_approval" and row["broadcast"] not in ON_AIR:
            raise IllegalTransition(f"case {case_id} has no broadcast to approve")
        case, entry = apply(_case(row), Action.APPROVE_BROADCAST, actor, self.clock())
        self._save(conn, case, entry)
        conn.execute("UPDATE cases SET approval_pending = false WHERE case_id = %s", (case_id,))
        self._broadcast(conn, case, row, _approval_type(row), actor)

    def broadcast_preview(self, conn: psycopg.Connection, case_id: str, sent: datetime) -> bytes:
        """The CAP document that approving a waiting broadcast at ``sent`` queues, unsigned (the
        relay signs it as it leaves)."""
        row = self._waiting(conn, case_id)
        case, _ = apply(_case(row), Action.APPROVE_BROADCAST, "preview", sent)
        _earlier, notice = self._next_notice(case, row, _approval_type(row), sent)
        return cap.to_cap(notice)

    def reject_broadcast(
        self, conn: psycopg.Connection, case_id: str, actor: str, reason: str
    ) -> None:
        """An operator refuses a waiting broadcast or update; nothing more goes on air, the
        reason is on record."""
        if not reason.strip():
            raise IllegalTransition(f"case {case_id}: a rejection needs its reason")
        row = self._waiting(conn, case_id)
        case, entry = apply(_case(row), Action.REJECT_BROADCAST, actor, self.clock(), note=reason)
        self._save(conn, case, entry)
        conn.execute(
            "UPDATE cases SET approval_pending = false, broadcast = CASE broadcast"
            " WHEN 'pending_approval' THEN 'rejected' ELSE broadcast END WHERE case_id = %s",
            (case_id,),
        )
        log.info("case %s: broadcast rejected by %s", case_id, actor)

    def _waiting(self, conn: psycopg.Connection, case_id: str) -> dict[str, Any]:
        row = self._row(conn, "case_id = %s", case_id)
        if row is None:
            raise IllegalTransition(f"no case {case_id}")
        if not row["approval_pending"] or row["state"] == State.CLOSED.value:
            raise IllegalTransition(f"case {case_id} has no broadcast waiting for approval")
        return row

    def pending_approvals(self, conn: psycopg.Connection) -> list[str]:
        """The cases whose broadcast, or update to red, waits for an operator."""
        rows = conn.execute(
            "SELECT case_id FROM cases WHERE approval_pending AND state <> 'closed'"
            " ORDER BY opened_at"
        )
        return [case_id for (case_id,) in rows.fetchall()]

    def on_case_event(self, conn: psycopg.Connection, event: CaseEvent) -> AuditEntry | None:
        """Apply a callback; None if it was applied before (a redelivery)."""
        seen = conn.execute("SELECT 1 FROM case_audit WHERE event_id = %s", (event.id,))
        if seen.fetchone() is not None:
            return None
        row = self._row(conn, "case_id = %s", event.case_id)
        if row is None:
            raise IllegalTransition(f"no case {event.case_id}")
        case = _case(row)
        action = _action_of(case.state, event)
        extension = timedelta(hours=self.site.policy.cases.extension_hours)
        case, entry = apply(
            case, action, event.actor, event.ts, note=event.note, extension=extension
        )
        self._save(conn, case, entry, event=event)
        if case.state is State.CLOSED and event.resolution is not None:
            self._resolve(conn, case, row["incident_id"], event)
        if action is Action.RETURN:
            self._redispatch(conn, case, row, event)
        if case.state is State.CLOSED and row["broadcast"] in ON_AIR:
            self._broadcast(conn, case, row, "Cancel", event.actor)
        if action is Action.BROADCAST_STATE:
            conn.execute(
                "UPDATE cases SET broadcast = %s WHERE case_id = %s AND broadcast <> 'cancelled'",
                (event.to_state, case.case_id),
            )
        return entry

    def _resolve(
        self, conn: psycopg.Connection, case: Case, incident_id: UUID, event: CaseEvent
    ) -> None:
        """Record how the case ended; closed as 误报, its camera detections are false alarms."""
        assert event.resolution is not None  # noqa: S101 - the caller checked
        conn.execute(
            "UPDATE cases SET resolution = %s WHERE case_id = %s",
            (event.resolution.value, case.case_id),
        )
        if event.resolution is Resolution.FALSE_ALARM:
            marked = mark_incident_false_alarms(
                conn,
                incident_id=incident_id,
                operator=event.actor,
                reason=event.note or "误报",
                case_id=case.case_id,
            )
            log.info(
                "case %s closed as a false alarm: %d detections marked", case.case_id, len(marked)
            )

    def _redispatch(
        self, conn: psycopg.Connection, case: Case, row: dict[str, Any], event: CaseEvent
    ) -> None:
        """回退: the next department of the route takes the case; with none left, the desk."""
        alert = Alert.model_validate(row["alert"])
        returned_by = case.department
        following = next_department(self.site.departments_for(case.kind), returned_by)
        if following is None:
            case, entry = apply(
                case, Action.TO_DESK, "system", event.ts, note=f"returned by {returned_by}"
            )
            self._save(conn, case, entry)
            self._dispatch(conn, case, alert, entry)
            log.warning("case %s: returned by every department, back to the desk", case.case_id)
            return
        case, entry = apply(
            case,
            Action.DISPATCH,
            "system",
            event.ts,
            note=f"returned by {returned_by}",
            accept_within=self._accept_within(case.level),
            department=following,
        )
        self._save(conn, case, entry)
        self._dispatch(conn, case, alert, entry)
        log.info("case %s: returned by %s, dispatched to %s", case.case_id, returned_by, following)

    # -- timers -----------------------------------------------------------------------------

    def run_timers(self, conn: psycopg.Connection) -> list[AuditEntry]:
        """Escalate unaccepted dispatches and mark overdue cases, as of the clock's now."""
        now = self.clock()
        rows = conn.execute(
            f"SELECT {CASE_COLUMNS}, alert FROM cases WHERE state NOT IN ('closed', 'parked')"  # noqa: S608
            " AND ((accept_by <= %s AND state = 'dispatched') OR (due_at <= %s AND NOT overdue))"
            " ORDER BY case_id FOR UPDATE SKIP LOCKED",
            (now, now),
        )
        entries = []
        for row in rows.fetchall():
            case = Case.model_validate(dict(zip(CASE_COLUMNS.split(", "), row[:-1], strict=True)))
            action = timer_action(case, now)
            if action is None:
                continue
            case, entry = apply(
                case, action, "timer", now, accept_within=self._accept_within(case.level.raised())
            )
            self._save(conn, case, entry)
            if action is Action.ESCALATE:
                self._dispatch(conn, case, Alert.model_validate(row[-1]), entry)
                log.warning("case %s escalated to %s", case.case_id, case.tier)
            entries.append(entry)
        return entries

    # -- persistence and messages -------------------------------------------------------------

    def _row(self, conn: psycopg.Connection, where: str, value: Any) -> dict[str, Any] | None:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(f"SELECT * FROM cases WHERE {where} FOR UPDATE", (value,))  # noqa: S608
            return cur.fetchone()

    def _save(
        self,
        conn: psycopg.Connection,
        case: Case,
        entry: AuditEntry,
        *,
        alert: Alert | None = None,
        event: CaseEvent | None = None,
    ) -> None:
        conn.execute(
            "UPDATE cases SET level = %s, tier = %s, state = %s, seq = %s, accept_by = %s,"
            " due_at = %s, overdue = %s, closed_at = %s, department = %s,"
            " updated_at = clock_timestamp(), alert = coalesce(%s, alert) WHERE case_id = %s",
            (
                case.level.value,
                case.tier.value,
                case.state.value,
                case.seq,
                case.accept_by,
                case.due_at,
                case.overdue,
                case.closed_at,
                case.department,
                Jsonb(alert.model_dump(mode="json")) if alert else None,
                case.case_id,
            ),
        )
        _audit(conn, entry, event.id if event else None)

    def _dispatch(
        self, conn: psycopg.Connection, case: Case, alert: Alert, entry: AuditEntry
    ) -> None:
        body = {
            "case_id": case.case_id,
            "seq": entry.seq,
            "action": entry.action.value,
            "kind": case.kind.value,
            "level": case.level.value,
            "tier": case.tier.value,
            "department": case.department,
            "summary": _summary(case, alert),
            "grid_code": alert.grid_code,
            "community_code": alert.grid_code[:12],
            "location": alert.location.model_dump(),
            "targets": [t.model_dump() for t in alert.targets],
            "reasons": list(alert.reasons),
            "accept_by": case.accept_by.isoformat() if case.accept_by else None,
            "due_at": case.due_at.isoformat(),
            "drill": self.site.policy.broadcast.drill,
        }
        enqueue(
            conn,
            DISPATCH,
            f"{case.case_id}:{entry.seq}",
            "application/json",
            json.dumps(body, ensure_ascii=False).encode(),
            case.case_id,
        )

    def _request_broadcast(
        self, conn: psycopg.Connection, case: Case, row: dict[str, Any] | None
    ) -> None:
        if row is None or row["broadcast"] != "none":
            return
        if self.site.policy.broadcast.approval_required:
            conn.execute(
                "UPDATE cases SET broadcast = 'pending_approval', approval_pending = true"
                " WHERE case_id = %s",
                (case.case_id,),
            )
            log.warning("case %s: red broadcast waits for an operator's approval", case.case_id)
        else:
            self._broadcast(conn, case, row, "Alert", "policy")

    def _broadcast(
        self,
        conn: psycopg.Connection,
        case: Case,
        row: dict[str, Any],
        msg_type: cap.MsgType,
        actor: str,
    ) -> None:
        """Queue the CAP document and its EBM twin at the case's colour; an Update or a Cancel
        references every message of the case before it (``cases.broadcast_refs``)."""
        now = self.clock()
        earlier, notice = self._next_notice(case, row, msg_type, now)
        conn.execute(
            "UPDATE cases SET broadcast = %s, broadcast_at = coalesce(broadcast_at, %s),"
            " broadcast_level = %s, broadcast_refs = %s WHERE case_id = %s",
            (
                "cancelled" if msg_type == "Cancel" else "sent",
                now,
                case.level.value,
                Jsonb([*earlier, notice.reference]),
                case.case_id,
            ),
        )
        for content_type, body in (
            (cap.CAP_CONTENT_TYPE, cap.to_cap(notice)),
            (cap.EBM_CONTENT_TYPE, cap.to_ebm(notice)),
        ):
            fmt = "cap" if content_type == cap.CAP_CONTENT_TYPE else "ebm"
            enqueue(conn, BROADCAST, f"{notice.identifier}:{fmt}", content_type, body, case.case_id)
        log.info(
            "case %s: broadcast %s (%s) queued by %s", case.case_id, msg_type, case.level, actor
        )

    def _next_notice(
        self, case: Case, row: dict[str, Any], msg_type: cap.MsgType, now: datetime
    ) -> tuple[tuple[str, ...], cap.Notice]:
        """The case's next message and the references of those before it (an Alert has none)."""
        earlier: tuple[str, ...] = tuple(row["broadcast_refs"]) if msg_type != "Alert" else ()
        suffix = {"Alert": "alert", "Update": f"update.{case.seq}", "Cancel": "cancel"}[msg_type]
        return earlier, self._notice(case, row, msg_type, f"{case.case_id}.{suffix}", now, earlier)

    def _notice(
        self,
        case: Case,
        row: dict[str, Any],
        msg_type: cap.MsgType,
        identifier: str,
        sent: datetime,
        references: tuple[str, ...],
    ) -> cap.Notice:
        alert = Alert.model_validate(row["alert"])
        policy = self.site.policy.broadcast
        assert policy.sender is not None  # noqa: S101 - checked when the loop was made
        polygon = self.grid_index.grid_polygon(alert.grid_code)
        ring = tuple((x, y) for x, y in polygon.convex_hull.exterior.coords[:-1])
        street = self.site.street
        return cap.Notice(
            identifier=identifier,
            sender=policy.sender,
            sent=sent,
            msg_type=msg_type,
            drill=bool(row["drill"]),
            kind=case.kind,
            level=case.level,
            area=kinds.Text(
                f"{street.name}网格 {alert.grid_code}",
                f"grid {alert.grid_code} of street {street.code}",
            ),
            reasons=alert.reasons,
            location=alert.location,
            radius_km=policy.radius_km,
            polygon=ring,
            grid_code=alert.grid_code,
            community_code=alert.grid_code[:12],
            expires=sent + timedelta(hours=policy.expires_hours),
            references=references,
            timezone=self.site.street.timezone,
        )


def next_department(route: tuple[str, ...], current: str | None) -> str | None:
    """The department after ``current`` in ``route``; None when none is left (or ``current``
    is not on the route any more: the site changed, so the desk decides)."""
    if current not in route:
        return None
    at = route.index(current)
    return route[at + 1] if at + 1 < len(route) else None


def _summary(case: Case, alert: Alert) -> str:
    """The alert's summary, or the case's own words when the case is at another colour."""
    if alert.level is case.level and alert.state == "firing":
        return alert.summary
    return kinds.warning_summary(case.kind, case.level, alert.grid_code, resolved=False)


def _approval_type(row: dict[str, Any]) -> cap.MsgType:
    """An approval puts the first message on air, or updates the one already there."""
    return "Update" if row["broadcast"] in ON_AIR else "Alert"


def _case(row: dict[str, Any]) -> Case:
    return Case.model_validate({k: row[k] for k in CASE_COLUMNS.split(", ")})


def _audit(conn: psycopg.Connection, entry: AuditEntry, event_id: Any = None) -> None:
    conn.execute(
        "INSERT INTO case_audit (case_id, seq, action, from_state, to_state, actor, ts, tier,"
        " level, due_at, note, event_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            entry.case_id,
            entry.seq,
            entry.action.value,
            entry.from_state.value if entry.from_state else None,
            entry.to_state.value,
            entry.actor,
            entry.ts,
            entry.tier.value,
            entry.level.value,
            entry.due_at,
            entry.note,
            event_id,
        ),
    )


def _action_of(state: State, event: CaseEvent) -> Action:
    """The callback's action, or the one external action that leads to its reported state."""
    if event.action is not None:
        try:
            action = Action(event.action)
        except ValueError as err:
            raise IllegalTransition(f"unknown action {event.action!r}") from err
        if action not in EXTERNAL_ACTIONS:
            raise IllegalTransition(f"{action.value} is not an action a callback may take")
        return action
    for (source, action), target in TRANSITIONS.items():
        if source is state and target.value == event.to_state and action in EXTERNAL_ACTIONS:
            return action
    raise IllegalTransition(
        f"case {event.case_id}: no way from {state.value} to {event.to_state!r}"
    )


def load_audit(conn: psycopg.Connection) -> list[AuditEntry]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT case_id, seq, action, from_state, to_state, actor, ts, tier, level, due_at,"
            " note FROM case_audit ORDER BY case_id, seq"
        )
        return [AuditEntry.model_validate(r) for r in cur.fetchall()]
