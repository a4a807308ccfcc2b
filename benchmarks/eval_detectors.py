"""Detector evaluation: every labelled scenario through the real camera worker, scored.

Sequence level, as Pyronear scores: a positive sequence counts as found when a confirmed
detection of its kind arrives at or after onset; a negative sequence is a false positive when
any fire or smoke detection is published. False alarms per camera-day extrapolate the
negatives' false detections over their total duration. With ``footage`` the positives'
flames and smoke are real ones from the training images (``simulators.camera_footage``), as
the simulated cameras serve them. ``--media DIR`` scores real footage the
same way: DIR/<fire|smoke|fire_and_smoke|none>/ holding videos or folders of ordered frames.
Patrol scenarios (a stuck PTZ) play through a watchtower worker; every scenario that expects a
camera-health issue is also scored on whether that issue was raised.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from statistics import median
from typing import Any

import cv2
import numpy as np

from detectors.construction import ConstructionWatch
from gridwatch.events import Detection, DetectionKind, Point
from gridwatch.site_cameras import Camera, Preset, Vision, Watchtower
from gridwatch.site_detectors import Detectors, FireColourSettings, SmokePlumeSettings
from ingest.camera_evidence import EvidenceStore
from ingest.camera_source import Captured, VideoSource
from ingest.camera_worker import CameraWorker
from simulators.camera_ptz import SimulatedPtz
from simulators.camera_scenes import PATROL, Scenario, catalogue
from simulators.camera_server import write_video
from simulators.camera_sites import render_days, site_catalogue

START = datetime(2025, 4, 1, 10, tzinfo=UTC)
FIRE_SMOKE = ("model", "rules", "both")
"""Which fire/smoke detectors run: the learned model (the default), the colour and plume
rules, or both side by side."""
KINDS = {"fire": DetectionKind.FIRE, "smoke": DetectionKind.SMOKE}
VIDEO = (".avi", ".mp4", ".mkv", ".mov", ".webm", ".mpg")


@dataclass(frozen=True)
class Outcome:
    name: str
    label: str
    duration_s: float
    detections: tuple[Detection, ...]
    onset_s: float
    expect_health: str | None = None


def detector_set(fire_smoke: str = "model", grids: tuple[int, ...] | None = None) -> Detectors:
    """The default detectors with the chosen fire/smoke detectors (``FIRE_SMOKE``)."""
    if fire_smoke not in FIRE_SMOKE:
        raise ValueError(f"fire/smoke detectors: one of {', '.join(FIRE_SMOKE)}, not {fire_smoke}")
    default = Detectors()
    model = default.fire_smoke_model
    assert model is not None  # noqa: S101  (on by default)
    if grids is not None:
        model = model.model_copy(update={"grids": grids})
    rules = fire_smoke != "model"
    return default.model_copy(
        update={
            "fire_smoke_model": None if fire_smoke == "rules" else model,
            "fire_colour": FireColourSettings() if rules else None,
            "smoke_plume": SmokePlumeSettings() if rules else None,
        }
    )


def eval_camera(vision: Vision, name: str) -> Camera:
    return Camera(
        id=name,
        name=name,
        url="",
        location=Point(lon=106.65, lat=26.62),
        height_m=20.0,
        heading_deg=0.0,
        fov_deg=60.0,
        sample_fps=1.0,
        vision=vision,
    )


def run_worker(
    camera: Camera, frames: Iterator[Captured], evidence: Path, thermal: bool
) -> list[Detection]:
    found: list[Detection] = []
    worker = CameraWorker.for_camera(camera, found.append, EvidenceStore(evidence))
    worker.thermal = thermal
    for event in frames:
        worker.handle(event)
    return found


def _tower(sc: Scenario) -> Watchtower:
    return Watchtower(
        id=sc.name,
        name=sc.name,
        location=Point(lon=106.65, lat=26.62),
        height_m=30.0,
        visible_url="",
        presets=tuple(
            Preset(id=i, pan_deg=pan, tilt_deg=-3.0, fov_deg=60.0)
            for i, pan in enumerate((0.0, 120.0, 240.0))
        ),
        settle_s=2.0,
        dwell_s=10.0,
        vision=sc.vision,
    )


def run_patrol(sc: Scenario, frames: Iterator[Captured], evidence: Path) -> list[Detection]:
    """A watchtower patrol over three presets whose head never moves: every preset shows the
    scenario's single view."""
    found: list[Detection] = []
    first = next(frames)
    head = SimulatedPtz({0: first.image}, stuck=True)
    worker = CameraWorker.for_watchtower(
        _tower(sc), found.append, EvidenceStore(evidence), ptz=head
    )
    worker.handle(first)
    for event in frames:
        worker.handle(event)
    return found


def file_frames(path: Path) -> Iterator[Captured]:
    for event in VideoSource(str(path), start=START).frames(threading.Event()):
        if isinstance(event, Captured):
            yield event


def _sequence_frames(folder: Path, fps: float) -> Iterator[Captured]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    for i, path in enumerate(files):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is not None:
            yield Captured(np.asarray(image, np.uint8), START + timedelta(seconds=i / fps))


def simulated(
    per_kind: int, work: Path, detectors: Detectors, footage: bool = False
) -> list[Outcome]:
    out: list[Outcome] = []
    for generated in catalogue(per_kind=per_kind):
        vision = generated.vision.model_copy(update={"detectors": detectors})
        sc = replace(generated, vision=vision, footage=footage)
        video = write_video(sc, work / "video")
        if sc.element in PATROL:
            found = run_patrol(sc, file_frames(video), work / "ev")
        else:
            found = run_worker(
                eval_camera(sc.vision, sc.name), file_frames(video), work / "ev", sc.thermal
            )
        video.unlink()
        onset = sc.onset_s or 0.0
        out.append(Outcome(sc.name, sc.label, sc.duration_s, tuple(found), onset, sc.expect_health))
    return out


