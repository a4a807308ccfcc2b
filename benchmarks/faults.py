"""``gridwatch bench faults``: faults injected into the running pipeline, and what they cost.

Every scenario plays the same input through every role, each its own supervised process (started
again when it exits, as compose's ``restart: unless-stopped`` does), on fresh embedded services,
with the simulated dispatch desk and broadcast receiver over real HTTP: gateways of bench
devices reporting once a second, one of them a gauge that rises to red and falls back (a flood
incident, its red alert, a case dispatched, a CAP broadcast and, once resolved, its cancel).
Faults strike mid-stream: a role killed with SIGKILL, the Kafka broker or PostgreSQL stopped and
started again, the desk and the receiver refusing connections. The embedded broker (Tansu)
keeps its log in memory, so its restart tests the clients' side (producers retrying through the
outage, consumers rejoining a broker that forgot their groups), not durability: what it held
unconsumed when it stopped is gone. Each run is then held against a fault-free run of the same
input:

- readings sent, stored, lost and duplicated (rows of one (device, metric, ts));
- detections: (kind, source, level, cleared, reading time from the first reading), as a multiset;
- the messages each receiver took once per idempotency key, with the case id taken out of the
  key, as a multiset: equal to the fault-free run's and none twice is "exactly once";
- recovery: from the end of a fault (a killed role started again, a service back) until
  everything published before it was stored, the outbox was empty and every role's loop beat.

Alert timers and delivery backoff run ``clock_factor`` times faster than the site says, so an
outage of ``600 / clock_factor`` seconds stands for ten minutes of the real policy.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Literal

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from benchmarks.pipeline import (
    ASSIGNMENT,
    COMMANDS,
    CONSUMERS,
    BackgroundLoop,
    Roles,
    embedded_pipeline,
    restart_kafka,
    restart_postgres,
    role_env,
    write_site,
)
from benchmarks.sensors import bench_site, bench_value, publish_for
from gridwatch.liveness import age_s
from gridwatch.processes import claim_port
from gridwatch.services import ServiceUrls
from gridwatch.settings import Settings
from gridwatch.site import Site
from gridwatch.store.summary import closed_loop_counts
from gridwatch.xml_signature import load_certificate, make_throwaway
from simulators.broadcast_receiver import BroadcastReceiver
from simulators.dispatch_desk import DispatchDesk

GAUGE = 0  # the device index whose water level goes red and back
RED_M, NORMAL_M = 3.8, 1.0
RED = (0.3, 0.7)  # the part of the publishing time the gauge reads red
REAL_OUTAGE_S = 600.0  # the endpoints' outage in the policy's own time: ten minutes
METRICS = 2
ALIVE_S = 10.0  # a role whose heartbeat is older at the end did not recover
# Rows of the bench devices, and whether a row is duplicated.
READINGS_SQL = """
SELECT count(*), count(DISTINCT (device_id, metric, ts)), min(ts) FILTER (WHERE device_id = %s)
FROM readings WHERE device_id LIKE 'B%%'
"""
DETECTIONS_SQL = """
SELECT kind, source_id, coalesce(level, ''), cleared, ts FROM detections WHERE source_id LIKE 'B%%'
"""
STORED_SQL = "SELECT count(DISTINCT (device_id, metric, ts)) FROM readings"
ALERTS_SQL = "SELECT kind, level, state FROM alerts"
RETRIES_SQL = "SELECT coalesce(sum(attempts - 1), 0) FROM outbox"
UNRESOLVED_SQL = """
SELECT count(DISTINCT fingerprint) FILTER (WHERE state = 'firing'),
       count(DISTINCT fingerprint) FILTER (WHERE state = 'resolved')
