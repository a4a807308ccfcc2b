"""``gridwatch eval images DIR``: the fire/smoke model on a labelled folder of real images.

Each class is judged against the same negatives: fire = ``DIR/fire/`` (flames, with or without
smoke) against ``DIR/none/``, smoke = ``DIR/smoke/`` (smoke without flames) against
``DIR/none/``, each with that class's own probability; ``any`` = fire and smoke images against
``DIR/none/`` with the larger of the two, the score an operator's alarm follows. Images of the
other positive class are left out of a class's figures, because a fire image usually shows
smoke too. The operating point of a class is the lowest threshold whose false-positive rate on
these negatives stays within ``target_fpr`` (or the threshold given). Domains (surveillance
cameras) are judged apart: their negatives' false positives at the chosen thresholds and the
AUC of all positives against them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import mean, median
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve

from benchmarks.image_set import LabelledImage, read, scan
from detectors.fire_model import CLASSES, FireSmokeModel, preprocess

FPRS = (0.01, 0.05, 0.10)
TARGET_FPR = 0.05
DOMAINS = {"cctv": ("adi", "anubhav", "persontracker", "samrah")}
"""Sources of the shared fire-smoke set whose images are surveillance-camera frames (its
MANIFEST.md, "Surveillance-domain additions"); all of them are negatives."""

SHEET_TILE = 176
SHEET_COLUMNS = 8


@dataclass(frozen=True, slots=True)
class Scored:
    item: LabelledImage
    fire: float
    smoke: float

    def of(self, name: str) -> float:
        if name == "fire":
            return self.fire
        if name == "smoke":
            return self.smoke
        return max(self.fire, self.smoke)


def score_all(
    model: FireSmokeModel, images: Sequence[LabelledImage]
) -> tuple[list[Scored], list[float]]:
    """Each image scored alone (as a camera worker does), with its cost in ms: decode apart."""
    scored: list[Scored] = []
    costs: list[float] = []
    for item in images:
        image = read(item.path)
        began = time.perf_counter()
        fire, smoke = model.run(preprocess([image]))[0]
        costs.append((time.perf_counter() - began) * 1000.0)
        scored.append(Scored(item=item, fire=float(fire), smoke=float(smoke)))
    return scored, costs


def _split(scored: Sequence[Scored], name: str) -> tuple[list[Scored], list[Scored]]:
    wanted = ("fire", "smoke") if name == "any" else (name,)
    positives = [s for s in scored if s.item.label in wanted]
    negatives = [s for s in scored if s.item.label == "none"]
    return positives, negatives


def _threshold_at(negative_scores: npt.NDArray[np.float64], fpr: float) -> float:
    """The lowest threshold (score ≥ threshold alarms) whose FPR on these negatives is ≤ fpr."""
    ordered = np.sort(negative_scores)[::-1]
    allowed = int(np.floor(fpr * len(ordered)))
    if allowed >= len(ordered):
        return 0.0
    # just above the highest negative that must stay quiet
    return float(np.nextafter(ordered[allowed], np.inf))


def class_report(
    scored: Sequence[Scored], name: str, target_fpr: float, threshold: float | None
) -> dict[str, Any]:
    positives, negatives = _split(scored, name)
    truth = np.array([1] * len(positives) + [0] * len(negatives))
    score = np.array([s.of(name) for s in (*positives, *negatives)], np.float64)
    fpr, tpr, _ = roc_curve(truth, score)
    folders = "fire/ + smoke/" if name == "any" else f"{name}/"
    report: dict[str, Any] = {
        "positives": f"{folders} ({len(positives)})",
        "negatives": f"none/ ({len(negatives)})",
        "auc": round(float(roc_auc_score(truth, score)), 4),
    }
    for limit in FPRS:
        report[f"recall_at_fpr_{limit:.2f}"] = round(float(tpr[fpr <= limit].max()), 4)
    chosen = threshold if threshold is not None else _threshold_at(score[truth == 0], target_fpr)
    alarm = (score >= chosen).astype(int)
    (tn, fp), (fn, tp) = confusion_matrix(truth, alarm, labels=[0, 1]).tolist()
    report["operating_point"] = {
        "threshold": round(chosen, 6),
        "chosen": "given" if threshold is not None else f"lowest with FPR <= {target_fpr}",
        "recall": round(tp / max(1, tp + fn), 4),
        "fpr": round(fp / max(1, fp + tn), 4),
        "confusion": {"tp": tp, "fn": fn, "fp": fp, "tn": tn},
    }
    return report


def domain_report(
    scored: Sequence[Scored], sources: Sequence[str], thresholds: dict[str, float]
) -> dict[str, Any]:
    """A domain's negatives at the chosen thresholds, and all positives ranked against them."""
    negatives = [s for s in scored if s.item.label == "none" and s.item.source in sources]
    out: dict[str, Any] = {"sources": list(sources), "negatives": len(negatives)}
    if not negatives:
        return out
    for name, chosen in thresholds.items():
        positives, _ = _split(scored, name)
        flagged = sum(s.of(name) >= chosen for s in negatives)
        truth = [1] * len(positives) + [0] * len(negatives)
        score = [s.of(name) for s in (*positives, *negatives)]
        out[name] = {
            "false_positives": flagged,
            "fpr": round(flagged / len(negatives), 4),
            "auc_all_positives_vs_these": round(float(roc_auc_score(truth, score)), 4),
            "max_negative_score": round(max(s.of(name) for s in negatives), 4),
        }
    return out


