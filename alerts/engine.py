"""The alert engine: graded incidents in, notifications out, with Alertmanager's semantics.

- One alert per (incident, colour): an incident graded red fires its yellow, orange and red
  alerts; a fingerprint names each, so redelivered incidents change nothing (dedup).
- Inhibition: a firing alert of an incident inhibits that incident's lower colours.
- Grouping: alerts of one colour, kind and grid form a group; a new group waits ``group_wait``
  before its first notification, later changes wait ``group_interval``; red never waits.
- Silences mute matching firing alerts; ``repeat_interval`` re-sends what is still firing.
- "Resolved" is always delivered for an alert whose firing was delivered, even if it has been
  silenced or inhibited since (Alertmanager loses those).
- An incident revision no newer than one already applied changes nothing, so a redelivered
  incident cannot fire again what has resolved.
- The state lives in memory and is rebuilt on start (``restore``) by replaying every incident
  so far at the time it was published and taking every notification already sent at the time it
  was sent: a group waiting when the engine stopped flushes when it would have, what was sent is
  not sent again and what was due but never sent is sent at once.
Time is whatever ``now`` the caller passes, so tests drive the engine with a fake clock.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

from alerts.grading import Grade, Grader
from alerts.silences import Silence
from gridwatch import kinds
from gridwatch.errors import PayloadError
from gridwatch.events import Alert, Incident, IncidentKind, Level, new_id
from gridwatch.site import Site

log = logging.getLogger(__name__)


def fingerprint(incident_id: UUID, kind: IncidentKind, level: Level) -> str:
    return hashlib.sha256(f"{kind.value}|{incident_id}|{level.value}".encode()).hexdigest()[:16]


@dataclass
class _Tracked:
    alert: Alert
    notified: bool = False  # its firing was delivered
    last_sent: datetime | None = None


@dataclass
class _Group:
    level: Level
    flush_at: datetime | None = None
    flushed: bool = False
    last_flush: datetime | None = None
    members: set[str] = field(default_factory=set)


@dataclass
class AlertEngine:
    site: Site
    silences: list[Silence] = field(default_factory=list)
    grader: Grader = field(init=False)
    _alerts: dict[str, _Tracked] = field(default_factory=dict)
    _groups: dict[str, _Group] = field(default_factory=dict)
    _by_incident: dict[UUID, set[str]] = field(default_factory=dict)
    # The newest revision applied of every incident seen (a few bytes each, kept for good: a
    # redelivery may come long after an incident ended).
    _revisions: dict[UUID, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.grader = Grader(self.site)

    def on_incident(self, incident: Incident, now: datetime) -> list[Alert]:
        """Update the alerts of this incident revision; returns what is due at once."""
        if incident.revision <= self._revisions.get(incident.id, 0):
            return self.tick(now)  # a redelivery, or a revision overtaken by a newer one
        grade = self.grader.grade(incident)
        for level in Level:
            fp = fingerprint(incident.id, incident.kind, level)
            firing = not incident.ended and level.rank <= grade.level.rank
            tracked = self._alerts.get(fp)
            if firing and tracked is None:
                alert = self._alert(incident, level, fp, "firing", grade, now)
                self._alerts[fp] = _Tracked(alert)
                # Only now: an incident refused while making its alert leaves no trace here.
                self._by_incident.setdefault(incident.id, set()).add(fp)
                self._touch(alert, now)
            elif not firing and tracked is not None and tracked.alert.state == "firing":
                resolved = self._alert(incident, level, fp, "resolved", grade, now)
                tracked.alert = resolved
                self._touch(resolved, now)
        self._revisions[incident.id] = incident.revision
        return self.tick(now)

    def restore(
        self,
        incidents: Iterable[tuple[datetime | None, Incident]],
        sent: Iterable[tuple[datetime | None, Alert]],
        now: datetime,
    ) -> list[Alert]:
        """Rebuild the state of a fresh engine: replay ``incidents`` (in their topic's order,
        each at the time it was published, else ``now``) and take ``sent`` as delivered at the
        time each was sent. Returns what is due now that was never sent: a notification lost
        between an incident and a crash, or one whose time came while the engine was down. A
        group still waiting flushes when it would have, without what ``sent`` holds."""
        delivered: dict[tuple[str, str], datetime] = {}
        for at, alert in sent:
            key = (alert.fingerprint, alert.state)
            delivered[key] = max(at or now, delivered.get(key, at or now))
        due: list[Alert] = []
        for at, incident in incidents:
            try:
                due += self.on_incident(incident, min(at or now, now))
            except PayloadError as err:  # refused (dead-lettered) when it first came
                log.info("restore: incident %s skipped: %s", incident.id, err)
        due += self.tick(now)
        for fp, tracked in self._alerts.items():
            sent_at = delivered.get((fp, "firing"))
            if sent_at is not None:
                tracked.notified, tracked.last_sent = True, sent_at
        unsent = [a for a in due if (a.fingerprint, a.state) not in delivered]
        for alert in unsent:
            if alert.fingerprint in self._alerts:
                self._alerts[alert.fingerprint].last_sent = now  # the caller sends it now
        return list({(a.fingerprint, a.state): a for a in unsent}.values())

    def tick(self, now: datetime) -> list[Alert]:
        """Flush every group that is due and re-send what is due for a repeat."""
        out: list[Alert] = []
        for key, group in list(self._groups.items()):
            if group.flush_at is not None and group.flush_at <= now:
                out += self._flush(group, now)
            out += self._repeats(group, now)
            if not group.members:
                del self._groups[key]
        return out

    def suppressed(self, alert: Alert, now: datetime) -> str | None:
        """Why a firing alert is not notified now (inhibited or silenced), or None."""
        for fp in self._by_incident.get(alert.incident_id, ()):
            other = self._alerts[fp].alert
            if other.state == "firing" and other.level.rank > alert.level.rank:
                return f"inhibited by {other.level.value}"
        for silence in self.silences:
            if silence.active(now) and silence.matches(alert):
                return f"silenced by {silence.author}: {silence.comment}"
        return None

    def _touch(self, alert: Alert, now: datetime) -> None:
        key = f"{alert.level.value}|{alert.kind.value}|{alert.grid_code}"
        group = self._groups.setdefault(key, _Group(alert.level))
        group.members.add(alert.fingerprint)
        if group.flush_at is None:
            timers = self.site.policy.timers
            if not group.flushed:
                group.flush_at = now + timedelta(seconds=timers.group_wait_s[group.level])
            else:
                assert group.last_flush is not None  # noqa: S101 - set by every flush
                interval = timedelta(seconds=timers.group_interval_s[group.level])
                group.flush_at = max(now, group.last_flush + interval)

    def _flush(self, group: _Group, now: datetime) -> list[Alert]:
        group.flush_at, group.flushed, group.last_flush = None, True, now
        out = []
        for fp in sorted(group.members):
            tracked = self._alerts[fp]
            if tracked.alert.state == "resolved":
                if tracked.notified:
                    out.append(tracked.alert)  # always: silences and inhibition do not apply
                self._forget(group, fp)
            elif not tracked.notified and self.suppressed(tracked.alert, now) is None:
                tracked.notified, tracked.last_sent = True, now
                out.append(tracked.alert)
        return out

    def _repeats(self, group: _Group, now: datetime) -> list[Alert]:
        repeat = timedelta(seconds=self.site.policy.timers.repeat_interval_s[group.level])
        out = []
        for fp in sorted(group.members):
            tracked = self._alerts[fp]
            due = tracked.last_sent is not None and now - tracked.last_sent >= repeat
            if tracked.notified and tracked.alert.state == "firing" and due:
                if self.suppressed(tracked.alert, now) is None:
                    tracked.last_sent = now
                    out.append(tracked.alert.model_copy(update={"id": new_id(), "ts": now}))
        return out

    def _forget(self, group: _Group, fp: str) -> None:
        group.members.discard(fp)
        incident_id = self._alerts.pop(fp).alert.incident_id
        fps = self._by_incident.get(incident_id, set())
        fps.discard(fp)
        if not fps:
            self._by_incident.pop(incident_id, None)

    def _alert(
        self,
        incident: Incident,
        level: Level,
        fp: str,
        state: str,
        grade: Grade,
        now: datetime,
    ) -> Alert:
        return Alert.model_validate(
            {
                "fingerprint": fp,
                "incident_id": incident.id,
                "incident_revision": incident.revision,
                "kind": incident.kind,
                "level": level,
                "state": state,
                "targets": self.grader.targets(incident, level),
                "summary": kinds.warning_summary(
                    incident.kind, level, incident.grid_code, resolved=state == "resolved"
                ),
                "incident_level": None if incident.ended else grade.level,
                "location": incident.location,
                "grid_code": incident.grid_code,
                "ts": max(incident.last_seen, now) if state == "resolved" else incident.last_seen,
                "reasons": grade.reasons,
            }
        )
