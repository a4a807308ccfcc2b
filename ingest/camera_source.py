"""Frames from a camera: a video file, an RTSP stream or an HTTP MJPEG stream, through OpenCV.

Live streams reconnect with exponential backoff after a failure and say so (``Lost``,
``Restored``) so the worker can raise and clear a camera-health detection. A file plays once,
its frames stamped with their position in the file from a given start time, so a recording
replays in scenario time, as fast as it can be analysed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from detectors.frame import Image

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Captured:
    image: Image
    ts: datetime


@dataclass(frozen=True, slots=True)
class Lost:
    reason: str


@dataclass(frozen=True, slots=True)
class Restored:
    pass


SourceEvent = Captured | Lost | Restored


class FrameSource(Protocol):
    """What a camera worker reads: a live stream or file (``VideoSource``), or a recording."""

    def frames(self, stop: threading.Event) -> Iterator[SourceEvent]: ...


class VideoSource:
    def __init__(
        self,
        url: str,
        *,
        start: datetime | None = None,
        backoff_s: tuple[float, float] = (0.5, 30.0),
    ) -> None:
        self.url = url
        self.is_file = "://" not in url or url.startswith("file://")
        self.start = start or datetime.now(UTC)
        self.backoff_s = backoff_s
        self.reconnects = 0

    def _open(self) -> cv2.VideoCapture:
        path = self.url.removeprefix("file://") if self.is_file else self.url
        if self.is_file and not Path(path).exists():
            raise FileNotFoundError(path)
        return cv2.VideoCapture(path, cv2.CAP_FFMPEG)

    def frames(self, stop: threading.Event) -> Iterator[SourceEvent]:
        delay = self.backoff_s[0]
        lost = False
        while not stop.is_set():
            capture = self._open()
            try:
                if capture.isOpened():
                    for image, ts in self._read(capture, stop):
                        if lost:
                            lost, delay = False, self.backoff_s[0]
                            yield Restored()
                        yield Captured(image, ts)
            finally:
                capture.release()
            if self.is_file or stop.is_set():
                return
            if not lost:
                lost = True
                yield Lost(f"no frames from {self.url}")
            log.warning("camera stream %s down; reconnecting in %.1f s", self.url, delay)
            stop.wait(delay)
            self.reconnects += 1
            delay = min(delay * 2, self.backoff_s[1])

    def _read(
        self, capture: cv2.VideoCapture, stop: threading.Event
    ) -> Iterator[tuple[Image, datetime]]:
        while not stop.is_set():
            ok, image = capture.read()
            if not ok or image is None:
                return
            if self.is_file:
                ts = self.start + timedelta(milliseconds=capture.get(cv2.CAP_PROP_POS_MSEC))
            else:
                ts = datetime.now(UTC)
            yield np.asarray(image, np.uint8), ts
