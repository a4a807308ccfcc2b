import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka.partitioner import DefaultPartitioner

from gridwatch.errors import PayloadError, UnknownDeviceError
from gridwatch.events import Reading, ReadingBatch, Report, decode
from gridwatch.site import Site
from ingest.mqtt_bridge import batch_by_partition
from ingest.telemetry import parse_status, parse_telemetry, refuse_duplicate_keys

TOPIC = "gw/520199003/WL-1/telemetry"
STATUS = "gw/520199003/WL-1/status"
NOW = datetime(2025, 11, 27, 8, 0, 5, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)


def parsed(site: Site, topic: str, payload: bytes) -> list[Report]:
    return parse_telemetry(site, topic, payload, received_at=NOW)


def received(site: Site, topic: str, payload: bytes) -> list[Reading]:
    """The readings of a message as the bridge sends them and a consumer reads them."""
    batch = ReadingBatch(received_at=NOW, reports=tuple(parsed(site, topic, payload)))
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
            {"ts": "2025-11-27T16:00:00+08:00", "values": {"water_level_m": 1.0}},
            {"ts": "2025-11-27T16:00:01.5+08:00", "values": {"water_level_m": 1.1}},
        ]
    )
    readings = received(tiny_site, TOPIC, payload.encode())
    assert [r.value for r in readings] == [1.0, 1.1]
    assert readings[0].ts == datetime(2025, 11, 27, 8, 0, 0, tzinfo=UTC)
    assert readings[1].ts == datetime(2025, 11, 27, 8, 0, 1, 500000, tzinfo=UTC)


def test_gateway_form(tiny_site: Site) -> None:
    payload = json.dumps(
        {
            "WL-1": [{"ts": 1764230400000, "values": {"water_level_m": 1.0}}],
            "WL-2": [{"ts": 1764230400000, "values": {"water_level_m": 2.0}}],
        }
    )
    readings = received(tiny_site, "gw/520199003/gateway/telemetry", payload.encode())
    assert {(r.device_id, r.value) for r in readings} == {("WL-1", 1.0), ("WL-2", 2.0)}


def one(**fields: object) -> bytes:
    return json.dumps({"ts": NOW_MS, "values": {"water_level_m": 1.0}, **fields}).encode()


GATEWAY = "gw/520199003/gateway/telemetry"
POINT = f'[{{"ts":{NOW_MS},"values":{{"water_level_m":1}}}}]'


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        (TOPIC, b'{"ts": 1, "values": {"water_level_m": 1.0}', "message: Invalid JSON"),
        (TOPIC, b"\xff\xfe", "message: Invalid JSON"),
        (TOPIC, one(ts="2025-11-27T08:00:00"), "nor an RFC 3339 time with an offset"),
        (TOPIC, one(ts="2025-11-27T08:00Z"), "nor an RFC 3339 time with an offset"),
        (TOPIC, one(ts="2025-11-27 08:00:00Z"), "nor an RFC 3339 time with an offset"),
        (TOPIC, one(ts="2025-13-27T08:00:00Z"), "nor an RFC 3339 time with an offset"),
        (TOPIC, one(ts=str(NOW_MS)), f'ts: "{NOW_MS}" is neither epoch milliseconds'),
        (TOPIC, one(ts=NOW_MS + 0.5), "ts: 1764230405000.5 is neither"),
        (TOPIC, one(ts=float(NOW_MS)), "ts: 1764230405000.0 is neither"),
        (TOPIC, one(ts=True), "ts: true is neither"),
        (TOPIC, b'{"ts": 1e20, "values": {"water_level_m": 1}}', "ts: 1e+20 is neither"),
        (
            TOPIC,
            one(ts=NOW_MS + 301_000),
            "ts: 1764230706000 is more than 300 s ahead of the receiver's clock"
            " (2025-11-27T08:00:05Z)",
        ),
        (TOPIC, one(ts=2**70), "ts: 1180591620717411303424 is more than 300 s ahead"),
        (
            TOPIC,
            one(ts="9999-12-31T23:59:59-14:00"),
            "ts: 9999-12-31T23:59:59-14:00 is more than 300 s ahead",
        ),
        (TOPIC, one(ts="2100-01-01T00:00:00Z"), "ts: 2100-01-01T00:00:00+00:00 is more than"),
        (TOPIC, one(ts=0), "ts: 0 is more than 604800 s behind the receiver's clock"),
        (TOPIC, one(ts=NOW_MS // 1000), "ts: 1764230405 (epoch seconds? ts is in milliseconds)"),
        (TOPIC, one(ts="0001-01-01T00:00:00+14:00"), "is more than 604800 s behind"),
        (TOPIC, one(ts=NOW_MS - 8 * 86_400_000), "is more than 604800 s behind"),
        (TOPIC, one(values={"water_level_m": "1.75"}), "values.water_level_m: Input should be"),
        (TOPIC, one(values={"water_level_m": True}), "values.water_level_m: Input should be"),
        (TOPIC, one(values={"water_level_m": 99.0}), "values.water_level_m: 99.0 outside"),
        (TOPIC, one(values={"rain_mm": 1.0}), "values.rain_mm: device 'WL-1' does not report"),
        (TOPIC, one(values={}), "values: Dictionary should have at least 1 item"),
        (TOPIC, one(x=2), "x: Extra inputs are not permitted"),
        (TOPIC, one(seq="7"), "seq: Input should be a valid integer"),
        (TOPIC, one(seq=-1), "seq: Input should be greater than or equal to 0"),
        (TOPIC, one(seq=2**63), "seq: Input should be less than or equal to 9223372036854775807"),
        (TOPIC, b"[]", "message: List should have at least 1 item"),
        (TOPIC, b"[" + one() + b", " + one(seq=1.5) + b"]", "[1].seq: Input should be"),
        (TOPIC, b"[" + one() + b"," + one(ts=0) + b"]", "[1].ts: 0 is more than"),
        (GATEWAY, b"{}", "message: Dictionary should have at least 1 item"),
        (GATEWAY, b'{"WL-1": []}', "WL-1: List should have at least 1 item"),
        (GATEWAY, f'{{"WL-1": {POINT}, "GHOST": {POINT}}}'.encode(), "GHOST: unknown device"),
        (GATEWAY, f'{{"WL-1\\u0000": {POINT}}}'.encode(), "['WL-1\\x00']: unknown device"),
        (
            GATEWAY,
            b'{"WL-1": [{"ts": 0, "values": {"water_level_m": 1}}]}',
            "WL-1[0].ts: 0 is more than",
        ),
        (
            TOPIC,
            f'{{"ts":{NOW_MS},"values":{{"water_level_m\\u0000":1}}}}'.encode(),
            "values['water_level_m\\x00']: device 'WL-1' does not report metric",
        ),
        (
            "gw/999999999/WL-1/telemetry",
            one(),
            "topic: 'gw/999999999/WL-1/telemetry' is for street",
        ),
        ("gw/520199003/WL-1/status", one(), "topic: 'gw/520199003/WL-1/status' is not gw/"),
        ("gw/520199003/WL\x00/telemetry", one(), "topic: contains a NUL character"),
    ],
)
def test_bad_messages_say_where_and_why(
    tiny_site: Site, topic: str, payload: bytes, reason: str
) -> None:
    with pytest.raises(PayloadError) as refused:
        parsed(tiny_site, topic, payload)
    assert reason in str(refused.value)
    assert "\n" not in str(refused.value) and "\x00" not in str(refused.value)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (f'{{"ts":{NOW_MS},"values":{{"water_level_m":1,"water_level_m":2}}}}', "values: key"),
        (f'{{"ts":{NOW_MS},"ts":{NOW_MS},"values":{{"water_level_m":1}}}}', "message: key 'ts'"),
        (f'{{"ts" :{NOW_MS},"values":{{"water_level_m":1}},"ts":{NOW_MS}}}', "message: key"),
        (
            f'[{{"ts":{NOW_MS},"values":{{"water_level_m":1}}}},'
            f' {{"ts":{NOW_MS},"values":{{"water_level_m":1 , "water_level_m" : 2}}}}]',
            "[1].values: key 'water_level_m' appears more than once",
        ),
    ],
)
def test_a_key_twice_in_one_object_is_refused(tiny_site: Site, payload: str, reason: str) -> None:
    with pytest.raises(PayloadError, match=re.escape(reason)):
        parsed(tiny_site, TOPIC, payload.encode())


