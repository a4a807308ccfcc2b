"""Operators' false alarms on the real database: the CLI, a case closed as 误报, the export."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import psycopg
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from alerts.callbacks import DispatchCallback
from alerts.closed_loop import ClosedLoop, case_id_of
from benchmarks.hard_negatives import export_hard_negatives
from detectors.frame import Frame
from gridwatch.cli import app
from gridwatch.events import (
    Alert,
    CaseEvent,
    Detection,
    DetectionKind,
    Incident,
    IncidentKind,
    Level,
    Point,
    SourceRef,
    SourceType,
    Target,
    decode,
)
from gridwatch.site import Site
from gridwatch.store.feedback import false_alarms, mark_false_alarm
from gridwatch.store.schema import ensure_schema
from gridwatch.store.writer import write_events
from ingest.camera_evidence import EvidenceStore

T0 = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)
runner = CliRunner()


@dataclass(frozen=True)
class Stored:
    url: str
    evidence: Path
    camera: Detection  # with a snapshot in the evidence store and a box
    tower: Detection  # with a snapshot, no box
    sensor: Detection


def _detection(source: SourceRef, kind: DetectionKind, minutes: int, **more: object) -> Detection:
    return Detection(
        kind=kind,
        source=source,
        ts=T0 + timedelta(minutes=minutes),
        confidence=0.8,
        **more,  # type: ignore[arg-type]
    )


@pytest.fixture
def stored(fresh_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Stored:
    """A camera and a watchtower detection with snapshots the evidence store wrote from seeded
    frames, and a sensor detection."""
    evidence = tmp_path / "evidence"
    monkeypatch.setenv("GRIDWATCH_EVIDENCE_DIR", str(evidence))
    store = EvidenceStore(evidence)
    rng = np.random.default_rng(11)
    made = []
    for source, box, minutes in (
        (SourceRef(type=SourceType.CAMERA, id="CAM-1"), (300, 200, 40, 30), 0),
        (SourceRef(type=SourceType.WATCHTOWER, id="TWR-1"), None, 1),
    ):
        image = rng.integers(0, 255, (360, 640, 3), np.uint8)
        detection = _detection(source, DetectionKind.SMOKE, minutes, bbox=box)
        frame = Frame(image=image, ts=detection.ts, source_id=source.id)
        snapshot = store.save(frame, box, detection.id)
        made.append(detection.model_copy(update={"snapshot": snapshot}))
    sensor = _detection(
        SourceRef(type=SourceType.SENSOR, id="SMK-1"), DetectionKind.SMOKE_SENSOR, 2
    )
    with psycopg.connect(fresh_database_url) as conn:
        ensure_schema(conn)
        with conn.transaction():
            write_events(conn, [*made, sensor])
    return Stored(fresh_database_url, evidence, made[0], made[1], sensor)


def _mark(stored: Stored, detection_id: str, *options: str) -> tuple[int, str]:
    result = runner.invoke(
        app,
        ["cameras", "false-alarm", detection_id, *options],
        env={"GRIDWATCH_DATABASE_URL": stored.url, "GRIDWATCH_EVIDENCE_DIR": str(stored.evidence)},
    )
    return result.exit_code, result.output


def test_the_cli_marks_a_camera_detection_once_with_its_snapshot(stored: Stored) -> None:
    detection_id = str(stored.camera.id)
    options = ("--operator", "值班员 李", "--reason", "夕阳反光")
    code, output = _mark(stored, detection_id, *options)
    assert code == 0, output
    assert "smoke on CAM-1" in output and "值班员 李" in output
    code, output = _mark(stored, detection_id, "--operator", "someone else", "--reason", "x")
    assert code == 0, output
    assert "值班员 李" in output  # the first mark stands
    assert stored.camera.snapshot is not None
    snapshot = Path(stored.camera.snapshot).read_bytes()
    with psycopg.connect(stored.url) as conn:
        (mark,) = false_alarms(conn)
        assert (mark.detection_id, mark.source_type, mark.kind) == (
            stored.camera.id,
            "camera",
            "smoke",
        )
        assert (mark.operator, mark.reason, mark.bbox) == (
            "值班员 李",
            "夕阳反光",
            (300, 200, 40, 30),
        )
        assert mark.detection_ts == stored.camera.ts and mark.case_id is None
        kept = conn.execute("SELECT image, sha256 FROM false_alarm_snapshots").fetchall()
        assert [(bytes(i), s) for i, s in kept] == [
            (snapshot, hashlib.sha256(snapshot).hexdigest())
        ]
        audit = conn.execute("SELECT actor, action, subject, note FROM operator_audit").fetchall()
        assert audit == [("值班员 李", "false_alarm", detection_id, "夕阳反光")]
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute("DELETE FROM operator_audit")


def test_a_mark_needs_an_operator(stored: Stored) -> None:
    with psycopg.connect(stored.url) as conn, pytest.raises(ValueError, match="operator"):
        mark_false_alarm(conn, detection_id=str(stored.camera.id), operator=" ", reason="")


@pytest.mark.parametrize("which", ["unknown", "sensor", "garbage"])
def test_the_cli_refuses_what_is_no_stored_camera_detection(stored: Stored, which: str) -> None:
    detection_id = {
        "unknown": str(uuid.uuid4()),
        "sensor": str(stored.sensor.id),
        "garbage": "not-an-id",
    }[which]
    code, output = _mark(stored, detection_id, "--operator", "值班员")
    assert code == 2, output
    assert detection_id in output
    with psycopg.connect(stored.url) as conn:
        assert false_alarms(conn) == []
        assert conn.execute("SELECT count(*) FROM operator_audit").fetchone() == (0,)


def test_a_snapshot_outside_the_evidence_store_is_not_copied(stored: Stored) -> None:
    """A detection message names its snapshot; marking it must not copy any file it names."""
    crafted = _detection(
        SourceRef(type=SourceType.CAMERA, id="CAM-2"),
        DetectionKind.FIRE,
        3,
        snapshot="/etc/passwd",
    )
    with psycopg.connect(stored.url) as conn:
        with conn.transaction():
            write_events(conn, [crafted])
        mark = mark_false_alarm(
            conn, detection_id=str(crafted.id), operator="值班员", reason="", case_id=None
        )
        assert mark.snapshot == "/etc/passwd"
        assert conn.execute("SELECT count(*) FROM false_alarm_snapshots").fetchone() == (0,)
        (note,) = conn.execute("SELECT note FROM operator_audit").fetchone() or ("",)
        assert "snapshot not found" in note


def _fire(incident_id: uuid.UUID, detections: list[Detection]) -> tuple[Incident, Alert]:
    where = Point(lon=106.605, lat=26.605)
    incident = Incident(
        id=incident_id,
        kind=IncidentKind.FOREST_FIRE,
        location=where,
        community_code="520199003001",
        grid_code="52019900300101",
        micro_grid_code=None,
        level=Level.ORANGE,
        confidence=0.8,
        sources=tuple(d.source for d in detections),
        detection_ids=tuple(d.id for d in detections),
        first_seen=T0,
        last_seen=T0 + timedelta(minutes=2),
    )
    alert = Alert(
        fingerprint="fp-fire",
        incident_id=incident_id,
        incident_revision=1,
        kind=IncidentKind.FOREST_FIRE,
        level=Level.ORANGE,
        state="firing",
        targets=(Target(role="community", id="520199003001"),),
        summary="橙色：森林火情",
        location=where,
        grid_code="52019900300101",
        ts=T0,
    )
    return incident, alert


def _callback(case_id: str, seq: int, action: str, state: str, **more: object) -> bytes:
    body = {
        "event_id": str(uuid.uuid4()),
        "case_id": case_id,
        "seq": seq,
        "action": action,
        "state": state,
        "actor": "网格员 王",
        "ts": (T0 + timedelta(minutes=10 + seq)).isoformat(),
    }
    return json.dumps(body | more, ensure_ascii=False).encode()


def _delivered(body: bytes) -> CaseEvent:
    """A callback as the closed loop gets it: parsed by the API, through Kafka, decoded."""
    return decode(CaseEvent, DispatchCallback.model_validate_json(body).event().to_bytes())


def test_a_case_closed_as_false_alarm_marks_the_camera_detections_of_its_incident(
    stored: Stored, tiny_site: Site
) -> None:
    incident, alert = _fire(uuid.uuid4(), [stored.camera, stored.tower, stored.sensor])
    loop = ClosedLoop(tiny_site, lambda: T0)
    case_id = case_id_of(alert)
    with psycopg.connect(stored.url) as conn:
        with conn.transaction():
            write_events(conn, [incident])
            loop.on_alert(conn, alert)
        steps = [("accept", "accepted"), ("handle", "handling"), ("report", "reported")]
        steps += [("verify", "verified")]
        for seq, (action, state) in enumerate(steps, start=1):
            with conn.transaction():
                loop.on_case_event(conn, _delivered(_callback(case_id, seq, action, state)))
        assert false_alarms(conn) == []
        close = _callback(
            case_id, 5, "close", "closed", resolution="false_alarm", note="误报：晚霞"
        )
        with conn.transaction():
            loop.on_case_event(conn, _delivered(close))
        marks = false_alarms(conn)
        assert {m.detection_id for m in marks} == {stored.camera.id, stored.tower.id}
        assert {(m.operator, m.reason, m.case_id) for m in marks} == {
            ("网格员 王", "误报：晚霞", case_id)
        }
        assert conn.execute("SELECT count(*) FROM false_alarm_snapshots").fetchone() == (2,)
        assert conn.execute(
            "SELECT state, resolution FROM cases WHERE case_id = %s", (case_id,)
        ).fetchone() == ("closed", "false_alarm")


def test_only_a_closing_callback_carries_a_resolution() -> None:
    body = _callback("GW-1", 1, "accept", "accepted", resolution="false_alarm")
    with pytest.raises(ValidationError, match="resolution"):
        DispatchCallback.model_validate_json(body)
    with pytest.raises(ValidationError, match="resolution"):
        DispatchCallback.model_validate_json(
            _callback("GW-1", 1, "close", "closed", resolution="maybe")
        )


def test_the_export_writes_deduplicated_crops_as_negatives(stored: Stored, tmp_path: Path) -> None:
    """Without torch: the marks' kept snapshots, cropped to their boxes, named by SHA-256; a
    snapshot survives the evidence store's pruning, the same image twice comes in once, and an
    image already in the training set not at all."""
    assert stored.camera.snapshot is not None and stored.tower.snapshot is not None
    original = Path(stored.camera.snapshot)
    twin = _detection(
        SourceRef(type=SourceType.CAMERA, id="CAM-1"),
        DetectionKind.SMOKE,
        4,
        bbox=(300, 200, 40, 30),
        snapshot=str(original.with_name("twin.jpg")),
    )
    original.with_name("twin.jpg").write_bytes(original.read_bytes())  # a frozen camera
    hotspot = _detection(
        SourceRef(type=SourceType.CAMERA, id="CAM-1"),
        DetectionKind.THERMAL_HOTSPOT,
        5,
        snapshot=str(original),
    )
    with psycopg.connect(stored.url) as conn:
        with conn.transaction():
            write_events(conn, [twin, hotspot])
        for detection in (stored.camera, stored.tower, twin, hotspot):
            mark_false_alarm(conn, detection_id=str(detection.id), operator="o", reason="")
        Path(stored.tower.snapshot).unlink()  # the evidence store pruned it
        export = export_hard_negatives(conn, tmp_path / "feedback")
        counts = (export.added, export.duplicates, export.without_snapshot, export.other_kinds)
        assert counts == (2, 1, 0, 1)  # the thermal hotspot's rejection is not the model's
        camera, tower = export.images
        for image in export.images:
            assert image.label == "none" and image.path.parent == tmp_path / "feedback" / "none"
            digest = hashlib.sha256(image.path.read_bytes()).hexdigest()
            assert image.path.name == f"feedback_{digest}.jpg"
        assert cv2.imread(str(camera.path)).shape[:2] == (160, 160)  # 40×30 box with context
        assert cv2.imread(str(tower.path)).shape[:2] == (360, 640)  # no box: the whole view
        again = export_hard_negatives(conn, tmp_path / "again", [camera.path])
        assert (again.added, again.duplicates) == (1, 2)


def test_the_training_command_exports_the_marks_and_says_how_many(
    stored: Stored, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gridwatch.cli.tools import feedback_negatives
    from gridwatch.settings import Settings

    train = tmp_path / "train"
    for label in ("fire", "smoke", "none"):
        (train / label).mkdir(parents=True)
    with psycopg.connect(stored.url) as conn:
        mark_false_alarm(conn, detection_id=str(stored.camera.id), operator="o", reason="")
    settings = Settings(_env_file=None, database_url=stored.url)  # type: ignore[call-arg]
    images = feedback_negatives(settings, train, tmp_path / "feedback")
    assert [i.label for i in images] == ["none"] and images[0].path.is_file()
    assert "1 hard negatives added from operators' false alarms" in capsys.readouterr().out


def test_the_export_imports_no_torch() -> None:
    probe = "import sys, benchmarks.hard_negatives; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
