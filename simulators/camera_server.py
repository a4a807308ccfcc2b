"""Serve generated camera video as real cameras do: files on disk and HTTP MJPEG streams.

``MjpegServer`` streams each scenario (or any ``Channel`` of JPEG frames) as
``multipart/x-mixed-replace`` at its frame rate on ``/<name>.mjpg`` (the form most IP cameras
offer beside RTSP). ``drop_after`` closes every connection after that many frames, as a flaky
uplink does, to exercise reconnection. ``ptz`` maps a device id to the function that moves its
head: ``GET /ptz/<device>/preset/<n>`` calls it, the request a watchtower's PTZ client makes.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Protocol

import cv2

from simulators.camera_scenes import Image, Scenario, render, render_thermal

BOUNDARY = "gwframe"
PTZ_PATH = re.compile(r"^/ptz/(?P<device>[^/]+)/preset/(?P<preset>\d+)$")


class Channel(Protocol):
    """JPEG frames to stream at ``fps``; ``jpegs`` ends when the connection should close."""

    @property
    def fps(self) -> float: ...

    def jpegs(self) -> Iterator[bytes]: ...


@dataclass(frozen=True)
class ScenarioChannel:
    """A scenario rendered live for each connection, once or in a loop."""

    scenario: Scenario
    loop: bool = True

    @property
    def fps(self) -> float:
        return self.scenario.fps

    def jpegs(self) -> Iterator[bytes]:
        while True:
            for _, image in frames_of(self.scenario):
                yield jpeg_of(image)
            if not self.loop:
                return


def jpeg_of(image: Image, quality: int = 90) -> bytes:
    ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return bytes(jpeg.tobytes())


def frames_of(scenario: Scenario) -> Iterator[tuple[float, Image]]:
    return render_thermal(scenario) if scenario.thermal else render(scenario)


def write_video(scenario: Scenario, folder: Path) -> Path:
    """An MJPEG AVI of the scenario and its ground truth as JSON beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{scenario.name}.avi"
    writer = cv2.VideoWriter(
        str(path), cv2.VideoWriter.fourcc(*"MJPG"), scenario.fps, scenario.size, True
    )
    try:
        for _, image in frames_of(scenario):
            writer.write(image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))
    finally:
        writer.release()
    truth = asdict(scenario) | {"vision": scenario.vision.model_dump(mode="json")}
    (folder / f"{scenario.name}.json").write_text(json.dumps(truth, indent=1))
    return path


class MjpegServer:
    """A threaded HTTP server streaming scenarios; use as a context manager."""

    def __init__(
        self,
        scenarios: Mapping[str, Scenario | Channel],
        *,
        drop_after: int | None = None,
        loop: bool = True,
        pace: Callable[[float], object] = time.sleep,
        ptz: Mapping[str, Callable[[int], None]] | None = None,
        port: int = 0,
    ) -> None:
        self.channels: dict[str, Channel] = {
            name: ScenarioChannel(c, loop) if isinstance(c, Scenario) else c
            for name, c in scenarios.items()
        }
        self.drop_after = drop_after
        self.ptz = dict(ptz or {})
        self.connections = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the http.server API)
                move = PTZ_PATH.match(self.path)
                if move is not None:
                    self._move(move["device"], int(move["preset"]))
                    return
                name = self.path.strip("/").removesuffix(".mjpg")
                channel = server.channels.get(name)
                if channel is None:
                    self.send_error(404)
                    return
                server.connections += 1
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace;boundary={BOUNDARY}")
                self.end_headers()
                try:
                    server._stream(self, channel, pace)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _move(self, device: str, preset: int) -> None:
                goto = server.ptz.get(device)
                if goto is None:
                    self.send_error(404, f"no PTZ head {device}")
                    return
                goto(preset)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok\n")

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._http.daemon_threads = True
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._http.server_address[1])

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}.mjpg"

    def ptz_url(self, device: str) -> str:
        """The PTZ client's URL template (``Watchtower.ptz_url``) of a device's head."""
        return f"http://127.0.0.1:{self.port}/ptz/{device}/preset/{{preset}}"

    def _stream(
        self, handler: BaseHTTPRequestHandler, channel: Channel, pace: Callable[[float], object]
    ) -> None:
        sent = 0
        for data in channel.jpegs():
            handler.wfile.write(
                f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                f"Content-Length: {len(data)}\r\n\r\n".encode()
                + data
                + b"\r\n"
            )
            handler.wfile.flush()
            sent += 1
            if self.drop_after is not None and sent >= self.drop_after:
                return
            pace(1 / channel.fps)

    def __enter__(self) -> MjpegServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()
