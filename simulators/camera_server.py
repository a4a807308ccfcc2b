"""Serve generated camera video as real cameras do: files on disk and HTTP MJPEG streams.

``MjpegServer`` streams each scenario as ``multipart/x-mixed-replace`` at its frame rate on
``/<name>.mjpg`` (the form most IP cameras offer beside RTSP). ``drop_after`` closes every
connection after that many frames, as a flaky uplink does, to exercise reconnection.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2

from simulators.camera_scenes import Image, Scenario, render, render_thermal

BOUNDARY = "gwframe"


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
        scenarios: dict[str, Scenario],
        *,
        drop_after: int | None = None,
        loop: bool = True,
        pace: Callable[[float], object] = time.sleep,
    ) -> None:
        self.scenarios = scenarios
        self.drop_after = drop_after
        self.loop = loop
        self.connections = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the http.server API)
                name = self.path.strip("/").removesuffix(".mjpg")
                scenario = server.scenarios.get(name)
                if scenario is None:
                    self.send_error(404)
                    return
                server.connections += 1
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace;boundary={BOUNDARY}")
                self.end_headers()
                try:
                    server._stream(self, scenario, pace)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._http.server_address[1])

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}.mjpg"

    def _stream(
        self, handler: BaseHTTPRequestHandler, scenario: Scenario, pace: Callable[[float], object]
    ) -> None:
        sent = 0
        while True:
            for _, image in frames_of(scenario):
                ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
                if not ok:
                    raise RuntimeError("JPEG encoding failed")
                data = jpeg.tobytes()
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
                pace(1 / scenario.fps)
            if not self.loop:
                return

    def __enter__(self) -> MjpegServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()
