"""MQTT → Kafka bridge: device telemetry and status in, validated readings out to
``gw.readings`` and status changes to ``gw.device-status``, partitioned by device id.

The reports of one message are sent as one ``ReadingBatch`` per partition their devices hash
to (a gateway message carries a hundred devices; one device's message, one batch), split further
where a batch would not fit in one Kafka record.

At-least-once end to end: the bridge subscribes with QoS 1 and a persistent session, and
acknowledges an MQTT message only after Kafka has acknowledged everything made from it. A bridge
that dies before that gets the message again from the broker when it reconnects.

Each message is handled inside one guard: whatever goes wrong with it (a payload
``ingest.telemetry`` refuses, a message over ``MessageLimits``, an error nobody foresaw, a record
Kafka refuses for good) sends it to ``gw.deadletter`` with the reason, and the ack waits for that
dead letter. What no message can cause — a dead network or sender thread, Kafka failing to take
a record after its retries — stops the bridge, so that its supervisor restarts it and the broker
redelivers what was not acknowledged.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import paho.mqtt.client as mqtt
from kafka import KafkaProducer
from kafka import errors as kafka_errors
from kafka.record.default_records import DefaultRecordBatchBuilder
from paho.mqtt.enums import CallbackAPIVersion

from gridwatch import kafka, topics
from gridwatch.errors import PayloadError, ServiceError
from gridwatch.events import DeadLetter, ReadingBatch, Report, reason_of, utcnow
from gridwatch.mqtt_access import MqttAccess, connect_subscribed
from gridwatch.settings import MessageLimits
from gridwatch.site import Site
from ingest.telemetry import parse_status, parse_telemetry

log = logging.getLogger(__name__)


Record = tuple[str, bytes, bytes]  # topic, key, value

# What a dead letter's record can reach: its value is bounded (the payload's first 16 KiB in
# base64, a reason and a source cut short), its key is an MQTT topic (at most 64 KiB).
DEADLETTER_RECORD_MAX = 128 * 1024
DEFAULT_LIMITS = MessageLimits()


@dataclass
class BridgeStats:
    """What became of every message received: once Kafka has what was made of it (and the
    broker its ack), it is forwarded or dead-lettered, so that ``messages`` is always
    ``forwarded + deadlettered + in_flight``."""

    messages: int = 0
    forwarded: int = 0
    deadlettered: int = 0
    readings: int = 0  # in forwarded messages
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)

    @property
    def in_flight(self) -> int:
        return self.messages - self.forwarded - self.deadlettered


def subscriptions(site: Site) -> list[str]:
    """The topic filters the bridge takes: every device's telemetry and status."""
    return [f"gw/{site.street.code}/+/{channel}" for channel in ("telemetry", "status")]


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
        limits: MessageLimits = DEFAULT_LIMITS,
    ) -> None:
        self.site = site
        self.limits = limits
        self.producer = producer
        self.host, self.port = host, port
        self.subscriptions = [(topic, 1) for topic in subscriptions(site)]
        self.stats = BridgeStats()
        self.partitions = 1  # of gw.readings, learnt from Kafka on start
        self._subscribed = threading.Event()
        self._stopping = threading.Event()
        self._failure: str | None = None
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
        self.record_limit = self.producer.config["max_request_size"]
        if self.record_limit < DEADLETTER_RECORD_MAX:
            raise ServiceError(
                f"the Kafka producer takes records up to {self.record_limit} bytes; a dead letter"
                f" needs {DEADLETTER_RECORD_MAX} (max_request_size)"
            )
        connect_subscribed(self.client, self.host, self.port, self._subscribed, timeout, self.stop)
        log.info("bridge subscribed to %s", [t for t, _ in self.subscriptions])

    def run_until_stopped(
        self, beat: Callable[[], None] | None = None, poll_s: float = 1.0
    ) -> None:
        """Serve until SIGTERM or SIGINT, then return; raise ServiceError as soon as the bridge
        cannot go on (crash-only: its supervisor restarts it, and the broker redelivers what
        was not acknowledged): paho's network thread or the producer's sender thread died, or
        Kafka failed to take a record. Call it from the main thread, between start and stop.
        ``beat`` is called each poll while both threads live and the broker is connected: the
        bridge's work runs in those threads, so this loop is where its liveness is seen."""
        previous = {sig: signal.signal(sig, lambda *_: self._stopping.set()) for sig in _SIGNALS}
        try:
            while not self._stopping.wait(poll_s):
                if (dead := self._dead_thread()) is not None:
                    self._fail(f"{dead} died")
                elif beat is not None and self.client.is_connected():
                    beat()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if self._failure is not None:
            raise ServiceError(self._failure)

    def _dead_thread(self) -> str | None:
        # Neither library reports on its thread; these attributes are the threads themselves
        # (paho clears its own when the thread ends).
        if self.client._thread is None:
            return "the MQTT network thread"
        if not self.producer._sender.is_alive():
            return "the Kafka producer's sender thread"
        return None

    def _fail(self, reason: str) -> None:
        if self._failure is None:
            self._failure = reason
            log.error("bridge stopping: %s", reason)
        self._stopping.set()

    def stop(self) -> None:
        """Wait for Kafka's acknowledgements, pass them on to the broker, and close both
        clients: the bridge owns the producer it was given. What Kafka has not acknowledged
        by then stays unacknowledged, for the broker to redeliver."""
        try:
            self.producer.flush(timeout=10)
        except kafka_errors.KafkaError as err:
            log.warning("Kafka did not acknowledge everything before the stop: %s", err)
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
        """One message, inside the guard: anything that goes wrong dead-letters it."""
        self.stats.add(messages=1)
        delivery = _Delivery(self, client, msg, bytes(msg.payload))
        try:
            delivery.topic = msg.topic
            records, readings = self._records(delivery.topic, delivery.payload, utcnow())
        except Exception as err:
            reason = reason_of(err)
            log.warning("dead-lettering message on %r: %s", delivery.topic, reason)
            delivery.dead_letter(reason)
        else:
            delivery.send(records, readings)

    def _records(
        self, topic: str, payload: bytes, received_at: datetime
    ) -> tuple[list[Record], int]:
        """The records one message makes, and its readings; PayloadError if it is refused."""
        if len(payload) > self.limits.max_bytes:
            raise PayloadError(
                f"message: {len(payload)} bytes, more than the limit of {self.limits.max_bytes}"
                " bytes (mqtt_limits.max_bytes)"
            )
        if topic.endswith("/status"):
            status = parse_status(self.site, topic, payload, received_at)
            return [(topics.DEVICE_STATUS, status.device_id.encode(), status.to_bytes())], 0
        reports = parse_telemetry(self.site, topic, payload, received_at)
        if len(reports) > self.limits.max_reports:
            raise PayloadError(
                f"message: {len(reports)} reports, more than the limit of"
                f" {self.limits.max_reports} (mqtt_limits.max_reports)"
            )
        records = [
            record
            for batch in batch_by_partition(reports, self.partitions, received_at)
            for record in self._fitting(batch)
        ]
        return records, sum(len(r.values) for r in reports)

    def _fitting(self, batch: ReadingBatch) -> list[Record]:
        """``batch`` as records that each fit the producer's limit, halved as often as needed
        (the halves share the batch's partition and keep its order)."""
        value = batch.to_bytes()
        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(batch.key, value, [])
        if size <= self.record_limit:
            return [(topics.READINGS, batch.key, value)]
        reports = batch.reports
        if len(reports) == 1:
            raise PayloadError(
                f"{reports[0].device_id}: one report makes a Kafka record of {size} bytes, more"
                f" than the producer's limit of {self.record_limit}"
            )
        half = len(reports) // 2
        return [
            *self._fitting(ReadingBatch(received_at=batch.received_at, reports=reports[:half])),
            *self._fitting(ReadingBatch(received_at=batch.received_at, reports=reports[half:])),
        ]


