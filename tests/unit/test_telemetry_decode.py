"""The bridge's msgspec decode of telemetry reads every message of the fuzz corpus as pydantic
does: the same reports, value for value, or the same reason to refuse it."""

import time

import pytest

from benchmarks.fuzz_messages import generate
from gridwatch.errors import PayloadError
from gridwatch.events import utcnow
from gridwatch.site import Site
from ingest import telemetry
from ingest.telemetry import parse_telemetry

NOW_MS = int(time.time() * 1000)


def _outcome(site: Site, topic: str, payload: bytes) -> tuple[str, object]:
    try:
        reports = parse_telemetry(site, topic, payload, RECEIVED_AT)
    except PayloadError as err:
        return "refused", str(err)
    return "accepted", [(r.device_id, r.ts, r.seq, repr(r.values)) for r in reports]


RECEIVED_AT = utcnow()


def test_msgspec_and_pydantic_read_the_fuzz_corpus_alike(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    messages = [
        m for m in generate(site, 3000, seed=11, now_ms=NOW_MS) if m.topic.endswith("/telemetry")
    ]
    fast = [_outcome(site, m.topic, m.payload) for m in messages]
    taken = sum(telemetry._by_msgspec(*_shape(m.topic, m.payload)) is not None for m in messages)
    monkeypatch.setattr(telemetry, "_by_msgspec", lambda *_: None)
    slow = [_outcome(site, m.topic, m.payload) for m in messages]
    for message, a, b in zip(messages, fast, slow, strict=True):
        assert a == b, message.kind
    assert sum(what == "accepted" for what, _ in slow) > 500
    assert sum(what == "refused" for what, _ in slow) > 500
    assert taken > 1000  # msgspec itself read most, the good ones among them


def _shape(topic: str, payload: bytes) -> tuple[str, bytes, bool]:
    device = topic.split("/")[2] if topic.count("/") == 3 else ""
    single = device != telemetry.GATEWAY and not telemetry._ARRAY.match(payload)
    return device, payload, single
