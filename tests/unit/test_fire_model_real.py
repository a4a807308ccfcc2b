"""The packaged model on a handful of real validation images, where the shared set is present."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from benchmarks.image_set import SHARED_SET, read
from detectors.fire_model import FireSmokeModel
from gridwatch.cli import app

VAL = SHARED_SET / "val"
pytestmark = pytest.mark.skipif(
    not VAL.is_dir(), reason=f"real images absent: no {VAL} (set GRIDWATCH_SHARED_DATA)"
)
PER_CLASS = 6


def _few(label: str) -> list[Path]:
    return sorted((VAL / label).glob("*.jpg"))[:PER_CLASS]


def test_real_fire_scores_above_real_negatives() -> None:
    model = FireSmokeModel()
    fire = [s.fire for s in model.score([read(p) for p in _few("fire")])]
    smoke = [s.smoke for s in model.score([read(p) for p in _few("smoke")])]
    none = model.score([read(p) for p in _few("none")])
    assert np.median(fire) > np.median([s.fire for s in none])
    assert np.median(smoke) > np.median([s.smoke for s in none])


def test_eval_images_reports_every_figure_per_class(tmp_path: Path) -> None:
    for label in ("fire", "smoke", "none"):
        (tmp_path / label).mkdir()
        for path in _few(label):
            (tmp_path / label / path.name).symlink_to(path)
    out = tmp_path / "report.json"
    sheet = tmp_path / "sheet.png"
    result = CliRunner().invoke(
        app, ["eval", "images", str(tmp_path), "--json", str(out), "--sheet", str(sheet)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    for name in ("fire", "smoke"):
        keys = {"auc", "recall_at_fpr_0.01", "recall_at_fpr_0.05", "recall_at_fpr_0.10"}
        assert keys <= report[name].keys()
        assert report[name]["negatives"] == f"none/ ({PER_CLASS})"
    assert report["cost_ms_per_image"]["mean"] > 0
    assert read(sheet).shape[1] > 0
