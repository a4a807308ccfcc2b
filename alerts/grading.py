"""Three-colour grading (三色预警) of an incident, and who each colour goes to (DESIGN.md §5).

Start from the severity the detections observed; corroboration by independent sources and a
sensitive zone (school, dense housing, forest for a fire) each raise one level, capped at red.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from shapely import Point as ShapelyPoint
from shapely import Polygon, STRtree

from gridwatch.events import Incident, IncidentKind, Level, Target
from gridwatch.site import Site

CORROBORATION_SOURCES = 2
SENSITIVE: dict[str, frozenset[IncidentKind]] = {
    "school": frozenset(IncidentKind),
    "dense_housing": frozenset(IncidentKind),
    "forest": frozenset({IncidentKind.FOREST_FIRE}),
}


@dataclass(frozen=True)
class Grade:
    level: Level
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Grader:
    site: Site

    @cached_property
    def _zones(self) -> tuple[STRtree, list[tuple[str, str]]]:
        zones = [z for z in self.site.zones if z.kind in SENSITIVE]
        return STRtree([Polygon(z.polygon) for z in zones]), [(z.kind, z.name) for z in zones]

    def sensitive_zones(self, incident: Incident) -> list[str]:
        tree, meta = self._zones
        point = ShapelyPoint(incident.location.lon, incident.location.lat)
        hits = tree.query(point, predicate="intersects")
        return [
            f"{meta[i][0]} {meta[i][1]}" for i in hits if incident.kind in SENSITIVE[meta[i][0]]
        ]

    def grade(self, incident: Incident) -> Grade:
        level = incident.level
        reasons = [f"observed {incident.level.value}"]
        if len(set(incident.sources)) >= CORROBORATION_SOURCES:
            level = level.raised()
            reasons.append(f"corroborated by {len(set(incident.sources))} independent sources")
        zones = self.sensitive_zones(incident)
        if zones:
            level = level.raised()
            reasons.append("in sensitive zone: " + ", ".join(zones))
        return Grade(level, tuple(reasons))

    def targets(self, incident: Incident, level: Level) -> tuple[Target, ...]:
        """Yellow → the grid worker; orange adds community and departments; red the command
        center too."""
        worker = next(g.worker for g in self.site.grids if g.code == incident.grid_code)
        targets = [Target(role="grid_worker", id=worker)]
        if level.rank >= Level.ORANGE.rank:
            targets.append(Target(role="community", id=incident.community_code))
            targets += [Target(role="department", id=d) for d in incident.departments]
        if level is Level.RED:
            targets.append(Target(role="command_center", id=self.site.street.code))
        return tuple(targets)
