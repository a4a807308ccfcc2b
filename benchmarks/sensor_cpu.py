"""``gridwatch bench sensor-cpu``: CPU per data point of each sensor role's own code, in process.

The bench site's gateway messages (as ``gridwatch bench sensors`` publishes them) go through
what each role does with a message, without brokers or a database: the bridge's parse and
batching into records, the rules' decode and judging of those records (the state table a
dict), and the writer's decode of them into ``readings`` rows. Each stage is timed with
``time.thread_time`` (this thread's CPU, not the machine's load) and reported in microseconds
per data point, best of ``repeat`` rounds; the same messages go through each stage in turn, so
a stage sees what the one before made. ``gridwatch bench sensor-cpu`` tunes the garbage
collector first, as every role does (``steady_memory``).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from benchmarks.sensors import bench_site, gateway_messages
from gridwatch import topics
from gridwatch.events import utcnow
from gridwatch.site import Site
from gridwatch.store.writer import SPECS
from ingest.mqtt_bridge import batch_by_partition
from ingest.telemetry import parse_telemetry
from streams.persist import Decoded, decode_batch
from streams.sensor_agents import StateCache, judge_events


@dataclass
class Result:
    devices: int
    metrics_per_report: int
    steps: int
    data_points: int
    records: int  # gw.readings records the bridge made
    bridge_us_per_point: float
    rules_us_per_point: float
    writer_decode_us_per_point: float
    writer_rows_us_per_point: float
    detections: int
    dead_letters: int


def _cpu_us(work: Callable[[], object], repeat: int) -> float:
    """The least thread CPU microseconds of ``repeat`` runs of ``work``."""
    best = float("inf")
    for _ in range(repeat):
        start = time.thread_time()
        work()
        best = min(best, time.thread_time() - start)
    return best * 1e6


def run(
    base: Site, devices: int = 5000, steps: int = 10, metrics: int = 4, repeat: int = 3
) -> Result:
    site = bench_site(base, devices, metrics)
    start_ms = int((datetime.now(UTC) - timedelta(seconds=steps + 5)).timestamp() * 1000)
    messages = [m for step in range(steps) for m in gateway_messages(site, step, start_ms)]
    points = steps * devices * metrics
    records: list[bytes] = []

    def bridge() -> None:
        records.clear()
        received_at = utcnow()
        for topic, payload in messages:
            reports = parse_telemetry(site, topic, payload, received_at)
            records.extend(b.to_bytes() for b in batch_by_partition(reports, 1, received_at))

    bridge_us = _cpu_us(bridge, repeat)
    events = [(topics.READINGS, raw) for raw in records]
    outcome: dict[str, int] = {}

    def rules() -> None:
        # A fresh state per round: each round judges the same readings from the start.
        states: defaultdict[bytes, bytes] = defaultdict(bytes)
        cache = StateCache(site)
        found = dead = 0
        now = utcnow()
        for first in range(0, len(events), 10):  # the agent's batches hold about ten records
            judged = judge_events(site, states, cache, events[first : first + 10], now)
            states.update(judged.writes)
            found += len(judged.found)
            dead += len(judged.dead)
        outcome.update(detections=found, dead=dead)

    rules_us = _cpu_us(rules, repeat)
    decoded: list[Decoded] = []

    def decode() -> None:
        decoded[:] = [decode_batch(events[i : i + 50]) for i in range(0, len(events), 50)]

    decode_us = _cpu_us(decode, repeat)
    spec = SPECS[topics.MODELS[topics.READINGS]]
    rows_us = _cpu_us(lambda: [spec.rows(d.events) for d in decoded], repeat)
    return Result(
        devices=devices, metrics_per_report=metrics, steps=steps, data_points=points,
        records=len(records), bridge_us_per_point=round(bridge_us / points, 3),
        rules_us_per_point=round(rules_us / points, 3),
        writer_decode_us_per_point=round(decode_us / points, 3),
        writer_rows_us_per_point=round(rows_us / points, 3),
        detections=outcome["detections"], dead_letters=outcome["dead"],
    )  # fmt: skip


def report(result: Result, json_path: Path | None) -> str:
    if json_path is not None:
        json_path.write_text(json.dumps(asdict(result), indent=2) + "\n", encoding="utf-8")
    return "\n".join(f"{name:28} {value}" for name, value in asdict(result).items())
