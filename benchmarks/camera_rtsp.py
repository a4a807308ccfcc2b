"""A camera worker on a real RTSP/H.264 stream: CPU per camera, decoding only what is sampled
against decoding every frame.

GStreamer's RTSP server (a child process, not counted) loops a 1280×720 H.264 clip at 25 fps
with a fixed GOP; one camera worker reads it for ``seconds`` in each mode and scene. The
worker's process CPU is split into decoding (the decoder's thread CPU, colour conversion
included), analysis (the worker's thread CPU in the detectors) and the rest (RTSP, demuxing,
the loop). Cameras per core is one core's second over the CPU a camera needs per second.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2

from benchmarks.eval_detectors import detector_set
from gridwatch.events import Detection, Point
from gridwatch.site_cameras import Camera, Vision
from ingest.camera_evidence import EvidenceStore
from ingest.camera_source import VideoSource
from ingest.camera_worker import CameraWorker
from simulators.camera_rtsp import Mount, RtspServer, encode_clip
from simulators.camera_scenes import HORIZON, Scenario, render

FPS = 25.0
SIZE = (1280, 720)
BIT_RATE = 2_000_000  # a common main-stream setting of 720p IP cameras


def _clip(element: str, gop_s: float, folder: Path) -> Path:
    scene = Scenario(
        element, "none", element, seed=11, duration_s=8.0, fps=FPS, onset_s=0.0, size=SIZE
    )
    frames = (image for _, image in render(scene))
    return encode_clip(frames, FPS, folder / f"{element}.gwh264", gop_s=gop_s, bit_rate=BIT_RATE)


def _run(
    url: str, seconds: float, sample_fps: float, every: bool, fire_smoke: str, evidence: Path
) -> dict[str, Any]:
    camera = Camera(
        id="BENCH",
        name="bench",
        url=url,
        location=Point(lon=106.65, lat=26.62),
        height_m=12.0,
        heading_deg=90.0,
        fov_deg=60.0,
        sample_fps=sample_fps,
        vision=Vision(horizon=HORIZON, detectors=detector_set(fire_smoke)),
    )
    found: list[Detection] = []
    worker = CameraWorker.for_camera(camera, found.append, EvidenceStore(evidence))
    source = VideoSource(url)
    stop = threading.Event()
    wanted: Callable[[datetime], bool] = (lambda _ts: True) if every else worker.wants
    timer = threading.Timer(seconds, stop.set)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    timer.start()
    try:
        for event in source.frames(stop, wanted):
            worker.handle(event)
    finally:
        timer.cancel()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    decode, analyse = source.decode.decode_s, worker.stats.analyse_s
    per_s = cpu / wall
    return {
        "decoding": "every frame" if every else "sampled only",
        "stream_seconds": round(wall, 1),
        "frames_demuxed": source.decode.demuxed,
        "frames_decoded": source.decode.decoded,
        "frames_analysed": worker.stats.frames_analysed,
        "detections": len(found),
        "cpu_per_camera": round(per_s, 4),
        "decode_cpu_per_camera": round(decode / wall, 4),
        "analysis_cpu_per_camera": round(analyse / wall, 4),
        "other_cpu_per_camera": round(max(cpu - decode - analyse, 0.0) / wall, 4),
        "decode_ms_per_decoded_frame": round(1000 * decode / max(source.decode.decoded, 1), 2),
        "cameras_per_core": round(1 / per_s, 1),
    }


def bench_rtsp(
    seconds: float = 20.0,
    sample_fps: float = 1.0,
    gop_s: float = 1.0,
    fire_smoke: str = "model",
    scenes: tuple[str, ...] = ("quiet", "fire_and_smoke"),
) -> dict[str, Any]:
    cv2.setNumThreads(1)  # per core: OpenCV would otherwise spread one frame over all cores
    with tempfile.TemporaryDirectory(prefix="gridwatch-bench-rtsp-") as work:
        folder = Path(work)
        clips = {element: _clip(element, gop_s, folder) for element in scenes}
        mount = Mount(FPS, clips, scenes[0])
        runs: list[dict[str, Any]] = []
        with RtspServer({"bench": mount}) as server:
            for element in scenes:
                server.select("bench", element)
                for every in (False, True):
                    run = _run(server.url("bench"), seconds, sample_fps, every, fire_smoke, folder)
                    runs.append({"scene": element, **run})
    return {
        "stream": f"RTSP/H.264 {SIZE[0]}x{SIZE[1]} at {FPS:g} fps, {BIT_RATE / 1e6:g} Mbit/s, "
        f"key frame every {gop_s:g} s",
        "fire_smoke": fire_smoke,
        "sample_fps": sample_fps,
        "note": "a candidate (fire_and_smoke) raises sampling to the burst rate, decoded in full",
        "runs": runs,
    }
