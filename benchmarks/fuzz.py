"""``gridwatch bench fuzz``: every MQTT message accounted for, from what the database shows.

Generated bad and good messages (``benchmarks.fuzz_messages``) go through a real MQTT broker
into the real bridge → Kafka → rules worker → store writer → PostgreSQL, each role its own
process; a role that dies is restarted, and counted. Then each message the bridge received is
exactly one of:

- stored: every reading it names is in ``readings`` with its value (the first message to name
  them; a later one naming the same readings and values is a duplicate);
- a duplicate: an exact repeat of readings stored already;
- a correction: it names a stored (device, metric, ts) with another value, and that value is in
  ``reading_corrections``;
- dead-lettered: a ``deadletters`` row whose ``source`` is ``mqtt:<topic>`` and whose
  ``sha256`` is that of its payload (one row per message: two equal messages need two rows);
- or else unaccounted: lost, or kept where no one can find it.

A status message is stored when its ``device_status`` row is there. The generator's
expectations are compared with this and the differences reported; they never count.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from benchmarks.fuzz_messages import FuzzMessage, Outcome, ReadingFact, generate
from benchmarks.pipeline import Roles, embedded_pipeline, mqtt_broker, mqtt_publisher, sensor_roles
from gridwatch.errors import ServiceError
from gridwatch.events import storable_text
from gridwatch.services import ServiceUrls
from gridwatch.site import Site

# Epoch microseconds, exact (extract gives numeric), for any time PostgreSQL can hold.
US = "(extract(epoch FROM ts) * 1000000)::int8"
READINGS_SQL = f"SELECT device_id, metric, {US}, value FROM readings"  # noqa: S608
CORRECTIONS_SQL = f"SELECT device_id, metric, {US}, value FROM reading_corrections"  # noqa: S608
STATUS_SQL = f"SELECT device_id, online, {US} FROM device_status WHERE cause = 'status'"  # noqa: S608
DEADLETTERS_SQL = "SELECT source, sha256, reason FROM deadletters"

Key = tuple[str, str, int]  # device, metric, ts in µs


@dataclass
class Tables:
    """What the database holds, as the accounting needs it."""

    readings: dict[Key, float]
    corrections: set[tuple[str, str, int, float]]
    statuses: Counter[tuple[str, bool, int]]
    deadletters: Counter[tuple[str, str]]  # (source, sha256)
    reasons: list[tuple[str, str]]  # (source, reason) of every dead letter

    def size(self) -> tuple[int, int, int, int]:
        return (
            len(self.readings),
            len(self.corrections),
            self.statuses.total(),
            self.deadletters.total(),
        )


def read_tables(conn: psycopg.Connection) -> Tables:
    readings = {(d, m, ts): v for d, m, ts, v in conn.execute(READINGS_SQL)}
    corrections = set(conn.execute(CORRECTIONS_SQL).fetchall())
    statuses = Counter(tuple(row) for row in conn.execute(STATUS_SQL))
    letters = conn.execute(DEADLETTERS_SQL).fetchall()
    return Tables(
        readings=readings,
        corrections=corrections,
        statuses=statuses,
        deadletters=Counter((source, sha) for source, sha, _ in letters),
        reasons=[(source, reason) for source, _, reason in letters],
    )


def deadletter_key(message: FuzzMessage) -> tuple[str, str]:
    """The ``(source, sha256)`` of the message's dead letter, as PostgreSQL can hold it."""
    return storable_text(f"mqtt:{message.topic}"), hashlib.sha256(message.payload).hexdigest()


@dataclass
class Accounting:
    outcomes: list[Outcome]
    claimed: set[tuple[str, str, int, float]] = field(default_factory=set)  # rows accounted for


