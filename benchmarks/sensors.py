"""``gridwatch bench sensors``: the real sensor path, measured on the embedded services.

MQTT (gateway messages, QoS 1) → bridge → Kafka → rules (Faust) → store writer → PostgreSQL,
each role its own process as in production, with ``devices`` devices reporting ``metrics``
metrics (two by default: a hazard and rainfall; four adds battery and signal, as field stations
report) once a second for ``duration`` seconds. Then, on the same machine in the same run: the
raw ceilings — binary COPY rows/s into the same ``readings`` table, and MQTT QoS 1 messages/s
through the same broker.
A reading is one value of one metric (a ``readings`` row, a data point); a device report carries
one reading per metric.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from benchmarks.pipeline import (
    COMMANDS,
    embedded_pipeline,
    mqtt_broker,
    mqtt_publisher,
    replica_names,
    sensor_roles,
)
from gridwatch.services import ServiceUrls
from gridwatch.settings import Settings
from gridwatch.site import Site

PER_MESSAGE = 100  # device reports per gateway message
RATE_HZ = 1.0  # reports per device per second
# What a device may report, with its plausible range: the hazard first, then its health.
METRICS = {
    "water_level_m": (0.0, 15.0),
    "rainfall_mm_h": (0.0, 300.0),
    "battery_v": (0.0, 5.0),
    "rssi_dbm": (-130.0, 0.0),
}
RULE = {"metric": "water_level_m", "yellow": 2.5, "orange": 3.0, "red": 3.5, "hysteresis": 0.1}
# Every 50th device crosses the yellow threshold and back every ``CYCLE`` reports, each in its
# own phase: a steady stream of detections to time, not a street-wide burst every CYCLE.
CYCLE = 10


@dataclass
class Result:
    devices: int
    partitions: int
    workers: int
    writers: int
    metrics_per_report: int
    duration_s: float
    mqtt_broker: str
    reports_sent: int  # device reports, ``metrics_per_report`` readings (data points) each
    data_points_sent: int
    readings_stored: int
    lost: int
    duplicated: int
    reports_per_s: float
    data_points_per_s: float
    rule_latency_ms_p50: float | None
    rule_latency_ms_p99: float | None
    detections: int
    cpu_s_per_1000_readings: float
    cpu_s_per_1000_by_role: dict[str, float]
    raw_copy_rows_per_s: float
    raw_mqtt_qos1_msgs_per_s: float
    writer_vs_raw_copy: float
    bridge_vs_raw_mqtt: float
    role_deaths: list[str]  # "role: why" of each role that died (and was restarted) meanwhile


def bench_site(base: Site, devices: int, metrics: int = 2) -> Site:
    """``base`` with ``devices`` bench devices reporting the first ``metrics`` of METRICS."""
    reported = dict(list(METRICS.items())[:metrics])
    first = base.grids[0].micro_grids[0].polygon[0]
    sensors = [
        {
            "id": f"B{i:05d}",
            "kind": "multi",
            "location": {"lon": first[0], "lat": first[1]},
            "metrics": {m: {"unit": "-", "min": lo, "max": hi} for m, (lo, hi) in reported.items()},
            "rules": [RULE],
            "heartbeat_s": 600,
        }
        for i in range(devices)
    ]
    return Site.model_validate({**base.model_dump(), "sensors": sensors})


# What a process's command line names → whose CPU it is.
ROLES = {**{" ".join(command): name for name, command in COMMANDS.items()},
         "tansu": "kafka broker", "mosquitto": "mqtt broker", "amqtt": "mqtt broker",
         "postgres": "postgresql"}  # fmt: skip


def _cpu_by_role(root: int) -> dict[str, float]:
    """User + system CPU seconds of ``root``'s process tree (Linux /proc) by role; the
    benchmark's own process (the publishing devices) is ``devices``."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    names: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        cpu[pid] = sum(int(f) for f in fields[11:13]) / tick  # utime, stime
        names[pid] = next((role for key, role in ROLES.items() if key in command), "other")
    names[root] = "devices"
    roles: dict[str, float] = {}
    for pid, seconds in cpu.items():
        p = pid
        while p not in (0, 1) and p != root:
            p = parents.get(p, 0)
        if p == root:
            roles[names[pid]] = roles.get(names[pid], 0.0) + seconds
    return roles