_SIGNALS = (signal.SIGTERM, signal.SIGINT)


# Errors about the record itself: Kafka will never take it, so the message is dead-lettered.
# Any other failure (a broker down or timing out, a producer that gave up) may pass, so the
# message stays unacknowledged: dead-lettering good readings for an outage would lose them.
_RECORD_REFUSED = (
    kafka_errors.MessageSizeTooLargeError,
    kafka_errors.RecordListTooLargeError,
    kafka_errors.InvalidRecordError,
    kafka_errors.CorruptRecordError,
    kafka_errors.InvalidTimestampError,
    kafka_errors.UnsupportedForMessageFormatError,
)


def _refused_for_good(err: BaseException) -> bool:
    return isinstance(err, _RECORD_REFUSED)


class _Delivery:
    """What Kafka still owes for one MQTT message: the broker gets the message's ack once
    Kafka has acknowledged every record made from it, the dead letter included.

    A record Kafka refuses for good (too large, invalid) dead-letters the message; one it
    failed to take after the producer's retries (broker down) leaves the message
    unacknowledged and stops the bridge, so the broker redelivers it to the next one."""

    def __init__(
        self, bridge: MqttBridge, client: mqtt.Client, msg: mqtt.MQTTMessage, payload: bytes
    ) -> None:
        self.bridge, self.client, self.msg, self.payload = bridge, client, msg, payload
        self.topic = "<topic not UTF-8>"  # until paho has decoded it
        self._lock = threading.Lock()
        self._pending = 0
        self._readings = 0
        self._dead_lettered = False
        self._abandoned = False

    def send(self, records: list[Record], readings: int) -> None:
        self._readings = readings
        self._send(records)

    def dead_letter(self, reason: str) -> None:
        with self._lock:
            if self._dead_lettered or self._abandoned:
                return
            self._dead_lettered = True
        letter = DeadLetter.of(f"mqtt:{self.topic}", self.payload, reason)
        self._send([(topics.DEADLETTER, self.topic.encode(), letter.to_bytes())])

    def _send(self, records: list[Record]) -> None:
        with self._lock:
            self._pending += 1  # held while sending, so that no early ack slips through
        for topic, key, value in records:
            with self._lock:
                if self._abandoned:
                    break
                self._pending += 1
            try:
                future = self.bridge.producer.send(topic, key=key, value=value)
            except Exception as err:
                self._failed(topic, err)
                break
            future.add_callback(self._delivered).add_errback(self._failed, topic)
        self._delivered(None)

    def _delivered(self, _metadata: Any) -> None:
        with self._lock:
            self._pending -= 1
            done = self._pending == 0 and not self._abandoned
        if not done:
            return
        if self._dead_lettered:
            self.bridge.stats.add(deadlettered=1)
        else:
            self.bridge.stats.add(forwarded=1, readings=self._readings)
        self.client.ack(self.msg.mid, self.msg.qos)

    def _failed(self, topic: str, err: BaseException) -> None:
        """A record failed: dead-letter the message, whose ack then waits for the dead letter
        in this record's place; or give up on it if Kafka may take it later, or if the dead
        letter itself failed."""
        what = str(err) if isinstance(err, kafka_errors.KafkaError) else repr(err)  # names its type
        reason = " ".join(f"Kafka refused a record for {topic}: {what}".split())
        with self._lock:
            self._abandoned |= not _refused_for_good(err) or topic == topics.DEADLETTER
            abandoned = self._abandoned
        if abandoned:  # no ack: the broker redelivers the message after the bridge's restart
            self.bridge._fail(f"message on {self.topic!r} (mid {self.msg.mid}): {reason}")
            return
        log.warning("dead-lettering message on %r: %s", self.topic, reason)
        # The producer's callbacks run on its sender thread, which must not wait on itself.
        threading.Thread(target=self._dead_letter_then_settle, args=(reason,), daemon=True).start()

    def _dead_letter_then_settle(self, reason: str) -> None:
        self.dead_letter(f"message: {reason}")
        self._delivered(None)  # the failed record's share