def source_report(scored: Sequence[Scored], thresholds: dict[str, float]) -> dict[str, Any]:
    """Per source and class folder: how many images raise the alarm at the chosen thresholds."""
    out: dict[str, Any] = {}
    for s in scored:
        key = f"{s.item.label}/{s.item.source}"
        name = "any" if s.item.label == "none" else s.item.label
        row = out.setdefault(key, {"images": 0, "alarms": 0})
        row["images"] += 1
        row["alarms"] += int(s.of(name) >= thresholds[name])
    return dict(sorted(out.items()))


def contact_sheet(
    scored: Sequence[Scored], thresholds: dict[str, float], path: Path, count: int = 16
) -> Path:
    """The worst false positives (top rows) and the worst misses (bottom rows), captioned."""
    negatives = sorted(
        (s for s in scored if s.item.label == "none"), key=lambda s: s.of("any"), reverse=True
    )
    misses = sorted((s for s in scored if s.item.label != "none"), key=lambda s: s.of(s.item.label))
    rows: list[Any] = []
    groups = (
        ("highest-scoring negatives (red: an alarm at the operating point)", negatives[:count]),
        ("lowest-scoring positives (red: no alarm of their class)", misses[:count]),
    )
    for title, group in groups:
        tiles = [_tile(s, thresholds) for s in group]
        tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % SHEET_COLUMNS) if tiles else []
        header = np.full((28, SHEET_TILE * SHEET_COLUMNS, 3), 32, np.uint8)
        cv2.putText(header, title, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1)
        rows.append(header)
        for i in range(0, len(tiles), SHEET_COLUMNS):
            rows.append(np.hstack(tiles[i : i + SHEET_COLUMNS]))
    cv2.imwrite(str(path), np.vstack(rows))
    return path


def _tile(s: Scored, thresholds: dict[str, float]) -> Any:
    image = read(s.item.path)
    h, w = image.shape[:2]
    side = SHEET_TILE - 4
    factor = side / max(h, w)
    small = cv2.resize(image, (max(1, round(w * factor)), max(1, round(h * factor))))
    tile = np.full((SHEET_TILE + 30, SHEET_TILE, 3), 24, np.uint8)
    tile[2 : 2 + small.shape[0], 2 : 2 + small.shape[1]] = small
    name = "any" if s.item.label == "none" else s.item.label
    alarm = s.of(name) >= thresholds[name]
    colour = (80, 80, 255) if alarm == (s.item.label == "none") else (120, 220, 120)
    lines = (f"{s.item.label} {s.item.source}", f"F {s.fire:.3f} S {s.smoke:.3f}")
    for i, line in enumerate(lines):
        y = SHEET_TILE + 10 + 13 * i
        cv2.putText(tile, line, (3, y), cv2.FONT_HERSHEY_SIMPLEX, 0.38, colour, 1)
    return tile


def evaluate(
    directory: Path,
    model_path: Path,
    target_fpr: float = TARGET_FPR,
    thresholds: dict[str, float] | None = None,
    sheet: Path | None = None,
) -> dict[str, Any]:
    images = scan(directory)
    scored, costs = score_all(FireSmokeModel(model_path, threads=1), images)
    given = thresholds or {}
    classes = {
        name: class_report(scored, name, target_fpr, given.get(name)) for name in (*CLASSES, "any")
    }
    chosen = {name: float(c["operating_point"]["threshold"]) for name, c in classes.items()}
    report: dict[str, Any] = {
        "images": str(directory),
        "model": str(model_path),
        **classes,
        "domains": {name: domain_report(scored, srcs, chosen) for name, srcs in DOMAINS.items()},
        "sources": source_report(scored, chosen),
        "cost_ms_per_image": {
            "mean": round(mean(costs), 2),
            "median": round(median(costs), 2),
            "what": "preprocess + model, one image at a time on one thread, decode apart",
        },
    }
    if sheet is not None:
        report["contact_sheet"] = str(contact_sheet(scored, chosen, sheet))
    return report
