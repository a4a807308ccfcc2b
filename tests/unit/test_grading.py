from datetime import UTC, datetime

from alerts.grading import Grader
from gridwatch.events import Incident, IncidentKind, Level, Point, SourceRef, SourceType
from gridwatch.site import Site

T0 = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)
WEST = Point(lon=106.605, lat=26.605)
SCHOOL = Point(lon=106.615, lat=26.605)


def incident(level: Level, at: Point = WEST, sources: int = 1, **kw: object) -> Incident:
    fields: dict[str, object] = dict(
        kind=IncidentKind.FLOOD,
        location=at,
        community_code="520199003001",
        grid_code="52019900300101",
        micro_grid_code=None,
        level=level,
        confidence=0.9,
        sources=tuple(SourceRef(type=SourceType.SENSOR, id=f"WL-{i}") for i in range(sources)),
        detection_ids=(),
        departments=("water", "emergency"),
        first_seen=T0,
        last_seen=T0,
    )
    fields.update(kw)
    return Incident.model_validate(fields)


def test_grade_starts_from_the_observed_level(tiny_site: Site) -> None:
    grade = Grader(tiny_site).grade(incident(Level.YELLOW))
    assert grade.level is Level.YELLOW


def test_corroboration_and_sensitive_zone_each_raise_one_level(tiny_site: Site) -> None:
    grader = Grader(tiny_site)
    assert grader.grade(incident(Level.YELLOW, sources=2)).level is Level.ORANGE
    at_school = grader.grade(incident(Level.YELLOW, at=SCHOOL))
    assert at_school.level is Level.ORANGE
    assert any("实验小学" in r for r in at_school.reasons)
    assert grader.grade(incident(Level.ORANGE, at=SCHOOL, sources=2)).level is Level.RED


def test_targets_widen_with_the_level(tiny_site: Site) -> None:
    grader = Grader(tiny_site)
    roles = {lv: {t.role for t in grader.targets(incident(lv), lv)} for lv in Level}
    assert roles[Level.YELLOW] == {"grid_worker"}
    assert roles[Level.ORANGE] == {"grid_worker", "community", "department"}
    assert roles[Level.RED] == {"grid_worker", "community", "department", "command_center"}


def test_low_confidence_lowers_and_growth_raises(tiny_site: Site) -> None:
    grader = Grader(tiny_site)
    assert grader.grade(incident(Level.ORANGE, confidence=0.1)).level is Level.YELLOW
    assert grader.grade(incident(Level.YELLOW, confidence=0.1)).level is Level.YELLOW
    grown = grader.grade(incident(Level.YELLOW, growth=3.0))
    assert grown.level is Level.ORANGE and any("grew" in r for r in grown.reasons)
