"""The learned fire/smoke model: an ONNX graph run by ONNX Runtime on CPU.

The graph is EfficientNet-Lite0 fine-tuned by ``gridwatch train detector`` (its model card lies
beside it). It takes a batch of ``preprocess``-ed views and gives two independent probabilities
per view, fire (flames visible) and smoke (smoke visible): two sigmoid heads rather than one
softmax, because a burning scene is both and an operator is alerted on each. Training feeds
its network through this same ``preprocess``, so the runtime sees exactly what was learned.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from detectors.frame import Image
from gridwatch.errors import GridwatchError

INPUT_SIZE = 224
"""Views are squashed to this square: the size the backbone was pretrained and exported at."""

CLASSES = ("fire", "smoke")
"""The model's outputs, in order: one probability each."""

# ImageNet statistics of RGB pixels in 0..255, as the pretrained weights expect
_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255.0
_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255.0

MODEL_DIR = Path(__file__).parent / "models"
DEFAULT_MODEL = MODEL_DIR / "fire_smoke.onnx"

Batch = npt.NDArray[np.float32]


def preprocess(images: Sequence[Image]) -> Batch:
    """BGR (or one-channel) uint8 images → an NCHW float32 batch the model takes."""
    out = np.empty((len(images), 3, INPUT_SIZE, INPUT_SIZE), np.float32)
    for i, image in enumerate(images):
        if image.ndim == 2:
            image = np.asarray(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), np.uint8)
        h, w = image.shape[:2]
        # area averaging when shrinking (no aliasing of thin plumes), bilinear when enlarging
        shrink = h >= INPUT_SIZE and w >= INPUT_SIZE
        size = (INPUT_SIZE, INPUT_SIZE)
        resized = cv2.resize(
            image, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        )
        rgb = resized[:, :, ::-1].astype(np.float32)
        out[i] = ((rgb - _MEAN) / _STD).transpose(2, 0, 1)
    return out


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True, slots=True)
class Scores:
    fire: float
    smoke: float


class FireSmokeModel:
    """Scores views with the ONNX model; one instance per worker (a session is not cheap)."""

    def __init__(self, path: Path = DEFAULT_MODEL, threads: int = 1) -> None:
        if not path.is_file():
            raise GridwatchError(f"{path}: no such model (`gridwatch train detector` makes one)")
        options = ort.SessionOptions()
        # one camera worker per core: the model must not spread over cores others are using
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.path = path
        self.session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name

    def run(self, batch: Batch) -> npt.NDArray[np.float32]:
        """A preprocessed batch → (N, 2) probabilities, columns in ``CLASSES`` order."""
        (probabilities,) = self.session.run(None, {self.input_name: batch})
        return np.asarray(probabilities, np.float32)

    def score(self, images: Sequence[Image]) -> list[Scores]:
        if not images:
            return []
        return [Scores(fire=float(f), smoke=float(s)) for f, s in self.run(preprocess(images))]