def media(folder: Path, fps: float, work: Path, detectors: Detectors) -> list[Outcome]:
    out: list[Outcome] = []
    vision = Vision(detectors=detectors)
    for label_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        label = label_dir.name
        for item in sorted(label_dir.iterdir()):
            if item.is_dir():
                frames = list(_sequence_frames(item, fps))
            elif item.suffix.lower() in VIDEO:
                frames = list(file_frames(item))
            else:
                continue
            if not frames:
                continue
            duration = (frames[-1].ts - frames[0].ts).total_seconds()
            found = run_worker(eval_camera(vision, item.stem), iter(frames), work / "ev", False)
            out.append(Outcome(item.name, label, duration, tuple(found), 0.0))
    return out


ALARMS = (DetectionKind.FIRE, DetectionKind.SMOKE, DetectionKind.THERMAL_HOTSPOT)
SCORED = {
    "fire": frozenset({DetectionKind.FIRE, DetectionKind.THERMAL_HOTSPOT}),
    "smoke": frozenset({DetectionKind.SMOKE}),
}


def time_to_detection(o: Outcome, kinds: frozenset[DetectionKind]) -> float | None:
    """Seconds from onset to the first confirmed detection of one of ``kinds``, or None."""
    delays = [
        (d.ts - START).total_seconds() - o.onset_s
        for d in o.detections
        if d.kind in kinds and not d.cleared and (d.ts - START).total_seconds() >= o.onset_s
    ]
    return min(delays, default=None)


def sequences(outcomes: list[Outcome]) -> list[dict[str, Any]]:
    """Per sequence: time to detection of each kind, alarms raised, their best score."""
    rows: list[dict[str, Any]] = []
    for o in outcomes:
        alarms = [d for d in o.detections if d.kind in ALARMS and not d.cleared]
        found = {name: time_to_detection(o, kinds) for name, kinds in SCORED.items()}
        rows.append(
            {
                "name": o.name,
                "label": o.label,
                "duration_s": round(o.duration_s, 1),
                **{
                    f"{k}_time_to_detection_s": None if v is None else round(v, 1)
                    for k, v in found.items()
                },
                "alarms": len(alarms),
                "max_confidence": round(max((d.confidence for d in alarms), default=0.0), 3),
            }
        )
    return rows


def score(outcomes: list[Outcome]) -> dict[str, Any]:
    report: dict[str, Any] = {}
    for name, kinds in SCORED.items():
        positives = [o for o in outcomes if name in o.label]
        found = [t for o in positives if (t := time_to_detection(o, kinds)) is not None]
        report[name] = {
            "sequences": len(positives),
            "recall": round(len(found) / len(positives), 4) if positives else None,
            "median_time_to_detection_s": round(median(found), 1) if found else None,
        }
    negatives = [o for o in outcomes if o.label == "none"]
    false = [o for o in negatives if any(d.kind in ALARMS and not d.cleared for d in o.detections)]
    false_alarms = sum(
        1 for o in negatives for d in o.detections if d.kind in ALARMS and not d.cleared
    )
    days = sum(o.duration_s for o in negatives) / 86400
    report["negatives"] = {
        "sequences": len(negatives),
        "false_positive_rate": round(len(false) / len(negatives), 4) if negatives else None,
        "false_positive_sequences": [o.name for o in false],
        "false_alarms": false_alarms,
        "camera_days": round(days, 4),
        "false_alarms_per_camera_day": round(false_alarms / days, 2) if days else None,
    }
    gated = [o for o in outcomes if o.expect_health is not None]
    missed = [
        o.name
        for o in gated
        if not any(d.rule == f"camera_health:{o.expect_health}" for d in o.detections)
    ]
    report["health_gates"] = {
        "sequences": len(gated),
        "raised": len(gated) - len(missed),
        "missed": missed,
    }
    return report


def construction(per_kind: int) -> dict[str, Any]:
    tp = fp = fn = tn = 0
    for sc in site_catalogue(per_kind=per_kind):
        watch: ConstructionWatch | None = None
        alarmed = False
        for day, image in render_days(sc):
            if watch is None:
                w, h = sc.size
                x, y, sw, sh = sc.site
                zone = np.zeros((h, w), np.bool_)
                zone[
                    round((y - 0.05) * h) : round((y + sh + 0.05) * h),
                    round((x - 0.05) * w) : round((x + sw + 0.05) * w),
                ] = True
                watch = ConstructionWatch(image, zone, days=3)
                continue
            alarmed |= bool(watch.observe(image, date(2025, 4, 1) + timedelta(days=day)).confirmed)
        tp += alarmed and sc.builds
        fp += alarmed and not sc.builds
        fn += (not alarmed) and sc.builds
        tn += (not alarmed) and not sc.builds
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "sites": tp + fp + fn + tn,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
    }


def evaluate(
    per_kind: int = 8,
    media_dir: Path | None = None,
    fps: float = 5.0,
    detectors: Detectors | None = None,
    footage: bool = False,
) -> dict[str, Any]:
    detectors = detectors or Detectors()
    config = detectors.model_dump(mode="json")
    with tempfile.TemporaryDirectory(prefix="gw-eval-") as tmp:
        work = Path(tmp)
        if media_dir is not None:
            found = media(media_dir, fps, work, detectors)
            return {
                "media": str(media_dir),
                "detectors": config,
                **score(found),
                "per_sequence": sequences(found),
            }
        outcomes = simulated(per_kind, work, detectors, footage)
    return {
        "scenarios": len(outcomes),
        "footage": footage,
        "detectors": config,
        **score(outcomes),
        "construction": construction(per_kind),
    }
