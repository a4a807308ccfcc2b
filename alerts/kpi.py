"""Closed-loop KPIs, computed from the audit log alone (so they can be recomputed for any day).

Definitions (数字城管 assessment):
- 应结案数 (due): cases whose deadline has passed by ``as_of``, plus cases already closed;
- 结案率 = closed / due; 按期结案率 = closed by their (extended) deadline / due;
- 返工率 = closed cases reworked at least once / closed;
- share closed within the community: closed cases never held above the community tier;
- mean time to accept: first dispatch → first acceptance; mean time to close: 受理 → 结案.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from statistics import fmean

from alerts.cases import Action, AuditEntry, State, Tier


@dataclass(frozen=True)
class Kpis:
    due: int
    closed: int
    closed_on_time: int
    closure_rate: float | None  # 结案率, percent
    on_time_rate: float | None  # 按期结案率, percent
    rework_rate: float | None  # 返工率, percent
    community_share: float | None  # percent of closed cases resolved within the community
    mean_accept_s: float | None
    mean_close_s: float | None

    def as_dict(self) -> dict[str, float | int | None]:
        return dict(self.__dict__)


def _percent(part: int, whole: int) -> float | None:
    return round(100 * part / whole, 2) if whole else None


def _mean(values: list[float]) -> float | None:
    return round(fmean(values), 1) if values else None


def compute(entries: Iterable[AuditEntry], as_of: datetime) -> Kpis:
    trails: dict[str, list[AuditEntry]] = defaultdict(list)
    for entry in entries:
        trails[entry.case_id].append(entry)
    due = closed = on_time = reworked = in_community = 0
    accept_s: list[float] = []
    close_s: list[float] = []
    for trail in trails.values():
        trail.sort(key=lambda e: e.seq)
        last = trail[-1]
        closing = next((e for e in trail if e.to_state is State.CLOSED), None)
        first = {a: next((e for e in trail if e.action is a), None) for a in Action}
        dispatch, accept = first[Action.DISPATCH], first[Action.ACCEPT]
        if dispatch is not None and accept is not None:
            accept_s.append((accept.ts - dispatch.ts).total_seconds())
        if closing is None:
            due += last.due_at <= as_of
            continue
        due += 1
        closed += 1
        on_time += closing.ts <= closing.due_at
        reworked += first[Action.REWORK] is not None
        in_community += all(e.tier is not Tier.STREET for e in trail)
        close_s.append((closing.ts - trail[0].ts).total_seconds())
    return Kpis(
        due=due,
        closed=closed,
        closed_on_time=on_time,
        closure_rate=_percent(closed, due),
        on_time_rate=_percent(on_time, due),
        rework_rate=_percent(reworked, closed),
        community_share=_percent(in_community, closed),
        mean_accept_s=_mean(accept_s),
        mean_close_s=_mean(close_s),
    )
