"""``gridwatch bench failover``: rules workers and store writers sharing the partitions, one of
each killed mid-stream, held against one worker and one writer judging the same input.

Both runs play the sensor bench's input (``benchmarks.sensors``: gateways of bench devices
reporting once a second, every 50th device crossing its yellow threshold and back in its own
phase) through MQTT → bridge → Kafka → rules → writer → PostgreSQL on fresh embedded services,
every role its own process. The scaled run has ``partitions`` partitions per topic (Faust's own
topics included), ``workers`` rules workers and ``writers`` store writers in one consumer group
each; at ``kill_at`` of the publishing time the second worker and the second writer are killed
with SIGKILL and not started again, so the others must take their partitions over. Then:

- readings sent, stored, lost and duplicated (rows of one (device, metric, ts));
- detections as a multiset of (kind, device, level, cleared, reading time from the first
  reading): equal to the one-worker run's, none missed and none twice;
- the partitions each worker was given before the kill (from its log: the kill must take some
  away) and the takeover: the worst sensor → stored detection latency of readings after the
  kill (those on the killed worker's partitions wait for it).
"""

from __future__ import annotations

import json
import re
import signal
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path

import psycopg

from benchmarks.pipeline import ASSIGNMENT, embedded_pipeline, replica_names, sensor_roles
from benchmarks.sensors import bench_site, publish_for
from gridwatch.settings import Settings
from gridwatch.site import Site

READINGS_SQL = """
SELECT count(*), count(DISTINCT (device_id, metric, ts)), min(ts)
FROM readings WHERE device_id LIKE 'B%'
"""
DETECTIONS_SQL = """
SELECT kind, source_id, coalesce(level, ''), cleared, ts, stored_at FROM detections
WHERE source_id LIKE 'B%'
"""
READINGS_PARTITION = re.compile(r"TopicPartition\(topic='gw\.readings', partition=(\d+)\)")
METRICS = 2  # water level (a threshold rule) and rainfall
Detection = tuple[str, str, str, bool, int]


@dataclass(frozen=True)
class Shape:
    partitions: int = 1
    workers: int = 1
    writers: int = 1

    @property
    def label(self) -> str:
        return f"{self.partitions} partitions, {self.workers} workers, {self.writers} writers"


@dataclass
class Observed:
    shape: Shape
    data_points_sent: int
    rows: int
    distinct: int
    detections: Counter[Detection]
    assigned: dict[str, list[int]]  # each worker's and writer's readings partitions at the kill
    assigned_after: dict[str, list[int]]  # each surviving worker's and writer's at the end
    killed: list[str]
    # Readings on the killed worker's partitions wait for the takeover: their worst sensor →
    # stored detection latency after the kill is about the time the takeover took.
    worst_latency_after_kill_s: float | None
    role_deaths: list[str] = field(default_factory=list)
    complete: bool = True


@dataclass
class Outcome:
    shape: str
    partitions: int
    killed: list[str]
    data_points_sent: int
    readings_stored: int
    lost: int
    duplicated: int
    detections: int
    detections_expected: int
    missed: int  # detections of the one-worker run not in this one
    doubled: int  # detections this run has more often than the one-worker run
    assigned_before_kill: dict[str, list[int]]
    assigned_after: dict[str, list[int]]
    worst_latency_after_kill_s: float | None
    unexpected_deaths: list[str]
    caught_up: bool

    @property
    def ok(self) -> bool:
        return (
            self.lost == self.duplicated == self.missed == self.doubled == 0
            and not self.unexpected_deaths
            and self.caught_up
            and all(self.assigned_before_kill.get(name) for name in self.killed)
            and self.survivors_hold_every_partition
        )

    @property
    def survivors_hold_every_partition(self) -> bool:
        """The workers left hold every partition between them, and so do the writers left."""
        for role in ("streams-worker", "store-writer"):
            held = {p for name, ps in self.assigned_after.items() if name.startswith(role)
                    for p in ps}  # fmt: skip
            if held != set(range(self.partitions)):
                return False
        return True


def assigned_partitions(log: str) -> list[int]:
    """The ``gw.readings`` partitions of a worker's newest assignment in its log."""
    lines = [line for line in log.splitlines() if ASSIGNMENT in line]
    return sorted(int(p) for p in READINGS_PARTITION.findall(lines[-1])) if lines else []


