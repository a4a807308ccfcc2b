"""The fuzz benchmark counts as received only what the broker passed on to the bridge's
topics: not a message it refused, nor one it acknowledged and dropped (Mosquitto does so with
a message over its size limit under MQTT 3.1.1), nor one on a topic the bridge does not read."""

import shutil
from pathlib import Path

import pytest

from benchmarks.fuzz import deliver
from benchmarks.fuzz_messages import FuzzMessage, Outcome
from gridwatch.processes import HOST, ServiceProcess, answers_mqtt, claim_port
from gridwatch.services import ServiceUrls
from gridwatch.settings import SAMPLE_SITE
from gridwatch.site import load_site

MOSQUITTO = shutil.which("mosquitto")


def message(kind: str, topic: str, payload: bytes) -> FuzzMessage:
    return FuzzMessage(kind, topic, payload, Outcome.DEADLETTERED)


@pytest.mark.skipif(MOSQUITTO is None, reason="needs Mosquitto on the PATH")
def test_only_what_the_broker_passes_on_to_the_bridge_s_topics_is_received(run_dir: Path) -> None:
    assert MOSQUITTO is not None
    port = claim_port("mqtt")
    config = run_dir / "mosquitto.conf"
    config.write_text(f"listener {port} {HOST}\nallow_anonymous true\nmessage_size_limit 1000\n")
    broker = ServiceProcess("mqtt", [MOSQUITTO, "-c", config], run_dir / "mosquitto.log")
    try:
        broker.wait_until(lambda: answers_mqtt(port), 10, "answer MQTT")
        urls = ServiceUrls(database_url="", kafka_bootstrap="", mqtt_host=HOST, mqtt_port=port)
        small = message("small", "gw/520199003/WL-001/telemetry", b"{}")
        batch = [
            small,
            message("over the size limit", small.topic, b"x" * 5000),
            message("NUL in the topic", "gw/520199003/WL\x00/telemetry", b"{}"),
            message("another street", "gw/999999999/WL-001/telemetry", b"{}"),
            small,
        ]
        delivery = deliver(urls, load_site(SAMPLE_SITE), batch)
        assert delivery.acked == [True, True, False, True, True]
        assert delivery.ours == [True, True, False, False, True]
        assert delivery.received(batch) == [small, small]
    finally:
        broker.stop()
