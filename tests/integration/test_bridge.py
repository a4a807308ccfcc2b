"""The MQTT bridge on real brokers: good telemetry reaches gw.readings, bad goes to dead letters
with its reason, and the bridge keeps going; what no message can cause stops it."""

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gridwatch import kafka, topics
from gridwatch.errors import ServiceError
from gridwatch.events import DeadLetter, ReadingBatch, decode, utcnow
from gridwatch.services import EmbeddedServices
from gridwatch.settings import Settings
from gridwatch.site import Site
from ingest.mqtt_bridge import MqttBridge
from tests.conftest import GROUPS

STREET = "520199003"
TELEMETRY = f"gw/{STREET}/WL-1/telemetry"
GATEWAY = f"gw/{STREET}/gateway/telemetry"
TINY_SITE = Path(__file__).parent.parent / "fixtures" / "tiny_site.yaml"


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
    bootstrap: str, topic: str, want: int, match: Callable[[bytes], bool], wait_s: float = 60
) -> list[bytes]:
    consumer = kafka.consumer(bootstrap, f"test-{uuid.uuid4().hex}", topic, groups=GROUPS)
    await consumer.start()
    found: list[bytes] = []
    try:
        deadline = time.monotonic() + wait_s
        while len(found) < want and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            found += [r.value for rs in batches.values() for r in rs if r.value and match(r.value)]
    finally:
        await consumer.stop()
    return found


def letters_of(
    bootstrap: str, payloads: list[bytes], since: datetime, wait_s: float = 60
) -> dict[str, DeadLetter]:
    """The dead letters made since ``since`` of these payloads, by their SHA-256."""
    wanted = {hashlib.sha256(p).hexdigest() for p in payloads}

    def ours(raw: bytes) -> bool:
        letter = decode(DeadLetter, raw)
        return letter.sha256 in wanted and letter.ts >= since

    found = asyncio.run(collect(bootstrap, topics.DEADLETTER, len(wanted), ours, wait_s))
    return {letter.sha256: letter for letter in (decode(DeadLetter, raw) for raw in found)}


