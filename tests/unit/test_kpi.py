"""KPIs from the audit log, by their published definitions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from alerts.cases import Action, AuditEntry, Case, apply, open_case
from alerts.kpi import compute
from gridwatch.events import IncidentKind, Level
from tests.unit.test_cases import HAPPY

T0 = datetime(2026, 6, 1, tzinfo=UTC)
LIMIT = timedelta(hours=24)


def trail(n: int, close_after: timedelta | None, *, rework: bool = False) -> list[AuditEntry]:
    """One case's audit log: opened on day n, closed ``close_after`` later (or left open)."""
    opened = T0 + timedelta(days=n % 28, minutes=n)
    case: Case
    case, first = open_case(f"C{n}", IncidentKind.FLOOD, Level.YELLOW, opened, LIMIT)
    entries = [first]
    actions = HAPPY if close_after is not None else HAPPY[:3]
    if rework:
        actions = (*HAPPY[:5], Action.REWORK, Action.REPORT, *HAPPY[5:])
    step = (close_after or timedelta(hours=1)) / len(actions)
    for i, action in enumerate(actions, start=1):
        case, entry = apply(
            case, action, "t", opened + step * i, accept_within=timedelta(minutes=30)
        )
        entries.append(entry)
    return entries


def test_reproduces_the_published_closure_and_on_time_rates() -> None:
    """972 cases due, 911 closed, 737 of them on time → 结案率 93.72 %, 按期结案率 75.82 %."""
    entries: list[AuditEntry] = []
    for n in range(972):
        if n < 737:
            entries += trail(n, timedelta(hours=20))  # within the 24 h limit
        elif n < 911:
            entries += trail(n, timedelta(hours=30))  # closed late
        else:
            entries += trail(n, None)  # still open, past its deadline
    kpis = compute(entries, as_of=T0 + timedelta(days=60))
    assert (kpis.due, kpis.closed, kpis.closed_on_time) == (972, 911, 737)
    assert kpis.closure_rate == 93.72
    assert kpis.on_time_rate == 75.82


def test_rework_rate_community_share_and_mean_times() -> None:
    entries = trail(0, timedelta(hours=7)) + trail(1, timedelta(hours=9), rework=True)
    kpis = compute(entries, as_of=T0 + timedelta(days=60))
    assert kpis.rework_rate == 50.0
    assert kpis.community_share == 100.0  # yellow cases stay with the grid worker
    assert kpis.mean_close_s == 8 * 3600.0
    assert kpis.mean_accept_s is not None and kpis.mean_accept_s > 0


def test_an_open_case_not_yet_due_is_not_counted() -> None:
    kpis = compute(trail(0, None), as_of=T0)
    assert (kpis.due, kpis.closure_rate) == (0, None)
