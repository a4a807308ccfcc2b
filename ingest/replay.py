"""``gridwatch replay``: a recording played back into a pipeline, ``speed`` times faster.

MQTT messages are republished with their QoS and retain flag at their recorded spacing divided
by ``speed``; recorded frames are served to camera workers through ``RecordedSource``, which
a worker reads as it reads a live camera, on the same timeline.

Payload times are left as recorded, and the bridge judges them by its own clock against the
site's ``telemetry.max_age_s`` / ``max_ahead_s``: a recording older than ``max_age_s`` would be
dead-lettered whole, so ``replay_window`` refuses it before anything is sent. ``rebase`` shifts
every payload time (and every frame time) by one offset, the replay's start minus the
recording's, so an old recording replays as if recorded now, its spacing kept. Faster than real
time, rebased payload times run ahead of the clock by the recorded span × (1 − 1/speed), which
must stay within ``max_ahead_s``.
"""

from __future__ import annotations

import heapq
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import cv2
import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gridwatch.errors import ConfigError, ServiceError
from gridwatch.mqtt_access import MqttAccess
from gridwatch.site import Site
from ingest.camera_evidence import EvidenceStore
from ingest.camera_source import Captured, Lost, Restored, SourceEvent, Wanted, every_frame
from ingest.camera_worker import CameraWorker, Publish, worker_for
from ingest.recording import RecordedFrame, RecordedOutage, Recording

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Timeline:
    """Recording time ``at_s`` is due at ``t0 + at_s / speed`` on the monotonic clock."""

    speed: float
    t0: float

    def wait(self, at_s: float, stop: threading.Event) -> bool:
        """Sleep until ``at_s`` is due; False if stopped first."""
        delay = self.t0 + at_s / self.speed - time.monotonic()
        return not stop.wait(delay) if delay > 0 else not stop.is_set()


def replay_window(
    recording: Recording, site: Site, speed: float, *, rebase: bool, now: datetime
) -> str | None:
    """Why the bridge would refuse the replay's payload times, or None if it would take them."""
    if speed <= 0:
        return f"speed must be positive, got {speed:g}"
    span = recording.span_s()
    policy = site.telemetry
    if rebase:
        ahead = span * (1 - 1 / speed) if speed > 1 else 0.0
        if ahead > policy.max_ahead_s:
            return (
                f"rebased times would run {ahead:.0f} s ahead of the clock at speed {speed:g},"
                f" beyond telemetry.max_ahead_s ({policy.max_ahead_s:g} s); lower the speed"
            )
        return None
    age = (now - recording.manifest.started_at).total_seconds()
    if age > policy.max_age_s:
        return (
            f"the recording started {age:.0f} s ago, beyond telemetry.max_age_s"
            f" ({policy.max_age_s:g} s): the bridge would refuse its readings; pass --rebase-time"
        )
    return None


def _shift_ts(value: Any, offset: timedelta) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value + int(offset.total_seconds() * 1000)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return value
        return (parsed + offset).isoformat() if parsed.tzinfo else value
    return value


def _shift(node: Any, offset: timedelta) -> Any:
    if isinstance(node, list):
        return [_shift(item, offset) for item in node]
    if isinstance(node, dict):
        return {
            key: _shift_ts(value, offset)
            if key == "ts"
            else value
            if key == "values"
            else _shift(value, offset)
            for key, value in node.items()
        }
    return node


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("a key twice")
    return out


def rebase_payload(payload: bytes, offset: timedelta) -> bytes:
    """``payload`` with every report's ``ts`` shifted by ``offset``. A payload the bridge would
    refuse anyway (not JSON, a key twice) or one with no time in it is sent as recorded, so
    that the replay dead-letters what the live run dead-lettered, for the same reason."""
    try:
        parsed = json.loads(payload, object_pairs_hook=_pairs)
    except ValueError:
        return payload
    if b'"ts"' not in payload:
        return payload
    shifted = _shift(parsed, offset)
    return json.dumps(shifted, separators=(",", ":"), ensure_ascii=False).encode()


class MqttReplayer:
    """Republishes a recording's MQTT messages on its timeline."""

    def __init__(self, host: str, port: int, *, access: MqttAccess | None = None) -> None:
        self.host, self.port = host, port
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"gridwatch-replay-{uuid.uuid4().hex[:8]}"
        )
        (access or MqttAccess()).apply(self.client)
        self.client.max_inflight_messages_set(1000)
        self.sent = 0

    def play(
        self, recording: Recording, timeline: Timeline, offset: timedelta, stop: threading.Event
    ) -> int:
        """Send every message when due; returns how many the broker acknowledged."""
        try:
            self.client.connect(self.host, self.port, keepalive=30)
        except OSError as err:
            raise ServiceError(f"MQTT broker {self.host}:{self.port}: {err}") from err
        self.client.loop_start()
        infos = []
        try:
            for msg in recording.messages():
                if not timeline.wait(msg.at_s, stop):
                    break
                payload = rebase_payload(msg.payload, offset) if offset else msg.payload
                infos.append(
                    self.client.publish(msg.topic, payload, qos=msg.qos, retain=msg.retain)
                )
                self.sent += 1
            for info in infos:
                info.wait_for_publish(timeout=30)
            return sum(1 for info in infos if info.is_published())
        finally:
            self.client.disconnect()
            self.client.loop_stop()


