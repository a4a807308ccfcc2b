"""``gridwatch record``: live MQTT traffic and sampled camera frames into one recording file.

The recorder subscribes to what the bridge subscribes to (QoS 1, a clean session of its own, so
it takes nothing from the bridge) and keeps every message's bytes, QoS, retain flag and receive
time. Each camera or watchtower stream is read through ``VideoSource``, as a camera worker
reads it, and sampled at the view's ``burst_fps``: the most a worker ever analyses, so a worker
replaying the recording finds a frame wherever its own sampler wants one; when a stream is lost
and when it is back is recorded too.
"""

from __future__ import annotations

import importlib.metadata
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gridwatch.errors import ServiceError
from gridwatch.mqtt_access import MqttAccess, connect_subscribed
from gridwatch.site import Site
from ingest.camera_source import Captured, Lost, Restored, VideoSource
from ingest.camera_worker import Sampler
from ingest.mqtt_bridge import subscriptions
from ingest.recording import (
    Manifest,
    RecordedFrame,
    RecordedMessage,
    RecordedOutage,
    RecordingWriter,
)

log = logging.getLogger(__name__)

JPEG_QUALITY = 90


@dataclass(frozen=True)
class Stream:
    device: str
    stream: str  # "visible" or "thermal"
    url: str
    fps: float


def site_streams(site: Site, only: set[str] | None = None) -> list[Stream]:
    """Every camera's and watchtower's streams, or those of the devices in ``only``."""
    found = [
        Stream(device=c.id, stream="visible", url=c.url, fps=c.vision.burst_fps)
        for c in site.cameras
    ]
    for t in site.watchtowers:
        fps = t.vision.burst_fps
        found.append(Stream(device=t.id, stream="visible", url=t.visible_url, fps=fps))
        if t.thermal_url:
            found.append(Stream(device=t.id, stream="thermal", url=t.thermal_url, fps=fps))
    return [s for s in found if only is None or s.device in only]


def _versions() -> dict[str, str]:
    out = {}
    for package in ("gridwatch", "paho-mqtt", "opencv-python-headless"):
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


class Recorder:
    def __init__(
        self,
        site: Site,
        site_file: Path,
        out: Path,
        host: str,
        port: int,
        *,
        streams: list[Stream],
        access: MqttAccess | None = None,
    ) -> None:
        self.started_at = datetime.now(UTC)
        self._t0 = time.monotonic()
        self.streams = streams
        self.filters = subscriptions(site)
        self.writer = RecordingWriter(
            out,
            Manifest(
                street=site.street.code,
                site_file=str(site_file),
                started_at=self.started_at,
                versions=_versions(),
                subscriptions=tuple(self.filters),
                streams={f"{s.device}/{s.stream}": s.url for s in streams},
            ),
        )
        self.host, self.port = host, port
        self.notes: list[str] = []
        self._stop = threading.Event()
        self._subscribed = threading.Event()
        self._threads: list[threading.Thread] = []
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"gridwatch-record-{uuid.uuid4().hex[:8]}",
            clean_session=True,
        )
        (access or MqttAccess()).apply(self.client)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message

    def _at(self) -> float:
        return time.monotonic() - self._t0

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.error("MQTT connect refused: %s", reason)
            return
        client.subscribe([(topic, 1) for topic in self.filters])

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not self._stop.is_set():  # paho reconnects; what was sent meanwhile is not recorded
            self.notes.append(f"disconnected from the broker at {self._at():.1f} s: {reason}")

    def wait(self, stop: threading.Event, duration_s: float | None, poll_s: float = 0.5) -> None:
        """Record until ``stop`` is set or ``duration_s`` has passed; raise ServiceError if the
        MQTT network thread died, so that nothing is silently left unrecorded."""
        deadline = None if duration_s is None else self._t0 + duration_s
        while not stop.wait(poll_s):
            if self.client._thread is None:  # paho clears it when its thread ends
                raise ServiceError("the MQTT network thread died; the recording stops here")
            if deadline is not None and time.monotonic() >= deadline:
                return

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self.writer.message(
            RecordedMessage(
                at_s=self._at(),
                topic=msg.topic,
                payload=bytes(msg.payload),
                qos=msg.qos,
                retain=bool(msg.retain),
            )
        )

    def start(self, timeout: float = 10.0) -> None:
        connect_subscribed(
            self.client, self.host, self.port, self._subscribed, timeout, self.client.loop_stop
        )
        for stream in self.streams:
            thread = threading.Thread(
                target=self._sample, args=(stream,), name=f"record-{stream.device}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _sample(self, stream: Stream) -> None:
        sampler = Sampler(stream.fps, stream.fps, 0.0)

        def wanted(ts: datetime) -> bool:  # a live source then decodes only the frames kept
            return sampler.wants((ts - self.started_at).total_seconds())

        source = VideoSource(stream.url, start=self.started_at, backoff_s=(0.5, 5.0))
        try:
            for event in source.frames(self._stop, wanted):
                if isinstance(event, Lost | Restored):
                    lost = isinstance(event, Lost)
                    reason = event.reason if isinstance(event, Lost) else ""
                    if lost:
                        self.notes.append(f"{stream.device}/{stream.stream}: {reason}")
                    self.writer.outage(
                        RecordedOutage(
                            at_s=self._at(),
                            device=stream.device,
                            stream=stream.stream,
                            lost=lost,
                            reason=reason,
                        )
                    )
                if not isinstance(event, Captured):
                    continue
                at_s = (event.ts - self.started_at).total_seconds()
                if not sampler.due(at_s):
                    continue
                ok, jpeg = cv2.imencode(
                    ".jpg", event.image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
                )
                if not ok:
                    self.notes.append(f"{stream.device}/{stream.stream}: a frame failed to encode")
                    continue
                self.writer.frame(
                    RecordedFrame(
                        at_s=at_s, device=stream.device, stream=stream.stream, jpeg=jpeg.tobytes()
                    )
                )
        except FileNotFoundError as err:
            self.notes.append(f"{stream.device}/{stream.stream}: no file {err}")

    def stop(self) -> Manifest:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self.client.disconnect()
        self.client.loop_stop()
        return self.writer.close(datetime.now(UTC), tuple(dict.fromkeys(self.notes)))
