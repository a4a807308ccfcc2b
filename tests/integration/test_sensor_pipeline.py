"""The sensor path on real brokers and a real database: MQTT → bridge → Kafka → rules → store.

One pipeline serves the module; every test uses devices of its own.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from gridwatch import kafka
from gridwatch.site import Site
from gridwatch.store.schema import ensure_schema
from ingest.mqtt_bridge import MqttBridge
from simulators.sensors import MqttPublisher
from tests.integration.sensor_pipeline import (
    BackgroundLoop,
    RulesWorker,
    Writer,
    publish,
    wait_for,
    with_sensors,
)

RUN = uuid.uuid4().hex[:6]
STREET = "520199003"
THRESHOLD = {"metric": "water_level_m", "yellow": 2.5, "orange": 3.0, "red": 3.5, "hysteresis": 0.1}
ALL_RULES = [
    THRESHOLD,
    {"type": "rate_of_rise", "metric": "water_level_m", "rise": 0.45, "window": 10},
    {"type": "n_of_m", "metric": "water_level_m", "above": 3.0, "n": 3, "m": 5},
    {"type": "flatline", "metric": "water_level_m", "window": 15, "tolerance": 0.001},
    {"type": "out_of_range", "metric": "water_level_m", "low": 0.2, "high": 4.0},
]
DEVICES = {
    "clean": {"rules": ALL_RULES},
    "messy": {"rules": ALL_RULES},
    "beat": {"rules": [THRESHOLD], "heartbeat_s": 1.0},
    "will": {"rules": [THRESHOLD]},
    "bad": {"rules": [THRESHOLD]},
}
DETECTIONS_SQL = (
    "SELECT rule, level, extract(epoch FROM ts)::float, cleared FROM detections"
    " WHERE source_id = %s ORDER BY ts, rule"
)


def dev(name: str) -> str:
    return f"{RUN}-{name}"


@dataclass
class Pipeline:
    site: Site
    database_url: str
    mqtt: tuple[str, int]


@pytest.fixture(scope="module")
def pipeline(
    tiny_site: Site, database_url: str, kafka_bootstrap: str, mqtt_address: tuple[str, int],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pipeline]:  # fmt: skip
    site = with_sensors(
        tiny_site, [{"id": dev(n), **spec} for n, spec in DEVICES.items()], allowed_lateness_s=3.0
    )
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(database_url, dbname=name)
    with psycopg.connect(url) as conn:
        ensure_schema(conn)
    loop = BackgroundLoop()
    host, port = mqtt_address
    writer = Writer(loop, url, kafka_bootstrap)
    worker = RulesWorker(loop, site, kafka_bootstrap, tmp_path_factory.mktemp("faust"))
    bridge = MqttBridge(
        site, kafka.producer(kafka_bootstrap), host, port, client_id=f"bridge-{RUN}"
    )
    bridge.start()
    try:
        yield Pipeline(site, url, mqtt_address)
    finally:
        bridge.stop()
        worker.close()
        writer.close()
        loop.close()
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def telemetry(device: str, value: float, ts_ms: int, seq: int | None = None) -> tuple[str, bytes]:
    body = {"ts": ts_ms, "values": {"water_level_m": value}}
    if seq is not None:
        body["seq"] = seq
    return f"gw/{STREET}/{device}/telemetry", json.dumps(body).encode()


# Each rule kind fires and clears at least once over this series (2 s apart): a rise through
# every threshold, fast enough for rate of rise, confirmed by 3 of 5, then a stuck value, then a
# value outside the operating range, then back to normal.
SERIES = [1.0, 1.2, 1.5, 2.6, 3.1, 3.6, 3.7, 3.2, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
          1.0, 1.0, 1.0, 0.1, 0.1, 1.3, 1.35, 1.4, 1.38, 1.37, 1.36, 1.33, 1.31]  # fmt: skip
EXPECTED_RULES = {
    f"{kind}:water_level_m"
    for kind in ("threshold", "rate_of_rise", "n_of_m", "flatline", "out_of_range")
}


def test_each_rule_kind_fires_and_clears_and_disorder_changes_nothing(
    pipeline: Pipeline,
) -> None:
    t0 = int(time.time() * 1000) - 120_000
    clean = [telemetry(dev("clean"), v, t0 + 2000 * i, i) for i, v in enumerate(SERIES)]
    messy_points = [telemetry(dev("messy"), v, t0 + 2000 * i, i) for i, v in enumerate(SERIES)]
    rng = random.Random(3)
    messy = messy_points + rng.sample(messy_points, 10)  # redeliveries
    # Swapped neighbours: out of order by 2 s, within the 3 s allowed lateness.
    messy.sort(key=lambda item: json.loads(item[1])["ts"] + rng.choice((0, 2500)))
    # A final reading far ahead moves both watermarks past the whole series.
    tail = [telemetry(dev("clean"), 1.3, t0 + 200_000), telemetry(dev("messy"), 1.3, t0 + 200_000)]
    publish(*pipeline.mqtt, clean + messy + tail)

    def settled(rows: list[object]) -> bool:
        return len(rows) >= 10

    for name in ("clean", "messy"):
        wait_for(pipeline.database_url, DETECTIONS_SQL, (dev(name),), settled)
    time.sleep(1.0)  # anything still in flight would show up as a difference below
    found = {name: wait_for(pipeline.database_url, DETECTIONS_SQL, (dev(name),), settled)
             for name in ("clean", "messy")}  # fmt: skip
    rules = {rule for rule, *_ in found["clean"]}
    assert rules == EXPECTED_RULES
    for rule in EXPECTED_RULES:
        fired = [(level, cleared) for r, level, _, cleared in found["clean"] if r == rule]
        assert fired[0][1] is False and fired[-1] == (None, True), (rule, fired)
    assert found["messy"] == found["clean"]


def test_offline_from_heartbeat_and_from_last_will(pipeline: Pipeline) -> None:
    host, port = pipeline.mqtt
    now = int(time.time() * 1000)
    publish(host, port, [telemetry(dev("beat"), 1.0, now)])
    device = MqttPublisher(host, port, client_id=f"sim-{RUN}").device(
        f"gw/{STREET}/{dev('will')}/status"
    )
    device.loop_stop()
    sock = device.socket()
    assert sock is not None
    sock.close()  # power lost: no DISCONNECT, so the broker sends the last will

    def offline(rows: list[tuple[str, str, float, bool]]) -> bool:
        return any(rule.startswith("offline:") and not cleared for rule, _, _, cleared in rows)

    beat = wait_for(pipeline.database_url, DETECTIONS_SQL, (dev("beat"),), offline)
    will = wait_for(pipeline.database_url, DETECTIONS_SQL, (dev("will"),), offline)
    assert [(r, lv) for r, lv, _, _ in beat] == [("offline:heartbeat", "yellow")]
    assert [(r, lv) for r, lv, _, _ in will] == [("offline:status", "yellow")]
    # The device is back: a newer reading clears the detection.
    publish(host, port, [telemetry(dev("beat"), 1.0, int(time.time() * 1000))])
    beat = wait_for(
        pipeline.database_url, DETECTIONS_SQL, (dev("beat"),), lambda rows: len(rows) >= 2
    )
    assert [(r, c) for r, _, _, c in beat][-1] == ("offline:reading", True)


def test_malformed_and_unknown_input_is_dead_lettered_and_the_pipeline_goes_on(
    pipeline: Pipeline,
) -> None:
    host, port = pipeline.mqtt
    now = int(time.time() * 1000)
    bad = [
        (f"gw/{STREET}/{dev('bad')}/telemetry", f'{{"ts": {now}, "values": '.encode()),
        (f"gw/{STREET}/{RUN}-ghost/telemetry", b'{"ts": 1, "values": {"water_level_m": 1}}'),
        (f"gw/{STREET}/{dev('bad')}/telemetry", b'{"ts": 1, "values": {"flow_m3s": 1}}'),
        (f"gw/{STREET}/{dev('bad')}/telemetry", b'{"ts": 1, "values": {"water_level_m": 99}}'),
        (f"gw/{STREET}/{dev('bad')}/status", b"sleepy"),
    ]
    publish(host, port, [*bad, telemetry(dev("bad"), 2.7, now)])
    letters = wait_for(
        pipeline.database_url,
        "SELECT source, reason, payload FROM deadletters WHERE source LIKE %s ORDER BY reason",
        (f"%{RUN}%",),
        lambda rows: len(rows) >= len(bad),
    )
    assert sorted(bytes(p) for _, _, p in letters) == sorted(p for _, p in bad)
    reasons = " | ".join(r for _, r, _ in letters)
    for expected in ("JSON", "unknown device", "metric 'flow_m3s'", "plausible range"):
        assert expected in reasons
    stored = wait_for(
        pipeline.database_url, DETECTIONS_SQL, (dev("bad"),), lambda rows: len(rows) >= 1
    )
    assert [(r, lv) for r, lv, _, _ in stored] == [("threshold:water_level_m", "yellow")]


def test_rollups_are_kept_current_on_plain_postgresql(pipeline: Pipeline) -> None:
    rows = wait_for(
        pipeline.database_url,
        "SELECT sum(n), min(min), max(max) FROM readings_1m WHERE device_id = %s",
        (dev("clean"),),
        lambda rows: rows[0][0] is not None and rows[0][0] >= len(SERIES) + 1,
    )
    assert rows == [(len(SERIES) + 1, 0.1, 3.7)]
    hourly = wait_for(
        pipeline.database_url,
        "SELECT sum(n) FROM readings_1h WHERE device_id = %s",
        (dev("clean"),),
        lambda rows: rows[0][0] == len(SERIES) + 1,
    )
    assert hourly == [(len(SERIES) + 1,)]
