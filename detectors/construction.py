"""Illegal construction: lasting change against a per-view baseline, inside watch zones.

Each day's frame is registered onto the baseline: ECC on illumination-normalised grey,
accepted only above a correlation score; when ECC fails to converge (a larger PTZ offset, a
strong lighting change), ORB features matched with RANSAC, accepted only with enough inliers.
The aligned frame is normalised for illumination (local mean and
contrast) and compared block by block. A block changes when its structure no longer
correlates with the baseline and its chromaticity moved too: a shadow darkens but keeps both;
vegetation (green in either image) is ignored, so seasons and growth are not buildings. A
change must persist on ``days`` consecutive observed days; the baseline changes only when an
operator acknowledges.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import cv2
import numpy as np
import numpy.typing as npt

from detectors.frame import Box, Image, Mask, components, grey_of

Floats = npt.NDArray[np.float32]
BLOCK = 16


@dataclass(frozen=True, slots=True)
class ChangeReport:
    registered: bool
    alignment: float  # ECC correlation, or the RANSAC inlier share for the ORB fallback
    changed_blocks: int
    confirmed: tuple[Box, ...]  # pixels of the baseline image
    method: str = "ecc"  # "ecc", "orb" or "none"


def _normalised(grey: Image) -> Floats:
    g = grey.astype(np.float32)
    mean = cv2.GaussianBlur(g, (0, 0), 8)
    spread = np.sqrt(cv2.GaussianBlur((g - mean) ** 2, (0, 0), 8))
    return np.asarray((g - mean) / (spread + 6.0), np.float32)


def _chroma(image: Image) -> Floats:
    f = image.astype(np.float32) + 1.0
    return np.asarray(f[..., 1:] / f.sum(axis=2, keepdims=True), np.float32)  # g, r


def _vegetation(image: Image) -> Mask:
    f = image.astype(np.float32) + 1.0
    b, g, r = f[..., 0], f[..., 1], f[..., 2]
    return np.asarray((2 * g - r - b) / (b + g + r) > 0.08, np.bool_)


def _blocks(values: Floats, shape: tuple[int, int]) -> Floats:
    """Mean of each BLOCK×BLOCK tile."""
    rows, cols = shape
    tiles = values[: rows * BLOCK, : cols * BLOCK].reshape(rows, BLOCK, cols, BLOCK)
    return np.asarray(tiles.mean(axis=(1, 3)), np.float32)


@dataclass
class ConstructionWatch:
    baseline: Image  # BGR at working size
    watch: Mask | None = None  # construction-watch zones at the same size; None: everywhere
    days: int = 3
    min_correlation: float = 0.35  # ECC score below which the view is not the same place
    min_inliers: int = 30  # ORB+RANSAC matches consistent with one motion, for the fallback
    _streak: npt.NDArray[np.int32] = field(init=False)
    _last_day: date | int | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._set_baseline(self.baseline)

    def _set_baseline(self, image: Image) -> None:
        self.baseline = image
        grey = grey_of(image)
        self._norm = _normalised(grey)
        self._chroma = _chroma(image)
        self._veg = _vegetation(image)
        h, w = grey.shape
        self._grid = (h // BLOCK, w // BLOCK)
        self._streak = np.zeros(self._grid, np.int32)

    def acknowledge(self, image: Image) -> None:
        """An operator accepted the current scene (legal works, or a case closed)."""
        self._set_baseline(image)

    def _register(self, image: Image) -> tuple[Image | None, float, str]:
        """Align onto the baseline: ECC first, ORB+RANSAC when ECC does not converge."""
        warp, score, method = self._ecc(image)
        if warp is None:
            warp, score, method = self._orb(image)
        if warp is None:
            return None, score, "none"
        h, w = self.baseline.shape[:2]
        warped = cv2.warpAffine(
            image,
            warp,
            (w, h),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REFLECT,
        )
        return np.asarray(warped, np.uint8), score, method

    def _ecc(self, image: Image) -> tuple[Floats | None, float, str]:
        """Euclidean ECC on illumination-normalised grey; None below ``min_correlation``."""
        warp = np.eye(2, 3, dtype=np.float32)
        criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 60, 1e-4)
        try:
            score, found = cv2.findTransformECC(
                self._norm,
                _normalised(grey_of(image)),
                warp,
                cv2.MOTION_EUCLIDEAN,
                criteria,
            )
        except cv2.error:
            return None, 0.0, "ecc"
        if score < self.min_correlation:
            return None, float(score), "ecc"
        return np.asarray(found, np.float32), float(score), "ecc"

    def _orb(self, image: Image) -> tuple[Floats | None, float, str]:
        """ORB matches and a RANSAC similarity, trusted only with ``min_inliers`` inliers.

        The warp maps baseline pixels to image pixels, as ECC's does (used with
        ``WARP_INVERSE_MAP``)."""
        orb = cv2.ORB.create(nfeatures=2000, fastThreshold=5)  # low: fields are soft
        kb, db = orb.detectAndCompute(grey_of(self.baseline), None)
        ki, di = orb.detectAndCompute(grey_of(image), None)
        if db is None or di is None or len(kb) < self.min_inliers or len(ki) < self.min_inliers:
            return None, 0.0, "orb"
        matches = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(db, di)
        if len(matches) < self.min_inliers:
            return None, 0.0, "orb"
        src = np.array([kb[m.queryIdx].pt for m in matches], np.float32)
        dst = np.array([ki[m.trainIdx].pt for m in matches], np.float32)
        warp, inliers = cv2.estimateAffinePartial2D(
            src, dst, method=cv2.RANSAC, ransacReprojThreshold=3.0
        )
        count = int(inliers.sum()) if inliers is not None else 0
        share = count / len(matches)
        if warp is None or count < self.min_inliers:
            return None, share, "orb"
        return np.asarray(warp, np.float32), share, "orb"

    def observe(self, image: Image, day: date | int) -> ChangeReport:
        """Compare one day's frame (same view, any time of day) with the baseline; ``day`` is
        a date or a day count (compressed time), only ever compared with the previous one."""
        warped, alignment, method = self._register(image)
        if warped is None:
            return ChangeReport(False, alignment, 0, (), method)
        norm = _normalised(grey_of(warped))
        # Zero-mean normalised correlation per block: robust to gain and offset (shadows, sun).
        product = _blocks(norm * self._norm, self._grid)
        energy = np.sqrt(_blocks(norm**2, self._grid) * _blocks(self._norm**2, self._grid))
        correlation = product / (energy + 1e-3)
        chroma = np.abs(_chroma(warped) - self._chroma).sum(axis=2)
        shift = _blocks(chroma, self._grid)
        veg = _blocks((self._veg | _vegetation(warped)).astype(np.float32), self._grid)
        changed = (correlation < 0.35) & (shift > 0.04) & (veg < 0.3)
        if self.watch is not None:
            changed &= _blocks(self.watch.astype(np.float32), self._grid) > 0.5
        if self._last_day != day:
            self._streak = np.where(changed, self._streak + 1, 0).astype(np.int32)
            self._last_day = day
        lasting = self._streak >= self.days
        boxes = tuple(
            (x * BLOCK, y * BLOCK, w * BLOCK, h * BLOCK)
            for (x, y, w, h), _ in components(lasting, 2)
        )
        return ChangeReport(True, alignment, int(changed.sum()), boxes, method)
