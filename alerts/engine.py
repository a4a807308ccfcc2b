"""The alert engine: graded incidents in, notifications out, with Alertmanager's semantics.

- One alert per (incident, colour): an incident graded red fires its yellow, orange and red
  alerts; a fingerprint names each, so redelivered incidents change nothing (dedup).
- Inhibition: a firing alert of an incident inhibits that incident's lower colours.
- Grouping: alerts of one colour, kind and grid form a group; a new group waits ``group_wait``
  before its first notification, later changes wait ``group_interval``; red never waits.
- Silences mute matching firing alerts; ``repeat_interval`` re-sends what is still firing.
- "Resolved" is always delivered for an alert whose firing was delivered, even if it has been
  silenced or inhibited since (Alertmanager loses those).
- The state lives in memory and is rebuilt on start (``restore``) from every incident so far and
  every notification already sent, so a restarted engine still resolves what it fired.
Time is whatever ``now`` the caller passes, so tests drive the engine with a fake clock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

from alerts.grading import Grade, Grader
from alerts.silences import Silence
from gridwatch import kinds
from gridwatch.events import Alert, Incident, IncidentKind, Level, new_id
from gridwatch.site import Site


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

    def __post_init__(self) -> None:
        self.grader = Grader(self.site)

    def on_incident(self, incident: Incident, now: datetime) -> list[Alert]:
        """Update the alerts of this incident revision; returns what is due at once."""
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
        return self.tick(now)

    def restore(
        self, incidents: Iterable[Incident], sent: Iterable[Alert], now: datetime
    ) -> list[Alert]:
        """Rebuild the state of a fresh engine: replay ``incidents`` (in their topic's order)
        and take ``sent`` as delivered. Returns what the replay makes due that was never sent
        (a crash between an incident and its notification); a group still waiting flushes later
        as usual, without what ``sent`` holds."""
        delivered = {(a.fingerprint, a.state) for a in sent}
        due = [
            alert
            for incident in incidents
            for alert in self.on_incident(incident, now)
            if (alert.fingerprint, alert.state) not in delivered
        ]
        for fp, tracked in self._alerts.items():
            if (fp, "firing") in delivered and not tracked.notified:
                tracked.notified, tracked.last_sent = True, now
        return due

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
