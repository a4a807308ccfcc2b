"""An incident whose source goes quiet without clearing ends after its kind's quiet time, on
the real broker: the stream worker's timer finds it and the fusion agent publishes its end."""

from __future__ import annotations

import time
import uuid

import pytest

from benchmarks.pipeline import BackgroundLoop
from gridwatch import kafka, topics
from gridwatch.events import (
    Detection,
    DetectionKind,
    Incident,
    Level,
    Point,
    SourceRef,
    SourceType,
    decode,
    utcnow,
)
from gridwatch.site import Site
from tests.integration.sensor_pipeline import RulesWorker, produce


def test_a_quiet_incident_ends(
    tiny_site: Site, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    data = tiny_site.model_dump()
    data["policy"]["incidents"] = {"quiet_after_minutes": {"flood": 0.05}}  # 3 s
    site = Site.model_validate(data)
    device = f"t-quiet-{uuid.uuid4().hex[:6]}"
    loop = BackgroundLoop()
    worker = RulesWorker(loop, site, kafka_bootstrap, tmp_path_factory.mktemp("faust"))
    try:
        rising = Detection(
            kind=DetectionKind.WATER_LEVEL,
            source=SourceRef(type=SourceType.SENSOR, id=device),
            ts=utcnow(),
            confidence=0.9,
            level=Level.YELLOW,
            location=Point(lon=106.605, lat=26.605),
        )  # and then nothing: no clear ever comes
        produce(kafka_bootstrap, [(topics.DETECTIONS, device.encode(), rising.to_bytes())])
        deadline = time.monotonic() + 45
        while True:
            raws = loop.run(kafka.read_topic(kafka_bootstrap, topics.INCIDENTS))
            mine = [
                i
                for i in (decode(Incident, r) for r in raws)
                if any(s.id == device for s in i.sources)
            ]
            if any(i.ended for i in mine) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        worker.close()
        loop.close()
    assert [(i.revision, i.ended) for i in mine] == [(1, False), (2, True)]
    assert len({i.id for i in mine}) == 1