def test_whitespace_anywhere_is_still_accepted(tiny_site: Site) -> None:
    payload = f'[ {{ "ts" : {NOW_MS} , "seq" : 1 , "values" : {{ "water_level_m" : 1 }} }} ]'
    (report,) = parsed(tiny_site, TOPIC, payload.encode())
    assert report.seq == 1 and report.values == {"water_level_m": (1.0, "m")}


def test_duplicate_check_counts_keys_and_only_then_parses_again() -> None:
    refuse_duplicate_keys(b'{"a":1,"b":{"c":2}}', 3)
    refuse_duplicate_keys(b'{"a" :\n 1}', 1)
    refuse_duplicate_keys(b'{"a\\":":1}', 1)  # the count is off; the full parse finds no twin
    with pytest.raises(PayloadError, match=re.escape("b: key 'c' appears more than once")):
        refuse_duplicate_keys(b'{"a":1,"b":{"c":2,"c":3}}', 3)


@pytest.mark.parametrize(
    ("payload", "online", "ts"),
    [
        (b"online", True, NOW),
        (b"offline\n", False, NOW),
        (
            f'{{"state": "offline", "ts": {NOW_MS - 1000}}}'.encode(),
            False,
            NOW - timedelta(seconds=1),
        ),
        (
            b'{"state": "online", "ts": "2025-11-27T16:00:00+08:00"}',
            True,
            NOW - timedelta(seconds=5),
        ),
    ],
)
def test_status(tiny_site: Site, payload: bytes, online: bool, ts: datetime) -> None:
    status = parse_status(tiny_site, STATUS, payload, received_at=NOW)
    assert status.device_id == "WL-1" and status.online is online and status.ts == ts


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"state": "offline", "ts": "2100-01-01T00:00:00Z"}', "ts: 2100-01-01T00:00:00+00:00 is"),
        (b'{"state": "offline", "ts": 0}', "ts: 0 is more than 604800 s behind"),
        (b'{"state": "offline", "ts": 1.5}', "ts: 1.5 is neither"),
        (b'{"state": "offline", "state": "online"}', "message: key 'state' appears more than once"),
        (b'{"state": true}', "state: Input should be 'online' or 'offline'"),
        (b"maybe", "message: Invalid JSON"),
    ],
)
def test_bad_status_says_where_and_why(tiny_site: Site, payload: bytes, reason: str) -> None:
    with pytest.raises(PayloadError, match=re.escape(reason)):
        parse_status(tiny_site, STATUS, payload, received_at=NOW)


def test_unknown_device(tiny_site: Site) -> None:
    with pytest.raises(UnknownDeviceError, match="topic: unknown device 'GHOST'"):
        parsed(tiny_site, "gw/520199003/GHOST/telemetry", one())


def test_nan_is_rejected(tiny_site: Site) -> None:
    with pytest.raises(PayloadError):
        parsed(tiny_site, TOPIC, f'{{"ts": {NOW_MS}, "values": {{"water_level_m": NaN}}}}'.encode())


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
