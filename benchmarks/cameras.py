"""Camera throughput on one core: analysed 1280×720 frames per second with JPEG decode timed
apart, and how many cameras one core serves at the configured sampling rate.

Both wall-clock and CPU time (``time.process_time``: every thread of this process) are
reported. The per-core figures follow CPU time, which other work on a shared machine does not
inflate the way it inflates wall-clock time; on an idle core the two agree."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import cv2
import numpy as np

from benchmarks.eval_detectors import detector_set
from detectors.frame import Frame
from detectors.scene import SceneAnalyzer
from gridwatch.site_cameras import Vision
from simulators.camera_scenes import HORIZON, Scenario, render


def bench(frames: int = 300, sample_fps: float = 1.0, fire_smoke: str = "model") -> dict[str, Any]:
    cv2.setNumThreads(1)  # per core: OpenCV would otherwise spread one frame over all cores
    scenario = Scenario(
        "bench",
        "fire_and_smoke",
        "fire_and_smoke",
        seed=11,
        duration_s=frames / 5.0,
        onset_s=frames / 10.0,
        size=(1280, 720),
    )
    jpegs = [
        cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()
        for _, image in render(scenario)
    ]
    start = datetime(2025, 4, 1, tzinfo=UTC)
    decoded = []
    t0, c0 = time.perf_counter(), time.process_time()
    for data in jpegs:
        decoded.append(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR))
    decode_s, decode_cpu = time.perf_counter() - t0, time.process_time() - c0
    # the learned model runs on one thread (its default), as one camera worker per core runs it
    detectors = detector_set(fire_smoke)
    analyzer = SceneAnalyzer(Vision(horizon=HORIZON, detectors=detectors))
    t0, c0 = time.perf_counter(), time.process_time()
    for i, image in enumerate(decoded):
        analyzer.analyse(
            Frame(np.asarray(image, np.uint8), start + timedelta(seconds=i / 5), "bench")
        )
    analyse_s, analyse_cpu = time.perf_counter() - t0, time.process_time() - c0
    n = len(decoded)
    # A worker decodes every frame it analyses; at the sampling rate that is the load.
    per_frame_cpu = (analyse_cpu + decode_cpu) / n
    return {
        "resolution": "1280x720",
        "detectors": detectors.model_dump(mode="json"),
        "frames": n,
        "analysed_fps_per_core_excluding_decode": round(n / analyse_cpu, 1),
        "analyse_cpu_ms_per_frame": round(1000 * analyse_cpu / n, 2),
        "analyse_wall_ms_per_frame": round(1000 * analyse_s / n, 2),
        "jpeg_decode_cpu_ms_per_frame": round(1000 * decode_cpu / n, 2),
        "jpeg_decode_wall_ms_per_frame": round(1000 * decode_s / n, 2),
        "sample_fps": sample_fps,
        "cameras_per_core_at_sample_fps": int(1 / (per_frame_cpu * sample_fps)),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "note": "cameras_per_core counts decode of sampled JPEG frames only (MJPEG); "
        "`gridwatch bench cameras --rtsp` measures a worker on an RTSP/H.264 stream",
    }
