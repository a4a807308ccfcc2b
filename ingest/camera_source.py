"""Frames from a camera: a video file (OpenCV), an RTSP or an HTTP MJPEG stream (PyAV).

A live stream is demuxed in full but decoded only where the consumer wants a frame (see
``ingest.camera_decode``); its frames are stamped with the wall-clock time of the stream's first
packet plus their presentation time, so they keep the camera's own cadence. Live streams
reconnect with exponential backoff after a failure and say so (``Lost``, ``Restored``) so the
worker can raise and clear a camera-health detection. A file plays once, its frames stamped
with their position in the file from a given start time, so a recording replays in scenario
time, as fast as it can be analysed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import av
import cv2
import numpy as np

from detectors.frame import Image
from ingest.camera_decode import DecodeStats, SampledDecoder

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
Wanted = Callable[[datetime], bool]
"""Whether a frame of that time will be looked at; a live source decodes only those."""


def _every(_ts: datetime) -> bool:
    return True


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
        self.timeout_s = 10.0
        self.decode = DecodeStats()

    def frames(self, stop: threading.Event, wanted: Wanted = _every) -> Iterator[SourceEvent]:
        delay = self.backoff_s[0]
        lost = False
        while not stop.is_set():
            frames = self._file(stop) if self.is_file else self._stream(stop, wanted)
            for image, ts in frames:
                if lost:
                    lost, delay = False, self.backoff_s[0]
                    yield Restored()
                yield Captured(image, ts)
            if self.is_file or stop.is_set():
                return
            if not lost:
                lost = True
                yield Lost(f"no frames from {self.url}")
            log.warning("camera stream %s down; reconnecting in %.1f s", self.url, delay)
            stop.wait(delay)
            self.reconnects += 1
            delay = min(delay * 2, self.backoff_s[1])

    def _file(self, stop: threading.Event) -> Iterator[tuple[Image, datetime]]:
        path = self.url.removeprefix("file://")
        if not Path(path).exists():
            raise FileNotFoundError(path)
        capture = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
        try:
            while not stop.is_set() and capture.isOpened():
                ok, image = capture.read()
                if not ok or image is None:
                    return
                ts = self.start + timedelta(milliseconds=capture.get(cv2.CAP_PROP_POS_MSEC))
                yield np.asarray(image, np.uint8), ts
        finally:
            capture.release()

    def _stream(self, stop: threading.Event, wanted: Wanted) -> Iterator[tuple[Image, datetime]]:
        """Frames of one connection, until it fails or ends (a failure is logged, not raised)."""
        timeout = str(round(self.timeout_s * 1_000_000))  # FFmpeg's socket timeouts are in µs
        options = {"timeout": timeout}
        if self.url.startswith("rtsp"):
            options["rtsp_transport"] = "tcp"  # a lost UDP packet would corrupt a whole GOP
            # the SDP names the codec and size: probing would hold the first 5 s of video
            # back and leave every frame that late (a PTZ move would be seen seconds after)
            options |= {"analyzeduration": "0", "probesize": "32"}
        try:
            with av.open(self.url, options=options, timeout=self.timeout_s) as container:
                stream = container.streams.video[0]
                timed = container.format.name != "mpjpeg"
                decoder = SampledDecoder(stream, self.decode, arrival=not timed)
                opened = datetime.now(UTC)
                for packet in container.demux(stream):
                    if stop.is_set():
                        return
                    if packet.size == 0:  # the demuxer's end-of-stream flush packet
                        continue
                    offset, image = decoder.push(
                        packet, lambda s: wanted(opened + timedelta(seconds=s))
                    )
                    if image is not None:
                        yield image, opened + timedelta(seconds=offset)
        except (av.FFmpegError, OSError, IndexError) as err:
            log.warning("camera stream %s failed: %s", self.url, err)
