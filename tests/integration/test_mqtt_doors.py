"""The MQTT doors on a real Mosquitto run with deploy/mosquitto/'s config and ACL: TLS with a
throwaway CA, a login per device, the pipeline's login for the bridge, the packet size limit.

The config is the committed one with its paths and ports moved to a temporary directory, and
``require_certificate true``, so that the clients' certificate and key settings are used too.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from gridwatch import kafka, topics
from gridwatch.events import ReadingBatch, decode
from gridwatch.mqtt_access import MqttAccess
from gridwatch.processes import HOST, accepts_connections, answers_mqtt, claim_port
from gridwatch.settings import Settings
from gridwatch.site import Site
from ingest.mqtt_bridge import MqttBridge
from simulators.sensors import Message, MqttPublisher
from tests.conftest import GROUPS

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto"
MOSQUITTO, MOSQUITTO_PASSWD = shutil.which("mosquitto"), shutil.which("mosquitto_passwd")
pytestmark = pytest.mark.skipif(
    MOSQUITTO is None or MOSQUITTO_PASSWD is None,
    reason="needs the mosquitto broker and mosquitto_passwd (Debian: apt install mosquitto)",
)
STREET = "520199003"
PIPELINE = "gridwatch"  # the ACL's pipeline login
SIMULATOR = "simulator"  # the ACL's fleet login of a test stack
DEVICES = ("WL-1", "WL-2")


@dataclass(frozen=True)
class Broker:
    tls_port: int
    plain_port: int
    passwords: dict[str, str]
    ca: Path
    cert: Path
    key: Path
    max_packet: int

    def access(self, user: str) -> MqttAccess:
        url = f"mqtts://{user}:{self.passwords[user]}@{HOST}:{self.tls_port}"
        settings = Settings(
            _env_file=None, mqtt_url=url, mqtt_ca=self.ca, mqtt_cert=self.cert, mqtt_key=self.key
        )
        return MqttAccess.from_settings(settings)


def _pem(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o644)  # the broker reads it after dropping privileges
    return path


def _certificates(directory: Path) -> None:
    """A CA, the broker's certificate for 127.0.0.1 and a client certificate, all throwaway."""
    now = datetime.now(UTC)

    def issue(
        subject: str,
        key: ec.EllipticCurvePrivateKey,
        issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
        *,
        ca: bool,
        san: bool,
    ) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        issuer_name, issuer_key = issuer or (name, key)
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if san:
            names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = issue("gridwatch test CA", ca_key, None, ca=True, san=False)
    _pem(directory / "ca.crt", ca_cert.public_bytes(serialization.Encoding.PEM))
    for name, san in (("server", True), ("client", False)):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = issue(name, key, (ca_cert.subject, ca_key), ca=False, san=san)
        _pem(directory / f"{name}.crt", cert.public_bytes(serialization.Encoding.PEM))
        _pem(directory / f"{name}.key", key_pem(key))