def account(messages: Sequence[FuzzMessage], tables: Tables) -> Accounting:
    """Each message's outcome, from the tables alone, in publish order."""
    letters = Counter(tables.deadletters)
    statuses = Counter(tables.statuses)
    outcomes: list[Outcome | None] = [None] * len(messages)
    claimed: set[tuple[str, str, int, float]] = set()
    untimed: list[int] = []
    for i, message in enumerate(messages):
        key = deadletter_key(message)
        if letters[key] > 0:
            letters[key] -= 1
            outcomes[i] = Outcome.DEADLETTERED
    for i, message in enumerate(messages):
        if outcomes[i] is not None:
            continue
        status = message.status
        if status is None:
            outcomes[i] = _readings_outcome(message.readings, tables, claimed)
        elif status.ts_us is None:
            untimed.append(i)  # matched last, to the rows that no timed status explains
        elif statuses[(status.device_id, status.online, status.ts_us)] > 0:
            statuses[(status.device_id, status.online, status.ts_us)] -= 1
            outcomes[i] = Outcome.STORED
    left = Counter[tuple[str, bool]]()
    for (device, online, _ts), n in statuses.items():
        left[(device, online)] += n
    for i in untimed:
        status = messages[i].status
        assert status is not None  # noqa: S101 - only status messages are untimed
        if left[(status.device_id, status.online)] > 0:
            left[(status.device_id, status.online)] -= 1
            outcomes[i] = Outcome.STORED
    return Accounting([o or Outcome.UNACCOUNTED for o in outcomes], claimed)


def _readings_outcome(
    facts: Sequence[ReadingFact], tables: Tables, claimed: set[tuple[str, str, int, float]]
) -> Outcome | None:
    if not facts:
        return None
    corrected = False
    for fact in facts:
        stored = tables.readings.get(fact.key)
        if stored == fact.value:
            continue
        if stored is None or (*fact.key, fact.value) not in tables.corrections:
            return None
        corrected = True
    rows = {(*f.key, f.value) for f in facts}
    new = not rows <= claimed
    claimed |= rows
    if corrected:
        return Outcome.CORRECTION
    return Outcome.STORED if new else Outcome.DUPLICATE


def reason_kind(reason: str) -> str:
    """A dead letter's reason with its particulars (quoted names, numbers) taken out, and only
    its first part when it lists several (pydantic tries each shape of a union)."""
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", reason.split("; ", 1)[0])
    text = re.sub(r"(?<!\w)-?\d+(\.\d+)?([eE][+-]?\d+)?", "N", text)  # not the 25 of pm25
    return text if len(text) <= 90 else text[:89] + "…"


# Publishing ----------------------------------------------------------------------------------


def _acked(info: mqtt.MQTTMessageInfo, timeout: float) -> bool:
    try:
        info.wait_for_publish(timeout)
        return info.is_published()
    except (RuntimeError, ValueError):  # paho's way of saying it was never sent
        return False


