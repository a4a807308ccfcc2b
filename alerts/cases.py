"""The case closed loop (数字城管): 受理 → 立案 → 派遣 → 签收 → 处置 → 反馈 → 核查 → 结案.

Pure logic: a transition table, a frozen ``Case`` and ``apply``, which returns the next case
and the audit entry to append, or raises ``IllegalTransition``. Side exits: 回退 (a department
returns the case, it goes back to 立案 and on to the next department of its route, or to the
desk when none is left), 返工 (verification fails, back to
处置), 延期 (deadline extended), 挂账 (parked, its timers stop) and 恢复, plus the timers'
超期 (overdue) and 升级 (escalation one tier up when nobody accepts in time).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import AwareDatetime

from gridwatch.errors import PayloadError
from gridwatch.events import IncidentKind, Level, Model


class State(StrEnum):
    RECEIVED = "received"  # 受理
    REGISTERED = "registered"  # 立案
    DISPATCHED = "dispatched"  # 派遣
    ACCEPTED = "accepted"  # 签收
    HANDLING = "handling"  # 处置
    REPORTED = "reported"  # 反馈
    VERIFIED = "verified"  # 核查
    CLOSED = "closed"  # 结案
    PARKED = "parked"  # 挂账


class Action(StrEnum):
    RECEIVE = "receive"
    REGISTER = "register"
    DISPATCH = "dispatch"
    ACCEPT = "accept"
    HANDLE = "handle"
    REPORT = "report"
    VERIFY = "verify"
    CLOSE = "close"
    RETURN = "return"  # 回退
    REWORK = "rework"  # 返工
    EXTEND = "extend"  # 延期
    PARK = "park"  # 挂账
    RESUME = "resume"
    OVERDUE = "overdue"  # 超期
    ESCALATE = "escalate"  # 升级
    REGRADE = "regrade"  # the incident's colour changed
    TO_DESK = "to_desk"  # returned by every department of its route: the desk decides
    APPROVE_BROADCAST = "approve_broadcast"
    REJECT_BROADCAST = "reject_broadcast"  # an operator refuses it, with the reason as note
    BROADCAST_STATE = "broadcast_state"  # the broadcast system's feedback


# What an outside system may do through a callback; the rest is gridwatch's own doing.
EXTERNAL_ACTIONS = frozenset(
    {
        Action.ACCEPT,
        Action.HANDLE,
        Action.REPORT,
        Action.VERIFY,
        Action.CLOSE,
        Action.RETURN,
        Action.REWORK,
        Action.EXTEND,
        Action.PARK,
        Action.RESUME,
        Action.BROADCAST_STATE,
    }
)


class Tier(StrEnum):
    """Who holds the case; escalation moves it one step up (网格吹哨、部门报到)."""

    GRID_WORKER = "grid_worker"
    COMMUNITY = "community"
    STREET = "street"

    @property
    def rank(self) -> int:
        return list(Tier).index(self)

    def up(self) -> Tier:
        order = list(Tier)
        return order[min(self.rank + 1, len(order) - 1)]


LABEL = {
    State.RECEIVED: "受理",
    State.REGISTERED: "立案",
    State.DISPATCHED: "派遣",
    State.ACCEPTED: "签收",
    State.HANDLING: "处置",
    State.REPORTED: "反馈",
    State.VERIFIED: "核查",
    State.CLOSED: "结案",
    State.PARKED: "挂账",
}
TIER_OF_LEVEL = {
    Level.YELLOW: Tier.GRID_WORKER,
    Level.ORANGE: Tier.COMMUNITY,
    Level.RED: Tier.STREET,
}

OPEN = frozenset(State) - {State.CLOSED}
# The main line, in order: a closed case's audit trail passes through each of these.
MAIN_LINE = (
    State.RECEIVED,
    State.REGISTERED,
    State.DISPATCHED,
    State.ACCEPTED,
    State.HANDLING,
    State.REPORTED,
    State.VERIFIED,
    State.CLOSED,
)

# (from, action) → to. ``None`` as from is a case that does not exist yet.
TRANSITIONS: dict[tuple[State | None, Action], State] = {
    (None, Action.RECEIVE): State.RECEIVED,
    (State.RECEIVED, Action.REGISTER): State.REGISTERED,
    (State.REGISTERED, Action.DISPATCH): State.DISPATCHED,
    (State.DISPATCHED, Action.ACCEPT): State.ACCEPTED,
    (State.ACCEPTED, Action.HANDLE): State.HANDLING,
    (State.HANDLING, Action.REPORT): State.REPORTED,
    (State.REPORTED, Action.VERIFY): State.VERIFIED,
    (State.VERIFIED, Action.CLOSE): State.CLOSED,
    (State.DISPATCHED, Action.RETURN): State.REGISTERED,
    (State.ACCEPTED, Action.RETURN): State.REGISTERED,
    (State.REGISTERED, Action.TO_DESK): State.REGISTERED,
    (State.REPORTED, Action.REWORK): State.HANDLING,
    (State.HANDLING, Action.PARK): State.PARKED,
    (State.PARKED, Action.RESUME): State.HANDLING,
    **{(s, Action.EXTEND): s for s in (State.ACCEPTED, State.HANDLING)},
    **{(s, Action.OVERDUE): s for s in OPEN - {State.PARKED}},
    (State.DISPATCHED, Action.ESCALATE): State.DISPATCHED,
    **{(s, Action.REGRADE): s for s in OPEN},
    **{(s, Action.APPROVE_BROADCAST): s for s in OPEN},
    **{(s, Action.REJECT_BROADCAST): s for s in OPEN},
    **{(s, Action.BROADCAST_STATE): s for s in State},
}


class IllegalTransition(PayloadError):
    """An action the case's state does not allow; the message names both. A callback that
    asks for one is refused like any other bad message."""


class Case(Model):
    case_id: str
    kind: IncidentKind
    level: Level
    tier: Tier
    state: State
    seq: int  # of the last audit entry
    opened_at: AwareDatetime
    accept_by: AwareDatetime | None = None
    due_at: AwareDatetime
    overdue: bool = False
    closed_at: AwareDatetime | None = None
    department: str | None = None  # the department it is dispatched to; None: no department


class AuditEntry(Model):
    """One line of the append-only audit log; the KPIs are computed from these alone."""

    case_id: str
    seq: int
    action: Action
    from_state: State | None
    to_state: State
    actor: str
    ts: AwareDatetime
    tier: Tier
    level: Level
    due_at: AwareDatetime
    note: str = ""


def open_case(
    case_id: str,
    kind: IncidentKind,
    level: Level,
    now: datetime,
    close_within: timedelta,
    actor: str = "system",
) -> tuple[Case, AuditEntry]:
    """受理: a case starts received, with its deadline already set by kind and level."""
    case = Case(
        case_id=case_id,
        kind=kind,
        level=level,
        tier=TIER_OF_LEVEL[level],
        state=State.RECEIVED,
        seq=0,
        opened_at=now,
        due_at=now + close_within,
    )
    return case, _entry(case, Action.RECEIVE, None, actor, now, "")


def apply(
    case: Case,
    action: Action,
    actor: str,
    now: datetime,
    *,
    note: str = "",
    accept_within: timedelta | None = None,
    extension: timedelta | None = None,
    level: Level | None = None,
    department: str | None = None,
) -> tuple[Case, AuditEntry]:
    """The case after ``action`` and its audit entry; ``IllegalTransition`` if not allowed.

    ``accept_within`` arms the acceptance timer on dispatch and escalation, ``extension`` is what
    延期 adds, ``level`` the new colour of 升级 and regrade, ``department`` whom 派遣 sends it to.
    """
    target = TRANSITIONS.get((case.state, action))
    if target is None:
        allowed = sorted(a.value for (s, a) in TRANSITIONS if s is case.state)
        raise IllegalTransition(
            f"case {case.case_id}: cannot {action.value} in state {case.state.value} "
            f"({LABEL[case.state]}); allowed: {', '.join(allowed)}"
        )
    update: dict[str, object] = {"state": target, "seq": case.seq + 1}
    if action in (Action.DISPATCH, Action.ESCALATE):
        update["accept_by"] = now + accept_within if accept_within else None
    if action is Action.DISPATCH:
        update["department"] = department
    if action is Action.TO_DESK:
        update["department"] = None
    if action is Action.ACCEPT or action is Action.RETURN:
        update["accept_by"] = None
    if action is Action.ESCALATE:
        update["tier"] = case.tier.up()
        update["level"] = level or case.level.raised()
    if action is Action.REGRADE and level is not None:
        update["level"] = level
        if TIER_OF_LEVEL[level].rank > case.tier.rank:
            update["tier"] = TIER_OF_LEVEL[level]
    if action is Action.EXTEND:
        if extension is None:
            raise IllegalTransition(f"case {case.case_id}: an extension needs its length")
        update["due_at"] = case.due_at + extension
        update["overdue"] = False
    if action is Action.OVERDUE:
        update["overdue"] = True
    if target is State.CLOSED:
        update["closed_at"] = now
    after = case.model_copy(update=update)
    return after, _entry(after, action, case.state, actor, now, note)


def _entry(
    case: Case, action: Action, before: State | None, actor: str, now: datetime, note: str
) -> AuditEntry:
    return AuditEntry(
        case_id=case.case_id,
        seq=case.seq,
        action=action,
        from_state=before,
        to_state=case.state,
        actor=actor,
        ts=now,
        tier=case.tier,
        level=case.level,
        due_at=case.due_at,
        note=note,
    )


def timer_action(case: Case, now: datetime) -> Action | None:
    """What the clock does to a case now: escalate an unaccepted dispatch, or mark it overdue.

    A parked case's clock is stopped; the street tier is the top, so there it only goes overdue.
    """
    if case.state is State.DISPATCHED and case.accept_by is not None and now >= case.accept_by:
        if case.tier is not Tier.STREET:
            return Action.ESCALATE
    if case.state in OPEN - {State.PARKED} and not case.overdue and now >= case.due_at:
        return Action.OVERDUE
    return None
