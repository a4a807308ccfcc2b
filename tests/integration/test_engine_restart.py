"""The alert engine restarted mid-group on the real Kafka-API broker: nothing it had to send is
lost and nothing it had sent is sent again, even when the new engine re-reads incidents the old
one handled (a crash before the offsets were committed)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from alerts.roles import run_engine
from benchmarks.pipeline import BackgroundLoop
from gridwatch import kafka, topics
from gridwatch.events import (
    Alert,
    Incident,
    IncidentKind,
    Level,
    Point,
    SourceRef,
    SourceType,
    decode,
    new_id,
    utcnow,
)
from gridwatch.site import Site
from tests.conftest import GROUPS
from tests.integration.sensor_pipeline import produce

GROUP_WAIT_S = 8.0  # yellow's: long enough to stop the engine inside it


def _site(tiny_site: Site) -> Site:
    data = tiny_site.model_dump()
    data["policy"]["timers"]["group_wait_s"] = {"yellow": GROUP_WAIT_S, "orange": 1, "red": 0}
    return Site.model_validate(data)


def _incident(level: Level, revision: int = 1, ended: bool = False, **kw: object) -> Incident:
    now = utcnow()
    fields: dict[str, object] = dict(
        revision=revision,
        kind=IncidentKind.FLOOD,
        location=Point(lon=106.605, lat=26.605),
        community_code="520199003001",
        grid_code="52019900300101",
        micro_grid_code=None,
        level=level,
        confidence=0.9,
        sources=(SourceRef(type=SourceType.SENSOR, id=f"t-{uuid.uuid4().hex[:6]}"),),
        detection_ids=(),
        first_seen=now,
        last_seen=now,
        ended=ended,
    )
    fields.update(kw)
    return Incident.model_validate(fields)


def _alerts(bootstrap: str, loop: BackgroundLoop, ids: set[object]) -> list[Alert]:
    raws = loop.run(kafka.read_topic(bootstrap, topics.ALERTS))
    return [a for a in (decode(Alert, r) for r in raws) if a.incident_id in ids]


def _until(check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.3)


def test_a_restart_mid_group_loses_and_repeats_nothing(
    tiny_site: Site, kafka_bootstrap: str
) -> None:
    site = _site(tiny_site)
    loop = BackgroundLoop()
    producer = kafka.producer(kafka_bootstrap)

    def start(group: str) -> tuple[asyncio.Event, Future[Any]]:
        stop, ready = asyncio.Event(), asyncio.Event()
        task = loop.spawn(run_engine(site, kafka_bootstrap, producer, stop, group_id=group,
                                     groups=GROUPS, ready=ready))  # fmt: skip
        loop.run(asyncio.wait_for(ready.wait(), 60))
        return stop, task

    waiting = _incident(Level.YELLOW, id=new_id())  # its group waits GROUP_WAIT_S
    red = _incident(Level.RED, id=new_id())  # red never waits
    ids = {waiting.id, red.id}
    try:
        stop, task = start(f"t-engine-{uuid.uuid4().hex[:8]}")
        produce(kafka_bootstrap, [(topics.INCIDENTS, str(i.id).encode(), i.to_bytes())
                                  for i in (waiting, red)])  # fmt: skip
        _until(lambda: any(a.incident_id == red.id for a in _alerts(kafka_bootstrap, loop, ids)))
        over = red.model_copy(update={"revision": 2, "ended": True})
        produce(kafka_bootstrap, [(topics.INCIDENTS, str(red.id).encode(), over.to_bytes())])
        _until(lambda: any(a.state == "resolved" for a in _alerts(kafka_bootstrap, loop, ids)))
        before = _alerts(kafka_bootstrap, loop, ids)
        loop.loop.call_soon_threadsafe(stop.set)
        task.result(30)
        assert not [a for a in before if a.incident_id == waiting.id], "the group did not wait"

        # A new consumer group re-reads every incident, as after a crash before the commit.
        stop, task = start(f"t-engine-{uuid.uuid4().hex[:8]}")

        def flushed() -> bool:
            return any(a.incident_id == waiting.id for a in _alerts(kafka_bootstrap, loop, ids))

        _until(flushed, GROUP_WAIT_S + 30)
        time.sleep(2)  # anything repeated would be on the topic by now
        loop.loop.call_soon_threadsafe(stop.set)
        task.result(30)
        sent = sorted((a.incident_id == red.id, a.level.value, a.state)
                      for a in _alerts(kafka_bootstrap, loop, ids))  # fmt: skip
    finally:
        producer.close()
        loop.close()
    assert sent == [
        (False, "yellow", "firing"),  # the waiting group: sent once, after the restart
        (True, "red", "firing"),  # sent once before it
        (True, "red", "resolved"),
    ]
