"""Operators teach the cameras: a detection rejected as a false alarm is stored, once, with a
copy of its snapshot, and training reads it back as a hard negative.

One function marks, whoever asks: ``gridwatch cameras false-alarm``, the closed loop when a case
is closed as 误报, the console. The snapshot's bytes are copied into the database when marked
(``false_alarm_snapshots``): the evidence store is a directory that may be pruned or live on
another machine than the training run, and a few hundred kilobytes per rejected detection is a
small price for a negative that cannot vanish. Only files inside the evidence store are read,
whatever path a detection names.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import psycopg
from psycopg.rows import dict_row
from pydantic import AwareDatetime, BaseModel, ConfigDict

from gridwatch.events import storable_text
from gridwatch.settings import Settings

log = logging.getLogger(__name__)

CAMERA_SOURCES = ("camera", "watchtower")
MAX_SNAPSHOT_BYTES = 16 * 1024 * 1024
IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")  # JPEG, PNG: what the evidence store writes
COLUMNS = (
    "detection_id, detection_ts, source_type, source_id, kind, confidence, bbox, snapshot,"
    " operator, reason, case_id, marked_at"
)


class FalseAlarm(BaseModel):
    """A stored false-alarm mark: what the detection said, who rejected it, when and why."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    detection_id: UUID
    detection_ts: AwareDatetime
    source_type: str
    source_id: str
    kind: str
    confidence: float
    bbox: tuple[int, int, int, int] | None
    snapshot: str | None
    operator: str
    reason: str
    case_id: str | None
    marked_at: AwareDatetime


def mark_false_alarm(
    conn: psycopg.Connection,
    *,
    detection_id: str,
    operator: str,
    reason: str,
    case_id: str | None = None,
    evidence_dir: Path | None = None,
) -> FalseAlarm:
    """Store the camera detection ``detection_id`` as a false alarm, with its snapshot's bytes
    when the evidence store (``evidence_dir``, default the settings') still holds them, and an
    entry in ``operator_audit``. Marking it again returns the stored row unchanged. Raises
    ``LookupError`` when no camera or watchtower detection has that id. Runs in a transaction
    of its own (a savepoint inside the caller's)."""
    try:
        uid = UUID(detection_id)
    except ValueError as err:
        raise LookupError(f"{detection_id!r} is not a detection id (a UUID)") from err
    if not operator.strip():
        raise ValueError("a false alarm is marked by someone: the operator's name is empty")
    operator, reason = storable_text(operator), storable_text(reason)
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        stored = _stored(cur, uid)
        if stored is not None:
            return stored
        cur.execute(
            "SELECT ts, source_type, source_id, kind, confidence, snapshot,"
            " CASE WHEN jsonb_typeof(payload->'bbox') = 'array' THEN ARRAY("
            "   SELECT jsonb_array_elements_text(payload->'bbox')::integer) END AS bbox"
            " FROM detections WHERE id = %s AND source_type = ANY(%s) ORDER BY ts DESC LIMIT 1",
            (uid, list(CAMERA_SOURCES)),
        )
        detection = cur.fetchone()
        if detection is None:
            raise LookupError(f"no camera or watchtower detection {uid} is stored")
        cur.execute(
            f"INSERT INTO false_alarms ({COLUMNS.removesuffix(', marked_at')})"  # noqa: S608
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            f" ON CONFLICT (detection_id) DO NOTHING RETURNING {COLUMNS}",
            (
                uid,
                detection["ts"],
                detection["source_type"],
                detection["source_id"],
                detection["kind"],
                detection["confidence"],
                detection["bbox"],
                detection["snapshot"],
                operator,
                reason,
                case_id,
            ),
        )
        row = cur.fetchone()
        if row is None:  # marked meanwhile by someone else
            stored = _stored(cur, uid)
            assert stored is not None  # noqa: S101 - the conflicting row exists
            return stored
        image = snapshot_bytes(detection["snapshot"], evidence_dir or Settings().evidence_dir)
        if image is not None:
            cur.execute(
                "INSERT INTO false_alarm_snapshots (detection_id, image, sha256)"
                " VALUES (%s, %s, %s)",
                (uid, image, hashlib.sha256(image).hexdigest()),
            )
        note = reason if image is not None else f"{reason} (snapshot not found)"
        cur.execute(
            "INSERT INTO operator_audit (actor, action, subject, note)"
            " VALUES (%s, 'false_alarm', %s, %s)",
            (operator, str(uid), note),
        )
    log.info(
        "detection %s of %s marked as a false alarm by %s (case %s, snapshot %s)",
        uid,
        row["source_id"],
        operator,
        case_id,
        "kept" if image is not None else "missing",
    )
    return FalseAlarm.model_validate(row)


