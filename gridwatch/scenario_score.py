"""A run scored against its scenario's ground truth (``gridwatch eval scenario``).

Each event is matched to the nearest unmatched incident of its expected kind within its
``within_m``; that event is detected, and the score says whether the incident reached the
expected colour (and had the expected sources), how far it was from the event's place, and how
long after the event started its first alert was stored. An incident matched to no event is a
false incident. The incidents come from a run's database or from its summary (the demo's
``--summary-json``), in the form ``gridwatch.store.summary.incident_list`` gives.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import Field

from gridwatch.events import IncidentKind, Level, Model, Point
from gridwatch.geo import LocalProjection
from gridwatch.scenario import Scenario, place_point
from gridwatch.site import Site


class RunIncident(Model):
    """An incident of a run, as the run's summary lists it."""

    kind: IncidentKind
    level: Level
    lon: float
    lat: float
    sources: int | None = None
    first_alert_s: float | None = Field(
        default=None, description="from the run's first reading to the incident's first alert"
    )


class EventScore(Model):
    event: str
    expected: IncidentKind
    detected: bool
    level: Level | None = None
    level_ok: bool = False
    sources: int | None = None
    sources_ok: bool = False
    location_error_m: float | None = None
    time_to_first_alert_s: float | None = None


class ScenarioScore(Model):
    scenario: str
    events: tuple[EventScore, ...]
    false_incidents: tuple[RunIncident, ...]

    @property
    def detected(self) -> int:
        return sum(e.detected for e in self.events)

    @property
    def missed(self) -> int:
        return len(self.events) - self.detected

    @property
    def passed(self) -> bool:
        """Every event detected at its colour with its sources, and no false incident."""
        right = all(e.detected and e.level_ok and e.sources_ok for e in self.events)
        return right and not self.false_incidents

    def report(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "events": len(self.events),
            "detected": self.detected,
            "missed": self.missed,
            "false_incidents": len(self.false_incidents),
            "passed": self.passed,
            "per_event": [e.model_dump(mode="json") for e in self.events],
            "false_incident_list": [i.model_dump(mode="json") for i in self.false_incidents],
        }


def _distance_m(a: Point, lon: float, lat: float) -> float:
    x, y = LocalProjection(a).xy(Point(lon=lon, lat=lat))
    return math.hypot(x, y)


def score(scenario: Scenario, site: Site, incidents: list[RunIncident]) -> ScenarioScore:
    unmatched = list(incidents)
    events = []
    for event in scenario.events:
        expect = event.expect
        where = place_point(site, event.place)
        candidates = [
            (_distance_m(where, i.lon, i.lat), n)
            for n, i in enumerate(unmatched)
            if i.kind is expect.incident
        ]
        near = [(d, n) for d, n in candidates if d <= expect.within_m]
        if not near:
            events.append(EventScore(event=event.name, expected=expect.incident, detected=False))
            continue
        distance, n = min(near)
        found = unmatched.pop(n)
        alert_after = (
            None if found.first_alert_s is None else round(found.first_alert_s - event.start, 2)
        )
        events.append(
            EventScore(
                event=event.name,
                expected=expect.incident,
                detected=True,
                level=found.level,
                level_ok=found.level is expect.level,
                sources=found.sources,
                sources_ok=expect.sources is None or found.sources == expect.sources,
                location_error_m=round(distance, 1),
                time_to_first_alert_s=alert_after,
            )
        )
    return ScenarioScore(
        scenario=scenario.name, events=tuple(events), false_incidents=tuple(unmatched)
    )


def run_incidents(listed: list[dict[str, Any]]) -> list[RunIncident]:
    """A summary's ``incident_list`` as run incidents (other keys of each entry ignored)."""
    fields = set(RunIncident.model_fields)
    return [RunIncident.model_validate({k: v for k, v in i.items() if k in fields}) for i in listed]
