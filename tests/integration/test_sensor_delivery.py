"""At-least-once delivery on real services: a bridge killed mid-stream, a database restarted
mid-stream; every reading is stored exactly once."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
import yaml

from benchmarks.pipeline import restart_postgres
from gridwatch import kafka, topics
from gridwatch.events import ReadingBatch, Report
from gridwatch.services import EmbeddedServices
from gridwatch.settings import Settings
from gridwatch.site import Site
from gridwatch.store.schema import ensure_schema
from tests.integration.sensor_pipeline import (
    BackgroundLoop,
    Writer,
    publish,
    wait_for,
    with_sensors,
)

STREET = "520199003"
COUNT_SQL = (
    "SELECT count(*), count(DISTINCT (device_id, metric, ts)) FROM readings"
    " WHERE device_id = ANY(%s)"
)

# The bridge as its own process, so the test can kill it the hard way.
BRIDGE = """
import sys, threading
from pathlib import Path
from gridwatch import kafka
from gridwatch.site import load_site
from ingest.mqtt_bridge import MqttBridge
site_file, bootstrap, host, port, client_id = sys.argv[1:]
bridge = MqttBridge(load_site(Path(site_file)), kafka.producer(bootstrap), host, int(port),
                    client_id=client_id)
bridge.start()
print("subscribed", flush=True)
threading.Event().wait()
"""


def start_bridge(
    site_file: Path, bootstrap: str, mqtt: tuple[str, int], client_id: str
) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", BRIDGE, str(site_file), bootstrap, mqtt[0], str(mqtt[1]), client_id],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    with proc.stdout:
        assert proc.stdout.readline().strip() == "subscribed"
    return proc


def test_a_bridge_killed_mid_stream_loses_and_duplicates_nothing(
    tiny_site: Site, fresh_database_url: str, kafka_bootstrap: str, run_dir: Path
) -> None:
    # The guarantee needs a broker that keeps a persistent session's QoS 1 messages while the
    # bridge is away. amqtt (0.12) does not: it answers session_present=0 and drops them.
    if shutil.which("mosquitto") is None:
        pytest.skip("needs Mosquitto on the PATH: amqtt keeps no persistent sessions")
    settings = Settings(database_url=fresh_database_url, kafka_bootstrap=kafka_bootstrap)
    with EmbeddedServices(settings, run_dir) as urls:
        _kill_bridge_mid_stream(tiny_site, urls.database_url, kafka_bootstrap,
                                (urls.mqtt_host, urls.mqtt_port), run_dir)  # fmt: skip


def _kill_bridge_mid_stream(
    tiny_site: Site,
    fresh_database_url: str,
    kafka_bootstrap: str,
    mqtt_address: tuple[str, int],
    tmp_path: Path,
) -> None:
    run = uuid.uuid4().hex[:6]
    devices = [f"{run}-{i}" for i in range(5)]
    site = with_sensors(tiny_site, [{"id": d} for d in devices])
    site_file = tmp_path / "site.yaml"
    site_file.write_text(yaml.safe_dump(site.model_dump(mode="json")), encoding="utf-8")
    with psycopg.connect(fresh_database_url) as conn:
        ensure_schema(conn)
    loop = BackgroundLoop()
    writer = Writer(loop, fresh_database_url, kafka_bootstrap)
    client_id = f"bridge-{run}"
    bridge = start_bridge(site_file, kafka_bootstrap, mqtt_address, client_id)
    t0 = int(time.time() * 1000)
    messages = [
        (
            f"gw/{STREET}/{devices[i % 5]}/telemetry",
            json.dumps({"ts": t0 + i, "seq": i, "values": {"water_level_m": 1.0}}).encode(),
        )
        for i in range(3000)
    ]
    try:
        sender = threading.Thread(
            target=lambda: [
                publish(*mqtt_address, messages[i : i + 300]) or time.sleep(0.1)
                for i in range(0, len(messages), 300)
            ]  # fmt: skip
        )
        sender.start()
        time.sleep(0.8)
        bridge.send_signal(signal.SIGKILL)  # mid-stream: no flush, no DISCONNECT
        bridge.wait(10)
        sender.join(60)
        bridge = start_bridge(site_file, kafka_bootstrap, mqtt_address, client_id)
        rows = wait_for(
            fresh_database_url, COUNT_SQL, (devices,), lambda r: r[0][1] >= len(messages), 60
        )
        assert rows == [(len(messages), len(messages))]
    finally:
        bridge.kill()
        bridge.wait(10)
        writer.close()
        loop.close()


def datetime_at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def test_the_writer_survives_a_database_restart(
    kafka_bootstrap: str, mqtt_address: tuple[str, int], run_dir: Path
) -> None:
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap, mqtt_url=f"mqtt://{mqtt_address[0]}:{mqtt_address[1]}"
    )
    run = uuid.uuid4().hex[:6]
    producer = kafka.producer(kafka_bootstrap)
    t0 = time.time()

    def send(first: int, n: int) -> None:
        for i in range(first, first + n):
            report = Report(device_id=f"{run}-db", ts=datetime_at(t0 + i / 1000),
                            values={"water_level_m": (1.0, "m")})  # fmt: skip
            batch = ReadingBatch(reports=(report,))
            producer.send(topics.READINGS, key=batch.key, value=batch.to_bytes())
        producer.flush(30)

    with EmbeddedServices(settings, run_dir) as urls:
        with psycopg.connect(urls.database_url) as conn:
            ensure_schema(conn)
        loop = BackgroundLoop()
        writer = Writer(loop, urls.database_url, kafka_bootstrap)
        restarted: subprocess.Popen[bytes] | None = None
        try:
            send(0, 2000)
            wait_for(urls.database_url, COUNT_SQL, ([f"{run}-db"],), lambda r: r[0][0] > 0)
            restarted = restart_postgres(
                run_dir / "postgres", urls.database_url, lambda: send(2000, 2000)
            )
            rows = wait_for(
                urls.database_url, COUNT_SQL, ([f"{run}-db"],), lambda r: r[0][1] >= 4000, 60
            )
            assert rows == [(4000, 4000)]
            assert writer.close().db_retries > 0
            # The database going away is no message's fault: none of them was dead-lettered.
            with psycopg.connect(urls.database_url) as conn:
                (dead,) = conn.execute(
                    "SELECT count(*) FROM deadletters WHERE position(%s in payload) > 0",
                    (run.encode(),),
                ).fetchone() or (0,)
            assert dead == 0
        finally:
            writer.close()
            loop.close()
            producer.close()
            if restarted is not None:
                restarted.send_signal(signal.SIGINT)
                restarted.wait(30)