def settled(bridge: MqttBridge, messages: int, wait_s: float = 20) -> None:
    """Wait until ``messages`` were received and every one is forwarded or dead-lettered."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and (
        bridge.stats.messages < messages or bridge.stats.in_flight
    ):
        time.sleep(0.1)


def now_ms() -> int:
    return int(time.time() * 1000)


def has_seq(seq: int) -> Callable[[bytes], bool]:
    return lambda raw: f'"seq":{seq},'.encode() in raw


def reading(value: float = 1.25, seq: int = 1) -> bytes:
    return json.dumps({"ts": now_ms(), "seq": seq, "values": {"water_level_m": value}}).encode()


@contextmanager
def running(bridge: MqttBridge) -> Iterator[MqttBridge]:
    bridge.start()
    try:
        yield bridge
    finally:
        bridge.stop()


def test_bad_messages_are_dead_lettered_and_the_bridge_keeps_going(
    tiny_site: Site, kafka_bootstrap: str, mqtt_address: tuple[str, int]
) -> None:
    host, port = mqtt_address
    run = uuid.uuid4().hex[:8]
    bridge = MqttBridge(
        tiny_site, kafka.producer(kafka_bootstrap), host, port, client_id=f"bridge-{run}"
    )
    with running(bridge):
        good = reading()
        publish(
            host,
            port,
            [
                (TELEMETRY, b'{"ts": 1, "values": ' + run.encode()),
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
        (only,) = decode(ReadingBatch, found[0]).readings()
        assert only.device_id == "WL-2" and only.value == 1.25
        settled(bridge, 3)
        # Retained status messages that earlier tests left on the broker's street arrive too:
        # every message is accounted for, and ours gave one reading and the two dead letters.
        stats = bridge.stats
        assert stats.messages == stats.forwarded + stats.deadlettered >= 3
        assert stats.readings == 1 and stats.deadlettered >= 2


def bad_inputs() -> list[tuple[str, bytes, str]]:
    """(topic, payload, what the reason says) for every kind of input the bridge refuses."""
    now = now_ms()

    def point(**fields: object) -> dict[str, object]:
        return {"ts": now, "values": {"water_level_m": 1.0}, **fields}

    def one(**fields: object) -> bytes:
        return json.dumps(point(**fields)).encode()

    big_array = json.dumps(
        [{"ts": now - i, "seq": i, "values": {"water_level_m": 1.0}} for i in range(17_000)],
        separators=(",", ":"),
    ).encode()
    assert 900_000 < len(big_array) < 1_100_000
    gateway_point = f'[{{"ts":{now},"values":{{"water_level_m":1}}}}]'
    return [
        (TELEMETRY, b"x" * 1_048_576, "message: 1048576 bytes, more than the limit of 262144"),
        (TELEMETRY, big_array, f"message: {len(big_array)} bytes, more than the limit"),
        (TELEMETRY, b'{"ts": 1e20, "values": {"water_level_m": 1}}', "ts: 1e+20 is neither"),
        (
            TELEMETRY,
            one(ts="9999-12-31T23:59:59-14:00"),
            "ts: 9999-12-31T23:59:59-14:00 is more than 300 s ahead of the receiver's clock",
        ),
        (
            TELEMETRY,
            json.dumps([point(ts="2100-01-01T00:00:00Z")]).encode(),
            "[0].ts: 2100-01-01T00:00:00+00:00 is more than 300 s ahead",
        ),
        (TELEMETRY, one(ts=0), "ts: 0 is more than 604800 s behind"),
        (TELEMETRY, one(ts=now // 1000), "(epoch seconds? ts is in milliseconds)"),
        (TELEMETRY, one(ts="0001-01-01T00:00:00+00:00"), "is more than 604800 s behind"),
        (TELEMETRY, one(ts=str(now)), f'ts: "{now}" is neither epoch milliseconds'),
        (TELEMETRY, one(ts=now + 0.5), "is neither epoch milliseconds (an integer)"),
        (TELEMETRY, one(ts="2026-11-27T08:00:00"), "nor an RFC 3339 time with an offset"),
        (TELEMETRY, one(values={"water_level_m": "1.75"}), "values.water_level_m: Input should"),
        (TELEMETRY, one(values={"water_level_m": True}), "values.water_level_m: Input should"),
        (TELEMETRY, one(seq="7"), "seq: Input should be a valid integer"),
        (TELEMETRY, one(seq=-1), "seq: Input should be greater than or equal to 0"),
        (TELEMETRY, one(seq=2**63), "seq: Input should be less than or equal to"),
        (TELEMETRY, b"[]", "message: List should have at least 1 item"),
        (GATEWAY, b"{}", "message: Dictionary should have at least 1 item"),
        (GATEWAY, b'{"WL-1": []}', "WL-1: List should have at least 1 item"),
        (
            TELEMETRY,
            f'{{"ts":{now},"values":{{"water_level_m":1.0,"water_level_m":2.0}}}}'.encode(),
            "values: key 'water_level_m' appears more than once",
        ),
        (
            GATEWAY,
            f'{{"WL-1":{gateway_point},"WL-2":{gateway_point},"WL-1":{gateway_point}}}'.encode(),
            "message: key 'WL-1' appears more than once",
        ),
        (
            GATEWAY,
            f'{{"WL-1\\u0000":{gateway_point}}}'.encode(),
            "['WL-1\\x00']: unknown device 'WL-1\\x00'",
        ),
        (
            TELEMETRY,
            f'{{"ts":{now},"values":{{"water_level_m\\u0000":1}}}}'.encode(),
            "values['water_level_m\\x00']: device 'WL-1' does not report metric",
        ),
        (
            f"gw/{STREET}/WL-1/status",
            b'{"state": "offline", "ts": "2100-01-01T00:00:00Z"}',
            "ts: 2100-01-01T00:00:00+00:00 is more than 300 s ahead",
        ),
        (
            f"gw/{STREET}/WL-1/status",
            b'{"state": "offline", "state": "online"}',
            "message: key 'state' appears more than once",
        ),
        (f"gw/{STREET}/WL-1/status", b'{"state": true}', "state: Input should be"),
    ]


def test_every_bad_input_is_dead_lettered_with_its_reason_also_after_a_restart(
    tiny_site: Site, kafka_bootstrap: str, mqtt_address: tuple[str, int]
) -> None:
    """The inputs that stopped the bridge (a 1 MB payload, a valid 17,000-point array, a ts of
    1e20 or in year 10000 UTC) and every lax or ambiguous input reach gw.deadletter, each with
    one line naming the field and the rule. They wait in the bridge's persistent session while
    it is down, as after a crash, and the restarted bridge takes them all and lives on."""
    host, port = mqtt_address
    client_id = f"bridge-{uuid.uuid4().hex[:8]}"
    since = utcnow()

    def bridge() -> MqttBridge:
        producer = kafka.producer(kafka_bootstrap)
        return MqttBridge(tiny_site, producer, host, port, client_id=client_id)

    with running(bridge()):
        pass  # the broker now keeps this session's messages while it is away
    cases = bad_inputs()
    seq = now_ms()
    good = reading(value=2.5, seq=seq)
    publish(host, port, [(topic, payload) for topic, payload, _ in cases])
    with running(bridge()) as restarted:
        letters = letters_of(kafka_bootstrap, [payload for _, payload, _ in cases], since)
        publish(host, port, [(TELEMETRY, good)])
        found = asyncio.run(collect(kafka_bootstrap, topics.READINGS, 1, has_seq(seq)))
        settled(restarted, len(cases) + 1)
    for topic, payload, reason in cases:
        letter = letters.get(hashlib.sha256(payload).hexdigest())
        assert letter is not None, f"no dead letter for {payload[:80]!r}"
        assert reason in letter.reason, (reason, letter.reason)
        assert letter.source == f"mqtt:{topic}" and letter.size == len(payload)
        assert "\n" not in letter.reason and "\x00" not in letter.reason
    assert len(found) == 1  # the bridge lives on after all of them
    stats = restarted.stats
    assert stats.messages == stats.forwarded + stats.deadlettered
    assert stats.deadlettered >= len(cases) and stats.forwarded >= 1


def test_a_batch_too_big_for_one_kafka_record_is_sent_as_several(
    tiny_site: Site, kafka_bootstrap: str, mqtt_address: tuple[str, int]
) -> None:
    host, port = mqtt_address
    producer = kafka.producer(kafka_bootstrap, max_request_size=128 * 1024)
    bridge = MqttBridge(tiny_site, producer, host, port, client_id=f"b-{uuid.uuid4().hex[:8]}")
    first, count, now = now_ms(), 1500, now_ms()
    points = [
        {"ts": now - i, "seq": first + i, "values": {"water_level_m": 1.0}} for i in range(count)
    ]
    payload = json.dumps(points).encode()
    assert len(payload) < 256 * 1024  # within the default limit: the message is fine
    with running(bridge):
        publish(host, port, [(TELEMETRY, payload)])

        def ours(raw: bytes) -> bool:
            return any(
                r.seq is not None and first <= r.seq < first + count
                for r in decode(ReadingBatch, raw).reports
            )

        found = asyncio.run(collect(kafka_bootstrap, topics.READINGS, 2, ours))
        settled(bridge, 1)
    assert all(len(raw) < 128 * 1024 for raw in found) and len(found) >= 2
    seqs = [r.seq for raw in found for r in decode(ReadingBatch, raw).reports]
    assert seqs == [first + i for i in range(count)]  # nothing lost, nothing reordered
    assert bridge.stats.forwarded == 1 and bridge.stats.readings == count


def test_a_record_kafka_refuses_for_good_dead_letters_its_message(
    tiny_site: Site, kafka_bootstrap: str, mqtt_address: tuple[str, int]
) -> None:
    """With the bridge's own size check taken away, the producer refuses the record (too large,
    which no retry cures): the message is dead-lettered with Kafka's reason and acknowledged,
    instead of waiting unacknowledged forever, and the bridge goes on."""
    host, port = mqtt_address
    producer = kafka.producer(kafka_bootstrap, max_request_size=128 * 1024)
    bridge = MqttBridge(tiny_site, producer, host, port, client_id=f"b-{uuid.uuid4().hex[:8]}")
    now, since = now_ms(), utcnow()
    payload = json.dumps(
        [{"ts": now - i, "seq": i, "values": {"water_level_m": 1.0}} for i in range(1500)]
    ).encode()
    seq = now_ms()
    with running(bridge):
        bridge.record_limit = 2**30  # as if the bridge did not know the producer's limit
        publish(host, port, [(TELEMETRY, payload), (TELEMETRY, reading(seq=seq))])
        (letter,) = letters_of(kafka_bootstrap, [payload], since).values()
        bridge.record_limit = 128 * 1024
        found = asyncio.run(collect(kafka_bootstrap, topics.READINGS, 1, has_seq(seq)))
        settled(bridge, 2)
    assert letter.reason.startswith("message: Kafka refused a record for gw.readings:")
    assert "MessageSizeTooLargeError" in letter.reason and letter.size == len(payload)
    assert len(found) == 1
    assert bridge.stats.deadlettered == 1 and bridge.stats.forwarded == 1


def test_kafka_down_leaves_the_message_unacked_stops_the_bridge_and_it_is_redelivered(
    tiny_site: Site, database_url: str, mqtt_address: tuple[str, int], run_dir: Path
) -> None:
    """A record Kafka could not take after the producer's retries is not dead-lettered (Kafka
    may take it later) nor acked: the bridge stops, and the broker gives the message to the
    bridge that replaces it."""
    host, port = mqtt_address
    only_kafka = Settings(database_url=database_url, mqtt_url=f"mqtt://{host}:{port}")
    client_id = f"bridge-{uuid.uuid4().hex[:8]}"
    seq = now_ms()
    services = EmbeddedServices(only_kafka, run_dir)
    with services as urls:
        broker = services.processes["kafka"].popen
        producer = kafka.producer(
            urls.kafka_bootstrap, request_timeout_ms=1000, delivery_timeout_ms=3000
        )
        bridge = MqttBridge(tiny_site, producer, host, port, client_id=client_id)
        with running(bridge):
            broker.send_signal(signal.SIGSTOP)  # a hung broker: nothing is answered
            try:
                publish(host, port, [(TELEMETRY, reading(value=3.25, seq=seq))])
                with pytest.raises(ServiceError, match="Kafka refused a record for gw.readings"):
                    bridge.run_until_stopped(poll_s=0.1)
            finally:
                broker.send_signal(signal.SIGCONT)
        assert bridge.stats.messages == 1 and bridge.stats.in_flight == 1
        replacement = MqttBridge(
            tiny_site, kafka.producer(urls.kafka_bootstrap), host, port, client_id=client_id
        )
        with running(replacement):
            found = asyncio.run(collect(urls.kafka_bootstrap, topics.READINGS, 1, has_seq(seq)))
            settled(replacement, 1)
    assert found  # (twice, if the hung broker wrote the first attempt after all)
    assert replacement.stats.forwarded == 1 and replacement.stats.deadlettered == 0


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_network_thread_stops_the_bridge(
    tiny_site: Site, kafka_bootstrap: str, mqtt_address: tuple[str, int]
) -> None:
    host, port = mqtt_address
    producer = kafka.producer(kafka_bootstrap)
    bridge = MqttBridge(tiny_site, producer, host, port, client_id=f"b-{uuid.uuid4().hex[:8]}")

    def explode(*_: object) -> None:
        raise RuntimeError("a fault in the network thread")

    with running(bridge):
        network = bridge.client._thread
        assert network is not None
        bridge.client.on_message = explode  # what any uncaught error did to the old handler
        publish(host, port, [(TELEMETRY, reading())])
        with pytest.raises(ServiceError, match="the MQTT network thread died"):
            bridge.run_until_stopped(poll_s=0.1)
    # paho lets go of its thread before the exception ends it: wait, so that the exception
    # is reported here (where it is expected) and not in whichever test runs next
    network.join(10)


def test_a_dead_producer_thread_stops_the_bridge(
    tiny_site: Site, kafka_bootstrap: str, mqtt_address: tuple[str, int]
) -> None:
    host, port = mqtt_address
    producer = kafka.producer(kafka_bootstrap)
    bridge = MqttBridge(tiny_site, producer, host, port, client_id=f"b-{uuid.uuid4().hex[:8]}")
    with running(bridge):
        producer._sender.initiate_close()
        with pytest.raises(ServiceError, match="the Kafka producer's sender thread died"):
            bridge.run_until_stopped(poll_s=0.1)


def test_ingest_mqtt_takes_its_limits_from_settings_and_stops_cleanly_on_sigterm(
    kafka_bootstrap: str, database_url: str, mqtt_address: tuple[str, int], tmp_path: Path
) -> None:
    host, port = mqtt_address
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDWATCH_")}
    env |= {
        "GRIDWATCH_DATABASE_URL": database_url,
        "GRIDWATCH_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "GRIDWATCH_MQTT_URL": f"mqtt://{host}:{port}",
        "GRIDWATCH_SITE": str(TINY_SITE),
        "GRIDWATCH_MQTT_LIMITS__MAX_BYTES": "200",
        "GRIDWATCH_LIVENESS_DIR": str(tmp_path),
    }
    since = utcnow()
    big = json.dumps({"ts": now_ms(), "values": {"water_level_m": 1.0}, "pad": "x" * 200}).encode()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gridwatch", "ingest", "mqtt"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        letters: dict[str, DeadLetter] = {}
        deadline = time.monotonic() + 60
        while not letters and time.monotonic() < deadline:  # until it has subscribed
            publish(host, port, [(TELEMETRY, big)])
            letters = letters_of(kafka_bootstrap, [big], since, wait_s=3)
        (letter,) = letters.values()
        assert "more than the limit of 200 bytes (mqtt_limits.max_bytes)" in letter.reason
        assert (tmp_path / "ingest-mqtt.alive").exists()  # it beats while connected
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, out.decode()
