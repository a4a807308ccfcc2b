"""Silences: an operator mutes matching alerts for a while, under their name and with a reason.

Matchers compare alert labels (kind, level, grid_code, community_code, incident_id,
fingerprint) for equality; a ``*_code`` matcher also matches every code under it, so a
community code silences all of its grids. A silence never hides a "resolved".
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import psycopg
from psycopg.types.json import Jsonb
from pydantic import AwareDatetime, Field, model_validator

from gridwatch.events import Alert, Model, new_id


class Silence(Model):
    id: UUID = Field(default_factory=new_id)
    matchers: dict[str, str] = Field(min_length=1)
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    author: str = Field(min_length=1)
    comment: str = Field(min_length=1)

    @model_validator(mode="after")
    def _ends_after_start(self) -> Silence:
        if self.ends_at <= self.starts_at:
            raise ValueError("a silence must end after it starts")
        return self

    def active(self, now: datetime) -> bool:
        return self.starts_at <= now < self.ends_at

    def matches(self, alert: Alert) -> bool:
        labels = labels_of(alert)
        return all(_match(name, labels.get(name), v) for name, v in self.matchers.items())


# The labels a matcher may name, in the order an operator's form lists them.
LABELS = ("kind", "level", "grid_code", "community_code", "incident_id", "fingerprint")


def labels_of(alert: Alert) -> dict[str, str]:
    return {
        "kind": alert.kind.value,
        "level": alert.level.value,
        "grid_code": alert.grid_code,
        "community_code": alert.grid_code[:12],
        "incident_id": str(alert.incident_id),
        "fingerprint": alert.fingerprint,
    }


def _match(name: str, label: str | None, value: str) -> bool:
    if label is None:
        return False
    return label == value or (name.endswith("_code") and label.startswith(value))


def add_silence(conn: psycopg.Connection, silence: Silence) -> None:
    conn.execute(
        "INSERT INTO silences (id, matchers, starts_at, ends_at, author, comment)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (
            silence.id,
            Jsonb(silence.matchers),
            silence.starts_at,
            silence.ends_at,
            silence.author,
            silence.comment,
        ),
    )


def expire_silence(conn: psycopg.Connection, silence_id: UUID, now: datetime) -> bool:
    """End a silence now (it stays on record, with its author)."""
    cur = conn.execute(
        "UPDATE silences SET ends_at = %s WHERE id = %s AND ends_at > %s AND starts_at < %s",
        (now, silence_id, now, now),
    )
    return cur.rowcount == 1


def current_silences(conn: psycopg.Connection, now: datetime) -> list[Silence]:
    """Silences not yet expired (including those that start later)."""
    rows = conn.execute(
        "SELECT id, matchers, starts_at, ends_at, author, comment FROM silences"
        " WHERE ends_at > %s ORDER BY starts_at",
        (now,),
    ).fetchall()
    return [
        Silence(id=r[0], matchers=r[1], starts_at=r[2], ends_at=r[3], author=r[4], comment=r[5])
        for r in rows
    ]
