"""Traffic-detector evaluation: generated road scenes and real negative footage, each through
the real camera worker, scored per scenario family.

Generated scenes (``simulators.road_scenes``) are JPEG-compressed frame by frame, as a camera
delivers them. A positive sequence is found when a confirmed detection of its kind arrives
after onset (the car standing still, the water starting); time to detection counts from then.
Precision is over confirmed traffic detections: those of a positive's kind during its event
are true. A negative sequence is a false positive when any traffic detection is confirmed.
Fire and smoke alarms that the colour and plume rules raise on the same scenes are counted
apart (``other_alarms``): they are not the traffic detector's, and the road views carry no
learned model.

Real media: no traffic footage with a stalled vehicle or water is available here, so real
media are negatives only: the clips of ``videos/none/`` and the street and CCTV frame
sequences of ``val/none/`` (frames of one clip, one a second, in order), with the whole frame
as the road zone and a short stall time, so that anything the backgrounds mistake for a
standing object would be confirmed within the footage.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from statistics import median
from typing import Any

import cv2
import numpy as np

from benchmarks.eval_detectors import START, VIDEO, eval_camera, file_frames, run_worker
from detectors.traffic import WARM_UP
from gridwatch.events import Detection, DetectionKind
from gridwatch.site_cameras import ImageZone, Vision
from gridwatch.site_detectors import Detectors, TrafficDetector
from ingest.camera_source import Captured
from simulators.road_scenes import POSITIVES, RoadScenario, catalogue, render

TRAFFIC = (DetectionKind.TRAFFIC_OBSTRUCTION, DetectionKind.ROAD_WATER)
KIND_OF = {
    "traffic_obstruction": DetectionKind.TRAFFIC_OBSTRUCTION,
    "road_water": DetectionKind.ROAD_WATER,
}
REAL_STALL_S = 4.0
"""Stall time on real footage: shorter than most clips, so a standing mistake would confirm."""
REAL_SHORT_TAU_S = 2.0
REAL_FPS = 5.0


def _frames(sc: RoadScenario) -> Iterator[Captured]:
    for t, image in render(sc):
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
        assert ok  # noqa: S101
        decoded = np.asarray(cv2.imdecode(jpeg, cv2.IMREAD_COLOR), np.uint8)
        yield Captured(decoded, START + timedelta(seconds=t))


def _confirmed(found: list[Detection]) -> list[Detection]:
    return [d for d in found if d.kind in TRAFFIC and not d.cleared]


def simulated(per_kind: int, work: Path) -> dict[str, Any]:
    families: dict[str, dict[str, Any]] = {}
    for sc in catalogue(per_kind=per_kind):
        found = run_worker(eval_camera(sc.vision, sc.name), _frames(sc), work / "ev", False)
        onset = sc.onset_s or 0.0
        family = families.setdefault(
            sc.element,
            {"label": sc.label, "sequences": 0, "found": 0, "true": 0, "false": 0,
             "false_sequences": [], "delays": [], "other_alarms": 0},
        )  # fmt: skip
        family["sequences"] += 1
        family["other_alarms"] += sum(1 for d in found if d.kind not in TRAFFIC and not d.cleared)
        expected = KIND_OF.get(sc.label)
        end = onset + (sc.stop_s if sc.label == "traffic_obstruction" else sc.duration_s)
        end += sc.vision.detectors.traffic.clear_s if sc.vision.detectors.traffic else 0.0
        true: list[float] = []
        for d in _confirmed(found):
            at = (d.ts - START).total_seconds()
            if d.kind is expected and onset <= at <= end:
                true.append(at - onset)
            else:
                family["false"] += 1
        family["true"] += len(true)
        if true:
            family["found"] += 1
            family["delays"].append(min(true))
        if expected is None and _confirmed(found):
            family["false_sequences"].append(sc.name)
    return {name: _summary(f) for name, f in families.items()}


def _summary(f: dict[str, Any]) -> dict[str, Any]:
    confirmed = f["true"] + f["false"]
    out: dict[str, Any] = {"label": f["label"], "sequences": f["sequences"]}
    if f["label"] in POSITIVES.values():
        out["recall"] = round(f["found"] / f["sequences"], 4)
        out["median_time_to_detection_s"] = round(median(f["delays"]), 1) if f["delays"] else None
    else:
        out["false_positive_rate"] = round(len(f["false_sequences"]) / f["sequences"], 4)
        out["false_positive_sequences"] = f["false_sequences"]
    out["precision"] = round(f["true"] / confirmed, 4) if confirmed else None
    out["false_detections"] = f["false"]
    out["other_alarms"] = f["other_alarms"]
    return out


def _whole_road() -> Vision:
    zone = ImageZone(kind="road", polygon=((0, 0), (1, 0), (1, 1), (0, 1)), name="whole frame")
    settings = TrafficDetector(stall_s=REAL_STALL_S, short_tau_s=REAL_SHORT_TAU_S, clear_s=5.0)
    return Vision(zones=(zone,), detectors=Detectors(fire_smoke_model=None, traffic=settings))


def _sequences(shared: Path) -> Iterator[tuple[str, list[Path]]]:
    """val/none frames grouped by their clip, in frame order."""
    groups: dict[str, list[tuple[int, Path]]] = {}
    with (shared / "SOURCES.tsv").open(newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if row["split"] != "val" or row["class"] != "none":
                continue
            frame = re.search(r"frame_?(\d+)|(\d+)\.\w+$", row["original_path"])
            number = int(next(g for g in frame.groups() if g)) if frame else 0
            groups.setdefault(row["group"], []).append((number, shared / row["file"]))
    for group, items in sorted(groups.items()):
        if len(items) >= 3:
            yield group, [p for _, p in sorted(items)]


def _held(paths: list[Path]) -> Iterator[Captured]:
    """Frames one second apart, each delivered REAL_FPS times, as a slow camera's stream."""
    for i, path in enumerate(paths):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            continue
        for j in range(round(REAL_FPS)):
            yield Captured(np.asarray(image, np.uint8), START + timedelta(seconds=i + j / REAL_FPS))


