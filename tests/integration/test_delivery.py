"""The outbox relay over real HTTP: an endpoint down for a while, answering 500s, or slower than
the client waits — every message arrives exactly once after recovery, none is lost; refused
messages end in the dead-letter table and are reported. CAP leaves signed, and the broadcast
receiver refuses an unsigned or altered CAP message."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterator

import aiohttp
import psycopg
import pytest
from aiohttp import web
from cryptography import x509

from alerts.cap import CAP_CONTENT_TYPE, sign_cap, to_cap, validate_cap
from alerts.outbox import DeliveryError, Message, Relay, enqueue
from alerts.sinks import BROADCAST, DISPATCH, HttpSender
from gridwatch.policy import Delivery
from gridwatch.signing import IDEMPOTENCY_HEADER, sign
from gridwatch.store.schema import ensure_schema
from gridwatch.xml_signature import XmlSigner, load_signer, make_throwaway, verify
from simulators.broadcast_receiver import BroadcastReceiver
from simulators.recorder import Faults, RecordingServer
from tests.unit.test_cap import notice

SECRET = b"test-secret-of-thirty-two-bytes!"
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
    try:
        await run_until_settled(relay, rounds=400)
    finally:
        await sender.close()
        await server.stop()
    return server, relay, dead


async def run_until_settled(relay: Relay, rounds: int, messages: int = 12) -> None:
    """Run the relay until the queued messages (twelve by default) are delivered or dead (or
    it ends)."""
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop, poll_s=0.02))
    try:
        for _ in range(rounds):
            if relay.delivered + relay.dead >= messages or task.done():
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task


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


@pytest.fixture(scope="module")
def cap_signer(tmp_path_factory: pytest.TempPathFactory) -> XmlSigner:
    return load_signer(*make_throwaway(tmp_path_factory.mktemp("cap"), "test CAP sender"))


def cap_message(body: bytes) -> Message:
    return Message(
        id=1,
        key="C1.alert:cap",
        sink=BROADCAST,
        content_type=CAP_CONTENT_TYPE,
        body=body,
        case_id="C1",
        attempts=1,
    )


async def broadcast(
    certificate: x509.Certificate, send: Callable[[str], Awaitable[None]]
) -> BroadcastReceiver:
    """A broadcast receiver that trusts ``certificate``, for the time ``send`` takes."""
    receiver = BroadcastReceiver(SECRET, None, certificate=certificate)
    url = await receiver.start()
    try:
        await send(url)
    finally:
        await receiver.stop()
    return receiver


def test_a_signed_cap_message_is_taken_and_verifies_at_the_receiver(cap_signer: XmlSigner) -> None:
    async def send(url: str) -> None:
        sender = HttpSender(url, SECRET, 5, cap_signer=cap_signer)
        try:
            await sender(cap_message(to_cap(notice())))
        finally:
            await sender.close()

    receiver = asyncio.run(broadcast(cap_signer.certificate, send))
    [body] = receiver.received.values()
    verify(body, cap_signer.certificate)
    validate_cap(body)


@pytest.mark.parametrize("tamper", [False, True], ids=["unsigned", "one-byte-altered"])
def test_an_unsigned_or_altered_cap_message_is_refused_at_the_receiver(
    cap_signer: XmlSigner, tamper: bool, caplog: pytest.LogCaptureFixture
) -> None:
    document = to_cap(notice())
    if tamper:
        signed = sign_cap(document, cap_signer)
        at = signed.index(b"corroborated")
        document = signed[:at] + b"C" + signed[at + 1 :]
    answers: list[tuple[int, str]] = []

    async def send(url: str) -> None:
        headers = {
            "Content-Type": CAP_CONTENT_TYPE,
            **sign(SECRET, "POST", url, document, idempotency_key="C1.alert:cap"),
        }
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, data=document, headers=headers) as resp,
        ):
            answers.append((resp.status, (await resp.json())["error"]))

    receiver = asyncio.run(broadcast(cap_signer.certificate, send))
    [(status, error)] = answers
    assert status == 422 and "XML signature" in error
    assert ("does not verify" if tamper else "missing") in error
    assert receiver.received == {} and receiver.refused == [error]
    assert any("refused" in r.message and "XML signature" in r.message for r in caplog.records)


def test_the_relay_never_sends_cap_unsigned(cap_signer: XmlSigner) -> None:
    failures: list[DeliveryError] = []

    async def send(url: str) -> None:
        sender = HttpSender(url, SECRET, 5)  # no signing key configured
        try:
            await sender(cap_message(to_cap(notice())))
        except DeliveryError as err:
            failures.append(err)
        finally:
            await sender.close()

    receiver = asyncio.run(broadcast(cap_signer.certificate, send))
    [failure] = failures
    assert failure.permanent and "no CAP signing key" in str(failure)
    assert receiver.received == {} and receiver.refused == []  # nothing was sent


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
    try:
        await run_until_settled(relay, rounds=200)
    finally:
        await sender.close()
        await runner.cleanup()
    return relay, received


def test_an_error_body_holding_nul_is_recorded_and_the_relay_goes_on(db: str) -> None:
    # A desk's error page is whatever it says: a NUL in it once stopped the relay for good.
    answers = [(503, b"busy \x00 try later")] * 3
    relay, received = asyncio.run(_deliver_to_a_flaky_desk(db, answers))
    assert relay.delivered == 12 and relay.dead == 0
    assert sorted(received) == sorted(f"C{i}:2" for i in range(12))
