"""Simulated cameras over RTSP/H.264: clips encoded with x264, served by GStreamer's RTSP server.

Frames are encoded once (PyAV's libx264, a fixed GOP with no scene-cut key frames and no
B-frames, as IP cameras stream) into clip files; ``RtspServer`` runs ``rtsp_child.py`` under the
Python that has GStreamer's introspection bindings (Debian's ``python3-gi``, not this virtual
environment's) and loops each mount's clips in real time. ``select`` switches a mount's clip (a
PTZ move, a scene that changes); ``drop`` cuts its clients off.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import IO, Any

import av
import cv2
import numpy as np

from simulators.camera_scenes import Image

MAGIC = b"GWH264\n"
CHILD = Path(__file__).with_name("rtsp_child.py")
PYTHON = os.environ.get("GRIDWATCH_GST_PYTHON", "/usr/bin/python3")
"""The interpreter with PyGObject and GStreamer's RTSP server (``GRIDWATCH_GST_PYTHON``)."""
PROBE = (
    "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
    "from gi.repository import Gst; Gst.init(None); "
    "need = ('appsrc', 'h264parse', 'rtph264pay'); "
    "print(' '.join(e for e in need if not Gst.ElementFactory.find(e)))"
)
APT = (
    "apt-get install gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good "
    "gstreamer1.0-plugins-bad python3-gi"
)


def unavailable() -> str | None:
    """Why the RTSP server cannot run here, or None when it can."""
    if shutil.which(PYTHON) is None:
        return f"no {PYTHON} for GStreamer (set GRIDWATCH_GST_PYTHON)"
    probe = subprocess.run(  # noqa: S603 (a fixed program, our own probe)
        [PYTHON, "-c", PROBE], capture_output=True, text=True, timeout=60, check=False
    )
    if probe.returncode != 0:
        return f"GStreamer's RTSP server is not importable by {PYTHON}: {APT}"
    if probe.stdout.strip():
        return f"GStreamer elements missing ({probe.stdout.strip()}): {APT}"
    return None


def encode_clip(
    frames: Iterable[Image],
    fps: float,
    path: Path,
    *,
    gop_s: float = 1.0,
    bit_rate: int | None = None,
) -> Path:
    """H.264 access units of ``frames`` into a clip file; a key frame every ``gop_s`` seconds,
    at ``bit_rate`` bits/s as a camera's encoder is set, or else at constant quality."""
    rate = Fraction(fps).limit_denominator(1000)
    gop = max(1, round(fps * gop_s))
    codec = av.CodecContext.create("libx264", "w")
    codec.pix_fmt = "yuv420p"
    codec.time_base = 1 / rate
    codec.framerate = rate
    codec.gop_size = gop
    codec.max_b_frames = 0
    if bit_rate is not None:
        codec.bit_rate = bit_rate
    codec.options = {
        "preset": "veryfast",
        "keyint_min": str(gop),
        "sc_threshold": "0",
        "threads": "1",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        out.write(MAGIC)
        for i, image in enumerate(frames):
            bgr = np.asarray(
                image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), np.uint8
            )
            if i == 0:
                codec.height, codec.width = bgr.shape[:2]
            frame = av.VideoFrame.from_ndarray(bgr, format="bgr24")
            frame.pts = i
            _write(out, codec.encode(frame))
        _write(out, codec.encode(None))
    return path


def _write(out: IO[bytes], packets: Iterable[av.Packet[Any]]) -> None:
    for packet in packets:
        data = bytes(packet)
        out.write(len(data).to_bytes(4, "little") + bytes([packet.is_keyframe]) + data)


@dataclass(frozen=True)
class Mount:
    """One RTSP path: its frame rate, clip files by key, and the clip it starts with.

    A ``clocked`` clip plays on the mount's clock, which starts with its first client, once
    and then looping from the given frame, however often the mount switched away from it."""

    fps: float
    clips: Mapping[str, Path]
    start: str
    clocked: Mapping[str, int] = field(default_factory=dict)


class RtspServer:
    """GStreamer's RTSP server on 127.0.0.1 as a child process; use as a context manager."""

    def __init__(self, mounts: Mapping[str, Mount], *, port: int = 0) -> None:
        if not mounts:
            raise ValueError("an RTSP server needs at least one mount")
        self.mounts = {"/" + path.strip("/"): mount for path, mount in mounts.items()}
        self.requested_port = port
        self.port = 0
        self._child: subprocess.Popen[str] | None = None

    def url(self, path: str) -> str:
        return f"rtsp://127.0.0.1:{self.port}/{path.strip('/')}"

    def start(self) -> None:
        reason = unavailable()
        if reason is not None:
            raise RuntimeError(reason)
        config = {
            "port": self.requested_port,
            "mounts": {
                path: {
                    "fps": m.fps,
                    "clips": {k: str(p) for k, p in m.clips.items()},
                    "start": m.start,
                    "clocked": dict(m.clocked),
                }
                for path, m in self.mounts.items()
            },
        }
        self._child = subprocess.Popen(  # noqa: S603 (our own server module)
            [PYTHON, str(CHILD)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        assert self._child.stdin is not None and self._child.stdout is not None  # noqa: S101
        self._child.stdin.write(json.dumps(config) + "\n")
        self._child.stdin.flush()
        ready = self._child.stdout.readline().split()
        if ready[:1] != ["ready"]:
            self.stop()
            raise RuntimeError(f"the RTSP server did not start (said {ready!r})")
        self.port = int(ready[1])

    def _send(self, line: str) -> None:
        if self._child is None or self._child.stdin is None:
            raise RuntimeError("the RTSP server is not running")
        self._child.stdin.write(line + "\n")
        self._child.stdin.flush()

    def select(self, path: str, key: str) -> None:
        """The mount plays clip ``key`` from its next frame."""
        self._send(f"select /{path.strip('/')} {key}")

    def drop(self, path: str) -> None:
        """Close the connections of the mount's clients."""
        self._send(f"drop /{path.strip('/')}")

    def stop(self) -> None:
        child, self._child = self._child, None
        if child is None:
            return
        if child.stdin is not None:
            child.stdin.close()  # the server's signal to quit
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(timeout=10)
        if child.stdout is not None:
            child.stdout.close()

    def __enter__(self) -> RtspServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