def _publish_alone(urls: ServiceUrls, message: FuzzMessage, timeout: float = 3.0) -> bool:
    """On a connection of its own, driven here and never reconnected: a broker may close the
    connection on a message it refuses (Mosquitto does on a NUL in the topic), and a client
    that reconnects would send it again each time."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"fuzz-{uuid.uuid4().hex[:8]}")
    client.connect(urls.mqtt_host, urls.mqtt_port)
    info = client.publish(message.topic, message.payload, qos=1)
    deadline = time.monotonic() + timeout
    while not info.is_published() and time.monotonic() < deadline:
        if client.loop(timeout=0.05) != mqtt.MQTT_ERR_SUCCESS:
            break  # the broker closed the connection
    acked = info.is_published()
    client.disconnect()
    return acked


def publish(urls: ServiceUrls, messages: Sequence[FuzzMessage], timeout: float = 120) -> list[bool]:
    """Publish in order with QoS 1; whether the broker acknowledged each."""
    acked = [False] * len(messages)
    client = mqtt_publisher(urls, "fuzz", inflight=100)
    pending = {}
    try:
        for i, message in enumerate(messages):
            if "\x00" in message.topic:
                acked[i] = _publish_alone(urls, message)
            else:
                pending[i] = client.publish(message.topic, message.payload, qos=1)
        deadline = time.monotonic() + timeout
        for i, info in pending.items():
            acked[i] = _acked(info, max(0.1, deadline - time.monotonic()))
    finally:
        client.disconnect()
        client.loop_stop()
    return acked


def bridge_filters(site: Site) -> list[str]:
    """The topic filters the bridge subscribes to."""
    return [f"gw/{site.street.code}/+/{channel}" for channel in ("telemetry", "status")]


def subscribed(site: Site, topic: str) -> bool:
    return any(mqtt.topic_matches_sub(sub, topic) for sub in bridge_filters(site))


class Witness:
    """A subscriber beside the bridge, to the same topics: what the broker passes to it, it
    passes to the bridge too. So a message the broker acknowledged but passed to no one (under
    MQTT 3.1.1, Mosquitto acknowledges a message over its size limit and drops it) is told from
    a message the pipeline lost."""

    def __init__(self, urls: ServiceUrls, site: Site, timeout: float = 10.0) -> None:
        self.seen: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"fuzz-witness-{uuid.uuid4().hex[:8]}"
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.connect(urls.mqtt_host, urls.mqtt_port)
        self.client.subscribe([(sub, 1) for sub in bridge_filters(site)])
        self.client.loop_start()
        if not subscribed.wait(timeout):
            self.close()
            raise ServiceError(f"MQTT broker: no SUBACK for the witness within {timeout:.0f}s")

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        key = (msg.topic, hashlib.sha256(msg.payload).hexdigest())
        with self._lock:
            self.seen[key] += 1

    def wait(self, want: int, timeout: float, quiet_s: float = 3.0) -> None:
        """Until ``want`` messages came, or none for ``quiet_s``, or ``timeout``."""
        deadline, last, since = time.monotonic() + timeout, -1, time.monotonic()
        while time.monotonic() < deadline:
            with self._lock:
                total = self.seen.total()
            if total >= want or time.monotonic() - since > quiet_s:
                return
            if total != last:
                last, since = total, time.monotonic()
            time.sleep(0.2)

    def delivered(self, messages: Sequence[FuzzMessage]) -> list[bool]:
        """Which of ``messages`` the broker passed on (equal messages count one each)."""
        with self._lock:
            seen = Counter(self.seen)
        out = []
        for message in messages:
            key = (message.topic, hashlib.sha256(message.payload).hexdigest())
            out.append(seen[key] > 0)
            seen[key] -= 1
        return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _probe(urls: ServiceUrls, site: Site, timeout: float) -> set[Key]:
    """Publish a good reading every two seconds until one is stored: the bridge has its
    subscription and the writer its partitions. Returns the probes' keys, all of them (a late
    one may land during the run)."""
    sensor = site.sensors[0]
    metric, spec = next(iter(sensor.metrics.items()))
    topic = f"gw/{site.street.code}/{sensor.id}/telemetry"
    base_ms = time.time_ns() // 1_000_000 - 3_600_000
    keys: set[Key] = set()
    deadline = time.monotonic() + timeout
    client = mqtt_publisher(urls, "fuzz", inflight=100)
    try:
        with psycopg.connect(urls.database_url, autocommit=True) as conn:
            while time.monotonic() < deadline:
                ts = base_ms + len(keys)
                keys.add((sensor.id, metric, ts * 1000))
                payload = json.dumps({"ts": ts, "values": {metric: spec.min}}).encode()
                client.publish(topic, payload, qos=1)
                for _ in range(8):
                    time.sleep(0.25)
                    (found,) = conn.execute(
                        f"SELECT count(*) FROM readings WHERE device_id = %s AND {US} = ANY(%s)",  # noqa: S608
                        (sensor.id, [k[2] for k in keys]),
                    ).fetchone() or (0,)
                    if found:
                        return keys
    finally:
        client.disconnect()
        client.loop_stop()
    raise ServiceError(f"no probe reading was stored within {timeout:.0f}s: the pipeline is down")


# The run ---------------------------------------------------------------------------------------


@dataclass
class Result:
    messages: int
    seed: int
    mqtt_broker: str
    published: int  # acknowledged by the broker
    refused_by_broker: int
    outside_subscriptions: int  # acknowledged, but on topics the bridge does not read
    dropped_by_broker: int  # acknowledged, on the bridge's topics, passed to no subscriber
    received: int  # passed on by the broker to the bridge's subscription
    stored: int
    duplicates: int
    corrections: int
    dead_lettered: int
    unaccounted: int
    role_restarts: int
    restarts_by_role: dict[str, int]
    role_deaths: dict[str, int]  # "role: why" → how often
    roles_down: list[str]
    rows_of_no_message: int  # readings rows that no accounted message names
    stream_deadletters: int  # dead letters of Kafka records (kafka:<topic>), not of messages
    unaccounted_by_kind: dict[str, int]
    disagreements: dict[str, int]  # "kind: expected X, got Y"
    deadletter_reasons: list[tuple[str, str, int]]  # (source kind, reason kind, count)
    drain: str
    publish_s: float
    drain_s: float
    wall_time_s: float


def _drain(
    urls: ServiceUrls, messages: Sequence[FuzzMessage], roles: Roles, timeout: float,
    quiet_s: float,
) -> tuple[Tables, Accounting, str]:  # fmt: skip
    """Until every message is accounted for, or nothing changed (rows, dead letters, role
    deaths) for ``quiet_s``, or ``timeout``: the tables, the accounting and which it was."""
    start = time.monotonic()
    last: tuple[object, ...] = ()
    since = start
    with psycopg.connect(urls.database_url, autocommit=True) as conn:
        while True:
            polled = time.monotonic()
            tables = read_tables(conn)
            accounting = account(messages, tables)
            missing = accounting.outcomes.count(Outcome.UNACCOUNTED)
            now = time.monotonic()
            if missing == 0:
                return tables, accounting, "complete"
            seen = (*tables.size(), len(roles.deaths))
            if seen != last:
                last, since = seen, now
            elif now - since >= quiet_s:
                return tables, accounting, f"stopped: nothing changed for {quiet_s:.0f}s"
            if now - start >= timeout:
                return tables, accounting, f"stopped: timed out after {timeout:.0f}s"
            # The accounting reads every row: poll less often than it takes, to leave the
            # machine to the pipeline.
            time.sleep(max(1.0, 2 * (now - polled)))


@dataclass
class Delivery:
    """What became of each published message before the bridge: acknowledged by the broker,
    on the bridge's topics, passed on to subscribers."""

    acked: list[bool]
    ours: list[bool]
    passed_on: list[bool]

    def received(self, batch: Sequence[FuzzMessage]) -> list[FuzzMessage]:
        flags = zip(batch, self.ours, self.passed_on, strict=True)
        return [m for m, ours, passed in flags if ours and passed]