def real(shared: Path, work: Path) -> dict[str, Any]:
    vision = _whole_road()
    rows: list[dict[str, Any]] = []
    clips = sorted(p for p in (shared / "videos" / "none").iterdir() if p.suffix.lower() in VIDEO)
    for clip in clips:
        frames = list(file_frames(clip))
        rows.append(_real_row(clip.name, "video", frames, vision, work))
    for group, paths in _sequences(shared):
        rows.append(_real_row(group, "frames", list(_held(paths)), vision, work))
    with (shared / "SOURCES.tsv").open(newline="") as f:
        val_none = [
            r for r in csv.DictReader(f, delimiter="\t") if r["file"].startswith("val/none/")
        ]
    singles = len(val_none) - sum(r["frames"] for r in rows if r["kind"] == "frames")
    false = [r["name"] for r in rows if r["traffic_detections"]]
    return {
        "sequences": len(rows),
        "false_positive_rate": round(len(false) / len(rows), 4) if rows else None,
        "false_positive_sequences": false,
        "stall_s": REAL_STALL_S,
        "sequences_long_enough_to_confirm": sum(r["long_enough_to_confirm"] for r in rows),
        "single_stills_not_scored": singles,
        "positives": "none available: no real footage of a stalled vehicle or a flooded road",
        "by_sequence": rows,
    }


def evaluate(per_kind: int, shared: Path | None) -> dict[str, Any]:
    """Generated road scenes, or with ``shared`` (the fire-smoke set) its real negatives."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="gw-eval-traffic-") as tmp:
        if shared is not None:
            return {"media": str(shared), "traffic": real(shared, Path(tmp))}
        scenes = simulated(per_kind, Path(tmp))
    return {"scenarios": sum(f["sequences"] for f in scenes.values()), "traffic": scenes}


def _real_row(
    name: str, kind: str, frames: list[Captured], vision: Vision, work: Path
) -> dict[str, Any]:
    camera = eval_camera(vision, re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:60] or "clip")
    camera = camera.model_copy(update={"sample_fps": REAL_FPS})
    found = run_worker(camera, iter(frames), work / "ev", False)
    span = (frames[-1].ts - frames[0].ts).total_seconds() if frames else 0.0
    rate = min(REAL_FPS, len(frames) / span) if span else REAL_FPS
    # what is left after the warm-up and the short-term background's absorption
    left = span - WARM_UP / rate - 3 * REAL_SHORT_TAU_S
    return {
        "name": name,
        "kind": kind,
        "frames": len(frames) if kind == "video" else len(frames) // round(REAL_FPS),
        "seconds": round(span, 1),
        "long_enough_to_confirm": left >= REAL_STALL_S,
        "traffic_detections": len(_confirmed(found)),
    }
