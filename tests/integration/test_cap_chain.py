"""A case's broadcasts through regrades, from the closed loop on the real database through the
outbox relay to the simulated broadcast receiver over signed HTTP: an Alert, an Update for each
regrade on air, a Cancel, each signed and referencing every message the receiver took before."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest
from lxml import etree

from alerts.cap import CAP_NS, validate_cap
from alerts.closed_loop import ClosedLoop, case_id_of
from alerts.outbox import Relay
from alerts.sinks import BROADCAST, DISPATCH, HttpSender
from gridwatch.events import Level
from gridwatch.site import Site
from gridwatch.store.schema import ensure_schema
from gridwatch.xml_signature import XmlSigner, load_signer, make_throwaway, verify
from simulators.broadcast_receiver import BroadcastReceiver
from simulators.recorder import Faults, RecordingServer
from tests.integration.test_closed_loop import Clock, alert
from tests.integration.test_delivery import FAST, SECRET, run_until_settled

NS = {"cap": CAP_NS}


@pytest.fixture
def db(fresh_database_url: str) -> Iterator[str]:
    with psycopg.connect(fresh_database_url) as conn:
        ensure_schema(conn)
    yield fresh_database_url


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> XmlSigner:
    return load_signer(*make_throwaway(tmp_path_factory.mktemp("cap"), "test CAP sender"))


async def _taken(key: str, body: bytes, content_type: str) -> dict[str, object]:
    return {"received": key}


def _regrade_a_red_case(db: str, site: Site) -> str:
    """Red, approved; down to orange; red again, approved; ended."""
    clock = Clock()
    loop = ClosedLoop(site, clock)
    case_id = case_id_of(alert(Level.RED))
    steps = [
        lambda c: loop.on_alert(c, alert(Level.RED)),
        lambda c: loop.approve_broadcast(c, case_id, "值班员"),
        lambda c: loop.on_alert(c, alert(Level.RED, "resolved", graded=Level.ORANGE)),
        lambda c: loop.on_alert(c, alert(Level.RED)),
        lambda c: loop.approve_broadcast(c, case_id, "值班员"),
        lambda c: loop.on_alert(c, alert(Level.RED, "resolved", graded=None)),
    ]
    with psycopg.connect(db) as conn:
        for step in steps:
            clock.now += timedelta(minutes=1)
            with conn.transaction():
                step(conn)
    return case_id


def test_the_receiver_gets_an_update_chain_each_referencing_what_came_before(
    db: str, tiny_site: Site, signer: XmlSigner
) -> None:
    case_id = _regrade_a_red_case(db, tiny_site)

    async def deliver() -> BroadcastReceiver:
        receiver = BroadcastReceiver(SECRET, None, certificate=signer.certificate, play_s=0)
        desk = RecordingServer("desk", SECRET, None, Faults())
        senders = {
            BROADCAST: HttpSender(await receiver.start(), SECRET, 5, cap_signer=signer),
            DISPATCH: HttpSender(await desk.start("/v1/cases", _taken), SECRET, 5),
        }
        relay = Relay(db, senders, FAST, rng=random.Random(1))
        try:
            # 4 CAP messages and their EBM twins; the dispatch, two regrades
            await run_until_settled(relay, rounds=400, messages=11)
        finally:
            for sender in senders.values():
                await sender.close()
            await receiver.stop()
            await desk.stop()
        assert (relay.delivered, relay.dead) == (11, 0)
        return receiver

    receiver = asyncio.run(deliver())
    taken: list[str] = []  # sender,identifier,sent of each CAP message, in arrival order
    chain = []
    for key, body in receiver.received.items():
        if not key.endswith(":cap"):
            continue
        verify(body, signer.certificate)
        validate_cap(body)
        root = etree.fromstring(body)
        fields = [root.findtext(f"cap:{f}", namespaces=NS) for f in ("sender", "identifier")]
        own = ",".join([*map(str, fields), str(root.findtext("cap:sent", namespaces=NS))])
        refs = (root.findtext("cap:references", namespaces=NS) or "").split()
        assert refs == taken, f"{key} references {refs}, the receiver had taken {taken}"
        severity = {
            i.findtext("cap:language", namespaces=NS): i.findtext("cap:severity", namespaces=NS)
            for i in root.findall("cap:info", NS)
        }
        assert set(severity.values()) == {severity["zh-CN"]} and "en-US" in severity
        chain.append((root.findtext("cap:msgType", namespaces=NS), severity["zh-CN"]))
        taken.append(own)
    assert chain == [
        ("Alert", "Extreme"),
        ("Update", "Severe"),  # down to orange: no approval
        ("Update", "Extreme"),  # red again: after approval
        ("Cancel", "Extreme"),
    ]
    assert all(t.split(",")[1].startswith(case_id) for t in taken)
