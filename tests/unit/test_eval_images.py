"""Camera views and the image-evaluation figures, on generated inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from benchmarks.camera_augment import _crop, camera_view
from benchmarks.eval_images import Scored, _threshold_at, class_report, domain_report
from benchmarks.image_set import LabelledImage
from gridwatch.cli import app


def _item(label: str, source: str = "src") -> LabelledImage:
    return LabelledImage(path=Path(f"{label}/{source}_00.jpg"), label=label)


def test_camera_views_are_fixed_by_the_seed_and_stay_colour_uint8() -> None:
    image = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    first = [camera_view(image, np.random.default_rng([7, i])) for i in range(20)]
    again = [camera_view(image, np.random.default_rng([7, i])) for i in range(20)]
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3
    assert len({v.tobytes() for v in first}) == 20


def _scored(label: str, fire: float, smoke: float, source: str = "src") -> Scored:
    return Scored(item=_item(label, source), fire=fire, smoke=smoke)


def test_threshold_lets_through_at_most_the_allowed_share_of_negatives() -> None:
    negatives = np.linspace(0.0, 0.99, 100)
    threshold = _threshold_at(negatives, 0.05)
    assert (negatives >= threshold).sum() == 5
    assert (negatives >= _threshold_at(negatives, 0.0)).sum() == 0


def test_class_report_ranks_each_class_against_the_negatives_only() -> None:
    rng = np.random.default_rng(1)
    scored = [_scored("none", f, s) for f, s in rng.uniform(0, 0.5, (100, 2))]
    scored += [_scored("fire", 0.6 + 0.3 * x, 0.0) for x in rng.random(40)]
    # smoke images score low on fire: they must not count in the fire figures
    scored += [_scored("smoke", 0.0, 0.45 + 0.5 * x) for x in rng.random(40)]
    fire = class_report(scored, "fire", 0.05, None)
    assert fire["auc"] == 1.0 and fire["recall_at_fpr_0.01"] == 1.0
    assert fire["operating_point"]["confusion"]["fp"] <= 5
    assert fire["operating_point"]["confusion"]["tp"] == 40
    smoke = class_report(scored, "smoke", 0.05, None)
    assert 0.9 < smoke["auc"] < 1.0
    assert smoke["recall_at_fpr_0.01"] <= smoke["recall_at_fpr_0.05"] <= smoke["recall_at_fpr_0.10"]
    given = class_report(scored, "smoke", 0.05, 2.0)["operating_point"]
    assert given["recall"] == 0.0 and given["fpr"] == 0.0 and given["chosen"] == "given"


def test_a_domain_is_judged_on_its_own_negatives() -> None:
    scored = [
        _scored("fire", 0.9, 0.1),
        _scored("none", 0.95, 0.0, "cam"),
        _scored("none", 0.1, 0.0),
    ]
    out = domain_report(scored, ("cam",), {"fire": 0.5})
    assert out["negatives"] == 1
    assert out["fire"]["false_positives"] == 1 and out["fire"]["auc_all_positives_vs_these"] == 0.0
    assert domain_report(scored, ("other",), {"fire": 0.5}) == {
        "sources": ["other"],
        "negatives": 0,
    }


@pytest.mark.parametrize("label", ["fire", "smoke", "none"])
def test_source_is_the_file_name_before_its_hash(label: str) -> None:
    assert _item(label, "persontracker").source == "persontracker"


def test_eval_images_names_the_missing_folder(tmp_path: Path) -> None:
    (tmp_path / "fire").mkdir()
    result = CliRunner().invoke(app, ["eval", "images", str(tmp_path)])
    assert result.exit_code == 2
    assert "no smoke, none folder" in " ".join(result.output.split())


def test_eval_images_names_a_missing_model(tmp_path: Path) -> None:
    for label in ("fire", "smoke", "none"):
        (tmp_path / label).mkdir()
    result = CliRunner().invoke(
        app, ["eval", "images", str(tmp_path), "--model", str(tmp_path / "absent.onnx")]
    )
    assert result.exit_code == 2
    assert "absent.onnx: no such model" in " ".join(result.output.split())


def test_a_tile_view_is_small_and_holds_its_box_centre() -> None:
    h, w = 200, 250
    ys, xs = np.mgrid[0:h, 0:w]
    # each pixel's colour is its position: a crop's corner tells where it was cut
    image = np.dstack([xs, ys, np.zeros_like(xs)]).astype(np.uint8)
    for seed in range(30):
        rng = np.random.default_rng(seed)
        crop = _crop(image, rng, (0.9, 0.15), anywhere=False)
        x0, y0 = int(crop[0, 0, 0]), int(crop[0, 0, 1])
        ch, cw = crop.shape[:2]
        assert ch * cw <= 0.42 * h * w
        assert x0 <= 0.9 * w <= x0 + cw and y0 <= 0.15 * h <= y0 + ch
        whole = _crop(image, rng, None, anywhere=False)
        assert whole.shape[0] * whole.shape[1] >= 0.4 * h * w
