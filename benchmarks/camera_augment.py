"""Camera-like views of a training image: what a street camera or watchtower does to a scene.

Each view is a random crop (the framing and scale of a fixed camera; a small one is what a
tile of a wide view sees), then, each with its own
chance: distance (shrunk and enlarged again, so a fire keeps its shape but loses detail),
defocus or motion blur, colour temperature (sodium streetlight to overcast daylight), haze
(a grey veil that lowers contrast), night/IR (grey, dark, noisy), exposure, a mirror image, and
JPEG recompression at a low quality as a cheap encoder does. Every draw comes from the
generator passed in, so a seed fixes every view.
"""

from __future__ import annotations

import cv2
import numpy as np

from benchmarks.image_set import Centre
from detectors.frame import Image


def _crop(image: Image, rng: np.random.Generator, tile: Centre | None, anywhere: bool) -> Image:
    h, w = image.shape[:2]
    small = tile is not None or anywhere
    area = rng.uniform(0.06, 0.4) if small else rng.uniform(0.45, 1.0)
    aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
    cw = min(w, max(16, round(w * np.sqrt(area * aspect))))
    ch = min(h, max(16, round(h * np.sqrt(area / aspect))))
    if tile is None:
        x = int(rng.integers(0, w - cw + 1))
        y = int(rng.integers(0, h - ch + 1))
    else:  # a tile that holds the box centre somewhere in its middle half
        cx, cy = tile[0] * w, tile[1] * h
        x = round(min(max(cx - cw * rng.uniform(0.25, 0.75), 0), w - cw))
        y = round(min(max(cy - ch * rng.uniform(0.25, 0.75), 0), h - ch))
    return image[y : y + ch, x : x + cw]


def _distance(image: Image, rng: np.random.Generator) -> Image:
    h, w = image.shape[:2]
    factor = rng.uniform(0.2, 0.6)
    small = (max(8, round(w * factor)), max(8, round(h * factor)))
    shrunk = cv2.resize(image, small, interpolation=cv2.INTER_AREA)
    return np.asarray(cv2.resize(shrunk, (w, h), interpolation=cv2.INTER_LINEAR), np.uint8)


def _blur(image: Image, rng: np.random.Generator) -> Image:
    if rng.random() < 0.5:
        return np.asarray(cv2.GaussianBlur(image, (0, 0), rng.uniform(0.6, 2.2)), np.uint8)
    length = int(rng.integers(3, 10))
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1.0 / length
    turn = cv2.getRotationMatrix2D((length / 2 - 0.5, length / 2 - 0.5), rng.uniform(0, 180), 1.0)
    kernel = np.asarray(cv2.warpAffine(kernel, turn, (length, length)), np.float32)
    kernel /= max(float(kernel.sum()), 1e-6)
    return np.asarray(cv2.filter2D(image, -1, kernel), np.uint8)


def _temperature(image: Image, rng: np.random.Generator) -> Image:
    warm = rng.uniform(-0.25, 0.25)  # > 0: sodium/tungsten light, < 0: shade and overcast sky
    gains = np.array([1.0 - warm, 1.0, 1.0 + warm], np.float32)  # B, G, R
    return np.asarray(np.clip(image.astype(np.float32) * gains, 0, 255), np.uint8)


def _haze(image: Image, rng: np.random.Generator) -> Image:
    veil = rng.uniform(0.15, 0.5)
    light = rng.uniform(170, 235)
    hazy = image.astype(np.float32) * (1.0 - veil) + light * veil
    return np.asarray(np.clip(hazy, 0, 255), np.uint8)


def _night_ir(image: Image, rng: np.random.Generator) -> Image:
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32) / 255.0
    dark = np.power(grey, rng.uniform(1.0, 2.2)) * rng.uniform(0.5, 1.0)
    noisy = dark * 255.0 + rng.normal(0.0, rng.uniform(2.0, 10.0), grey.shape)
    one = np.asarray(np.clip(noisy, 0, 255), np.uint8)
    return np.asarray(cv2.cvtColor(one, cv2.COLOR_GRAY2BGR), np.uint8)


def _exposure(image: Image, rng: np.random.Generator) -> Image:
    gain = rng.uniform(0.6, 1.35)
    bias = rng.uniform(-20, 20)
    return np.asarray(np.clip(image.astype(np.float32) * gain + bias, 0, 255), np.uint8)


def _jpeg(image: Image, rng: np.random.Generator) -> Image:
    quality = int(rng.integers(15, 70))
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        return image
    return np.asarray(cv2.imdecode(data, cv2.IMREAD_COLOR), np.uint8)


# (chance, change), applied in this order: optics before light, the encoder last
_STEPS = (
    (0.25, _distance),
    (0.3, _blur),
    (0.5, _temperature),
    (0.2, _haze),
    (0.15, _night_ir),
    (0.4, _exposure),
    (0.5, _jpeg),
)


def camera_view(
    image: Image, rng: np.random.Generator, tile: Centre | None = None, anywhere: bool = False
) -> Image:
    """One random camera-like view of a BGR image: most of it, or a tile (6–40 % of the area)
    around the box centre ``tile`` or, with ``anywhere``, at any place."""
    view = _crop(image, rng, tile, anywhere)
    if rng.random() < 0.5:
        view = view[:, ::-1]
    view = np.ascontiguousarray(view)
    for chance, change in _STEPS:
        if rng.random() < chance:
            view = change(view, rng)
    return view
