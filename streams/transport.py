"""Faust's aiokafka transport with a short fetch wait.

Faust hard-codes ``fetch_max_wait_ms=1500`` for its worker consumer. A broker that holds an
empty fetch for the whole wait instead of answering when data arrives (Tansu does) then adds up
to 1.5 s per Faust hop, which is most of the sensor-to-alert latency. The wait is the consumer's
only knob for it, so this transport sets it after Faust has built the consumer.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

FETCH_MAX_WAIT_MS = 100


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read when the consumer starts
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    Consumer = _Consumer
