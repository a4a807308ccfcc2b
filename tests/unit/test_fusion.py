from datetime import UTC, datetime, timedelta

from gridwatch.events import Detection, DetectionKind, IncidentKind, Level, Point, SourceRef
from gridwatch.events import SourceType as St
from streams.fusion import FusionState, Placed, fuse

T0 = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)


def placed(source: str, level: Level | None, minutes: float, conf: float = 0.9) -> Placed:
    detection = Detection(
        kind=DetectionKind.WATER_LEVEL,
        source=SourceRef(type=St.SENSOR, id=source),
        ts=T0 + timedelta(minutes=minutes),
        confidence=conf,
        level=level,
        location=Point(lon=106.605, lat=26.605),
        cleared=level is None,
    )
    return Placed(
        detection=detection,
        community_code="520199003001",
        grid_code="52019900300101",
        micro_grid_code="5201990030010101",
    )


def test_one_incident_grows_corroborates_and_ends() -> None:
    state = FusionState()
    state, first = fuse(state, placed("WL-1", Level.YELLOW, 0), ("water",))
    assert first is not None and first.revision == 1 and first.kind is IncidentKind.FLOOD
    assert first.departments == ("water",)
    state, second = fuse(state, placed("WL-2", Level.ORANGE, 1))
    assert second is not None and second.id == first.id and second.revision == 2
    assert second.level is Level.ORANGE
    assert len(second.sources) == 2
    assert second.confidence > first.confidence  # corroboration: 1 - 0.1 * 0.1
    assert second.confidence == 0.99
    state, third = fuse(state, placed("WL-2", None, 2))
    assert third is not None and not third.ended and third.level is Level.YELLOW
    state, last = fuse(state, placed("WL-1", None, 3))
    assert last is not None and last.ended and last.revision == 4
    assert state.incident is None


def test_after_the_window_a_new_incident_starts() -> None:
    state, first = fuse(FusionState(), placed("WL-1", Level.YELLOW, 0))
    state, later = fuse(state, placed("WL-1", Level.ORANGE, 45))
    assert first is not None and later is not None
    assert later.id != first.id and later.revision == 1


def test_late_detection_joins_and_moves_first_seen_back() -> None:
    state, first = fuse(FusionState(), placed("WL-1", Level.YELLOW, 10))
    state, late = fuse(state, placed("WL-2", Level.YELLOW, 5))
    assert first is not None and late is not None and late.id == first.id
    assert late.first_seen == T0 + timedelta(minutes=5)
    assert late.last_seen == T0 + timedelta(minutes=10)


def test_a_clear_with_nothing_open_emits_nothing() -> None:
    state, incident = fuse(FusionState(), placed("WL-1", None, 0))
    assert incident is None and state.incident is None