def mark_incident_false_alarms(
    conn: psycopg.Connection,
    *,
    incident_id: UUID,
    operator: str,
    reason: str,
    case_id: str | None = None,
    evidence_dir: Path | None = None,
) -> list[FalseAlarm]:
    """Mark every stored camera detection that any revision of the incident names."""
    rows = conn.execute(
        "SELECT DISTINCT d.id FROM incidents i"
        " CROSS JOIN LATERAL jsonb_array_elements_text(i.payload->'detection_ids') AS named(id)"
        " JOIN detections d ON d.id = named.id::uuid"
        " WHERE i.incident_id = %s AND d.source_type = ANY(%s) ORDER BY d.id",
        (incident_id, list(CAMERA_SOURCES)),
    ).fetchall()
    return [
        mark_false_alarm(
            conn,
            detection_id=str(detection_id),
            operator=operator,
            reason=reason,
            case_id=case_id,
            evidence_dir=evidence_dir,
        )
        for (detection_id,) in rows
    ]


def false_alarms(conn: psycopg.Connection, *, limit: int = 100) -> list[FalseAlarm]:
    """The latest marks, newest first."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"SELECT {COLUMNS} FROM false_alarms"  # noqa: S608
            " ORDER BY marked_at DESC, detection_id LIMIT %s",
            (limit,),
        )
        return [FalseAlarm.model_validate(r) for r in cur.fetchall()]


def snapshots(conn: psycopg.Connection) -> Iterator[tuple[FalseAlarm, bytes]]:
    """Every mark whose snapshot was kept, with the image's bytes, oldest first."""
    # A server-side cursor: the images are read a few at a time, not all into memory.
    with conn.transaction(), conn.cursor("false_alarm_snapshots", row_factory=dict_row) as cur:
        cur.itersize = 20
        cur.execute(
            f"SELECT {', '.join('f.' + c for c in COLUMNS.split(', '))}, s.image"  # noqa: S608
            " FROM false_alarms f JOIN false_alarm_snapshots s USING (detection_id)"
            " ORDER BY f.marked_at, f.detection_id"
        )
        for row in cur:
            image = bytes(row.pop("image"))
            yield FalseAlarm.model_validate(row), image


def _stored(cur: psycopg.Cursor[dict[str, object]], uid: UUID) -> FalseAlarm | None:
    cur.execute(f"SELECT {COLUMNS} FROM false_alarms WHERE detection_id = %s", (uid,))  # noqa: S608
    row = cur.fetchone()
    return None if row is None else FalseAlarm.model_validate(row)


def snapshot_bytes(snapshot: str | None, evidence_dir: Path) -> bytes | None:
    """The snapshot file's bytes if it is an image inside the evidence store, else None."""
    if not snapshot:
        return None
    path = Path(snapshot)
    root = evidence_dir.resolve()
    resolved = (path if path.is_absolute() else Path.cwd() / path).resolve()
    if not resolved.is_relative_to(root):
        log.warning("snapshot %s is outside the evidence store %s: not copied", snapshot, root)
        return None
    try:
        if resolved.stat().st_size > MAX_SNAPSHOT_BYTES:
            log.warning(
                "snapshot %s is larger than %d bytes: not copied", snapshot, MAX_SNAPSHOT_BYTES
            )
            return None
        image = resolved.read_bytes()
    except OSError as err:
        log.warning("snapshot %s cannot be read: %s", snapshot, err)
        return None
    if not image.startswith(IMAGE_MAGIC):
        log.warning("snapshot %s is not a JPEG or PNG image: not copied", snapshot)
        return None
    return image
