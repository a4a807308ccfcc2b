"""The roles downstream of Kafka against records put straight on their topics, as a foreign
producer would: the rules and fusion worker, the alert engine and the closed loop, on the real
Kafka-API broker and PostgreSQL. No single message may stop one, or poison what it decides."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from alerts.roles import run_closed_loop, run_engine
from gridwatch import kafka, topics
from gridwatch.events import (
    Alert,
    DeviceStatus,
    Incident,
    IncidentKind,
    Level,
    Point,
    SourceRef,
    SourceType,
    Target,
    new_id,
)
from gridwatch.site import Site
from gridwatch.store.schema import ensure_schema
from tests.conftest import GROUPS
from tests.integration.sensor_pipeline import (
    BackgroundLoop,
    RulesWorker,
    Writer,
    produce,
    wait_for,
    with_sensors,
)

RUN = uuid.uuid4().hex[:6]
GRID = "52019900300101"
NO_SUCH_GRID = "52019900300199"
THRESHOLD = {"metric": "water_level_m", "yellow": 2.5, "orange": 3.0, "red": 3.5}
FLATLINE = {"type": "flatline", "metric": "water_level_m", "window": 10, "tolerance": 0.001}
DEVICES = {"gauge": [THRESHOLD], "stuck": [FLATLINE], "sleepy": [THRESHOLD]}
LEVELS_SQL = (
    "SELECT level FROM detections WHERE source_id = %s AND rule = 'threshold:water_level_m'"
    " ORDER BY ts"
)


def dev(name: str) -> str:
    return f"{RUN}-{name}"


@dataclass
class Roles:
    site: Site
    database_url: str
    bootstrap: str


def _site(tiny_site: Site) -> Site:
    """The tiny site with this module's devices, short yellow group waits and red broadcasts
    that need no approval (so a red alert's case queues its broadcast at once)."""
    site = with_sensors(tiny_site, [{"id": dev(n), "rules": r} for n, r in DEVICES.items()])
    data = site.model_dump()
    data["policy"]["timers"]["group_wait_s"] = {"yellow": 0.2, "orange": 0.2, "red": 0}
    data["policy"]["broadcast"]["approval_required"] = False
    return Site.model_validate(data)


@pytest.fixture(scope="module")
def roles(
    tiny_site: Site, database_url: str, kafka_bootstrap: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Roles]:  # fmt: skip
    site = _site(tiny_site)
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(database_url, dbname=name)
    with psycopg.connect(url) as conn:
        ensure_schema(conn)
    loop = BackgroundLoop()
    producer = kafka.producer(kafka_bootstrap)
    stop = asyncio.Event()
    writer = Writer(loop, url, kafka_bootstrap, topics.ALL)
    worker = RulesWorker(loop, site, kafka_bootstrap, tmp_path_factory.mktemp("faust"))
    ready = [asyncio.Event(), asyncio.Event()]
    engine = loop.spawn(
        run_engine(site, kafka_bootstrap, producer, stop, database_url=url,
                   group_id=f"t-alerts-{RUN}", groups=GROUPS, ready=ready[0])
    )  # fmt: skip
    cases = loop.spawn(
        run_closed_loop(site, url, kafka_bootstrap, producer, stop,
                        group_id=f"t-cases-{RUN}", groups=GROUPS, ready=ready[1])
    )  # fmt: skip
    for event in ready:
        loop.run(asyncio.wait_for(event.wait(), 60))
    try:
        yield Roles(site, url, kafka_bootstrap)
        assert not engine.done() and not cases.done(), "a role stopped"
    finally:
        loop.loop.call_soon_threadsafe(stop.set)
        with contextlib.ExitStack() as cleanup:  # every step runs, even after a role crashed
            cleanup.callback(_drop, database_url, name)
            cleanup.callback(producer.close)
            cleanup.callback(loop.close)
            cleanup.callback(writer.close)
            cleanup.callback(worker.close)
            for task in (engine, cases):
                cleanup.callback(task.result, 30)


def _drop(database_url: str, name: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def readings(device: str, points: list[tuple[datetime, float]]) -> list[tuple[str, bytes, bytes]]:
    """``gw.readings`` records, one per point, as JSON text another producer would write."""
    return [
        (
            topics.READINGS,
            device.encode(),
            json.dumps(
                {
                    "schema": "gw.reading-batch/1",
                    "id": str(new_id()),
                    "received_at": datetime.now(UTC).isoformat(),
                    "reports": [
                        {
                            "device_id": device,
                            "ts": at.isoformat(),
                            "values": {"water_level_m": [value, "m"]},
                        }
                    ],
                }
            ).encode(),
        )
        for at, value in points
    ]


def sha(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def letter(url: str, digest: str) -> tuple[str, str]:
    rows = wait_for(
        url, "SELECT source, reason FROM deadletters WHERE sha256 = %s", (digest,), bool, 30
    )
    assert rows, "no dead letter"
    return rows[0]


def test_a_reading_far_ahead_is_dead_lettered_and_the_gauge_still_alarms(roles: Roles) -> None:
    device = dev("gauge")
    now = datetime.now(UTC)
    future = datetime(2100, 1, 1, tzinfo=UTC)
    points = [(now - timedelta(seconds=30), 3.6), (future, 1.0)]
    points += [(now - timedelta(seconds=25), 1.0), (now - timedelta(seconds=20), 3.6)]
    produce(roles.bootstrap, readings(device, points))
    levels = wait_for(roles.database_url, LEVELS_SQL, (device,), lambda rows: len(rows) >= 3, 30)
    assert levels == [("red",), (None,), ("red",)]  # cleared by the real reading, red again
    rows = wait_for(
        roles.database_url,
        "SELECT source, reason, convert_from(payload, 'UTF8') FROM deadletters"
        " WHERE reason LIKE %s AND convert_from(payload, 'UTF8') LIKE %s",
        ("%max_ahead_s%", f"%{device}%"),
        bool,
        10,
    )
    [(source, reason, payload)] = rows
    assert source == f"kafka:{topics.READINGS}" and "2100-01-01" in payload
    assert reason.startswith("ts: 2100-01-01T00:00:00+00:00 is ")


def test_a_status_far_ahead_is_dead_lettered_and_does_not_take_the_device_offline(
    roles: Roles,
) -> None:
    device = dev("sleepy")
    now = datetime.now(UTC)
    will = DeviceStatus(device_id=device, online=False, ts=datetime(2100, 1, 1, tzinfo=UTC))
    produce(roles.bootstrap, [(topics.DEVICE_STATUS, device.encode(), will.to_bytes())])
    produce(roles.bootstrap, readings(device, [(now, 3.6)]))
    rows = wait_for(
        roles.database_url,
        "SELECT rule, level FROM detections WHERE source_id = %s",
        (device,),
        lambda rows: ("threshold:water_level_m", "red") in rows,
        30,
    )
    assert rows == [("threshold:water_level_m", "red")]  # not offline until 2100
    source, reason = letter(roles.database_url, sha(will.to_bytes()))
    assert source == f"kafka:{topics.DEVICE_STATUS}" and "telemetry.max_ahead_s" in reason


def test_a_flatline_becomes_a_device_fault_incident_and_alert(roles: Roles) -> None:
    device = dev("stuck")
    start = datetime.now(UTC) - timedelta(seconds=60)
    points = [(start + timedelta(seconds=2 * i), 1.0) for i in range(10)]
    produce(roles.bootstrap, readings(device, points))
    alerts = wait_for(
        roles.database_url,
        "SELECT a.kind, a.level, a.state, i.kind FROM alerts a"
        " JOIN incidents i ON i.incident_id = a.incident_id"
        " WHERE i.payload -> 'sources' @> %s::jsonb",
        (json.dumps([{"type": "sensor", "id": device}]),),
        bool,
        40,
    )
    assert ("device_fault", "yellow", "firing", "device_fault") in alerts
    with psycopg.connect(roles.database_url) as conn:
        rules = conn.execute(
            "SELECT kind, rule FROM detections WHERE source_id = %s", (device,)
        ).fetchall()
        lost = conn.execute(
            "SELECT count(*) FROM deadletters WHERE reason LIKE %s", ("%no incident kind%",)
        ).fetchone()
    assert ("sensor_fault", "flatline:water_level_m") in rules
    assert lost == (0,)


def incident(grid_code: str) -> Incident:
    now = datetime.now(UTC)
    return Incident(
        kind=IncidentKind.FLOOD,
        location=Point(lon=106.605, lat=26.605),
        community_code=grid_code[:12],
        grid_code=grid_code,
        micro_grid_code=None,
        level=Level.RED,
        confidence=0.9,
        sources=(SourceRef(type=SourceType.SENSOR, id=dev("elsewhere")),),
        detection_ids=(new_id(),),
        first_seen=now,
        last_seen=now,
    )


def test_an_incident_the_engine_cannot_alert_is_dead_lettered_and_the_next_alerts(
    roles: Roles,
) -> None:
    # Valid to the wire model, but in no grid of the site: nobody to alert.
    unknown, good = incident(NO_SUCH_GRID), incident(GRID)
    raws = [unknown.to_bytes(), good.to_bytes()]
    produce(
        roles.bootstrap,
        [
            (topics.INCIDENTS, str(i.id).encode(), raw)
            for i, raw in zip((unknown, good), raws, strict=True)
        ],
    )
    alerts = wait_for(
        roles.database_url,
        "SELECT level, state FROM alerts WHERE incident_id = %s",
        (good.id,),
        bool,
        30,
    )
    assert alerts == [("red", "firing")]  # red inhibits its lower colours
    source, reason = letter(roles.database_url, sha(raws[0]))
    assert source == f"kafka:{topics.INCIDENTS}"
    assert reason == f"grid_code: no grid {NO_SUCH_GRID!r} in the site, no one to alert"


def alert(grid_code: str) -> Alert:
    incident_id = new_id()
    return Alert(
        fingerprint=f"{RUN}-{incident_id.hex[:8]}",
        incident_id=incident_id,
        incident_revision=1,
        kind=IncidentKind.FLOOD,
        level=Level.RED,
        state="firing",
        targets=(Target(role="grid_worker", id="W01"),),
        summary="红色预警：防汛风险",
        location=Point(lon=106.605, lat=26.605),
        grid_code=grid_code,
        ts=datetime.now(UTC),
    )


def test_an_alert_the_closed_loop_cannot_handle_is_dead_lettered_and_the_next_opens_a_case(
    roles: Roles,
) -> None:
    # Its broadcast needs the grid's polygon, and there is no such grid: an error nobody
    # foresaw in a message that passed validation.
    unknown, good = alert(NO_SUCH_GRID), alert(GRID)
    raws = [unknown.to_bytes(), good.to_bytes()]
    produce(
        roles.bootstrap,
        [
            (topics.ALERTS, a.fingerprint.encode(), raw)
            for a, raw in zip((unknown, good), raws, strict=True)
        ],
    )
    cases = wait_for(
        roles.database_url,
        "SELECT state, broadcast FROM cases WHERE incident_id = %s",
        (good.incident_id,),
        bool,
        30,
    )
    assert cases == [("dispatched", "sent")]
    source, reason = letter(roles.database_url, sha(raws[0]))
    assert source == f"kafka:{topics.ALERTS}" and NO_SUCH_GRID in reason
    with psycopg.connect(roles.database_url) as conn:
        left = conn.execute(
            "SELECT count(*) FROM cases WHERE incident_id = %s", (unknown.incident_id,)
        ).fetchone()
    assert left == (0,)  # its transaction was rolled back whole
