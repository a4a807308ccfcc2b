"""The callback API of a real `gridwatch alerts relay` process, over real HTTPS: where it listens,
which key each route takes, replays, strict bodies, and what reaches ``gw.case-events``."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import psutil
import psycopg
import pytest
import yaml
from psycopg import sql
from psycopg.conninfo import make_conninfo

from alerts.callbacks import CallbackServer
from alerts.sinks import BROADCAST, DISPATCH
from gridwatch import kafka, topics
from gridwatch.services import ServiceUrls
from gridwatch.settings import Settings
from gridwatch.signing import sign
from gridwatch.xml_signature import make_throwaway
from tests.conftest import GROUPS

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
HOST = "127.0.0.2"  # a loopback address that is not the default: the setting is honoured
DISPATCH_KEY = b"d" * 32
BROADCAST_KEY = b"b" * 32
TS = "2026-07-01T08:00:00+08:00"


@dataclass(frozen=True)
class Relay:
    process: subprocess.Popen[bytes]
    url: str
    port: int
    tls: ssl.SSLContext  # trusts the relay's certificate


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def relay(services: ServiceUrls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    """The relay role as deployed, with a site whose broadcast sink has a key of its own."""
    tmp = tmp_path_factory.mktemp("relay")
    site = tmp / "site.yaml"
    raw = yaml.safe_load((FIXTURES / "tiny_site.yaml").read_text(encoding="utf-8"))
    raw["policy"]["broadcast"] |= {
        "url": "http://127.0.0.1:9/v1/broadcasts",
        "secret_env": "BROADCAST_HMAC_KEY",
    }
    site.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    key, cert = make_throwaway(tmp, "test CAP sender")
    tls_key, tls_cert = make_throwaway(tmp / "tls", "callback API", ip_addresses=(HOST,))
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(services.database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDWATCH_")}
    env |= {
        "GRIDWATCH_DATABASE_URL": make_conninfo(services.database_url, dbname=name),
        "GRIDWATCH_KAFKA_BOOTSTRAP": services.kafka_bootstrap,
        "GRIDWATCH_MQTT_URL": f"mqtt://{services.mqtt_host}:{services.mqtt_port}",
        "GRIDWATCH_SITE": str(site),
        "GRIDWATCH_CALLBACK_HOST": HOST,
        "GRIDWATCH_CALLBACK_TLS_CERT": str(tls_cert),
        "GRIDWATCH_CALLBACK_TLS_KEY": str(tls_key),
        "GRIDWATCH_CAP_SIGNING_KEY": str(key),
        "GRIDWATCH_CAP_SIGNING_CERT": str(cert),
        "SINK_HMAC_KEY": DISPATCH_KEY.decode(),
        "BROADCAST_HMAC_KEY": BROADCAST_KEY.decode(),
    }
    command = [sys.executable, "-m", "gridwatch", "alerts", "relay", "--callback-port", str(port)]
    log = tmp / "relay.log"
    with log.open("w", encoding="utf-8") as out:
        process = subprocess.Popen(command, env=env, cwd=tmp, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex((HOST, port)) == 0:
                    break
            time.sleep(0.2)
        else:
            output = log.read_text(encoding="utf-8")[-4000:]
            pytest.fail(f"the relay did not listen on {HOST}:{port}:\n{output}", pytrace=False)
        yield Relay(
            process, f"https://{HOST}:{port}", port, ssl.create_default_context(cafile=tls_cert)
        )
    finally:
        process.terminate()
        process.wait(timeout=30)
        with psycopg.connect(services.database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def dispatch_body(case_id: str, **changes: object) -> bytes:
    body: dict[str, object] = {
        "event_id": str(uuid.uuid4()),
        "case_id": case_id,
        "seq": 1,
        "action": "accept",
        "state": "accepted",
        "actor": "desk",
        "ts": TS,
    }
    return json.dumps(body | changes).encode()


def broadcast_body(case_id: str) -> bytes:
    body = {"event_id": str(uuid.uuid4()), "case_id": case_id, "EBMID": "E1", "BrdState": 3}
    return json.dumps(body | {"ts": TS}).encode()


async def post(relay: Relay, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=relay.tls)) as session,
        session.post(relay.url + path, data=body, headers=headers) as resp,
    ):
        return resp.status, (await resp.json())["error" if resp.status >= 300 else "accepted"]


def signed_post(relay: Relay, path: str, key: bytes, body: bytes) -> tuple[int, str]:
    return asyncio.run(post(relay, path, body, sign(key, "POST", path, body)))


def test_the_callback_api_listens_only_on_the_configured_address(relay: Relay) -> None:
    listening = {
        c.laddr
        for c in psutil.Process(relay.process.pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == relay.port
    }
    assert {address.ip for address in listening} == {HOST}  # not 0.0.0.0, not ::
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", relay.port)) != 0


DISPATCH_ROUTE, BROADCAST_ROUTE = "/v1/callbacks/dispatch", "/v1/callbacks/broadcast"


def test_by_default_the_callback_api_listens_on_loopback_only(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("GRIDWATCH_CALLBACK_HOST", raising=False)
    monkeypatch.chdir(tmp_path)  # no .env
    keys = {DISPATCH: DISPATCH_KEY, BROADCAST: BROADCAST_KEY}

    async def bound() -> set[str]:
        server = CallbackServer(keys, kafka.producer(kafka_bootstrap))
        await server.start(Settings().callback_host)
        try:
            return set(server.addresses)
        finally:
            await server.stop()

    assert asyncio.run(bound()) == {"127.0.0.1"}


def test_the_callback_api_speaks_only_https(relay: Relay) -> None:
    body = dispatch_body("C-plain")
    url = f"http://{HOST}:{relay.port}{DISPATCH_ROUTE}"

    async def plain() -> None:
        async with aiohttp.ClientSession() as session:
            await session.post(url, data=body, headers=sign(DISPATCH_KEY, "POST", url, body))

    with pytest.raises(aiohttp.ClientError):
        asyncio.run(plain())


def test_each_route_takes_its_own_key(relay: Relay) -> None:
    case = f"C-{uuid.uuid4().hex[:8]}"
    assert signed_post(relay, BROADCAST_ROUTE, BROADCAST_KEY, broadcast_body(case))[0] == 200
    assert signed_post(relay, DISPATCH_ROUTE, DISPATCH_KEY, dispatch_body(case))[0] == 200
    assert signed_post(relay, BROADCAST_ROUTE, DISPATCH_KEY, broadcast_body(case)) == (
        401,
        "signature does not match",
    )
    assert signed_post(relay, DISPATCH_ROUTE, BROADCAST_KEY, dispatch_body(case))[0] == 401


def test_a_captured_request_cannot_be_replayed_nor_moved(relay: Relay) -> None:
    body = dispatch_body(f"C-{uuid.uuid4().hex[:8]}")
    headers = sign(DISPATCH_KEY, "POST", DISPATCH_ROUTE, body)
    assert asyncio.run(post(relay, DISPATCH_ROUTE, body, headers))[0] == 200
    assert asyncio.run(post(relay, DISPATCH_ROUTE, body, headers)) == (
        401,
        "replayed request: nonce already seen within the window",
    )
    fresh = sign(DISPATCH_KEY, "POST", DISPATCH_ROUTE, body)
    moved = f"{DISPATCH_ROUTE}?again=1"
    assert asyncio.run(post(relay, moved, body, fresh)) == (401, "signature does not match")
    keyed = {**sign(DISPATCH_KEY, "POST", DISPATCH_ROUTE, body), "Idempotency-Key": "added-later"}
    assert asyncio.run(post(relay, DISPATCH_ROUTE, body, keyed)) == (
        401,
        "signature does not match",
    )


async def _case_events(bootstrap: str, case_id: str, until: str) -> list[dict[str, object]]:
    """Every gw.case-events record of ``case_id``, read until the event ``until`` arrives."""
    consumer = kafka.consumer(
        bootstrap, f"test-{uuid.uuid4().hex}", topics.CASE_EVENTS, groups=GROUPS
    )
    await consumer.start()
    found: list[dict[str, object]] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(e["id"] == until for e in found):
            batches = await consumer.getmany(timeout_ms=500)
            for record in (r for rs in batches.values() for r in rs):
                event = json.loads(record.value or b"{}")
                if event.get("case_id") == case_id:
                    found.append(event)
    finally:
        await consumer.stop()
    return found


BAD_BODIES: list[tuple[str, dict[str, object]]] = [
    ("seq", {"seq": "7"}),
    ("seq", {"seq": True}),
    ("seq", {"seq": 2**63}),
    ("actor", {"actor": 5}),
    ("ts", {"ts": "2026-07-01T08:00:00"}),
    ("event_id", {"event_id": "x"}),
    ("state", {"state": "done"}),
    ("extra", {"extra": 1}),
]


def test_a_bad_callback_is_refused_naming_the_field_and_never_reaches_case_events(
    relay: Relay, kafka_bootstrap: str
) -> None:
    case = f"C-{uuid.uuid4().hex[:8]}"
    for field, change in BAD_BODIES:
        status, error = signed_post(
            relay, DISPATCH_ROUTE, DISPATCH_KEY, dispatch_body(case, **change)
        )
        assert status == 400 and error.startswith(f"{field}: "), (change, error)
    for state in ("3", True, 5):
        body = json.dumps(json.loads(broadcast_body(case)) | {"BrdState": state}).encode()
        status, error = signed_post(relay, BROADCAST_ROUTE, BROADCAST_KEY, body)
        assert status == 400 and error.startswith("BrdState: "), (state, error)
    good = dispatch_body(case, seq=2)
    assert signed_post(relay, DISPATCH_ROUTE, DISPATCH_KEY, good)[0] == 200
    good_id = json.loads(good)["event_id"]
    events = asyncio.run(_case_events(kafka_bootstrap, case, good_id))
    assert [e["id"] for e in events] == [good_id]  # keyed by case: a bad one would come first
