"""The outbox relay over real HTTP: an endpoint down for a while, answering 500s, or slower than
the client waits — every message arrives exactly once after recovery, none is lost; refused
messages end in the dead-letter table and are reported."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator

import psycopg
import pytest
from aiohttp import web

from alerts.outbox import Message, Relay, enqueue
from alerts.sinks import DISPATCH, HttpSender
from gridwatch.policy import Delivery
from gridwatch.signing import IDEMPOTENCY_HEADER
from gridwatch.store.schema import ensure_schema
from simulators.recorder import Faults, RecordingServer

SECRET = b"test-secret"
FAST = Delivery(max_attempts=40, backoff_base_s=0.02, backoff_max_s=0.3)


@pytest.fixture
def db(fresh_database_url: str) -> Iterator[str]:
    with psycopg.connect(fresh_database_url) as conn:
        ensure_schema(conn)
        with conn.transaction():
            for i in range(12):
                body = f'{{"case_id": "C{i}", "seq": 2}}'.encode()
                enqueue(conn, DISPATCH, f"C{i}:2", "application/json", body, f"C{i}")
            assert not enqueue(conn, DISPATCH, "C0:2", "application/json", b"{}")  # same key
    yield fresh_database_url


async def deliver(
    db: str,
    faults: Faults,
    *,
    secret: bytes = SECRET,
    delivery: Delivery = FAST,
    timeout_s: float = 0.25,
) -> tuple[RecordingServer, Relay, list[str]]:
    server = RecordingServer("desk", SECRET, None, faults)
    url = await server.start("/v1/cases", _ok)
    sender = HttpSender(url, secret, timeout_s)
    dead: list[str] = []

    async def on_dead(message: Message, reason: str) -> None:
        dead.append(f"{message.key}: {reason}")

    relay = Relay(db, {DISPATCH: sender}, delivery, rng=random.Random(1), on_dead=on_dead)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop, poll_s=0.02))
    try:
        for _ in range(400):
            if relay.delivered + relay.dead >= 12:
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task
        await sender.close()
        await server.stop()
    return server, relay, dead


async def _ok(key: str, body: bytes, content_type: str) -> dict[str, object]:
    return {"received": key}


@pytest.mark.parametrize(
    "faults",
    [
        pytest.param(Faults(down_s=1.0), id="down-for-a-second"),
        pytest.param(Faults(fail_first=15), id="answers-500s"),
        pytest.param(Faults(slow_first=6, delay_s=0.5), id="slower-than-the-client-waits"),
    ],
)
def test_exactly_once_at_the_receiver_after_recovery(db: str, faults: Faults) -> None:
    server, relay, dead = asyncio.run(deliver(db, faults))
    assert dead == []
    assert sorted(server.received) == sorted(f"C{i}:2" for i in range(12))  # each exactly once
    assert relay.delivered == 12
    if faults.fail_first or faults.slow_first:
        assert server.requests > 12  # the faults really forced retries
    with psycopg.connect(db) as conn:
        left = conn.execute("SELECT count(*) FROM outbox WHERE delivered_at IS NULL").fetchone()
        assert left == (0,)


def test_after_the_last_attempt_a_message_is_dead_lettered_and_reported(db: str) -> None:
    few = Delivery(max_attempts=3, backoff_base_s=0.01, backoff_max_s=0.02)
    server, relay, dead = asyncio.run(deliver(db, Faults(fail_first=10_000), delivery=few))
    assert relay.dead == 12 and len(dead) == 12 and server.received == {}
    assert "HTTP 500" in dead[0]
    with psycopg.connect(db) as conn:
        rows = conn.execute("SELECT attempts, last_error FROM outbox_deadletters").fetchall()
        assert len(rows) == 12 and all(a == 3 for a, _ in rows)
        assert conn.execute("SELECT count(*) FROM outbox").fetchone() == (0,)


def test_a_bad_signature_is_refused_at_once(db: str) -> None:
    server, relay, dead = asyncio.run(deliver(db, Faults(), secret=b"wrong"))
    assert relay.dead == 12 and server.received == {}
    assert "HTTP 401" in dead[0] and "signature does not match" in dead[0]


async def _deliver_to_a_flaky_desk(
    db: str, answers: list[tuple[int, bytes]]
) -> tuple[Relay, list[str]]:
    """The relay against a real HTTP desk that gives ``answers`` first, then takes everything."""
    received: list[str] = []

    async def desk(request: web.Request) -> web.Response:
        if answers:
            status, body = answers.pop(0)
            return web.Response(status=status, body=body)
        received.append(request.headers[IDEMPOTENCY_HEADER])
        return web.json_response({"received": True})

    app = web.Application()
    app.router.add_post("/v1/cases", desk)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    sender = HttpSender(f"http://127.0.0.1:{port}/v1/cases", SECRET, 1.0)
    relay = Relay(db, {DISPATCH: sender}, FAST, rng=random.Random(1))
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop, poll_s=0.02))
    try:
        for _ in range(200):
            if relay.delivered + relay.dead >= 12 or task.done():
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task
        await sender.close()
        await runner.cleanup()
    return relay, received


def test_an_error_body_holding_nul_is_recorded_and_the_relay_goes_on(db: str) -> None:
    # A desk's error page is whatever it says: a NUL in it once stopped the relay for good.
    answers = [(503, b"busy \x00 try later")] * 3
    relay, received = asyncio.run(_deliver_to_a_flaky_desk(db, answers))
    assert relay.delivered == 12 and relay.dead == 0
    assert sorted(received) == sorted(f"C{i}:2" for i in range(12))
