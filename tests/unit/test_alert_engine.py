"""Alertmanager semantics on a fake clock: dedup, grouping wait and interval (red never waits),
inhibition, silences with expiry and author, repeat interval, and resolved always delivered."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from alerts.engine import AlertEngine
from alerts.silences import Silence
from gridwatch.errors import PayloadError
from gridwatch.events import Alert, Incident, IncidentKind, Level, Point, SourceRef, SourceType
from gridwatch.site import Site

T0 = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)
WEST = Point(lon=106.605, lat=26.605)
S = timedelta(seconds=1)


def incident(level: Level, revision: int = 1, ended: bool = False, **kw: object) -> Incident:
    fields: dict[str, object] = dict(
        id=UUID("0190a000-0000-7000-8000-000000000001"),
        revision=revision,
        kind=IncidentKind.FLOOD,
        location=WEST,
        community_code="520199003001",
        grid_code="52019900300101",
        micro_grid_code=None,
        level=level,
        confidence=0.9,
        sources=(SourceRef(type=SourceType.SENSOR, id="WL-1"),),
        detection_ids=(),
        first_seen=T0,
        last_seen=T0,
        ended=ended,
    )
    fields.update(kw)
    return Incident.model_validate(fields)


@pytest.fixture
def engine(tiny_site: Site) -> AlertEngine:
    # Defaults: group wait yellow 30 s, orange 10 s, red 0; interval yellow 300 s; repeat
    # yellow 4 h, red 30 min.
    return AlertEngine(tiny_site)


def levels(alerts: list[Alert]) -> list[tuple[str, str]]:
    return [(a.level.value, a.state) for a in alerts]


def test_yellow_waits_for_its_group_then_dedups(engine: AlertEngine) -> None:
    assert engine.on_incident(incident(Level.YELLOW), T0) == []
    assert engine.tick(T0 + 29 * S) == []
    sent = engine.tick(T0 + 30 * S)
    assert levels(sent) == [("yellow", "firing")]
    assert engine.on_incident(incident(Level.YELLOW, revision=2), T0 + 40 * S) == []
    assert engine.tick(T0 + 400 * S) == []


def test_red_never_waits_and_inhibits_lower_colours(engine: AlertEngine) -> None:
    sent = engine.on_incident(incident(Level.RED), T0)
    assert levels(sent) == [("red", "firing")]
    # Yellow and orange fire too, but red inhibits them: nothing after their group waits.
    assert engine.tick(T0 + 60 * S) == []
    ended = engine.on_incident(incident(Level.RED, revision=2, ended=True), T0 + 70 * S)
    assert levels(ended) == [("red", "resolved")]  # only what was delivered gets a resolved


def test_rising_incident_notifies_each_colour_once(engine: AlertEngine) -> None:
    engine.on_incident(incident(Level.YELLOW), T0)
    assert levels(engine.tick(T0 + 30 * S)) == [("yellow", "firing")]
    engine.on_incident(incident(Level.ORANGE, revision=2), T0 + 40 * S)
    assert levels(engine.tick(T0 + 50 * S)) == [("orange", "firing")]
    assert levels(engine.on_incident(incident(Level.RED, revision=3), T0 + 60 * S)) == [
        ("red", "firing")
    ]


def test_group_interval_batches_later_changes(tiny_site: Site, engine: AlertEngine) -> None:
    other = UUID("0190a000-0000-7000-8000-000000000002")
    engine.on_incident(incident(Level.YELLOW), T0)
    engine.tick(T0 + 30 * S)
    # A second incident in the same group (yellow, flood, grid) waits for the group interval.
    engine.on_incident(incident(Level.YELLOW, id=other), T0 + 60 * S)
    assert engine.tick(T0 + 329 * S) == []
    assert levels(engine.tick(T0 + 330 * S)) == [("yellow", "firing")]


def test_silence_mutes_until_it_expires_and_names_its_author(engine: AlertEngine) -> None:
    silence = Silence(
        matchers={"community_code": "520199003001", "kind": "flood"},
        starts_at=T0,
        ends_at=T0 + 600 * S,
        author="值班员王伟",
        comment="汛期演练，已知",
    )
    engine.silences = [silence]
    engine.on_incident(incident(Level.YELLOW), T0)
    assert engine.tick(T0 + 30 * S) == []
    firing = engine._alerts  # noqa: SLF001 - inspect why it was held back
    reason = engine.suppressed(next(iter(firing.values())).alert, T0 + 30 * S)
    assert reason == "silenced by 值班员王伟: 汛期演练，已知"
    # After expiry the still-firing alert goes out with the next flush of its group.
    engine.on_incident(incident(Level.YELLOW, revision=2), T0 + 601 * S)
    engine.on_incident(incident(Level.ORANGE, revision=3), T0 + 602 * S)
    assert levels(engine.tick(T0 + 612 * S)) == [("orange", "firing")]


def test_resolved_is_delivered_even_when_silenced_or_inhibited(engine: AlertEngine) -> None:
    engine.on_incident(incident(Level.YELLOW), T0)
    engine.tick(T0 + 30 * S)  # yellow delivered
    engine.silences = [
        Silence(
            matchers={"grid_code": "520199003"},
            starts_at=T0,
            ends_at=T0 + 3600 * S,
            author="ops",
            comment="maintenance",
        )
    ]
    engine.on_incident(incident(Level.RED, revision=2), T0 + 40 * S)  # red silenced too
    done = engine.on_incident(incident(Level.RED, revision=3, ended=True), T0 + 50 * S)
    done += engine.tick(T0 + 400 * S)
    assert ("yellow", "resolved") in levels(done)
    assert ("red", "resolved") not in levels(done)  # its firing was never delivered


def test_repeat_interval_resends_what_still_fires(engine: AlertEngine) -> None:
    first = engine.on_incident(incident(Level.RED), T0)
    assert engine.tick(T0 + 1799 * S) == []
    again = engine.tick(T0 + 1800 * S)
    assert levels(again) == [("red", "firing")]
    assert again[0].fingerprint == first[0].fingerprint and again[0].id != first[0].id


def test_red_wait_must_be_zero() -> None:
    from gridwatch.policy import AlertTimers

    with pytest.raises(ValueError, match="red never waits"):
        AlertTimers(group_wait_s={Level.YELLOW: 1, Level.ORANGE: 1, Level.RED: 5})


def test_an_incident_in_no_grid_is_refused_and_leaves_no_state(tiny_site: Site) -> None:
    engine = AlertEngine(tiny_site)
    stray = incident(Level.RED).model_copy(update={"grid_code": "52019900300199"})
    with pytest.raises(PayloadError, match="grid_code: no grid '52019900300199'"):
        engine.on_incident(stray, T0)
    assert engine._alerts == {} and engine._by_incident == {} and engine._groups == {}


def test_a_restored_engine_resolves_what_its_predecessor_fired(tiny_site: Site) -> None:
    before = AlertEngine(tiny_site)
    fired = before.on_incident(incident(Level.RED), T0)
    assert levels(fired) == [("red", "firing")]
    after = AlertEngine(tiny_site)  # the restarted process: nothing in memory
    sent = [(T0, a) for a in fired]
    assert after.restore([(T0, incident(Level.RED))], sent, T0 + 5 * S) == []  # not sent twice
    ended = after.on_incident(incident(Level.RED, revision=2, ended=True), T0 + 9 * S)
    assert levels(ended) == [("red", "resolved")]
    assert levels(AlertEngine(tiny_site).on_incident(incident(Level.RED, ended=True), T0)) == []


def test_a_restore_sends_what_a_crash_left_unsent_and_nothing_already_sent(
    tiny_site: Site,
) -> None:
    before = AlertEngine(tiny_site)
    before.on_incident(incident(Level.YELLOW), T0)
    yellow = before.tick(T0 + 30 * S)
    history = [(T0, incident(Level.YELLOW)), (T0 + 40 * S, incident(Level.RED, revision=2))]
    after = AlertEngine(tiny_site)
    # The red revision came in but its notification never left: due at once. The yellow one
    # went out before the crash: its group's flush after the restore does not repeat it.
    sent = [(T0 + 30 * S, a) for a in yellow]
    assert levels(after.restore(history, sent, T0 + 60 * S)) == [("red", "firing")]
    assert after.tick(T0 + 200 * S) == []


def test_a_group_waiting_at_a_restart_flushes_when_it_would_have(tiny_site: Site) -> None:
    # Yellow waits 30 s; the engine stopped 10 s into the wait.
    after = AlertEngine(tiny_site)
    assert after.restore([(T0, incident(Level.YELLOW))], [], T0 + 10 * S) == []
    assert after.tick(T0 + 29 * S) == []
    assert levels(after.tick(T0 + 30 * S)) == [("yellow", "firing")]
    assert after.tick(T0 + 31 * S) == []


def test_a_notification_due_while_the_engine_was_down_is_sent_at_the_restart(
    tiny_site: Site,
) -> None:
    after = AlertEngine(tiny_site)
    due = after.restore([(T0, incident(Level.YELLOW))], [], T0 + 45 * S)
    assert levels(due) == [("yellow", "firing")]
    assert after.tick(T0 + 46 * S) == []


def test_repeats_follow_the_real_send_time_across_a_restart(tiny_site: Site) -> None:
    before = AlertEngine(tiny_site)
    fired = before.on_incident(incident(Level.RED), T0)
    after = AlertEngine(tiny_site)
    repeat = tiny_site.policy.timers.repeat_interval_s[Level.RED] * S
    after.restore([(T0, incident(Level.RED))], [(T0, a) for a in fired], T0 + repeat / 2)
    assert after.tick(T0 + repeat - S) == []
    assert levels(after.tick(T0 + repeat)) == [("red", "firing")]


def test_an_older_or_repeated_revision_changes_nothing(engine: AlertEngine) -> None:
    engine.on_incident(incident(Level.RED), T0)
    assert levels(engine.on_incident(incident(Level.RED, revision=2, ended=True), T0 + S)) == [
        ("red", "resolved")
    ]
    # Redelivered after the resolve: without the revision check it would fire again.
    assert engine.on_incident(incident(Level.RED), T0 + 2 * S) == []
    assert engine.on_incident(incident(Level.RED, revision=2, ended=True), T0 + 3 * S) == []


def test_an_alert_says_the_incidents_colour_so_a_downgrade_differs_from_an_end(
    engine: AlertEngine,
) -> None:
    fired = engine.on_incident(incident(Level.RED), T0)
    assert [a.incident_level for a in fired] == [Level.RED]
    lower = engine.on_incident(incident(Level.ORANGE, revision=2), T0 + S)
    assert [(a.level, a.state, a.incident_level) for a in lower] == [
        (Level.RED, "resolved", Level.ORANGE)
    ]
    orange = engine.tick(T0 + 15 * S)  # no longer inhibited: orange goes out, graded orange
    assert [(a.level, a.state, a.incident_level) for a in orange] == [
        (Level.ORANGE, "firing", Level.RED)  # made when the incident was red, sent now
    ]
    ended = engine.on_incident(incident(Level.ORANGE, revision=3, ended=True), T0 + 20 * S)
    ended += engine.tick(T0 + 80 * S)  # after orange's group interval
    assert [(a.level, a.state, a.incident_level) for a in ended] == [
        (Level.ORANGE, "resolved", None)
    ]
