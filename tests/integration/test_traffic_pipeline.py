"""A road camera through the whole pipeline on the real broker and database: the camera worker
analyses a generated road scene where a car stalls in a lane and publishes a
``traffic_obstruction`` detection with its snapshot; fusion opens a ``traffic_safety``
incident routed to the traffic police, and the alert engine alerts them."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from alerts.roles import run_engine
from benchmarks.pipeline import BackgroundLoop
from gridwatch import kafka, topics
from gridwatch.events import Point
from gridwatch.site import Site
from gridwatch.site_cameras import Camera
from gridwatch.store.schema import ensure_schema
from ingest.camera_evidence import EvidenceStore
from ingest.camera_source import Captured
from ingest.camera_worker import CameraWorker, kafka_publish
from simulators.road_scenes import RoadScenario, render, road_vision
from tests.conftest import GROUPS
from tests.integration.sensor_pipeline import RulesWorker, Writer, wait_for

STALL_S = 20.0
ONSET_S = 20.0


def _site(tiny_site: Site) -> Site:
    """The tiny site with a traffic police that handles traffic safety, graded at least orange
    (so the alert names the department), and short group waits."""
    data = tiny_site.model_dump()
    police = {"id": "traffic_police", "name": "交警大队", "handles": ["traffic_safety"]}
    data["departments"] = [*data["departments"], police]
    data["policy"]["grading"]["floor"] = {"traffic_safety": "orange"}
    data["policy"]["timers"]["group_wait_s"] = {"yellow": 0.2, "orange": 0.2, "red": 0}
    return Site.model_validate(data)


def _camera(camera_id: str) -> Camera:
    """A camera in the western micro-grid looking east along the road."""
    return Camera(
        id=camera_id,
        name="道路监控",
        url="",
        location=Point(lon=106.605, lat=26.605),
        height_m=8.0,
        heading_deg=90.0,
        fov_deg=60.0,
        tilt_deg=-10.0,
        sample_fps=1.0,
        vision=road_vision(STALL_S),
    )


def test_a_stalled_car_opens_a_traffic_safety_incident_for_the_traffic_police(
    tiny_site: Site, fresh_database_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    site = _site(tiny_site)
    run = uuid.uuid4().hex[:8]
    url = fresh_database_url
    with psycopg.connect(url) as conn:
        ensure_schema(conn)
    loop = BackgroundLoop()
    producer = kafka.producer(kafka_bootstrap)
    stop = asyncio.Event()
    with contextlib.ExitStack() as cleanup:  # every step runs, even after one failed
        cleanup.callback(producer.close)
        cleanup.callback(loop.close)
        writer = Writer(loop, url, kafka_bootstrap, topics.ALL)
        cleanup.callback(writer.close)
        worker = RulesWorker(loop, site, kafka_bootstrap, tmp_path / "faust")
        cleanup.callback(worker.close)
        ready = asyncio.Event()
        engine = loop.spawn(
            run_engine(site, kafka_bootstrap, producer, stop, database_url=url,
                       group_id=f"t-alerts-{run}", groups=GROUPS, ready=ready)
        )  # fmt: skip
        cleanup.callback(engine.result, 30)
        cleanup.callback(loop.loop.call_soon_threadsafe, stop.set)
        loop.run(asyncio.wait_for(ready.wait(), 60))

        camera = _camera(f"CAM-R{run}")
        scene = RoadScenario(
            name="stall", label="traffic_obstruction", element="stalled_car", seed=7,
            duration_s=ONSET_S + STALL_S + 15, onset_s=ONSET_S, stop_s=300.0,
            size=(320, 180), vision=camera.vision,
        )  # fmt: skip
        cam = CameraWorker.for_camera(camera, kafka_publish(producer), EvidenceStore(tmp_path))
        start = datetime.now(UTC) - timedelta(seconds=scene.duration_s)
        for t, image in render(scene):
            cam.handle(Captured(image, start + timedelta(seconds=t)))
        producer.flush(30)

        detections = wait_for(
            url,
            "SELECT snapshot, rule FROM detections WHERE source_id = %s"
            " AND kind = 'traffic_obstruction' AND NOT cleared",
            (camera.id,),
            bool,
        )
        assert detections, "no traffic_obstruction detection was stored"
        snapshot, rule = detections[0]
        assert rule == "camera:traffic_obstruction"
        assert snapshot and Path(snapshot).is_file()
        incidents = wait_for(
            url,
            "SELECT incident_id, payload->'departments', grid_code FROM incidents"
            " WHERE kind = 'traffic_safety'",
            (),
            bool,
        )
        assert incidents, "no traffic_safety incident was opened"
        incident_id, departments, grid = incidents[0]
        assert departments == ["traffic_police"] and grid == "52019900300101"
        alerts = wait_for(
            url,
            "SELECT level, payload->'targets' FROM alerts WHERE incident_id = %s"
            " AND state = 'firing'",
            (incident_id,),
            bool,
        )
        assert alerts, "the incident raised no alert"
        level, targets = alerts[0]
        assert level == "orange"
        assert {"role": "department", "id": "traffic_police"} in targets
        assert not engine.done(), "the alert engine stopped"