def raw_copy_rows_per_s(database_url: str, rows: int = 200_000) -> float:
    """Binary COPY straight into ``readings``: the ceiling of any writer of that table."""
    ts = datetime.now(UTC) - timedelta(days=1)
    data = [
        (ts + timedelta(microseconds=i), f"R{i % 1000:04d}", "water_level_m", 1.0, "m", i,
         uuid.uuid4(), ts)
        for i in range(rows)
    ]  # fmt: skip
    types = ["timestamptz", "text", "text", "float8", "text", "int8", "uuid", "timestamptz"]
    with psycopg.connect(database_url) as conn:
        start = time.perf_counter()
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY readings (ts, device_id, metric, value, unit, seq, id, received_at)"
                " FROM STDIN (FORMAT BINARY)"
            ) as copy,
        ):
            copy.set_types(types)
            for row in data:
                copy.write_row(row)
        conn.commit()
        elapsed = time.perf_counter() - start
        conn.execute("DELETE FROM readings WHERE device_id LIKE 'R%%'")
        conn.commit()
    return rows / elapsed


def raw_mqtt_msgs_per_s(urls: ServiceUrls, messages: int = 20_000) -> float:
    """QoS 1 from one publisher to one subscriber through the broker, 1 kB messages."""
    got = threading.Event()
    count = [0]
    topic = f"bench/{uuid.uuid4().hex[:8]}"

    def on_message(_c: mqtt.Client, _u: Any, _m: mqtt.MQTTMessage) -> None:
        count[0] += 1
        if count[0] >= messages:
            got.set()

    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{topic[-8:]}")
    sub.on_message = on_message
    sub.connect(urls.mqtt_host, urls.mqtt_port)
    sub.subscribe(topic, qos=1)
    sub.loop_start()
    time.sleep(0.5)
    pub = mqtt_publisher(urls, "bench-pub")
    payload = b"x" * 1000
    start = time.perf_counter()
    for _ in range(messages):
        pub.publish(topic, payload, qos=1)
    got.wait(120)
    elapsed = time.perf_counter() - start
    for client in (pub, sub):
        client.disconnect()
        client.loop_stop()
    return count[0] / elapsed


Value = Callable[[str, int, int], float]  # (metric, step, device index) to the value reported


