"""The MQTT bridge on real brokers: good telemetry reaches gw.readings, bad goes to dead letters,
and the bridge keeps going."""

import asyncio
import json
import time
import uuid
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gridwatch import kafka, topics
from gridwatch.events import DeadLetter, ReadingBatch, decode
from gridwatch.site import Site
from ingest.mqtt_bridge import MqttBridge

STREET = "520199003"


def publish(host: str, port: int, items: list[tuple[str, bytes]]) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}")
    client.connect(host, port)
    client.loop_start()
    try:
        for topic, payload in items:
            client.publish(topic, payload, qos=1).wait_for_publish(timeout=10)
    finally:
        client.disconnect()
        client.loop_stop()


async def collect(
    bootstrap: str, topic: str, want: int, match: Callable[[bytes], bool]
) -> list[bytes]:
    consumer = kafka.consumer(bootstrap, f"test-{uuid.uuid4().hex}", topic)
    await consumer.start()
    found: list[bytes] = []
    try:
        deadline = time.monotonic() + 60
        while len(found) < want and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            found += [r.value for rs in batches.values() for r in rs if r.value and match(r.value)]
    finally:
        await consumer.stop()
    return found


def test_bad_messages_are_dead_lettered_and_the_bridge_keeps_going(
    tiny_site: Site, kafka_bootstrap: str, mqtt_address: tuple[str, int]
) -> None:
    host, port = mqtt_address
    run = uuid.uuid4().hex[:8]
    bridge = MqttBridge(
        tiny_site, kafka.producer(kafka_bootstrap), host, port, client_id=f"bridge-{run}"
    )
    bridge.start()
    try:
        good = json.dumps(
            {"ts": int(time.time() * 1000), "seq": 1, "values": {"water_level_m": 1.25}}
        ).encode()
        publish(
            host,
            port,
            [
                (f"gw/{STREET}/WL-1/telemetry", b'{"ts": 1, "values": ' + run.encode()),
                (f"gw/{STREET}/GHOST-{run}/telemetry", b'{"ts": 1, "values": {"x": 1.0}}'),
                (f"gw/{STREET}/WL-2/telemetry", good),
            ],
        )

        def ours(raw: bytes) -> bool:
            letter = decode(DeadLetter, raw)
            return run in letter.source or run.encode() in letter.payload

        letters = asyncio.run(collect(kafka_bootstrap, topics.DEADLETTER, 2, ours))
        assert len(letters) == 2
        decoded = sorted((decode(DeadLetter, raw) for raw in letters), key=lambda d: d.source)
        assert decoded[0].source == f"mqtt:gw/{STREET}/GHOST-{run}/telemetry"
        assert "unknown device" in decoded[0].reason
        assert decoded[1].payload == b'{"ts": 1, "values": ' + run.encode()
        assert "JSON" in decoded[1].reason
        # The good message after the bad ones made it through.
        found = asyncio.run(
            collect(
                kafka_bootstrap,
                topics.READINGS,
                1,
                lambda raw: b'"device_id":"WL-2"' in raw and b'"water_level_m":[1.25,"m"]' in raw,
            )
        )
        (reading,) = decode(ReadingBatch, found[0]).readings()
        assert reading.device_id == "WL-2" and reading.value == 1.25
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (
            bridge.stats.acked < 3 or bridge.stats.acked < bridge.stats.messages
        ):
            time.sleep(0.1)
        # Retained status messages that earlier tests left on the broker's street arrive too:
        # every message is acked, and ours gave one reading and the two dead letters above.
        assert bridge.stats.acked == bridge.stats.messages >= 3 and bridge.stats.readings == 1
    finally:
        bridge.stop()
