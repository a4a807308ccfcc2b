"""The sampled decoder on a real H.264 file: a sampled frame is the same picture full decoding
gives at that time, frames come at the sampler's times, and far fewer frames are decoded than
demuxed — only key frames when the GOP is as long as the sampling interval, every frame during a
burst."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from ingest.camera_decode import SampledDecoder
from ingest.camera_worker import Sampler
from simulators.camera_scenes import Scenario, render

FPS = 25


def _video(path: Path, gop: int, seconds: float = 4.0) -> Path:
    scene = Scenario(
        "clouds", "none", "clouds", seed=4, duration_s=seconds, fps=FPS, size=(320, 180)
    )
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 320, 180, "yuv420p"
        stream.codec_context.gop_size = gop
        stream.codec_context.max_b_frames = 0
        stream.codec_context.options = {"keyint_min": str(gop), "sc_threshold": "0"}
        for i, (_, image) in enumerate(render(scene)):
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def _decode(path: Path, sampler: Sampler | None) -> tuple[SampledDecoder, dict[float, np.ndarray]]:
    frames: dict[float, np.ndarray] = {}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoder = SampledDecoder(stream)
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            wants = sampler.wants if sampler is not None else (lambda _t: True)
            offset, image = decoder.push(packet, wants)
            if image is not None:
                if sampler is not None:
                    assert sampler.due(offset)
                frames[round(offset, 3)] = image
    return decoder, frames


@pytest.mark.parametrize("gop", [FPS, 2 * FPS])
def test_sampled_frames_are_the_pictures_at_the_sampled_times(tmp_path: Path, gop: int) -> None:
    video = _video(tmp_path / "v.mp4", gop)
    full, every = _decode(video, None)
    sampled, picked = _decode(video, Sampler(fps=1.0, burst_fps=5.0, burst_s=0.0))
    assert list(picked) == [0.0, 1.0, 2.0, 3.0]
    for t, image in picked.items():
        assert np.array_equal(image, every[t])  # decoded from the key frame: the same picture
    assert full.stats.decoded == full.stats.demuxed == 4 * FPS
    assert sampled.stats.demuxed == 4 * FPS
    # one key frame a second: only key frames; every two seconds: the key frame, and the
    # packets from it up to the mid-GOP sample
    expected = 4 if gop == FPS else 2 * (1 + FPS)
    assert sampled.stats.decoded == expected


def test_a_burst_decodes_every_frame_it_samples(tmp_path: Path) -> None:
    video = _video(tmp_path / "v.mp4", 2 * FPS)
    sampler = Sampler(fps=1.0, burst_fps=float(FPS), burst_s=1.0)
    sampler.burst(1.0)  # a candidate at 1 s: the next second is sampled at the full rate
    decoder, picked = _decode(video, sampler)
    burst = [t for t in picked if 1.0 <= t < 2.0]
    assert len(burst) == FPS
    assert decoder.stats.decoded < decoder.stats.demuxed
