"""回退 through the real services: an alert on the broker opens a case, the outbox relay sends it
to the simulated dispatch desk over signed HTTP, the first department returns it by a signed
callback, and the closed loop dispatches it to the next department of the route, which works
it to 结案."""

from __future__ import annotations

import asyncio
import json
import uuid

import psycopg

from alerts.callbacks import ROUTES, CallbackServer
from alerts.closed_loop import case_id_of, load_audit
from alerts.roles import run_closed_loop, run_relay
from alerts.sinks import BROADCAST, DISPATCH
from benchmarks.pipeline import BackgroundLoop
from gridwatch import kafka, topics
from gridwatch.events import Alert, IncidentKind, Level, Point, Target, new_id, utcnow
from gridwatch.site import Site
from gridwatch.store.schema import ensure_schema
from simulators.dispatch_desk import DeskPolicy, DispatchDesk
from tests.conftest import GROUPS
from tests.integration.sensor_pipeline import produce, wait_for

KEYS = {DISPATCH: b"d" * 32, BROADCAST: b"b" * 32}


def test_a_returned_case_is_dispatched_to_the_next_department_and_closed(
    tiny_site: Site, fresh_database_url: str, kafka_bootstrap: str
) -> None:
    with psycopg.connect(fresh_database_url) as conn:
        ensure_schema(conn)
    loop = BackgroundLoop()
    producer = kafka.producer(kafka_bootstrap)
    callbacks = CallbackServer(KEYS, producer)
    base = loop.run(callbacks.start("127.0.0.1"))
    desk = DispatchDesk(
        KEYS[DISPATCH],
        f"{base}{ROUTES[DISPATCH]}",
        policy=DeskPolicy(step_delay_s=0.1, return_departments=("water",)),
    )
    policy = tiny_site.policy
    dispatch = policy.dispatch.model_copy(update={"url": loop.run(desk.start())})
    site = tiny_site.model_copy(update={"policy": policy.model_copy(update={"dispatch": dispatch})})
    stop, ready = asyncio.Event(), asyncio.Event()
    cases = loop.spawn(
        run_closed_loop(site, fresh_database_url, kafka_bootstrap, producer, stop,
                        group_id=f"t-cases-{uuid.uuid4().hex[:8]}", groups=GROUPS, ready=ready)
    )  # fmt: skip
    relay = loop.spawn(run_relay(site, fresh_database_url, producer, KEYS, stop))
    flood = Alert(
        fingerprint=f"fp-{uuid.uuid4().hex[:8]}",
        incident_id=new_id(),
        incident_revision=1,
        kind=IncidentKind.FLOOD,
        level=Level.YELLOW,
        state="firing",
        targets=(Target(role="grid_worker", id="W01"),),
        summary="黄色预警：防汛风险，网格 52019900300101",
        location=Point(lon=106.605, lat=26.605),
        grid_code="52019900300101",
        ts=utcnow(),
        incident_level=Level.YELLOW,
    )
    case_id = case_id_of(flood)
    try:
        loop.run(asyncio.wait_for(ready.wait(), 60))
        produce(kafka_bootstrap, [(topics.ALERTS, flood.fingerprint.encode(), flood.to_bytes())])
        rows = wait_for(
            fresh_database_url,
            "SELECT state, department FROM cases WHERE case_id = %s",
            (case_id,),
            lambda rows: rows == [("closed", "emergency")],
        )
        assert rows == [("closed", "emergency")]
        with psycopg.connect(fresh_database_url) as conn:
            audit = [(e.action.value, e.note) for e in load_audit(conn) if e.case_id == case_id]
    finally:
        loop.loop.call_soon_threadsafe(stop.set)
        cases.result(30)
        relay.result(30)
        loop.run(desk.stop())
        loop.run(callbacks.stop())
        producer.close()
        loop.close()
    sent = [json.loads(b) for b in desk.received.values()]
    mine = [(m["action"], m["department"]) for m in sent if m["case_id"] == case_id]
    assert mine == [("dispatch", "water"), ("dispatch", "emergency")]
    assert [a for a, _ in audit] == [
        "receive", "register", "dispatch", "return", "dispatch",
        "accept", "handle", "report", "verify", "close",
    ]  # fmt: skip
    assert audit[4][1] == "returned by water"
