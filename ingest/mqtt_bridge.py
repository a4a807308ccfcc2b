"""MQTT → Kafka bridge: device telemetry and status in, validated readings out to
``gw.readings`` and status changes to ``gw.device-status``, partitioned by device id.

The reports of one message are sent as one ``ReadingBatch`` per partition their devices hash
to (a gateway message carries a hundred devices; one device's message, one batch).

At-least-once end to end: the bridge subscribes with QoS 1 and a persistent session, and
acknowledges an MQTT message only after Kafka has acknowledged everything made from it. A bridge
that dies before that gets the message again from the broker when it reconnects.
Anything rejected goes to ``gw.deadletter`` with the original bytes and the reason.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import paho.mqtt.client as mqtt
from kafka import KafkaProducer
from paho.mqtt.enums import CallbackAPIVersion

from gridwatch import kafka, topics
from gridwatch.errors import PayloadError, ServiceError
from gridwatch.events import DeadLetter, ReadingBatch, Report, utcnow
from gridwatch.mqtt_access import MqttAccess
from gridwatch.site import Site
from ingest.telemetry import parse_status, parse_telemetry

log = logging.getLogger(__name__)


@dataclass
class BridgeStats:
    messages: int = 0
    readings: int = 0
    deadletters: int = 0
    acked: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)


def batch_by_partition(
    reports: list[Report], partitions: int, received_at: datetime
) -> list[ReadingBatch]:
    """One batch per ``gw.readings`` partition the reports' devices hash to, in their order."""
    by_partition: dict[int, list[Report]] = {}
    for report in reports:
        partition = kafka.partition_of(report.device_id.encode(), partitions)
        by_partition.setdefault(partition, []).append(report)
    return [
        ReadingBatch(received_at=received_at, reports=tuple(batch))
        for batch in by_partition.values()
    ]


class MqttBridge:
    def __init__(
        self,
        site: Site,
        producer: KafkaProducer,
        host: str,
        port: int,
        *,
        client_id: str = "gridwatch-bridge",
        access: MqttAccess | None = None,
    ) -> None:
        self.site = site
        self.producer = producer
        self.host, self.port = host, port
        self.subscriptions = [(f"gw/{site.street.code}/+/{c}", 1) for c in ("telemetry", "status")]
        self.stats = BridgeStats()
        self.partitions = 1  # of gw.readings, learnt from Kafka on start
        self._subscribed = threading.Event()
        # A persistent session (clean_session=False) makes the broker keep QoS 1 messages for
        # us while we are away; manual_ack holds the PUBACK until Kafka has the readings.
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,
            manual_ack=True,
        )
        (access or MqttAccess()).apply(self.client)
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    def start(self, timeout: float = 10.0) -> None:
        partitions = self.producer.partitions_for(topics.READINGS)
        if not partitions:
            raise ServiceError(f"Kafka has no topic {topics.READINGS}; create the topics first")
        self.partitions = len(partitions)
        try:
            self.client.connect(self.host, self.port, keepalive=30)
        except OSError as err:
            raise ServiceError(f"MQTT broker {self.host}:{self.port}: {err}") from err
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            self.stop()
            raise ServiceError(f"MQTT broker {self.host}:{self.port}: no SUBACK in {timeout}s")
        log.info("bridge subscribed to %s", [t for t, _ in self.subscriptions])

    def stop(self) -> None:
        """Wait for Kafka's acknowledgements, pass them on to the broker, and close both
        clients: the bridge owns the producer it was given."""
        self.producer.flush(timeout=10)
        self.client.disconnect()
        self.client.loop_stop()
        self.producer.close(timeout=10)

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.error("MQTT connect refused: %s", reason)
            return
        client.subscribe(self.subscriptions)

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _mid: int, _codes: Any, _p: Any) -> None:
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self.stats.add(messages=1)
        payload = bytes(msg.payload)
        try:
            if msg.topic.endswith("/status"):
                status = parse_status(self.site, msg.topic, payload)
                key = status.device_id.encode()
                records = [(topics.DEVICE_STATUS, key, status.to_bytes())]
            else:
                reports = parse_telemetry(self.site, msg.topic, payload)
                records = [
                    (topics.READINGS, batch.key, batch.to_bytes())
                    for batch in batch_by_partition(reports, self.partitions, utcnow())
                ]
                self.stats.add(readings=sum(len(r.values) for r in reports))
        except PayloadError as err:
            log.warning("dead-lettering message on %s: %s", msg.topic, err)
            letter = DeadLetter.of(f"mqtt:{msg.topic}", payload, str(err))
            records = [(topics.DEADLETTER, msg.topic.encode(), letter.to_bytes())]
            self.stats.add(deadletters=1)
        self._send_then_ack(client, msg, records)

    def _send_then_ack(
        self, client: mqtt.Client, msg: mqtt.MQTTMessage, records: list[tuple[str, bytes, bytes]]
    ) -> None:
        pending = len(records)
        if not pending:  # an empty array: nothing to forward, nothing to lose
            client.ack(msg.mid, msg.qos)
            return
        lock = threading.Lock()

        def delivered(_metadata: Any) -> None:
            nonlocal pending
            with lock:
                pending -= 1
                done = pending == 0
            if done:
                client.ack(msg.mid, msg.qos)
                self.stats.add(acked=1)

        def failed(err: BaseException) -> None:
            # Not acking means the broker redelivers after our reconnect: nothing is lost.
            log.error("Kafka refused a record from %s (mid %s): %s", msg.topic, msg.mid, err)

        for topic, key, value in records:
            self.producer.send(topic, key=key, value=value).add_callback(delivered).add_errback(
                failed
            )