FROM alerts
"""


@dataclass(frozen=True)
class Fault:
    """At ``at`` (a fraction of the publishing time): ``kill`` a role (SIGKILL), stop
    ``postgres`` or the Kafka ``broker`` for ``down_s``, or take the dispatch and broadcast
    ``endpoints`` down for ``down_s`` (by default the ten minutes, on the compressed clock)."""

    at: float
    kind: Literal["kill", "postgres", "endpoints", "broker"]
    role: str = ""
    down_s: float | None = None


@dataclass(frozen=True)
class Scenario:
    name: str
    faults: tuple[Fault, ...] = ()


@dataclass(frozen=True)
class Plan:
    devices: int = 200
    duration_s: float = 30.0
    clock_factor: float = 20.0
    postgres_down_s: float = 30.0
    broker_down_s: float = 10.0
    timeout_s: float = 120.0  # waiting for the pipeline to catch up after the publishing
    logs: Path | None = None  # each run's role and service logs are copied under it

    @property
    def outage_s(self) -> float:
        return REAL_OUTAGE_S / self.clock_factor


def kill(role: str, at: float = 0.45) -> Scenario:
    return Scenario(f"kill -9 {role}", (Fault(at, "kill", role),))


# Each role is killed while the incident is open: after its red alert, before it resolves.
SCENARIOS = {
    **{f"kill-{role}": kill(role) for role in COMMANDS},
    "postgres-stop": Scenario("postgres stopped", (Fault(0.45, "postgres"),)),
    "broker-restart": Scenario("kafka broker restarted", (Fault(0.45, "broker"),)),
    "endpoints-down": Scenario("dispatch+broadcast down", (Fault(0.25, "endpoints"),)),
}


@dataclass
class Observed:
    """What one run left behind: the figures and the stable keys to compare."""

    readings_sent: int
    rows: int
    distinct: int
    detections: Counter[tuple[str, str, str, bool, int]]
    alerts: Counter[tuple[str, str, str]]
    delivered: Counter[tuple[str, ...]]
    recovery_s: list[float | None]
    delivery_retries: int
    restarts: dict[str, int]
    heartbeat_ages: dict[str, float | None]
    complete: bool


@dataclass
class Outcome:
    scenario: str
    readings_sent: int
    readings_stored: int
    lost: int
    duplicated: int
    detections: int
    detections_equal: bool
    alerts: int  # notifications (firing and resolved) the engine sent
    alerts_expected: int
    delivered: int  # messages the desk and the receiver took
    delivered_expected: int
    exactly_once: bool  # alerts and messages: as in the fault-free run, none twice
    recovery_s: float | None
    delivery_retries: int = 0  # attempts beyond the first, over every outbox message
    restarts: dict[str, int] = field(default_factory=dict)
    not_alive_after: list[str] = field(default_factory=list)
    caught_up: bool = True

    @property
    def ok(self) -> bool:
        return (
            self.lost == 0
            and self.duplicated == 0
            and self.detections_equal
            and self.exactly_once
            and not self.not_alive_after
            and self.caught_up
        )


def gauge_value(metric: str, step: int, device: int, red: range) -> float:
    if metric == "water_level_m":
        return RED_M if device == GAUGE and step in red else NORMAL_M
    return bench_value(metric, step, device)


def fault_site(base: Site, plan: Plan, desk_url: str, receiver_url: str) -> Site:
    """The bench devices, the desk and receiver as sinks, red broadcasts without approval, and
    the alert timers and delivery backoff on the compressed clock."""
    site = bench_site(base, plan.devices, METRICS)
    policy = site.policy.compressed(plan.clock_factor)
    delivery = policy.delivery
    policy = policy.model_copy(
        update={
            "dispatch": policy.dispatch.model_copy(update={"url": desk_url}),
            "broadcast": policy.broadcast.model_copy(
                update={
                    "url": receiver_url,
                    "approval_required": False,
                    "sender": "gridwatch-bench@faults.invalid",
                }
            ),
            "delivery": delivery.model_copy(
                update={
                    "backoff_base_s": delivery.backoff_base_s / plan.clock_factor,
                    "backoff_max_s": delivery.backoff_max_s / plan.clock_factor,
                }
            ),
        }
    )
    return site.model_copy(update={"policy": policy})


def needs_skip(scenario: Scenario, settings: Settings) -> str | None:
    """Why a scenario cannot run on these services, or None."""
    for fault in scenario.faults:
        if fault.kind == "postgres" and settings.database_url is not None:
            return "restarts the embedded PostgreSQL; GRIDWATCH_DATABASE_URL points elsewhere"
        if fault.kind == "kill" and fault.role == "ingest-mqtt" and not shutil.which("mosquitto"):
            return "needs Mosquitto: amqtt keeps no persistent session for a killed bridge"
    return None


class _Run:
    """One scenario on its own services: roles, receivers, publisher, faults, a sampler."""

    def __init__(self, base: Site, plan: Plan, scenario: Scenario, work: Path) -> None:
        self.plan, self.scenario, self.work = plan, scenario, work
        self.base = base
        self.liveness = work / "liveness"  # the roles' heartbeats
        self.published = 0
        # (monotonic, readings stored, outbox pending, every role's heartbeat fresh)
        self.samples: list[tuple[float, int, int, bool]] = []
        self.fault_ends: list[tuple[float, int]] = []  # (monotonic, reports published)
        self._sampling = threading.Event()

    def __call__(self, database_url: str | None) -> Observed:
        """On fresh embedded Kafka and MQTT, and PostgreSQL unless ``database_url`` is given."""
        settings = Settings(
            _env_file=None, database_url=database_url, kafka_bootstrap=None, mqtt_url=None
        )
        with ExitStack() as stack:
            self.services, urls = stack.enter_context(embedded_pipeline(self.work, settings))
            servers = stack.enter_context(self._restarted())
            loop = BackgroundLoop()
            stack.callback(loop.close)
            key = secrets.token_hex(32)
            cap_key, cap_cert = make_throwaway(self.work / "cap-signing", "gridwatch fault bench")
            callbacks = claim_port("callbacks")
            base = f"http://127.0.0.1:{callbacks}/v1/callbacks"
            self.desk = DispatchDesk(key.encode(), f"{base}/dispatch")
            self.receiver = BroadcastReceiver(
                key.encode(), f"{base}/broadcast", certificate=load_certificate(cap_cert)
            )
            desk_url = loop.run(self.desk.start())
            stack.callback(loop.run, self.desk.stop())
            receiver_url = loop.run(self.receiver.start())
            stack.callback(loop.run, self.receiver.stop())
            site = fault_site(self.base, self.plan, desk_url, receiver_url)
            liveness = self.liveness
            env = role_env(urls, write_site(site, self.work), SINK_HMAC_KEY=key,
                           GRIDWATCH_LIVENESS_DIR=str(liveness),
                           GRIDWATCH_CAP_SIGNING_KEY=str(cap_key),
                           GRIDWATCH_CAP_SIGNING_CERT=str(cap_cert))  # fmt: skip
            options = {"alerts-relay": ["--callback-port", str(callbacks)]}
            # Restarted without a limit, as compose does: a role that exits while PostgreSQL is
            # down (crash-only) keeps being started until the database is back.
            roles = Roles(list(COMMANDS), env, self.work, options=options, max_restarts=None)
            stack.callback(roles.stop)
            self._wait_alive(roles, liveness, timeout=180)
            sampler = threading.Thread(target=self._sample, args=(urls,), daemon=True)
            sampler.start()
            stack.callback(self._sampling.set)
            sent = self._play(site, urls, roles, loop, servers)
            complete = self._wait_caught_up(urls, sent)
            return self._observe(urls, sent, roles, liveness, complete)

    @contextmanager
    def _restarted(self) -> Iterator[list[Callable[[], None]]]:
        """How to stop the services started again after a fault, called at the end."""
        stops: list[Callable[[], None]] = []
        try:
            yield stops
        finally:
            for stop in stops:
                stop()

    def _wait_alive(self, roles: Roles, liveness: Path, timeout: float) -> None:
        """Until every role beats, the worker is ready and every consumer holds its partitions
        (each the only member of its group)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(age_s(liveness, name) is not None for name in COMMANDS):
                if roles.wait_logged("streams-worker", "Worker ready", 1) and all(
                    roles.wait_logged(name, ASSIGNMENT, 1) for name in CONSUMERS
                ):
                    return
            time.sleep(0.5)
        raise RuntimeError(f"the roles did not start within {timeout:.0f}s (logs: {self.work})")

    def _play(
        self,
        site: Site,
        urls: ServiceUrls,
        roles: Roles,
        loop: BackgroundLoop,
        servers: list[Callable[[], None]],
    ) -> int:
        steps = int(self.plan.duration_s)
        red = range(int(steps * RED[0]), int(steps * RED[1]))
        result: list[int] = []

        def published(n: int) -> None:
            self.published = n

        publisher = threading.Thread(
            target=lambda: result.append(
                publish_for(
                    site, urls, self.plan.duration_s,
                    lambda m, s, d: gauge_value(m, s, d, red), published,
                )
            )
        )  # fmt: skip
        started = time.monotonic()
        publisher.start()
        for fault in sorted(self.scenario.faults, key=lambda f: f.at):
            # Half-way between two reports of the devices, when the consumers have caught up:
            # a restarted in-memory broker loses only what it held unconsumed.
            at = started + round(fault.at * self.plan.duration_s) + 0.5
            time.sleep(max(0.0, at - time.monotonic()))
            self._inject(fault, urls, roles, loop, servers)
            self.fault_ends.append((time.monotonic(), self.published))
        publisher.join()
        return result[0] if result else self.published

    def _inject(
        self,
        fault: Fault,
        urls: ServiceUrls,
        roles: Roles,
        loop: BackgroundLoop,
        servers: list[Callable[[], None]],
    ) -> None:
        if fault.kind == "kill":
            restarts = roles.restarts[fault.role]
            roles.kill(fault.role)
            if not roles.wait_restarted(fault.role, restarts + 1, timeout=60):
                raise RuntimeError(f"{fault.role} was not restarted")
        elif fault.kind == "postgres":
            down = fault.down_s if fault.down_s is not None else self.plan.postgres_down_s
            pgdata = self.work / "services" / "postgres"
            server = restart_postgres(pgdata, urls.database_url, lambda: time.sleep(down))
            servers.append(lambda: _stop_postgres(server))
        elif fault.kind == "broker":
            down = fault.down_s if fault.down_s is not None else self.plan.broker_down_s
            broker = restart_kafka(self.services, urls.kafka_bootstrap, down)
            servers.append(broker.stop)
        else:
            down = fault.down_s if fault.down_s is not None else self.plan.outage_s
            loop.run(_both_down(self.desk, self.receiver, down), timeout=down + 30)

    def _sample(self, urls: ServiceUrls) -> None:
        while not self._sampling.wait(0.5):
            try:
                # autocommit: a transaction held open for the whole run would keep a role that
                # restarts waiting behind it for its schema's locks
                with psycopg.connect(urls.database_url, connect_timeout=2, autocommit=True) as conn:
                    while not self._sampling.wait(0.5):
                        (stored,) = conn.execute(STORED_SQL).fetchone() or (0,)
                        pending = closed_loop_counts(conn)["outbox_pending"]
                        alive = self._alive(fresh_s=3.0)
                        self.samples.append((time.monotonic(), int(stored), int(pending), alive))
            except psycopg.OperationalError:
                continue  # the database is down: no sample

    def _wait_caught_up(self, urls: ServiceUrls, sent: int) -> bool:
        """Until every reading is stored, every alert resolved, every case closed, the outbox
        empty and every role alive, for two quiet seconds; False on the timeout."""
        deadline = time.monotonic() + self.plan.timeout_s
        quiet_since: float | None = None
        while time.monotonic() < deadline:
            time.sleep(0.5)
            try:
                with psycopg.connect(urls.database_url, connect_timeout=2) as conn:
                    (stored,) = conn.execute(STORED_SQL).fetchone() or (0,)
                    loop_counts = closed_loop_counts(conn)
                    firing, resolved = conn.execute(UNRESOLVED_SQL).fetchone() or (0, 0)
            except psycopg.OperationalError:
                continue
            done = (
                stored >= sent * METRICS
                and firing == resolved > 0
                and self._alive(fresh_s=ALIVE_S)
                and loop_counts["cases"] == loop_counts["cases_closed"] > 0
                and loop_counts["outbox_pending"] == 0
            )
            quiet_since = (quiet_since or time.monotonic()) if done else None
            if quiet_since is not None and time.monotonic() - quiet_since >= 2.0:
                return True
        return False

    def _observe(
        self,
        urls: ServiceUrls,
        sent: int,
        roles: Roles,
        liveness: Path,
        complete: bool,
    ) -> Observed:
        gauge = f"B{GAUGE:05d}"
        with psycopg.connect(urls.database_url) as conn:
            rows, distinct, first = conn.execute(READINGS_SQL, (gauge,)).fetchone() or (0, 0, None)
            detections: Counter[tuple[str, str, str, bool, int]] = Counter(
                (kind, source, level, cleared, _ms(ts - first) if first else 0)
                for kind, source, level, cleared, ts in conn.execute(DETECTIONS_SQL)
            )
            alerts: Counter[tuple[str, str, str]] = Counter(conn.execute(ALERTS_SQL).fetchall())
            (retries,) = conn.execute(RETRIES_SQL).fetchone() or (0,)
        delivered = Counter(_dispatched(body) for body in self.desk.received.values())
        delivered.update(("broadcast", key.split(".", 1)[-1]) for key in self.receiver.received)
        return Observed(
            readings_sent=sent * METRICS,
            rows=int(rows),
            distinct=int(distinct),
            detections=detections,
            alerts=alerts,
            delivered=delivered,
            recovery_s=[self._recovery(end, published) for end, published in self.fault_ends],
            delivery_retries=int(retries),
            restarts={name: n for name, n in roles.restarts.items() if n},
            heartbeat_ages={name: age_s(liveness, name) for name in COMMANDS},
            complete=complete,
        )

    def _alive(self, fresh_s: float) -> bool:
        return all((age_s(self.liveness, name) or 1e9) < fresh_s for name in COMMANDS)

    def _recovery(self, end: float, published: int) -> float | None:
        for at, stored, pending, alive in self.samples:
            if at >= end and stored >= published * METRICS and pending == 0 and alive:
                return round(at - end, 1)
        return None


