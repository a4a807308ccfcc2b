"""The evidence store: a JPEG of the whole frame and a crop of the region, per detection; and
beside it the construction baselines an operator acknowledges. Every directory is checked to
stay inside its store, whatever a source id says."""

from __future__ import annotations

import os
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Literal
from uuid import UUID

import cv2
import numpy as np
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from detectors.frame import Box, Frame, Image, grow
from gridwatch.errors import ConfigError


def inside(root: Path, *parts: str) -> Path:
    """``root/parts…``, refused unless it resolves inside ``root`` (no '..', no absolute part,
    no symlink out)."""
    path = root.joinpath(*parts)
    if not path.resolve().is_relative_to(root.resolve()):
        raise ConfigError(f"{'/'.join(parts)!r} would be written outside {root}")
    return path


class EvidenceStore:
    def __init__(self, root: Path, quality: int = 85) -> None:
        self.root = root
        self.quality = quality

    def save(self, frame: Frame, box: Box | None, detection_id: UUID) -> str:
        """Write the snapshot (and the crop beside it); return the snapshot's path."""
        folder = inside(self.root, frame.source_id, frame.ts.strftime("%Y-%m-%d"))
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


class BaselineRecord(BaseModel):
    """Which image a preset's construction baseline is, and who made it so."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = Field(ge=1, description="grows by one on every acknowledgement")
    origin: Literal["first_view", "acknowledged"]
    accepted_at: AwareDatetime
    day: date = Field(description="the day the accepted frame was taken")
    by: str | None = Field(default=None, description="operator who acknowledged")


class BaselineStore:
    """Construction baselines per view, on disk beside the evidence.

    ``<root>/baselines/<source>/<view>/`` holds ``latest.png`` (the last registered daily frame),
    ``baseline.png`` and ``baseline.json``. The worker writes the daily frame and, for a view seen
    for the first time, the first baseline; only an acknowledgement replaces it, which the worker
    notices by the record's version.
    """

    def __init__(self, root: Path) -> None:
        self.root = root / "baselines"

    def _folder(self, source_id: str, preset: int | None) -> Path:
        return inside(self.root, source_id, "fixed" if preset is None else f"preset-{preset}")

    def record(self, source_id: str, preset: int | None) -> BaselineRecord | None:
        path = self._folder(source_id, preset) / "baseline.json"
        if not path.is_file():
            return None
        return BaselineRecord.model_validate_json(path.read_text(encoding="utf-8"))

    def baseline(self, source_id: str, preset: int | None) -> Image | None:
        return _read(self._folder(source_id, preset) / "baseline.png")

    def save_daily(self, source_id: str, preset: int | None, image: Image, day: date) -> None:
        folder = self._folder(source_id, preset)
        folder.mkdir(parents=True, exist_ok=True)
        _write(folder / "latest.png", image)
        (folder / "latest.day").write_text(day.isoformat(), encoding="utf-8")

    def start(self, source_id: str, preset: int | None, image: Image, day: date) -> BaselineRecord:
        """The first view of a preset becomes its baseline until an operator says otherwise."""
        folder = self._folder(source_id, preset)
        folder.mkdir(parents=True, exist_ok=True)
        _write(folder / "baseline.png", image)
        record = BaselineRecord(version=1, origin="first_view", accepted_at=_now(), day=day)
        (folder / "baseline.json").write_text(record.model_dump_json(), encoding="utf-8")
        return record

    def acknowledge(
        self, source_id: str, preset: int | None, by: str | None = None
    ) -> BaselineRecord:
        """Accept the preset's latest daily frame as its baseline (legal works, case closed)."""
        folder = self._folder(source_id, preset)
        latest = folder / "latest.png"
        if not latest.is_file():
            raise FileNotFoundError(f"no daily frame recorded for {source_id} preset {preset}")
        previous = self.record(source_id, preset)
        day = date.fromisoformat((folder / "latest.day").read_text(encoding="utf-8").strip())
        record = BaselineRecord(
            version=(previous.version if previous else 0) + 1,
            origin="acknowledged",
            accepted_at=_now(),
            day=day,
            by=by,
        )
        # Image first, record second: a reader seeing the new version finds the new image.
        os.replace(_copy(latest, folder / "baseline.tmp.png"), folder / "baseline.png")
        tmp = folder / "baseline.tmp.json"
        tmp.write_text(record.model_dump_json(), encoding="utf-8")
        os.replace(tmp, folder / "baseline.json")
        return record


def _now() -> datetime:
    return datetime.now(UTC)


def _write(path: Path, image: Image) -> None:
    tmp = path.with_suffix(".tmp.png")
    if not cv2.imwrite(str(tmp), image):
        raise OSError(f"cannot write baseline {path}")
    os.replace(tmp, path)


def _copy(source: Path, target: Path) -> Path:
    target.write_bytes(source.read_bytes())
    return target


def _read(path: Path) -> Image | None:
    if not path.is_file():
        return None
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if image is None else np.asarray(image, np.uint8)