def deliver(urls: ServiceUrls, site: Site, batch: Sequence[FuzzMessage]) -> Delivery:
    """Publish ``batch`` with a witness subscribed beside the bridge."""
    witness = Witness(urls, site)
    try:
        acked = publish(urls, batch)
        ours = [ok and subscribed(site, m.topic) for m, ok in zip(batch, acked, strict=True)]
        witness.wait(sum(ours), timeout=60)
        return Delivery(acked, ours, witness.delivered(batch))
    finally:
        witness.close()


def run(
    site: Site,
    messages: int,
    seed: int,
    *,
    drain_timeout: float = 120.0,
    quiet_s: float = 10.0,
    max_restarts: int = 10,
) -> Result:
    """The whole benchmark on fresh embedded services."""
    started = time.monotonic()
    batch = generate(site, messages, seed, time.time_ns() // 1_000_000)
    with tempfile.TemporaryDirectory(prefix="gridwatch-fuzz-") as tmp:
        work = Path(tmp)
        with embedded_pipeline(work) as (_, urls):
            roles = sensor_roles(urls, site, work, max_restarts)
            try:
                roles.wait_logged("streams-worker", "Worker ready", timeout=120)
                probes = _probe(urls, site, timeout=120)
                publish_start = time.monotonic()
                delivery = deliver(urls, site, batch)
                received = delivery.received(batch)
                drain_start = time.monotonic()
                tables, accounting, drain = _drain(urls, received, roles, drain_timeout, quiet_s)
                ended = time.monotonic()
                down = roles.down()
            finally:
                roles.stop()
    outcomes = Counter(accounting.outcomes)
    orphans = {(*k, v) for k, v in tables.readings.items() if k not in probes} - accounting.claimed
    pairs = list(zip(received, accounting.outcomes, strict=True))
    reasons = Counter(
        (source.split(":", 1)[0], reason_kind(reason)) for source, reason in tables.reasons
    )
    published, ours = sum(delivery.acked), sum(delivery.ours)
    return Result(
        messages=messages, seed=seed, mqtt_broker=mqtt_broker(), published=published,
        refused_by_broker=len(batch) - published, outside_subscriptions=published - ours,
        dropped_by_broker=ours - len(received), received=len(received),
        stored=outcomes[Outcome.STORED], duplicates=outcomes[Outcome.DUPLICATE],
        corrections=outcomes[Outcome.CORRECTION], dead_lettered=outcomes[Outcome.DEADLETTERED],
        unaccounted=outcomes[Outcome.UNACCOUNTED], role_restarts=sum(roles.restarts.values()),
        restarts_by_role=roles.restarts, role_deaths=dict(Counter(roles.deaths)), roles_down=down,
        rows_of_no_message=len(orphans),
        stream_deadletters=sum(1 for source, _ in tables.reasons if source.startswith("kafka:")),
        unaccounted_by_kind=dict(
            Counter(m.kind for m, o in pairs if o is Outcome.UNACCOUNTED).most_common()
        ),
        disagreements=dict(
            Counter(
                f"{m.kind}: expected {m.expect}, got {o}"
                for m, o in pairs
                if o is not m.expect and o is not Outcome.UNACCOUNTED
            ).most_common()
        ),
        deadletter_reasons=[(s, r, n) for (s, r), n in reasons.most_common()],
        drain=drain, publish_s=round(drain_start - publish_start, 1),
        drain_s=round(ended - drain_start, 1), wall_time_s=round(ended - started, 1),
    )  # fmt: skip


def report(result: Result, json_path: Path | None = None, reasons: int = 25) -> str:
    """The figures as text (and as JSON at ``json_path``)."""
    if json_path is not None:
        json_path.write_text(json.dumps(asdict(result), indent=2) + "\n", encoding="utf-8")
    r = result
    restarts = ", ".join(f"{name} {n}" for name, n in r.restarts_by_role.items() if n)
    lines = [
        f"messages                {r.messages} (seed {r.seed}, {r.mqtt_broker})",
        f"published               {r.published} acknowledged by the broker, "
        f"{r.refused_by_broker} refused",
        f"outside subscriptions   {r.outside_subscriptions} (topics the bridge does not read)",
        f"dropped by the broker   {r.dropped_by_broker} (acknowledged, passed to no subscriber)",
        f"received                {r.received} (passed on to the bridge's subscription)",
        f"stored                  {r.stored}",
        f"duplicates              {r.duplicates}",
        f"corrections             {r.corrections}",
        f"dead-lettered           {r.dead_lettered}",
        f"unaccounted             {r.unaccounted}",
        f"role restarts           {r.role_restarts}" + (f" ({restarts})" if restarts else ""),
    ]
    lines += [f"  {n:6}  {death}" for death, n in r.role_deaths.items()]
    if r.roles_down:
        lines.append(f"roles down at the end   {', '.join(r.roles_down)} (out of restarts)")
    lines += [
        f"rows of no message      {r.rows_of_no_message}",
        f"stream dead letters     {r.stream_deadletters} (kafka:<topic>, not matched to messages)",
        f"drain                   {r.drain}",
        f"wall time               {r.wall_time_s}s (publish {r.publish_s}s, drain {r.drain_s}s)",
    ]
    if r.unaccounted_by_kind:
        lines.append("still missing, by kind of message:")
        lines += [f"  {n:6}  {kind}" for kind, n in r.unaccounted_by_kind.items()]
    if r.disagreements:
        lines.append("disagreements with the generator's expectation:")
        lines += [f"  {n:6}  {what}" for what, n in r.disagreements.items()]
    lines.append("dead-letter reasons (source, reason with particulars taken out):")
    lines += [f"  {n:6}  {source:5}  {kind}" for source, kind, n in r.deadletter_reasons[:reasons]]
    if len(r.deadletter_reasons) > reasons:
        rest = sum(n for *_, n in r.deadletter_reasons[reasons:])
        lines.append(f"  {rest:6}  (other reasons, {len(r.deadletter_reasons) - reasons} kinds)")
    return "\n".join(lines)
