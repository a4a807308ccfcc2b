"""What training can be checked on without training: its targets and its missing extra."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.image_set import LabelledImage
from benchmarks.train_detector import _torch, targets
from gridwatch.errors import GridwatchError


def _item(label: str, smoke_box: bool = False) -> LabelledImage:
    smoke = ((0.5, 0.5),) if smoke_box else ()
    return LabelledImage(path=Path(f"{label}/src_00.jpg"), label=label, smoke_boxes=smoke)


def test_a_fire_image_teaches_smoke_only_when_its_boxes_say_so() -> None:
    goal = targets([_item("fire"), _item("fire", smoke_box=True), _item("smoke"), _item("none")])
    np.testing.assert_array_equal(goal, [[1, 0, 0], [1, 1, 1], [0, 1, 1], [0, 0, 1]])


def test_without_torch_training_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(GridwatchError, match=r"pip install gridwatch\[train\]"):
        _torch()
