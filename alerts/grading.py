"""Three-colour grading (三色预警) of an incident, and who each colour goes to (DESIGN.md §5).

The rules are data (the site's ``policy.grading``, by default each kind's entry in
``gridwatch.kinds``): start from the severity the detections observed, or the kind's floor if
higher; corroboration by independent sources, grown evidence and a sensitive zone (school,
dense housing, forest for a fire) each raise one level, a low fused confidence lowers one; the
result stays within yellow..red.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from gridwatch.errors import PayloadError
from gridwatch.events import Incident, Level, Target
from gridwatch.geo import ZoneIndex
from gridwatch.site import Site


@dataclass(frozen=True)
class Grade:
    level: Level
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Grader:
    site: Site

    @cached_property
    def _zones(self) -> ZoneIndex:
        sensitive = self.site.policy.grading.sensitive_zones
        return ZoneIndex(tuple(z for z in self.site.zones if z.kind in sensitive))

    def sensitive_zones(self, incident: Incident) -> list[str]:
        sensitive = self.site.policy.grading.sensitive_zones
        return [
            f"{z.kind.value} {z.name}"
            for z in self._zones.at(incident.location)
            if incident.kind in sensitive[z.kind]
        ]

    def grade(self, incident: Incident) -> Grade:
        rules = self.site.policy.grading
        level = incident.level
        reasons = [f"observed {incident.level.value}"]
        floor = rules.floor_of(incident.kind)
        if floor is not None and floor.rank > level.rank:
            level = floor
            reasons.append(f"{incident.kind.value} is at least {floor.value}")
        sources = len(set(incident.sources))
        if sources >= rules.corroboration_sources:
            level = level.raised()
            reasons.append(f"corroborated by {sources} independent sources")
        if incident.growth >= rules.growth_ratio:
            level = level.raised()
            reasons.append(f"grew {incident.growth:.1f}x")
        zones = self.sensitive_zones(incident)
        if zones:
            level = level.raised()
            reasons.append("in sensitive zone: " + ", ".join(zones))
        if incident.confidence < rules.low_confidence:
            level = level.raised(-1)
            reasons.append(f"low confidence {incident.confidence:.2f}")
        return Grade(level, tuple(reasons))

    def targets(self, incident: Incident, level: Level) -> tuple[Target, ...]:
        """Yellow → the grid worker; orange adds community and departments; red the command
        center too."""
        worker = next((g.worker for g in self.site.grids if g.code == incident.grid_code), None)
        if worker is None:
            raise PayloadError(
                f"grid_code: no grid {incident.grid_code!r} in the site, no one to alert"
            )
        targets = [Target(role="grid_worker", id=worker)]
        if level.rank >= Level.ORANGE.rank:
            targets.append(Target(role="community", id=incident.community_code))
            targets += [Target(role="department", id=d) for d in incident.departments]
        if level is Level.RED:
            targets.append(Target(role="command_center", id=self.site.street.code))
        return tuple(targets)