def run_shape(
    base: Site,
    devices: int,
    duration: float,
    shape: Shape,
    *,
    kill_at: float | None = None,
    session_timeout_s: float | None = None,
    timeout_s: float = 120.0,
) -> Observed:
    """One run on fresh services; with ``kill_at``, the second worker and writer are killed."""
    groups = {}
    if session_timeout_s is not None:
        groups["GRIDWATCH_CONSUMER_GROUPS__SESSION_TIMEOUT_S"] = str(session_timeout_s)
    settings = Settings(_env_file=None, topic_partitions=shape.partitions, kafka_bootstrap=None,
                        mqtt_url=None)  # fmt: skip
    site = bench_site(base, devices, METRICS)
    workers = replica_names("streams-worker", shape.workers)
    writers = replica_names("store-writer", shape.writers)
    victims = [names[1] for names in (workers, writers) if len(names) > 1 and kill_at is not None]
    assigned: dict[str, list[int]] = {}
    killed_at: list[float] = []
    with tempfile.TemporaryDirectory(prefix="gridwatch-failover-") as tmp:
        work = Path(tmp)
        with embedded_pipeline(work, settings) as (_, urls):
            # Not started again: the others must take the killed ones' partitions over.
            roles = sensor_roles(urls, site, work, max_restarts=0, partitions=shape.partitions,
                                 workers=shape.workers, writers=shape.writers,
                                 **groups)  # fmt: skip
            try:
                for name in workers:
                    if not roles.wait_logged(name, "Worker ready", timeout=120):
                        raise RuntimeError(f"{name} did not start (logs: {work})")
                time.sleep(3)  # the groups settle after the last member's join

                def kill() -> None:
                    for name in [*workers, *writers]:
                        assigned[name] = assigned_partitions(roles.roles[name].log.read_text())
                    for name in victims:
                        roles.kill(name, signal.SIGKILL)
                    killed_at.append(time.time())

                timer = threading.Timer((kill_at or 0.0) * duration + 0.5, kill)
                if victims:
                    timer.start()
                sent = publish_for(site, urls, duration)
                if victims:
                    timer.join()
                want = sent * METRICS
                complete = _wait_stored(urls.database_url, want, timeout_s)
                _wait_detections_settled(urls.database_url, timeout_s)
                with psycopg.connect(urls.database_url) as conn:
                    rows, distinct, first = conn.execute(READINGS_SQL).fetchone() or (0, 0, None)
                    found = conn.execute(DETECTIONS_SQL).fetchall()
                deaths = [d for d in roles.deaths if d.split(":")[0] not in victims]
                after = {
                    name: assigned_partitions(roles.roles[name].log.read_text())
                    for name in [*workers, *writers]
                    if name not in victims
                }
            finally:
                roles.stop()
    detections: Counter[Detection] = Counter(
        (kind, source, level, cleared, _ms(ts - first))
        for kind, source, level, cleared, ts, _ in found
    )
    waited = [(stored - ts).total_seconds() for *_, ts, stored in found
              if killed_at and ts.timestamp() >= killed_at[0]]  # fmt: skip
    return Observed(
        shape=shape,
        data_points_sent=want,
        rows=int(rows),
        distinct=int(distinct),
        detections=detections,
        assigned=assigned,
        assigned_after=after,
        killed=victims,
        worst_latency_after_kill_s=round(max(waited), 2) if waited else None,
        role_deaths=deaths,
        complete=complete,
    )


def _wait_stored(database_url: str, want: int, timeout_s: float) -> bool:
    """Until ``want`` distinct readings are stored; False on the timeout."""
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(database_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            (_, distinct, _) = conn.execute(READINGS_SQL).fetchone() or (0, 0, None)
            if distinct >= want:
                return True
            time.sleep(1.0)
    return False


def _wait_detections_settled(database_url: str, timeout_s: float, quiet_s: float = 5.0) -> None:
    """Until no detection has been stored for ``quiet_s``: a worker that took partitions over
    may still be restoring their state when the writer has stored every reading."""
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(database_url, autocommit=True) as conn:
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            (count,) = conn.execute("SELECT count(*) FROM detections").fetchone() or (0,)
            if count != last:
                last, since = count, time.monotonic()
            elif time.monotonic() - since >= quiet_s:
                return
            time.sleep(0.5)


def _ms(delta: timedelta) -> int:
    return round(delta.total_seconds() * 1000)


def compare(run: Observed, baseline: Observed) -> Outcome:
    return Outcome(
        shape=run.shape.label,
        partitions=run.shape.partitions,
        killed=run.killed,
        data_points_sent=run.data_points_sent,
        readings_stored=run.distinct,
        lost=run.data_points_sent - run.distinct,
        duplicated=run.rows - run.distinct,
        detections=sum(run.detections.values()),
        detections_expected=sum(baseline.detections.values()),
        missed=sum((baseline.detections - run.detections).values()),
        doubled=sum((run.detections - baseline.detections).values()),
        assigned_before_kill=run.assigned,
        assigned_after=run.assigned_after,
        worst_latency_after_kill_s=run.worst_latency_after_kill_s,
        unexpected_deaths=run.role_deaths,
        caught_up=run.complete,
    )


def run(
    base: Site,
    devices: int,
    duration: float,
    shape: Shape,
    kill_at: float = 0.4,
    session_timeout_s: float | None = None,
) -> list[Outcome]:
    """The one-worker run, then the scaled run with its kills."""
    baseline = run_shape(base, devices, duration, Shape())
    scaled = run_shape(base, devices, duration, shape, kill_at=kill_at,
                       session_timeout_s=session_timeout_s)  # fmt: skip
    return [compare(baseline, baseline), compare(scaled, baseline)]


def report(outcomes: list[Outcome], json_path: Path | None) -> str:
    if json_path is not None:
        document = [{**asdict(o), "ok": o.ok} for o in outcomes]
        json_path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return "\n\n".join(
        "\n".join(f"{name:28} {value}" for name, value in {**asdict(o), "ok": o.ok}.items())
        for o in outcomes
    )
