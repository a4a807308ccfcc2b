"""The case state machine: property-based (no sequence of actions reaches an illegal state, every
closed case has a complete audit trail) plus the timers on a fake clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alerts.cases import (
    MAIN_LINE,
    TRANSITIONS,
    Action,
    AuditEntry,
    Case,
    IllegalTransition,
    State,
    Tier,
    apply,
    open_case,
    timer_action,
)
from gridwatch.events import IncidentKind, Level

T0 = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)
HAPPY = (
    Action.REGISTER,
    Action.DISPATCH,
    Action.ACCEPT,
    Action.HANDLE,
    Action.REPORT,
    Action.VERIFY,
    Action.CLOSE,
)


def new_case(level: Level = Level.YELLOW) -> tuple[Case, AuditEntry]:
    return open_case("C1", IncidentKind.FLOOD, level, T0, timedelta(hours=4))


def run(actions: list[Action], case: Case, trail: list[AuditEntry]) -> Case:
    now = T0
    for action in actions:
        now += timedelta(minutes=1)
        try:
            case, entry = apply(
                case,
                action,
                "tester",
                now,
                accept_within=timedelta(minutes=5),
                extension=timedelta(hours=1),
            )
        except IllegalTransition:
            continue
        trail.append(entry)
    return case


def assert_consistent_trail(trail: list[AuditEntry], case: Case) -> None:
    assert [e.seq for e in trail] == list(range(len(trail)))
    assert trail[0].from_state is None and trail[0].action is Action.RECEIVE
    for before, after in zip(trail, trail[1:], strict=False):
        assert after.from_state is before.to_state
        assert TRANSITIONS[(after.from_state, after.action)] is after.to_state
    assert trail[-1].to_state is case.state and case.seq == trail[-1].seq


# Kafka clients left running by other tests draw from the global `random` in their threads;
# Hypothesis would take that for this test's own nondeterminism.
THREADS_USE_RANDOM = pytest.mark.filterwarnings(
    "ignore::hypothesis.errors.HypothesisDeprecationWarning"
)


@THREADS_USE_RANDOM
@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list(Action)), max_size=40))
def test_no_sequence_reaches_an_illegal_state(actions: list[Action]) -> None:
    case, first = new_case()
    trail = [first]
    case = run(actions, case, trail)
    assert case.state in State
    assert_consistent_trail(trail, case)
    if case.state is State.CLOSED:
        # A complete trail: the main line in order, with side exits in between.
        states = [e.to_state for e in trail]
        positions = [states.index(s) for s in MAIN_LINE]
        assert positions == sorted(positions)
        assert case.closed_at == trail[-1].ts
    else:
        assert case.closed_at is None


@THREADS_USE_RANDOM
@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(list(Action)), max_size=30))
def test_the_happy_path_closes_from_anywhere_reachable(actions: list[Action]) -> None:
    case, first = new_case()
    case = run(actions, case, [first])
    assert case.state is not State.CLOSED or case.closed_at is not None


def test_illegal_transition_names_state_and_allowed_actions() -> None:
    case, _ = new_case()
    with pytest.raises(IllegalTransition, match=r"cannot close in state received \(受理\)"):
        apply(case, Action.CLOSE, "x", T0)


def test_happy_path_with_rework_extension_and_parking() -> None:
    case, first = new_case()
    trail = [first]
    actions = [*HAPPY[:5], Action.REWORK, Action.PARK, Action.RESUME, Action.EXTEND]
    case = run([*actions, Action.REPORT, Action.VERIFY, Action.CLOSE], case, trail)
    assert case.state is State.CLOSED
    assert [e.action for e in trail].count(Action.REWORK) == 1
    assert case.due_at == T0 + timedelta(hours=5)  # 4 h limit + 1 h extension


def test_escalation_on_timeout_with_a_fake_clock() -> None:
    case, _ = new_case(Level.YELLOW)
    case, _ = apply(case, Action.REGISTER, "system", T0)
    case, _ = apply(case, Action.DISPATCH, "system", T0, accept_within=timedelta(minutes=30))
    assert case.tier is Tier.GRID_WORKER
    assert timer_action(case, T0 + timedelta(minutes=29)) is None
    now = T0 + timedelta(minutes=30)
    assert timer_action(case, now) is Action.ESCALATE
    case, entry = apply(case, Action.ESCALATE, "timer", now, accept_within=timedelta(minutes=15))
    assert (case.tier, case.level, entry.from_state) == (
        Tier.COMMUNITY,
        Level.ORANGE,
        State.DISPATCHED,
    )
    now += timedelta(minutes=15)
    case, _ = apply(case, Action.ESCALATE, "timer", now, accept_within=timedelta(minutes=5))
    assert (case.tier, case.level) == (Tier.STREET, Level.RED)
    # The street is the top: from there the clock only marks the case overdue.
    assert timer_action(case, now + timedelta(minutes=10)) is None
    assert timer_action(case, T0 + timedelta(hours=4)) is Action.OVERDUE
    case, _ = apply(case, Action.OVERDUE, "timer", T0 + timedelta(hours=4))
    assert case.overdue and timer_action(case, T0 + timedelta(hours=5)) is None


def test_a_parked_case_stops_its_clock() -> None:
    case, first = new_case()
    case = run([*HAPPY[:4], Action.PARK], case, [first])
    assert case.state is State.PARKED
    assert timer_action(case, T0 + timedelta(days=30)) is None


def test_a_returned_case_is_dispatched_anew_or_goes_to_the_desk() -> None:
    from alerts.closed_loop import next_department

    case, _ = new_case()
    case, _ = apply(case, Action.REGISTER, "system", T0)
    case, _ = apply(case, Action.DISPATCH, "system", T0, department="water")
    assert case.department == "water"
    case, _ = apply(case, Action.RETURN, "water", T0)
    assert case.state is State.REGISTERED and case.department == "water"  # who returned it
    route = ("water", "emergency")
    assert next_department(route, case.department) == "emergency"
    assert next_department(route, "emergency") is None
    assert next_department(route, "gone") is None  # a department no longer on the route
    case, entry = apply(case, Action.TO_DESK, "system", T0)
    assert (case.state, case.department, case.accept_by) == (State.REGISTERED, None, None)
    with pytest.raises(IllegalTransition, match="cannot to_desk in state dispatched"):
        dispatched, _ = apply(case, Action.DISPATCH, "desk", T0, department="water")
        apply(dispatched, Action.TO_DESK, "system", T0)
