"""The street's camera events from the simulator's MJPEG streams through real camera workers to
gw.detections on the real broker, then through fusion: a building rising on a watched plot of
the first tower's preset over compressed days is one ``construction_change``, placed on the
plot's map zone, an ``illegal_construction`` case; a car stalled on the ramp camera's lane is a
``traffic_obstruction`` in its road zone, a ``traffic_safety`` case for the traffic police."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import shapely

from gridwatch import kafka, topics
from gridwatch.events import Detection, DetectionKind, IncidentKind, Point, ZoneKind, decode
from gridwatch.geo import GridIndex, ZoneIndex
from gridwatch.settings import SAMPLE_SITE
from gridwatch.site import Site, load_site
from ingest.camera_evidence import EvidenceStore
from ingest.camera_source import VideoSource
from ingest.camera_worker import CameraWorker, Ptz, kafka_publish
from simulators.camera_feeds import CameraSimulator, feeds_for_site
from streams.fusion import FusionContext, FusionState, fuse

DAY_S = 3.0  # a compressed day: one patrol round of the two presets below
DAYS = 3  # the sample site's construction_days
STALL_S = 10.0
ROAD_ONSET_S = 10.0  # the traffic detector's 15-sample warm-up at 2 fps, and some
PLOT = "团结林区违建监控点"


def _street(run: str) -> tuple[Site, str, str]:
    """The sample site with its first tower patrolling only the watched preset and one more,
    quickly, on compressed days, and the ramp camera's stall time short; ids of this run."""
    data = load_site(SAMPLE_SITE).model_dump()
    tower = next(t for t in data["watchtowers"] if t["id"] == "WT-01")
    tower["id"] = f"WT-S{run}"
    tower["presets"] = [p for p in tower["presets"] if p["id"] in (2, 3)]
    tower |= {"settle_s": 0.5, "dwell_s": 1.0, "sample_fps": 2.0}
    watch = tower["vision"]["detectors"]["construction_change"]
    assert watch["days"] == DAYS
    watch["day_s"] = DAY_S
    camera = next(c for c in data["cameras"] if c["id"] == "CAM-006")
    camera["id"] = f"CAM-S{run}"
    camera["vision"]["detectors"]["traffic"]["stall_s"] = STALL_S
    camera["sample_fps"] = 2.0
    site = Site.model_validate(data)
    return site, tower["id"], camera["id"]


def _done(found: list[Detection]) -> bool:
    kinds = {d.kind for d in found if not d.cleared}
    return {DetectionKind.CONSTRUCTION_CHANGE, DetectionKind.TRAFFIC_OBSTRUCTION} <= kinds


async def _collect(bootstrap: str, sources: set[str], timeout_s: float) -> list[Detection]:
    consumer = kafka.consumer(bootstrap, f"test-street-{uuid.uuid4().hex}", topics.DETECTIONS)
    await consumer.start()
    found: list[Detection] = []
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not _done(found):
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    detection = decode(Detection, record.value)
                    if detection.source.id in sources:
                        found.append(detection)
    finally:
        await consumer.stop()
    return found


def _fusion(site: Site) -> FusionContext:
    grids, zones = GridIndex(site), ZoneIndex(site.zones)
    return FusionContext(
        locate=grids.locate,
        projection=grids.projection,
        towers={t.id: t.location for t in site.watchtowers},
        departments=site.departments_for,
        zones_at=lambda p: tuple(z.kind for z in zones.at(p)),
    )


def _inside(zone_name: str, site: Site, point: Point | None) -> bool:
    zone = next(z for z in site.zones if z.name == zone_name)
    return point is not None and shapely.Polygon(zone.polygon).contains(
        shapely.Point(point.lon, point.lat)
    )


def test_construction_over_compressed_days_and_a_stalled_car_through_real_workers(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:6]
    site, tower_id, camera_id = _street(run)
    tower = next(t for t in site.watchtowers if t.id == tower_id)
    camera = next(c for c in site.cameras if c.id == camera_id)
    scenes = {f"{tower_id}:2": "construction", camera_id: "road_obstruction"}
    feeds = [
        f
        for f in feeds_for_site(site, scenes, fps=5.0, seconds=2.0, road_onset_s=ROAD_ONSET_S)
        if f.device in (tower_id, camera_id) and not f.path.endswith("thermal")
    ]
    producer = kafka.producer(kafka_bootstrap)
    publish = kafka_publish(producer)
    evidence = EvidenceStore(tmp_path / "evidence")
    stop = threading.Event()
    with CameraSimulator(feeds, tmp_path / "sim", rtsp=False) as sim:
        started = datetime.now(UTC)
        patrol = CameraWorker.for_watchtower(
            tower, publish, evidence, ptz=Ptz(sim.ptz_url(tower_id)), zones=site.zones
        )
        road = CameraWorker.for_camera(camera, publish, evidence)
        threads = [
            threading.Thread(
                target=worker.run, args=(VideoSource(sim.mjpeg_url(path)), stop), daemon=True
            )
            for worker, path in ((patrol, "wt-01/visible"), (road, "cam-006"))
        ]
        for thread in threads:
            thread.start()
        try:
            found = asyncio.run(
                _collect(kafka_bootstrap, {tower_id, camera_id}, ROAD_ONSET_S + STALL_S + 25)
            )
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=10)
            producer.flush(timeout=10)
            producer.close(timeout=5)
    changes = [d for d in found if d.kind is DetectionKind.CONSTRUCTION_CHANGE]
    assert len(changes) == 1, [(d.source.id, d.rule) for d in found]
    change = changes[0]
    assert change.source.id == tower_id and change.snapshot and Path(change.snapshot).is_file()
    assert _inside(PLOT, site, change.location), change.location
    # the plot is empty on the baseline's day; the building stands DAYS observed days more
    assert (change.ts - started).total_seconds() >= DAYS * DAY_S
    stalls = [d for d in found if d.kind is DetectionKind.TRAFFIC_OBSTRUCTION and not d.cleared]
    assert stalls, [(d.source.id, d.rule) for d in found]
    stall = stalls[0]
    assert stall.source.id == camera_id and stall.zones == (ZoneKind.ROAD,)
    assert stall.location is not None and stall.snapshot and Path(stall.snapshot).is_file()
    assert (stall.ts - started).total_seconds() >= ROAD_ONSET_S + STALL_S
    ctx = _fusion(site)
    opened = {}
    for detection in (change, stall):
        _, incident = fuse(FusionState(), detection, ctx)
        assert incident is not None
        opened[incident.kind] = incident
    assert set(opened) == {IncidentKind.ILLEGAL_CONSTRUCTION, IncidentKind.TRAFFIC_SAFETY}
    assert opened[IncidentKind.TRAFFIC_SAFETY].departments[0] == "traffic_police"
    assert opened[IncidentKind.ILLEGAL_CONSTRUCTION].departments[0] == "natural_resources"
    false = [d for d in found if d.kind not in (change.kind, stall.kind)]
    assert not false, [(d.source.id, d.rule) for d in false]
