"""The evidence store: a JPEG of the whole frame and a crop of the region, per detection."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

import cv2

from detectors.frame import Box, Frame, grow


class EvidenceStore:
    def __init__(self, root: Path, quality: int = 85) -> None:
        self.root = root
        self.quality = quality

    def save(self, frame: Frame, box: Box | None, detection_id: UUID) -> str:
        """Write the snapshot (and the crop beside it); return the snapshot's path."""
        folder = self.root / frame.source_id / frame.ts.strftime("%Y-%m-%d")
        folder.mkdir(parents=True, exist_ok=True)
        snapshot = folder / f"{detection_id}.jpg"
        params = [cv2.IMWRITE_JPEG_QUALITY, self.quality]
        if not cv2.imwrite(str(snapshot), frame.image, params):
            raise OSError(f"cannot write evidence {snapshot}")
        if box is not None:
            x, y, w, h = grow(box, 0.5, frame.image.shape)
            crop = frame.image[y : y + h, x : x + w]
            if crop.size:
                cv2.imwrite(str(folder / f"{detection_id}-crop.jpg"), crop, params)
        return str(snapshot)
