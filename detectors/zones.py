"""Image zones from the site file rasterised onto the working frame."""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np

from detectors.frame import Box, Mask
from gridwatch.site_cameras import ImageZone


class ZoneMap:
    """Where analysis is allowed and what kind of ground each pixel is, at one image size."""

    def __init__(
        self, zones: Iterable[ImageZone], shape: tuple[int, int], preset: int | None = None
    ) -> None:
        self.shape = shape
        h, w = shape
        self._kinds: dict[str, Mask] = {}
        for zone in zones:
            if zone.preset is not None and zone.preset != preset:
                continue
            ring = np.array([[round(x * (w - 1)), round(y * (h - 1))] for x, y in zone.polygon])
            raster = np.zeros(shape, np.uint8)
            cv2.fillPoly(raster, [ring.astype(np.int32)], 1)
            previous = self._kinds.get(zone.kind, np.zeros(shape, np.bool_))
            self._kinds[zone.kind] = previous | raster.astype(np.bool_)
        self.allowed: Mask = ~self._kinds.get("mask", np.zeros(shape, np.bool_))

    def mask(self, kind: str) -> Mask | None:
        return self._kinds.get(kind)

    def kinds_at(self, box: Box) -> tuple[str, ...]:
        """Zone kinds that cover the bottom centre of a box: where a fire or plume stands."""
        x, y, w, h = box
        px = min(max(x + w // 2, 0), self.shape[1] - 1)
        py = min(max(y + h - 1, 0), self.shape[0] - 1)
        return tuple(k for k, m in self._kinds.items() if k != "mask" and m[py, px])
