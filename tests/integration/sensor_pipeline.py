"""Running pieces of the sensor pipeline in a test: a background event loop with the Faust
worker and the store writer, a test site with devices of the test's own, and publishing."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from benchmarks.pipeline import BackgroundLoop
from gridwatch import kafka, topics
from gridwatch.site import Site
from gridwatch.site_sensors import Sensor
from streams.app import build_app
from streams.persist import PersistStats, run_persist
from tests.conftest import GROUPS

SENSOR_TOPICS = (topics.READINGS, topics.DETECTIONS, topics.DEADLETTER, topics.DEVICE_STATUS)


def with_sensors(site: Site, sensors: list[dict[str, Any]], **telemetry: float) -> Site:
    """``site`` with only these sensors, near its first one."""
    base = site.sensors[0]
    made = [
        Sensor.model_validate(
            {"kind": "water_level", "location": base.location, "metrics": base.metrics, **s}
        )
        for s in sensors
    ]
    policy = site.telemetry.model_copy(update=telemetry)
    return Site.model_validate(
        {**site.model_dump(), "sensors": [m.model_dump() for m in made], "telemetry": policy}
    )


class Writer:
    """The store writer for the sensor topics (or ``topic_names``), into ``database_url``, as
    its own group (or ``group``)."""

    def __init__(
        self, loop: BackgroundLoop, database_url: str, bootstrap: str,
        topic_names: tuple[str, ...] = SENSOR_TOPICS, group: str | None = None,
    ) -> None:  # fmt: skip
        self.loop = loop
        self.stop = asyncio.Event()
        ready = asyncio.Event()
        self.group = group or f"t-store-{uuid.uuid4().hex[:8]}"
        self.task = loop.spawn(
            run_persist(
                database_url, bootstrap, self.stop, self.group, topic_names, ready=ready,
                rollup_every_s=1.0, groups=GROUPS,
            )
        )  # fmt: skip
        loop.run(asyncio.wait_for(ready.wait(), 60))

    def close(self) -> PersistStats:
        """Stop the writer (again, harmlessly) and return what it did."""
        self.loop.loop.call_soon_threadsafe(self.stop.set)
        stats: PersistStats = self.task.result(30)
        return stats


class RulesWorker:
    """The Faust worker, reading only what is produced after it has its partitions."""

    def __init__(self, loop: BackgroundLoop, site: Site, bootstrap: str, datadir: Path) -> None:
        self.loop = loop

        async def start() -> Any:
            app = build_app(
                site, bootstrap, datadir, app_id=f"t-rules-{uuid.uuid4().hex[:8]}",
                heartbeat_check_s=0.3, quiet_check_s=0.3, offset_reset="latest", groups=GROUPS,
            )  # fmt: skip
            await app.start()
            while not app.consumer.assignment():
                await asyncio.sleep(0.1)
            return app

        self.app = loop.run(start(), timeout=90)

    def close(self) -> None:
        self.loop.run(self.app.stop(), timeout=60)


def publish(host: str, port: int, items: list[tuple[str, bytes]]) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}")
    client.max_inflight_messages_set(1000)
    client.connect(host, port)
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=1) for topic, payload in items]
        for info in infos:
            info.wait_for_publish(timeout=30)
    finally:
        client.disconnect()
        client.loop_stop()


def wait_for(
    database_url: str, query: str, args: tuple[Any, ...], done: Callable[[list[Any]], bool],
    timeout: float = 45,
) -> list[Any]:  # fmt: skip
    """Poll ``query`` until ``done`` accepts its rows; the last rows either way."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(database_url, autocommit=True) as conn:
        while True:
            rows = conn.execute(query, args).fetchall()  # type: ignore[arg-type]
            if done(rows) or time.monotonic() > deadline:
                return rows
            time.sleep(0.3)


def produce(bootstrap: str, records: list[tuple[str, bytes, bytes]]) -> None:
    """``(topic, key, value)`` records onto Kafka, as another producer would write them."""
    producer = kafka.producer(bootstrap)
    try:
        for topic, key, value in records:
            producer.send(topic, key=key, value=value)
        producer.flush(30)
    finally:
        producer.close()
