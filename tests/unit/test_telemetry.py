import json
from datetime import UTC, datetime

import pytest
from aiokafka.partitioner import DefaultPartitioner

from gridwatch.errors import PayloadError, UnknownDeviceError
from gridwatch.events import Reading, ReadingBatch, Report, decode
from gridwatch.site import Site
from ingest.mqtt_bridge import batch_by_partition
from ingest.telemetry import parse_telemetry

TOPIC = "gw/520199003/WL-1/telemetry"
NOW = datetime(2026, 11, 27, 8, 0, 5, tzinfo=UTC)


def received(site: Site, topic: str, payload: bytes) -> list[Reading]:
    """The readings of a message as the bridge sends them and a consumer reads them."""
    batch = ReadingBatch(received_at=NOW, reports=tuple(parse_telemetry(site, topic, payload)))
    readings = decode(ReadingBatch, batch.to_bytes()).readings()
    assert all(r.id == batch.id and r.received_at == NOW for r in readings)
    return readings


def test_single_object_epoch_ms(tiny_site: Site) -> None:
    payload = json.dumps({"ts": 1764230400123, "seq": 4, "values": {"water_level_m": 2.31}})
    (reading,) = received(tiny_site, TOPIC, payload.encode())
    assert reading.device_id == "WL-1"
    assert reading.metric == "water_level_m"
    assert reading.value == 2.31
    assert reading.unit == "m"
    assert reading.seq == 4
    assert reading.ts == datetime(2025, 11, 27, 8, 0, 0, 123000, tzinfo=UTC)


def test_array_with_rfc3339_times(tiny_site: Site) -> None:
    payload = json.dumps(
        [
            {"ts": "2026-11-27T08:00:00+08:00", "values": {"water_level_m": 1.0}},
            {"ts": "2026-11-27T08:00:01+08:00", "values": {"water_level_m": 1.1}},
        ]
    )
    readings = received(tiny_site, TOPIC, payload.encode())
    assert [r.value for r in readings] == [1.0, 1.1]
    assert readings[0].ts == datetime(2026, 11, 27, 0, 0, 0, tzinfo=UTC)


def test_gateway_form(tiny_site: Site) -> None:
    payload = json.dumps(
        {
            "WL-1": [{"ts": 1764230400000, "values": {"water_level_m": 1.0}}],
            "WL-2": [{"ts": 1764230400000, "values": {"water_level_m": 2.0}}],
        }
    )
    readings = received(tiny_site, "gw/520199003/gateway/telemetry", payload.encode())
    assert {(r.device_id, r.value) for r in readings} == {("WL-1", 1.0), ("WL-2", 2.0)}


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        (TOPIC, b'{"ts": 1, "values": {"water_level_m": 1.0}', "not UTF-8 JSON|Invalid JSON"),
        (TOPIC, b'{"ts": "2026-11-27T08:00:00", "values": {"water_level_m": 1}}', "timezone"),
        (TOPIC, b'{"ts": 1, "values": {"water_level_m": 99.0}}', "outside plausible range"),
        (TOPIC, b'{"ts": 1, "values": {"rain_mm": 1.0}}', "does not report metric"),
        (TOPIC, b'{"ts": 1, "values": {}}', "at least 1 item"),
        (TOPIC, b'{"ts": 1, "values": {"water_level_m": 1}, "x": 2}', "Extra inputs"),
        ("gw/999999999/WL-1/telemetry", b'{"ts": 1, "values": {}}', "for street"),
        ("gw/520199003/WL-1/status", b"online", "is not gw/"),
    ],
)
def test_bad_messages_say_why(tiny_site: Site, topic: str, payload: bytes, reason: str) -> None:
    with pytest.raises(PayloadError, match=reason):
        parse_telemetry(tiny_site, topic, payload)


def test_unknown_device(tiny_site: Site) -> None:
    with pytest.raises(UnknownDeviceError, match="GHOST"):
        parse_telemetry(tiny_site, "gw/520199003/GHOST/telemetry", b'{"ts": 1, "values": {"x": 1}}')


def test_nan_is_rejected(tiny_site: Site) -> None:
    with pytest.raises(PayloadError):
        parse_telemetry(tiny_site, TOPIC, b'{"ts": 1, "values": {"water_level_m": NaN}}')


def test_reports_are_batched_by_the_partition_their_device_hashes_to() -> None:
    ts = datetime(2026, 11, 27, tzinfo=UTC)
    reports = [
        Report(device_id=f"D{i % 40}", ts=ts, seq=i, values={"water_level_m": (1.0, "m")})
        for i in range(200)
    ]
    partitions = list(range(6))
    batches = batch_by_partition(reports, len(partitions), NOW)
    assert 1 < len(batches) <= len(partitions)
    # Nothing lost or reordered within a device.
    flat = [r for b in batches for r in b.reports]
    assert sorted(flat, key=lambda r: r.seq or 0) == reports
    for device in {r.device_id for r in reports}:
        assert [r.seq for r in flat if r.device_id == device] == [
            r.seq for r in reports if r.device_id == device
        ]
    # A batch's key picks, with the partitioner Faust's tables use, every device's partition.
    for batch in batches:
        pick = DefaultPartitioner()
        chosen = {pick(r.device_id.encode(), partitions, partitions) for r in batch.reports}
        assert chosen == {pick(batch.key, partitions, partitions)}