class RecordedSource:
    """One recorded stream as a camera source: its frames, decoded, each when due on the
    timeline and stamped with its capture time (shifted by ``offset`` when rebased), and its
    recorded losses and recoveries, each when due."""

    def __init__(
        self,
        recording: Recording,
        device: str,
        stream: str,
        timeline: Timeline,
        offset: timedelta = timedelta(0),
    ) -> None:
        self.recording, self.device, self.stream = recording, device, stream
        self.timeline = timeline
        self.start = recording.manifest.started_at + offset

    def frames(self, stop: threading.Event, wanted: Wanted = every_frame) -> Iterator[SourceEvent]:
        played: Iterator[RecordedFrame | RecordedOutage] = heapq.merge(
            self.recording.frames(self.device, self.stream),
            self.recording.outages(self.device, self.stream),
            key=lambda e: e.at_s,
        )
        for frame in played:
            if not self.timeline.wait(frame.at_s, stop):
                return
            if isinstance(frame, RecordedOutage):
                yield Lost(frame.reason) if frame.lost else Restored()
                continue
            ts = self.start + timedelta(seconds=frame.at_s)
            if not wanted(ts):  # as a live source does: decode only what will be looked at
                continue
            image = cv2.imdecode(np.frombuffer(frame.jpeg, np.uint8), cv2.IMREAD_COLOR)
            if image is None:
                log.warning("recorded frame of %s/%s at %.2f s does not decode; skipped",
                            self.device, self.stream, frame.at_s)  # fmt: skip
                continue
            yield Captured(np.asarray(image, np.uint8), ts)


class RecordedHead:
    """A watchtower's head during a replay: the recording already holds where it looked."""

    def goto(self, preset: int) -> None:
        return None


def camera_workers(
    recording: Recording,
    site: Site,
    publish: Publish,
    evidence: EvidenceStore,
    timeline: Timeline,
    offset: timedelta,
) -> list[tuple[CameraWorker, RecordedSource]]:
    """A worker and its source for every recorded stream of a camera or tower of ``site``."""
    return [
        (
            worker_for(site, device, stream, publish, evidence, ptz=RecordedHead()),
            RecordedSource(recording, device, stream, timeline, offset),
        )
        for device, stream in recording.streams()
    ]


@dataclass(frozen=True)
class Replayed:
    acked: int  # MQTT messages the broker acknowledged
    workers: tuple[CameraWorker, ...]  # the camera workers that analysed the frames


def replay(
    recording: Recording,
    site: Site,
    host: str,
    port: int,
    *,
    speed: float,
    rebase: bool,
    publish: Publish | None,
    evidence: EvidenceStore | None,
    access: MqttAccess | None = None,
    stop: threading.Event | None = None,
) -> Replayed:
    """Play ``recording`` into the broker (and, given ``publish``, its frames through camera
    workers)."""
    now = datetime.now(UTC)
    problem = replay_window(recording, site, speed, rebase=rebase, now=now)
    if problem is not None:
        raise ConfigError(problem)
    if recording.manifest.street != site.street.code:
        raise ConfigError(
            f"the recording is of street {recording.manifest.street}, the site's is"
            f" {site.street.code}"
        )
    stop = stop or threading.Event()
    offset = now - recording.manifest.started_at if rebase else timedelta(0)
    timeline = Timeline(speed, time.monotonic())
    failures: list[BaseException] = []

    def work(worker: CameraWorker, source: RecordedSource) -> None:
        try:
            worker.run(source, stop)
        except BaseException as err:  # a dead worker fails the replay, after the others end
            failures.append(err)
            stop.set()
            raise

    threads = []
    workers = []
    if publish is not None and evidence is not None:
        for worker, source in camera_workers(recording, site, publish, evidence, timeline, offset):
            workers.append(worker)
            thread = threading.Thread(target=work, args=(worker, source), daemon=True)
            thread.start()
            threads.append(thread)
    try:
        acked = MqttReplayer(host, port, access=access).play(recording, timeline, offset, stop)
    finally:
        for thread in threads:
            thread.join()
    if failures:
        raise ServiceError(f"a camera worker died: {failures[0]!r}") from failures[0]
    return Replayed(acked, tuple(workers))