def _stop_postgres(server: subprocess.Popen[bytes]) -> None:
    server.send_signal(signal.SIGINT)
    server.wait(30)


async def _both_down(desk: DispatchDesk, receiver: BroadcastReceiver, seconds: float) -> None:
    await asyncio.gather(desk.outage(seconds), receiver.outage(seconds))


def _dispatched(body: bytes) -> tuple[str, ...]:
    message = json.loads(body)
    return ("dispatch", str(message["action"]), str(message["level"]))


def _ms(delta: timedelta) -> int:
    return round(delta.total_seconds() * 1000)


def run_scenario(base: Site, plan: Plan, scenario: Scenario, settings: Settings) -> Observed:
    """One run on fresh services: a database of its own on the configured server, if any."""
    with tempfile.TemporaryDirectory(prefix="gridwatch-faults-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        url = settings.database_url.get_secret_value() if settings.database_url else None
        if url is not None:
            url = stack.enter_context(own_database(url))
        try:
            return _Run(base, plan, scenario, work)(url)
        finally:
            if plan.logs is not None:
                _keep_logs(work, plan.logs / scenario.name.replace(" ", "_"))


@contextmanager
def own_database(server_url: str) -> Iterator[str]:
    """A database of its own on the server of ``server_url``, dropped afterwards."""
    name = f"faults_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(server_url, dbname=name)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def _keep_logs(work: Path, kept: Path) -> None:
    kept.mkdir(parents=True, exist_ok=True)
    for log in [*work.glob("*.log"), *work.glob("services/*.log")]:
        shutil.copy(log, kept / log.name)


def compare(name: str, run: Observed, baseline: Observed) -> Outcome:
    recovered = [r for r in run.recovery_s if r is not None]
    delivered = sum(run.delivered.values())
    return Outcome(
        scenario=name,
        readings_sent=run.readings_sent,
        readings_stored=run.distinct,
        lost=run.readings_sent - run.distinct,
        duplicated=run.rows - run.distinct,
        detections=sum(run.detections.values()),
        detections_equal=run.detections == baseline.detections,
        alerts=sum(run.alerts.values()),
        alerts_expected=sum(baseline.alerts.values()),
        delivered=delivered,
        delivered_expected=sum(baseline.delivered.values()),
        exactly_once=(run.alerts, run.delivered) == (baseline.alerts, baseline.delivered)
        and all(n == 1 for n in (run.alerts + run.delivered).values()),
        recovery_s=max(recovered) if len(recovered) == len(run.recovery_s) and recovered else None,
        delivery_retries=run.delivery_retries,
        restarts=run.restarts,
        not_alive_after=[
            f"{name} ({'no heartbeat' if age is None else f'{age:.0f} s'})"
            for name, age in run.heartbeat_ages.items()
            if age is None or age > ALIVE_S
        ],
        caught_up=run.complete,
    )


def run(
    base: Site, plan: Plan, names: list[str], settings: Settings | None = None
) -> list[Outcome]:
    """The fault-free run, then each named scenario, each on fresh services."""
    settings = settings or Settings()
    baseline = run_scenario(base, plan, Scenario("fault-free"), settings)
    outcomes = [compare("fault-free", baseline, baseline)]
    for name in names:
        scenario = SCENARIOS[name]
        if needs_skip(scenario, settings) is None:
            outcomes.append(compare(scenario.name, run_scenario(base, plan, scenario, settings),
                                    baseline))  # fmt: skip
    return outcomes


HEADER = (
    f"{'scenario':26} {'sent':>6} {'stored':>6} {'lost':>4} {'dup':>4} {'detections =':>12} "
    f"{'alerts':>6} {'delivered':>9} {'exactly once':>12} {'recovery s':>10}  restarts"
)


def table(outcomes: list[Outcome]) -> str:
    lines = [HEADER]
    for o in outcomes:
        recovery = "-" if o.recovery_s is None else f"{o.recovery_s:.1f}"
        restarts = ", ".join(f"{k} {v}" for k, v in o.restarts.items()) or "none"
        lines.append(
            f"{o.scenario:26} {o.readings_sent:>6} {o.readings_stored:>6} {o.lost:>4} "
            f"{o.duplicated:>4} {_yes(o.detections_equal):>12} "
            f"{f'{o.alerts}/{o.alerts_expected}':>6} "
            f"{f'{o.delivered}/{o.delivered_expected}':>9} {_yes(o.exactly_once):>12} "
            f"{recovery:>10}  {restarts}"
        )
    return "\n".join(lines)


def _yes(value: bool) -> str:
    return "yes" if value else "NO"


def report(outcomes: list[Outcome], plan: Plan, json_path: Path | None) -> str:
    if json_path is not None:
        document = {
            "plan": {**asdict(plan), "outage_s": plan.outage_s, "logs": str(plan.logs or "")},
            "scenarios": [{**asdict(o), "ok": o.ok} for o in outcomes],
        }
        json_path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return table(outcomes)
