"""`gridwatch record` and `gridwatch replay` on the real MQTT broker: what devices published and
what a camera streamed over HTTP MJPEG go into one file, and come back out as the same messages
in the same order and as frames in which a camera worker finds the same fire."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from benchmarks.eval_detectors import detector_set
from gridwatch.events import Detection, DetectionKind, Point
from gridwatch.site import Site
from gridwatch.site_cameras import Camera, Vision
from ingest.camera_evidence import EvidenceStore
from ingest.recorder import Recorder, Stream
from ingest.recording import Recording
from ingest.replay import replay
from simulators.camera_scenes import HORIZON, Scenario
from simulators.camera_server import MjpegServer
from tests.integration.sensor_pipeline import publish


class Witness:
    """Subscribed beside the pipeline: every message under one device's topics, in order."""

    def __init__(self, host: str, port: int, device: str) -> None:
        self.got: list[tuple[str, bytes, bool]] = []
        self.device = device
        subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"w-{uuid.uuid4().hex}")
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.connect(host, port)
        self.client.subscribe(f"gw/+/{device}/#", qos=1)
        self.client.loop_start()
        assert subscribed.wait(10)

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        self.got.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_record_then_replay_gives_the_same_messages_and_the_same_fire(
    mqtt_address: tuple[str, int], tiny_site: Site, tmp_path: Path
) -> None:
    host, port = mqtt_address
    device = f"WL-{uuid.uuid4().hex[:6]}"
    camera = Camera(
        id=f"CAM-{uuid.uuid4().hex[:6]}",
        name="test",
        url="",
        location=Point(lon=106.615, lat=26.605),
        height_m=12.0,
        heading_deg=90.0,
        fov_deg=60.0,
        tilt_deg=-5.0,
        sample_fps=2.0,
        # a drawn flame, which the colour rule finds and the learned model does not take for real
        vision=Vision(horizon=HORIZON, burst_fps=5.0, detectors=detector_set("rules")),
    )
    site = tiny_site.model_copy(update={"cameras": (camera,)})
    street = site.street.code
    fire = Scenario("fire", "fire", "fire", seed=5, duration_s=8.0, fps=10.0, onset_s=0.5,
                    source=(0.5, 0.75))  # fmt: skip
    out = tmp_path / "street.gwrec"
    sent = [
        (f"gw/{street}/{device}/telemetry", f'{{"ts":{1000 + i},"values":{{"x":{i}}}}}'.encode())
        for i in range(6)
    ]
    with MjpegServer({"cam": fire}, loop=False) as server:
        recorder = Recorder(
            site, Path("site.yaml"), out, host, port,
            streams=[Stream(device=camera.id, stream="visible", url=server.url("cam"), fps=5.0)],
        )  # fmt: skip
        recorder.start()
        publish(host, port, [(f"gw/{street}/{device}/status", b"online")])
        for item in sent:
            publish(host, port, [item])
            time.sleep(0.25)
        time.sleep(2.5)  # the fire burns on; the recording stops before the stream ends
        manifest = recorder.stop()
    recording = Recording(out)
    try:
        mine = [m for m in recording.messages() if f"/{device}/" in m.topic]
        assert [(m.topic, m.payload) for m in mine[1:]] == sent
        assert mine[0].payload == b"online" and all(m.qos == 1 for m in mine)
        assert all(b.at_s > a.at_s for a, b in zip(mine, mine[1:], strict=False))
        assert recording.streams() == [(camera.id, "visible")]
        _, frames = recording.counts()
        assert 10 <= frames <= 22, frames  # 4 s at the view's burst rate of 5 frames/s
        assert manifest.street == street and not manifest.notes

        witness = Witness(host, port, device)
        found: list[Detection] = []
        try:
            started = time.monotonic()
            acked = replay(
                recording, site, host, port, speed=4.0, rebase=False,
                publish=found.append, evidence=EvidenceStore(tmp_path / "evidence"),
            ).acked  # fmt: skip
            took = time.monotonic() - started
            deadline = time.monotonic() + 10
            while len(witness.got) < len(mine) and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            witness.close()
        assert acked == recording.counts()[0]
        assert [(t, p) for t, p, _ in witness.got] == [(m.topic, m.payload) for m in mine]
        assert took >= recording.span_s() / 4 * 0.9  # the recorded spacing, ÷ 4
    finally:
        recording.close()
    fires = [d for d in found if d.kind is DetectionKind.FIRE and not d.cleared]
    assert fires, [d.rule for d in found]
    # Stamped with the frame's recorded capture time: not rebased, the times are the live run's.
    assert manifest.stopped_at is not None
    assert manifest.started_at <= fires[0].ts <= manifest.stopped_at
    assert fires[0].source.id == camera.id and fires[0].snapshot
