"""The recording file, the replay's payload times and its window, and recorded frames as a
camera source, without a network."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from gridwatch.cli import app
from gridwatch.errors import ConfigError
from gridwatch.site import Site
from ingest.camera_source import Captured, Lost, Restored
from ingest.recording import (
    Manifest,
    RecordedFrame,
    RecordedMessage,
    RecordedOutage,
    Recording,
    RecordingWriter,
)
from ingest.replay import RecordedSource, Timeline, rebase_payload, replay_window

T0 = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)


def _message(at_s: float, topic: str, payload: bytes, *, retain: bool = False) -> RecordedMessage:
    return RecordedMessage(at_s=at_s, topic=topic, payload=payload, qos=1, retain=retain)


def _write(path: Path, started_at: datetime = T0, frames: int = 3) -> None:
    writer = RecordingWriter(
        path,
        Manifest(
            street="520199003",
            site_file="site.yaml",
            started_at=started_at,
            versions={"gridwatch": "0"},
            subscriptions=("gw/520199003/+/telemetry",),
        ),
    )
    writer.message(_message(0.5, "gw/520199003/WL-001/telemetry", b'{"ts":1}'))
    writer.message(_message(0.2, "gw/520199003/WL-001/status", b"online", retain=True))
    rng = np.random.default_rng(3)
    for i in range(frames):
        image = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        jpeg = cv2.imencode(".jpg", image)[1].tobytes()
        writer.frame(
            RecordedFrame(at_s=0.1 * (i + 1), device="CAM-001", stream="visible", jpeg=jpeg)
        )
    writer.close(started_at + timedelta(seconds=2), ("CAM-002/visible: no frames",))


def test_a_recording_reads_back_in_time_order_as_one_file(tmp_path: Path) -> None:
    path = tmp_path / "run.gwrec"
    _write(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.gwrec"]  # WAL folded in
    recording = Recording(path)
    try:
        assert recording.manifest.stopped_at == T0 + timedelta(seconds=2)
        assert recording.manifest.notes == ("CAM-002/visible: no frames",)
        messages = list(recording.messages())
        assert [m.topic.rsplit("/", 1)[1] for m in messages] == ["status", "telemetry"]
        assert messages[0].retain is True and messages[0].payload == b"online"
        assert messages[1].qos == 1 and messages[1].payload == b'{"ts":1}'
        assert recording.streams() == [("CAM-001", "visible")]
        assert [f.at_s for f in recording.frames("CAM-001", "visible")] == pytest.approx(
            [0.1, 0.2, 0.3]
        )
        assert recording.counts() == (2, 3) and recording.span_s() == pytest.approx(0.5)
    finally:
        recording.close()
    with pytest.raises(ConfigError, match="never overwritten"):
        _write(path)


def test_what_is_not_a_recording_is_refused_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such recording"):
        Recording(tmp_path / "missing.gwrec")
    junk = tmp_path / "junk.gwrec"
    junk.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(ConfigError, match="not a gridwatch recording"):
        Recording(junk)


def test_rebasing_shifts_every_report_time_and_nothing_else() -> None:
    offset = timedelta(days=30)
    one = b'{"ts":1746086400000,"seq":3,"values":{"water_level_m":1.5,"ts":2}}'
    shifted = json.loads(rebase_payload(one, offset))
    assert shifted == {
        "ts": 1746086400000 + 30 * 86_400_000,
        "seq": 3,
        "values": {"water_level_m": 1.5, "ts": 2},  # a metric is never a time
    }
    batch = b'[{"ts":"2026-05-01T08:00:00+08:00","values":{"pm25_ugm3":40}}]'
    assert json.loads(rebase_payload(batch, offset))[0]["ts"] == "2026-05-31T08:00:00+08:00"
    gateway = b'{"WL-1":[{"ts":1000,"values":{"water_level_m":1}}]}'
    assert json.loads(rebase_payload(gateway, offset))["WL-1"][0]["ts"] == 1000 + 30 * 86_400_000
    # What the bridge refuses is replayed byte for byte, to be refused for the same reason.
    for bad in (b'{"ts": "soon"', b'{"ts":1,"ts":2,"values":{}}', b"offline", b'{"ts":"local"}'):
        assert rebase_payload(bad, offset) == bad


def test_the_window_decides_how_an_old_recording_replays(tmp_path: Path, site: Site) -> None:
    path = tmp_path / "old.gwrec"
    _write(path, started_at=T0)
    recording = Recording(path)
    try:
        a_year_on = T0 + timedelta(days=365)
        problem = replay_window(recording, site, 1.0, rebase=False, now=a_year_on)
        assert problem is not None and "--rebase-time" in problem
        assert replay_window(recording, site, 1.0, rebase=True, now=a_year_on) is None
        soon = T0 + timedelta(minutes=5)
        assert replay_window(recording, site, 50.0, rebase=False, now=soon) is None
        assert "positive" in (replay_window(recording, site, 0.0, rebase=False, now=soon) or "")
    finally:
        recording.close()


def test_rebased_fast_replays_may_not_run_beyond_max_ahead(tmp_path: Path, site: Site) -> None:
    path = tmp_path / "long.gwrec"
    _write(path)
    writer_path = tmp_path / "long2.gwrec"
    first = Recording(path)
    writer = RecordingWriter(writer_path, first.manifest)
    first.close()
    writer.message(_message(3600.0, "gw/520199003/WL-001/telemetry", b"{}"))
    writer.close(T0 + timedelta(hours=1))
    recording = Recording(writer_path)
    try:
        # An hour at ×2 ends 30 min ahead of the clock, beyond the 300 s the bridge allows.
        problem = replay_window(recording, site, 2.0, rebase=True, now=T0)
        assert problem is not None and "max_ahead_s" in problem
        assert replay_window(recording, site, 1.0, rebase=True, now=T0) is None
    finally:
        recording.close()


def test_recorded_frames_play_as_a_camera_source_on_the_timeline(tmp_path: Path) -> None:
    path = tmp_path / "frames.gwrec"
    _write(path, frames=5)
    recording = Recording(path)
    try:
        offset = timedelta(days=2)
        started = time.monotonic()
        source = RecordedSource(recording, "CAM-001", "visible", Timeline(10.0, started), offset)
        events = list(source.frames(threading.Event()))
        elapsed = time.monotonic() - started
    finally:
        recording.close()
    assert all(isinstance(e, Captured) for e in events) and len(events) == 5
    captured = [e for e in events if isinstance(e, Captured)]
    assert captured[0].image.shape == (48, 64, 3)
    assert [c.ts for c in captured] == [
        T0 + offset + timedelta(seconds=0.1 * (i + 1)) for i in range(5)
    ]
    assert elapsed >= 0.5 / 10  # the last frame, at 0.5 s, was due at 0.05 s on a ×10 timeline


def test_a_recorded_outage_plays_as_the_stream_lost_between_its_frames(tmp_path: Path) -> None:
    path = tmp_path / "outage.gwrec"
    writer = RecordingWriter(
        path,
        Manifest(street="520199003", site_file="s", started_at=T0, versions={}, subscriptions=()),
    )
    jpeg = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    for at_s in (0.1, 0.2, 0.6):
        writer.frame(RecordedFrame(at_s=at_s, device="CAM-001", stream="visible", jpeg=jpeg))
    writer.outage(RecordedOutage(at_s=0.3, device="CAM-001", stream="visible", lost=True,
                                 reason="no frames from http://cam"))  # fmt: skip
    writer.outage(RecordedOutage(at_s=0.5, device="CAM-001", stream="visible", lost=False))
    writer.outage(RecordedOutage(at_s=0.4, device="CAM-002", stream="visible", lost=True))
    writer.close(T0 + timedelta(seconds=1))
    recording = Recording(path)
    try:
        source = RecordedSource(recording, "CAM-001", "visible", Timeline(100.0, time.monotonic()))
        events = list(source.frames(threading.Event()))
    finally:
        recording.close()
    assert [type(e) for e in events] == [Captured, Captured, Lost, Restored, Captured]
    assert events[2] == Lost("no frames from http://cam")


def _text(output: str) -> str:
    return " ".join(output.split())  # as printed, without the console's line breaks


def test_the_commands_refuse_what_they_cannot_do_before_touching_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = CliRunner()
    monkeypatch.delenv("GRIDWATCH_MQTT_URL", raising=False)
    result = runner.invoke(app, ["record", str(tmp_path / "new.gwrec")])
    assert result.exit_code == 2 and "GRIDWATCH_MQTT_URL" in _text(result.output)
    monkeypatch.setenv("GRIDWATCH_MQTT_URL", "mqtt://127.0.0.1:1")  # nothing listens there
    result = runner.invoke(app, ["replay", str(tmp_path / "missing.gwrec")])
    assert result.exit_code == 2 and "no such recording" in _text(result.output)
    old = tmp_path / "old.gwrec"
    _write(old, started_at=datetime.now(UTC) - timedelta(days=30))
    result = runner.invoke(app, ["replay", str(old), "--no-cameras"])
    assert result.exit_code == 2 and "--rebase-time" in _text(result.output)
    # Rebased, it is let through to the broker, and says so when that is not there.
    result = runner.invoke(app, ["replay", str(old), "--no-cameras", "--rebase-time"])
    assert result.exit_code == 2 and "127.0.0.1:1" in _text(result.output)


def test_a_recording_opened_in_one_thread_plays_in_another(tmp_path: Path) -> None:
    path = tmp_path / "threads.gwrec"
    _write(path)
    recording = Recording(path)  # as the demo opens it, in its event loop's thread
    got: list[int] = []
    try:
        worker = threading.Thread(
            target=lambda: got.extend([len(list(recording.messages())), recording.counts()[1]])
        )
        worker.start()
        worker.join(10)
    finally:
        recording.close()
    assert got == [2, 3]
