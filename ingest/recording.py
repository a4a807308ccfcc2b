"""A recording of a site's live feeds: one SQLite file, written by ``gridwatch record`` and read
by ``gridwatch replay``.

It holds four tables: ``manifest`` (one row: the site's street, when recording started and
stopped, the versions that made it, per-stream notes such as a camera that could not be read),
``messages`` (every MQTT message the bridge subscribes to, with its payload bytes as received,
QoS, retain flag and receive time), ``frames`` (sampled camera frames as JPEG, with the
device, the stream and the capture time) and ``outages`` (when a stream was lost and when it
came back, so a replayed camera worker reports them as the live one did). Times are seconds
from the start of the recording, so the tables play back on one timeline. SQLite makes it one
compact file that a developer can inspect with any SQLite client, written transactionally,
readable while it grows.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pydantic import AwareDatetime, Field

from gridwatch.errors import ConfigError
from gridwatch.events import Model

FORMAT = "gridwatch-recording/2"
READABLE = (FORMAT, "gridwatch-recording/1")  # the first format had no outages

SCHEMA = """
CREATE TABLE IF NOT EXISTS manifest (id INTEGER PRIMARY KEY CHECK (id = 1), body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
  seq INTEGER PRIMARY KEY, at_s REAL NOT NULL, topic TEXT NOT NULL, payload BLOB NOT NULL,
  qos INTEGER NOT NULL, retain INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS frames (
  seq INTEGER PRIMARY KEY, at_s REAL NOT NULL, device TEXT NOT NULL, stream TEXT NOT NULL,
  jpeg BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS frames_by_stream ON frames (device, stream, at_s);
CREATE TABLE IF NOT EXISTS outages (
  seq INTEGER PRIMARY KEY, at_s REAL NOT NULL, device TEXT NOT NULL, stream TEXT NOT NULL,
  lost INTEGER NOT NULL, reason TEXT NOT NULL
);
"""


class Manifest(Model):
    format: str = FORMAT
    street: str = Field(description="the site's street code")
    site_file: str
    started_at: AwareDatetime
    stopped_at: AwareDatetime | None = None
    versions: dict[str, str] = Field(description="package versions that made the recording")
    subscriptions: tuple[str, ...] = Field(description="MQTT topic filters recorded")
    streams: dict[str, str] = Field(
        default_factory=dict, description="device/stream → where its frames were read from"
    )
    notes: tuple[str, ...] = Field(default=(), description="what went wrong while recording")


@dataclass(frozen=True, slots=True)
class RecordedMessage:
    at_s: float
    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(frozen=True, slots=True)
class RecordedFrame:
    at_s: float
    device: str
    stream: str  # "visible" or "thermal"
    jpeg: bytes


@dataclass(frozen=True, slots=True)
class RecordedOutage:
    """A stream lost (``lost``) or back again at ``at_s``."""

    at_s: float
    device: str
    stream: str
    lost: bool
    reason: str = ""


class RecordingWriter:
    """Appends to a new recording file; safe to call from the MQTT and camera threads at once."""

    def __init__(self, path: Path, manifest: Manifest) -> None:
        if path.exists():
            raise ConfigError(f"{path}: already exists; a recording is never overwritten")
        self.path = path
        self.manifest = manifest
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False)
        # Each row is committed as it comes (a killed recorder keeps what it had), cheaply.
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.executescript(SCHEMA)
        self._write_manifest()
        self.messages = 0
        self.frames = 0

    def _write_manifest(self) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO manifest VALUES (1, ?)", (self.manifest.model_dump_json(),)
        )
        self._db.commit()

    def message(self, msg: RecordedMessage) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO messages (at_s, topic, payload, qos, retain) VALUES (?, ?, ?, ?, ?)",
                (msg.at_s, msg.topic, msg.payload, msg.qos, int(msg.retain)),
            )
            self._db.commit()
            self.messages += 1

    def frame(self, frame: RecordedFrame) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO frames (at_s, device, stream, jpeg) VALUES (?, ?, ?, ?)",
                (frame.at_s, frame.device, frame.stream, frame.jpeg),
            )
            self._db.commit()
            self.frames += 1

    def outage(self, outage: RecordedOutage) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO outages (at_s, device, stream, lost, reason) VALUES (?, ?, ?, ?, ?)",
                (outage.at_s, outage.device, outage.stream, int(outage.lost), outage.reason),
            )
            self._db.commit()

    def close(self, stopped_at: datetime, notes: tuple[str, ...] = ()) -> Manifest:
        with self._lock:
            self.manifest = self.manifest.model_copy(
                update={"stopped_at": stopped_at, "notes": self.manifest.notes + notes}
            )
            self._write_manifest()
            self._db.execute("PRAGMA journal_mode = DELETE")  # back to one file, WAL folded in
            self._db.close()
        return self.manifest


class Recording:
    """A recording file opened for reading."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise ConfigError(f"{path}: no such recording")
        self.path = path
        try:
            self._db = self._connect()
            row = self._db.execute("SELECT body FROM manifest").fetchone()
        except sqlite3.DatabaseError as err:
            raise ConfigError(f"{path}: not a gridwatch recording ({err})") from err
        if row is None:
            raise ConfigError(f"{path}: not a gridwatch recording (no manifest)")
        self.manifest = Manifest.model_validate_json(row[0])
        if self.manifest.format not in READABLE:
            raise ConfigError(f"{path}: format {self.manifest.format!r}, expected {FORMAT!r}")

    def _connect(self) -> sqlite3.Connection:
        # Opened in one thread, played in another: each connection is used by one at a time.
        return sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)

    def close(self) -> None:
        self._db.close()

    def messages(self) -> Iterator[RecordedMessage]:
        rows = self._db.execute(
            "SELECT at_s, topic, payload, qos, retain FROM messages ORDER BY at_s, seq"
        )
        for at_s, topic, payload, qos, retain in rows:
            yield RecordedMessage(
                at_s=at_s, topic=topic, payload=bytes(payload), qos=qos, retain=bool(retain)
            )

    def streams(self) -> list[tuple[str, str]]:
        """(device, stream) of every stream with at least one frame."""
        rows = self._db.execute("SELECT DISTINCT device, stream FROM frames ORDER BY 1, 2")
        return [(d, s) for d, s in rows]

    def frames(self, device: str, stream: str) -> Iterator[RecordedFrame]:
        """One stream's frames in time order, read on a connection of their own: each stream
        plays in its camera worker's thread."""
        db = self._connect()
        try:
            rows = db.execute(
                "SELECT at_s, jpeg FROM frames WHERE device = ? AND stream = ? ORDER BY at_s, seq",
                (device, stream),
            )
            for at_s, jpeg in rows:
                yield RecordedFrame(at_s=at_s, device=device, stream=stream, jpeg=bytes(jpeg))
        finally:
            db.close()

    def outages(self, device: str, stream: str) -> list[RecordedOutage]:
        """One stream's losses and recoveries in time order."""
        if self.manifest.format != FORMAT:
            return []
        rows = self._db.execute(
            "SELECT at_s, lost, reason FROM outages WHERE device = ? AND stream = ?"
            " ORDER BY at_s, seq",
            (device, stream),
        )
        return [
            RecordedOutage(at_s=at_s, device=device, stream=stream, lost=bool(lost), reason=why)
            for at_s, lost, why in rows
        ]

    def span_s(self) -> float:
        """Seconds from the start of the recording to its last message or frame."""
        row = self._db.execute(
            "SELECT max(m) FROM (SELECT max(at_s) AS m FROM messages"
            " UNION ALL SELECT max(at_s) FROM frames)"
        ).fetchone()
        return float(row[0]) if row and row[0] is not None else 0.0

    def counts(self) -> tuple[int, int]:
        messages = self._db.execute("SELECT count(*) FROM messages").fetchone()
        frames = self._db.execute("SELECT count(*) FROM frames").fetchone()
        return int(messages[0]), int(frames[0])