def gateway_messages(
    site: Site, step: int, start_ms: int, value: Value | None = None
) -> list[tuple[str, bytes]]:
    """The gateway messages of period ``step``, each timed at its share of the period."""
    value = value or bench_value
    topic = f"gw/{site.street.code}/gateway/telemetry"
    count = -(-len(site.sensors) // PER_MESSAGE)
    out = []
    for n, first in enumerate(range(0, len(site.sensors), PER_MESSAGE)):
        ts = start_ms + int((step + n / count) * 1000 / RATE_HZ)
        body = {
            s.id: [
                {
                    "ts": ts,
                    "seq": step,
                    "values": {m: value(m, step, i) for m in site.sensors[0].metrics},
                }
            ]  # fmt: skip
            for i, s in enumerate(site.sensors[first : first + PER_MESSAGE], start=first)
        }
        out.append((topic, json.dumps(body, separators=(",", ":")).encode()))
    return out


def bench_value(metric: str, step: int, device: int) -> float:
    if metric == "water_level_m":
        return 2.7 if device % 50 == 0 and (step + device // 50) % CYCLE == 0 else 1.0
    if metric == "rainfall_mm_h":
        return round(5 + (step % 7) * 0.5, 2)
    if metric == "battery_v":
        return round(3.7 - (step % 100) * 0.001, 3)
    return -70.0 - step % 5


def publish_for(
    site: Site,
    urls: ServiceUrls,
    duration: float,
    value: Value | None = None,
    published: Callable[[int], None] | None = None,
) -> int:
    """Publish every device's reports for ``duration`` s; returns the reports sent.
    ``published`` is told the reports the broker has acknowledged after each period."""
    client = mqtt_publisher(urls, "bench")
    start, start_ms = time.monotonic(), time.time_ns() // 1_000_000
    infos, step = [], 0
    while step / RATE_HZ < duration:
        # Gateways are not synchronised: their messages are spread over each period.
        messages = gateway_messages(site, step, start_ms, value)
        for i, (topic, payload) in enumerate(messages):
            delay = (step + i / len(messages)) / RATE_HZ - (time.monotonic() - start)
            if delay > 0:
                time.sleep(delay)
            infos.append(client.publish(topic, payload, qos=1))
        step += 1
        if published is not None:
            for info in infos[-len(messages) :]:
                info.wait_for_publish(timeout=120)
            published(step * len(site.sensors))
    for info in infos:
        info.wait_for_publish(timeout=120)
    client.disconnect()
    client.loop_stop()
    return step * len(site.sensors)


STORED_SQL = """
SELECT count(*), count(DISTINCT (device_id, metric, ts)), min(stored_at), max(stored_at)
FROM readings WHERE device_id LIKE 'B%'
"""
# Polled while the pipeline runs: rows inserted into ``readings`` so far, from the statistics
# rather than a scan, so the measurement does not load the database it measures.
PROGRESS_SQL = "SELECT n_tup_ins FROM pg_stat_user_tables WHERE relname = 'readings'"
LATENCY_SQL = """
SELECT count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY ms),
       percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)
FROM (SELECT extract(epoch FROM stored_at - ts) * 1000 AS ms FROM detections
      WHERE source_id LIKE 'B%' AND rule LIKE 'threshold:%') AS l
"""


def _inserted(database_url: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        (inserted,) = conn.execute(PROGRESS_SQL).fetchone() or (0,)
    return int(inserted)


def _settled_cpu(busy_cores: float = 0.1, timeout_s: float = 90.0) -> dict[str, float]:
    """The CPU by role, each role's as of the last second it was busy (used ``busy_cores`` or
    more), once every role has been idle for three seconds running: a role still working off a
    backlog when the last reading is stored (the rules, behind) has all its work counted, and
    no role the idle seconds after its work."""
    before = _cpu_by_role(os.getpid())
    busy_until, idle, deadline = dict(before), 0, time.monotonic() + timeout_s
    while idle < 3 and time.monotonic() < deadline:
        time.sleep(1.0)
        now = _cpu_by_role(os.getpid())
        busy = {r for r, s in now.items() if s - before.get(r, 0.0) >= busy_cores}
        busy_until.update({r: now[r] for r in busy})
        idle = idle + 1 if not busy - {"devices", "other"} else 0
        before = now
    return busy_until


def _wait_stored(
    database_url: str, want: int, baseline: int, quiet_s: float = 20.0
) -> tuple[tuple[Any, ...], dict[str, float]]:
    """Until ``want`` rows more than ``baseline`` are inserted or none came for ``quiet_s``;
    then the exact figures from the table itself, and the CPU by role taken just before them
    (the exact count is the benchmark's work, not the pipeline's) once the roles are idle."""
    last, since = -1, time.monotonic()
    with psycopg.connect(database_url, autocommit=True) as conn:
        while True:
            (inserted,) = conn.execute(PROGRESS_SQL).fetchone() or (0,)
            quiet = time.monotonic() - since > quiet_s
            if inserted - baseline >= want or quiet:
                cpu = _settled_cpu()
                # Aborted inserts count in the statistics too: the table has the last word.
                stored = tuple(conn.execute(STORED_SQL).fetchone() or ())
                if stored[1] >= want or quiet:
                    return stored, cpu
            if inserted != last:
                last, since = inserted, time.monotonic()
            time.sleep(1.0)


def run(
    site: Site,
    devices: int,
    duration: float,
    metrics: int = 2,
    *,
    partitions: int = 1,
    workers: int = 1,
    writers: int = 1,
) -> Result:
    """The whole benchmark on fresh embedded services, with ``partitions`` per topic shared by
    ``workers`` rules workers and ``writers`` store writers."""
    with tempfile.TemporaryDirectory(prefix="gridwatch-bench-") as tmp:
        work = Path(tmp)
        settings = Settings(topic_partitions=partitions)
        with embedded_pipeline(work, settings) as (_, urls):
            copy_ceiling = raw_copy_rows_per_s(urls.database_url)
            mqtt_ceiling = raw_mqtt_msgs_per_s(urls)
            site = bench_site(site, devices, metrics)
            roles = sensor_roles(urls, site, work, partitions=partitions, workers=workers,
                                 writers=writers)  # fmt: skip
            try:
                # Group joins and Faust's start-up (loading a large site), outside the measurement.
                time.sleep(15)
                for name in replica_names("streams-worker", workers):
                    roles.wait_logged(name, "Worker ready", timeout=120)
                baseline = _inserted(urls.database_url)
                cpu_before = _cpu_by_role(os.getpid())
                started = datetime.now(UTC)
                sent = publish_for(site, urls, duration)
                (count, unique, _first, last), cpu_after = _wait_stored(
                    urls.database_url, sent * metrics, baseline
                )
                cpu = {r: s - cpu_before.get(r, 0.0) for r, s in cpu_after.items()}
                time.sleep(2)  # the last detections
                with psycopg.connect(urls.database_url) as conn:
                    detections, p50, p99 = conn.execute(LATENCY_SQL).fetchone() or (0, None, None)
                deaths = list(roles.deaths)
            finally:
                roles.stop()
    points = sent * metrics
    elapsed = max((last - started).total_seconds(), 1e-9) if last else float("inf")
    per_s = unique / elapsed
    return Result(
        devices=devices, partitions=partitions, workers=workers, writers=writers,
        metrics_per_report=metrics, duration_s=duration, mqtt_broker=mqtt_broker(),
        reports_sent=sent,
        data_points_sent=points, readings_stored=unique, lost=points - unique,
        duplicated=count - unique, reports_per_s=round(per_s / metrics, 1),
        data_points_per_s=round(per_s, 1),
        rule_latency_ms_p50=round(p50, 1) if p50 is not None else None,
        rule_latency_ms_p99=round(p99, 1) if p99 is not None else None,
        detections=detections,
        # The pipeline's CPU: the publishing devices are the load, not part of it.
        cpu_s_per_1000_readings=round(
            sum(s for role, s in cpu.items() if role != "devices") / max(unique, 1) * 1000, 3
        ),
        cpu_s_per_1000_by_role={
            role: round(seconds / max(unique, 1) * 1000, 4)
            for role, seconds in sorted(cpu.items(), key=lambda kv: -kv[1])
        },
        raw_copy_rows_per_s=round(copy_ceiling, 1),
        raw_mqtt_qos1_msgs_per_s=round(mqtt_ceiling, 1),
        writer_vs_raw_copy=round(per_s / copy_ceiling, 3),
        bridge_vs_raw_mqtt=round(points / PER_MESSAGE / metrics / elapsed / mqtt_ceiling, 3),
        role_deaths=deaths,
    )  # fmt: skip


def report(result: Result, json_path: Path | None) -> str:
    if json_path is not None:
        json_path.write_text(json.dumps(asdict(result), indent=2) + "\n", encoding="utf-8")
    return "\n".join(f"{name:28} {value}" for name, value in asdict(result).items())
