"""Decode a compressed stream only as far as the sampled frames need (PyAV).

A camera worker analyses one frame a second of a 25 fps stream; decoding every H.264 frame to
throw 24 away costs more than the analysis. ``SampledDecoder`` demuxes every packet but keeps
those since the last key frame undecoded until a frame is due: then it decodes from that key
frame (or from where it last stopped in the same GOP) up to the due packet. With a GOP of one
second and sampling at 1 fps only key frames are decoded; in a burst around a candidate the
decoder stays caught up and decodes every frame, as a P-frame needs its predecessors. MJPEG
packets are all key frames, so only the sampled ones are decoded; their timestamps count frames
at a guessed rate, so an MJPEG frame is timed by its arrival (``arrival=True``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

import av
import numpy as np
from av.video.stream import VideoStream

from detectors.frame import Image

if TYPE_CHECKING:  # PyAV's Packet is generic only in its stubs
    Packet = av.Packet[VideoStream]


@dataclass
class DecodeStats:
    demuxed: int = 0
    decoded: int = 0
    decode_s: float = 0.0  # CPU seconds of the decoding thread, colour conversion included


class SampledDecoder:
    """Feed it every packet of one video stream; it returns a frame only where one is due."""

    def __init__(
        self,
        stream: VideoStream,
        stats: DecodeStats | None = None,
        *,
        arrival: bool = False,
    ) -> None:
        self.codec = stream.codec_context
        # Frame threading delays every output by a frame per thread: a due packet must give
        # its own picture, and one worker runs per core anyway.
        self.codec.thread_count = 1
        self.time_base: Fraction = stream.time_base or Fraction(1, 90000)
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        self._step = round(1 / (rate * self.time_base))
        self._pending: list[Packet] = []
        self._first: int | None = None
        self._last_pts: int | None = None
        self._arrival = time.monotonic() if arrival else None
        self.stats = stats if stats is not None else DecodeStats()

    def offset_s(self, packet: Packet) -> float:
        """Seconds of ``packet`` since the stream's first packet (or since the decoder began)."""
        if self._arrival is not None:
            return time.monotonic() - self._arrival
        pts = packet.pts
        if pts is None:  # RTSP before its first sender report; continue the cadence
            pts = 0 if self._last_pts is None else self._last_pts + self._step
        if self._first is None:
            self._first = pts
        self._last_pts = pts
        return float((pts - self._first) * self.time_base)

    def push(self, packet: Packet, due: Callable[[float], bool]) -> tuple[float, Image | None]:
        """The packet's offset and, when ``due(offset)``, its decoded BGR picture."""
        self.stats.demuxed += 1
        offset = self.offset_s(packet)
        if packet.is_keyframe:
            self._pending = [packet]  # earlier undecoded packets are no longer needed
        elif self._pending or self.stats.decoded:
            self._pending.append(packet)
        if not self._pending or not due(offset):  # before the first key frame: nothing to show
            return offset, None
        started = time.thread_time()
        frames: list[av.VideoFrame] = []
        for pending in self._pending:
            frames = self.codec.decode(pending)
            self.stats.decoded += 1
        self._pending = []
        image = np.asarray(frames[-1].to_ndarray(format="bgr24"), np.uint8) if frames else None
        self.stats.decode_s += time.thread_time() - started
        return offset, image