@pytest.fixture(scope="module")
def broker() -> Iterator[Broker]:
    assert MOSQUITTO is not None and MOSQUITTO_PASSWD is not None
    root = Path(tempfile.mkdtemp(prefix="gridwatch-mqtt-doors-"))
    root.chmod(0o755)
    (root / "certs").mkdir(mode=0o755)
    (root / "data").mkdir(mode=0o777)
    _certificates(root / "certs")
    passwords = {user: uuid.uuid4().hex for user in (PIPELINE, SIMULATOR, *DEVICES)}
    passwd = root / "passwd"
    for user, password in passwords.items():
        flags = ["-b"] if passwd.exists() else ["-c", "-b"]
        subprocess.run([MOSQUITTO_PASSWD, *flags, passwd, user, password], check=True, timeout=30)
    passwd.chmod(0o644)
    shutil.copy(DEPLOY / "acl", root / "acl")
    (root / "acl").chmod(0o644)
    tls_port, plain_port = claim_port("MQTT TLS", None), claim_port("MQTT", None)
    conf = (DEPLOY / "mosquitto.conf").read_text(encoding="utf-8")
    for committed, here in (
        ("listener 1883 127.0.0.1", f"listener {plain_port} {HOST}"),
        ("listener 8883", f"listener {tls_port} {HOST}"),
        ("require_certificate false", "require_certificate true"),
        ("/mosquitto/config/", f"{root}/"),
        ("/mosquitto/data/", f"{root}/data/"),
    ):
        assert committed in conf, f"deploy/mosquitto/mosquitto.conf no longer has {committed!r}"
        conf = conf.replace(committed, here)
    _pem(root / "mosquitto.conf", conf.encode())
    max_packet = int(conf.split("\nmax_packet_size ", 1)[1].split()[0])
    log = (root / "mosquitto.log").open("wb")
    process = subprocess.Popen([MOSQUITTO, "-c", root / "mosquitto.conf"], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 15
        while not accepts_connections(tls_port):
            assert process.poll() is None, (root / "mosquitto.log").read_text()
            assert time.monotonic() < deadline, "mosquitto did not listen"
            time.sleep(0.1)
        certs = root / "certs"
        yield Broker(
            tls_port=tls_port,
            plain_port=plain_port,
            passwords=passwords,
            ca=certs / "ca.crt",
            cert=certs / "client.crt",
            key=certs / "client.key",
            max_packet=max_packet,
        )
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


class Client:
    """A paho client over TLS that records what it receives and how its requests end."""

    def __init__(self, broker: Broker, user: str) -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"{user}-{uuid.uuid4().hex[:6]}"
        )
        broker.access(user).apply(self.client)
        self.received: list[tuple[str, bytes]] = []
        self.granted: list[bool] = []
        self.connected, self.subscribed, self.dropped = (threading.Event() for _ in range(3))
        self.client.on_connect = lambda *a: self.connected.set() if not a[3].is_failure else None
        self.client.on_message = lambda _c, _u, m: self.received.append((m.topic, bytes(m.payload)))
        self.client.on_subscribe = self._on_subscribe
        self.client.on_disconnect = lambda *a: self.dropped.set()
        self.client.connect(HOST, broker.tls_port)
        self.client.loop_start()
        assert self.connected.wait(10), f"{user} could not log in"

    def _on_subscribe(
        self, _c: object, _u: object, _mid: int, codes: list[ReasonCode], _p: object
    ) -> None:
        self.granted = [not code.is_failure for code in codes]
        self.subscribed.set()

    def subscribe(self, topic: str) -> list[bool]:
        self.subscribed.clear()
        self.client.subscribe(topic, qos=1)
        assert self.subscribed.wait(10)
        return self.granted

    def publish(self, topic: str, payload: bytes) -> mqtt.MQTTMessageInfo:
        return self.client.publish(topic, payload, qos=1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def clients(broker: Broker) -> Iterator[dict[str, Client]]:
    made = {user: Client(broker, user) for user in (PIPELINE, *DEVICES)}
    yield made
    for client in made.values():
        client.close()


def telemetry(marker: str) -> bytes:
    return json.dumps(
        {
            "ts": int(time.time() * 1000),
            "seq": int(uuid.uuid4().int % 10**9),
            "values": {"water_level_m": 1.5},
            "marker": marker,
        }
    ).encode()


def wait_for(condition: Callable[[], bool], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_the_bridge_connects_over_mqtts_and_forwards_a_reading(
    broker: Broker, tiny_site: Site, kafka_bootstrap: str
) -> None:
    bridge = MqttBridge(
        tiny_site,
        kafka.producer(kafka_bootstrap),
        HOST,
        broker.tls_port,
        client_id=f"bridge-{uuid.uuid4().hex[:8]}",
        access=broker.access(PIPELINE),
    )
    bridge.start()
    device = Client(broker, "WL-1")
    try:
        seq = uuid.uuid4().int % 10**9
        payload = {"ts": int(time.time() * 1000), "seq": seq, "values": {"water_level_m": 1.5}}
        device.publish(
            f"gw/{STREET}/WL-1/telemetry", json.dumps(payload).encode()
        ).wait_for_publish(10)

        async def forwarded() -> bool:
            consumer = kafka.consumer(
                kafka_bootstrap, f"test-{uuid.uuid4().hex}", topics.READINGS, groups=GROUPS
            )
            await consumer.start()
            try:
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    for records in (await consumer.getmany(timeout_ms=500)).values():
                        for record in records:
                            batch = decode(ReadingBatch, record.value or b"")
                            if any(r.device_id == "WL-1" and r.seq == seq for r in batch.reports):
                                return True
            finally:
                await consumer.stop()
            return False

        assert asyncio.run(forwarded()), "the reading sent over TLS never reached gw.readings"
    finally:
        device.close()
        bridge.stop()


def test_a_plain_connection_to_the_tls_port_fails(broker: Broker) -> None:
    assert not answers_mqtt(broker.tls_port)
    plain = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="plain")
    plain.username_pw_set(PIPELINE, broker.passwords[PIPELINE])
    connected = threading.Event()
    plain.on_connect = lambda *a: connected.set()
    try:
        plain.connect(HOST, broker.tls_port)
        plain.loop_start()
        assert not connected.wait(3), "a plain MQTT client got a CONNACK from the TLS listener"
    except OSError:
        pass
    finally:
        plain.loop_stop()


def forge(broker: Broker, user: str, topic: str, payload: bytes) -> None:
    """Publish as ``user`` where its ACL forbids it. Mosquitto 2.0 answers with a "not
    authorised" PUBACK, which a paho MQTT 3.1.1 client takes as the end of the connection."""
    forger = Client(broker, user)
    try:
        forger.publish(topic, payload)
        forger.dropped.wait(3)
    finally:
        forger.close()


def test_a_device_cannot_publish_as_another(broker: Broker, clients: dict[str, Client]) -> None:
    bridge = clients[PIPELINE]
    assert bridge.subscribe(f"gw/{STREET}/+/telemetry") == [True]
    run = uuid.uuid4().hex
    forge(broker, "WL-1", f"gw/{STREET}/WL-2/telemetry", telemetry(f"forged-{run}"))
    own = clients["WL-1"].publish(f"gw/{STREET}/WL-1/telemetry", telemetry(f"own-{run}"))
    own.wait_for_publish(10)
    assert wait_for(lambda: any(f"own-{run}".encode() in p for _, p in bridge.received))
    assert not any(f"forged-{run}".encode() in p for _, p in bridge.received)


def test_a_device_cannot_subscribe_to_everything(clients: dict[str, Client]) -> None:
    """Mosquitto 2.0 may grant the subscription; the ACL then delivers it nothing."""
    snoop, other, bridge = clients["WL-1"], clients["WL-2"], clients[PIPELINE]
    assert bridge.subscribe(f"gw/{STREET}/+/telemetry") == [True]
    snoop.subscribe("#")
    snoop.subscribe(f"gw/{STREET}/+/telemetry")
    run = uuid.uuid4().hex
    other.publish(f"gw/{STREET}/WL-2/telemetry", telemetry(run)).wait_for_publish(10)
    assert wait_for(lambda: any(run.encode() in p for _, p in bridge.received))
    time.sleep(0.5)  # delivery to every subscriber happens together; leave it a margin
    assert not snoop.received, f"a device read {snoop.received[:1]}"


def test_an_oversize_message_is_refused_by_the_broker(
    broker: Broker, clients: dict[str, Client]
) -> None:
    bridge, device = clients[PIPELINE], clients["WL-1"]
    assert bridge.subscribe(f"gw/{STREET}/+/telemetry") == [True]
    run = uuid.uuid4().hex
    big = telemetry(run) + b" " * broker.max_packet
    device.publish(f"gw/{STREET}/WL-1/telemetry", big)
    assert device.dropped.wait(10), "the broker kept a client that sent an oversize packet"
    small = Client(broker, "WL-2")
    try:
        small.publish(f"gw/{STREET}/WL-2/telemetry", telemetry(f"after-{run}")).wait_for_publish(10)
        assert wait_for(lambda: any(f"after-{run}".encode() in p for _, p in bridge.received))
    finally:
        small.close()
    assert not any(run.encode() in p and b"after" not in p for _, p in bridge.received)


def test_the_simulator_publishes_for_every_device_and_the_bridges_login_for_none(
    broker: Broker, clients: dict[str, Client]
) -> None:
    bridge = clients[PIPELINE]
    assert bridge.subscribe(f"gw/{STREET}/+/telemetry") == [True]
    run = uuid.uuid4().hex
    forge(broker, PIPELINE, f"gw/{STREET}/WL-1/telemetry", telemetry(f"bridge-{run}"))
    publisher = MqttPublisher(HOST, broker.tls_port, access=broker.access(SIMULATOR))
    messages = [
        Message(0.0, f"gw/{STREET}/{device}/telemetry", telemetry(f"sim-{run}"), 1)
        for device in DEVICES
    ]
    assert publisher.play(iter(messages)) == len(DEVICES)

    def simulated() -> set[str]:
        return {topic.split("/")[2] for topic, p in bridge.received if f"sim-{run}".encode() in p}

    assert wait_for(lambda: simulated() == set(DEVICES)), bridge.received
    assert not any(f"bridge-{run}".encode() in p for _, p in bridge.received)
