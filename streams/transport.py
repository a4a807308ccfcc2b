"""Faust's aiokafka transport with a short fetch wait and a batching producer.

Faust hard-codes ``fetch_max_wait_ms=1500`` for its worker consumer. A broker that holds an
empty fetch for the whole wait instead of answering when data arrives (Tansu does) then adds up
to 1.5 s per Faust hop, which is most of the sensor-to-alert latency. The wait is the consumer's
only knob for it, so this transport sets it after Faust has built the consumer.

Faust's producer lingers 0 ms by default, so every table write (a changelog message per
reading) and every detection became its own produce request: a third of the rule worker's time
went on socket writes. A few milliseconds of linger and larger batches (the app's
``producer_max_batch_size``, ``PRODUCER_MAX_BATCH_BYTES`` here) send them together,
lz4-compressed (as the bridge's producer does) since a device's state is kilobytes of JSON.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

from gridwatch import kafka

FETCH_MAX_WAIT_MS = 100
PRODUCER_LINGER_MS = 5
PRODUCER_MAX_BATCH_BYTES = 256 * 1024


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read when the consumer starts
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Producer(faust_aiokafka.Producer):
    def __post_init__(self) -> None:
        super().__post_init__()
        # Only Faust's default is raised: a linger the app sets is kept.
        if not self.linger_ms:
            self.linger_ms = PRODUCER_LINGER_MS
        if self.compression_type is None:
            self.compression_type = kafka.compression()


class Transport(faust_aiokafka.Transport):
    Consumer = _Consumer
    Producer = _Producer
