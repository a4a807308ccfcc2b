"""The demo's cameras: simulated feeds that play the scenario's camera events, and a real camera
worker (``gridwatch ingest camera``'s) on each stream the events need, publishing to Kafka."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gridwatch.scenario import Scenario
from gridwatch.site import Site
from gridwatch.site_detectors import REAL_DAY_S

log = logging.getLogger(__name__)

CLIP_SIZE = (640, 360)
CLIP_FPS = 5.0  # a worker analyses at most its views' burst rate, 5 frames a second
CLIP_SECONDS = 12.0
# A fire comes into view grown (a 10 m fire at 1 km is some 6 pixels wide to a tower), not as a
# spark the size of a thermal camera's noise; its clip's loops restart it at that age.
FIRE_AGE_S = 20.0


def demo_cues(site: Site, spec: Scenario) -> list[Any]:
    """The scenario's camera events as the simulator's cues."""
    from simulators.camera_events import scenario_cues

    return scenario_cues(site, spec, CLIP_SIZE)


# A stalled car is confirmed after the road camera's stall time (a minute on the street): in
# the demo, after 10 s, sampled twice a second, once the road has been empty for 10 s (the
# traffic detector's 15-sample warm-up).
ROAD_STALL_S = 10.0
ROAD_SAMPLE_FPS = 2.0
ROAD_ONSET_S = 10.0


# A tower watching for construction patrols only the watched presets, quickly, so each visit
# falls in a compressed day of its own (a round of one preset, 1.5 s).
PATROL_SETTLE_S = 0.5
PATROL_DWELL_S = 1.0
PATROL_SAMPLE_FPS = 2.0


def clocked_scenes(spec: Scenario) -> dict[str, str]:
    """The scenes the simulator plays on its own clock: the stalled cars by camera, the
    buildings by ``TOWER:PRESET``."""
    scenes = {e.camera: "road_obstruction" for e in spec.road_obstructions}
    return scenes | {f"{e.tower}:{e.preset}": "construction" for e in spec.constructions}


def watched_site(site: Site, cues: Sequence[Any], spec: Scenario) -> Site:
    """``site`` with only the cameras and towers the scenario's camera events name, each tower
    patrolling only the presets a cue shows a fire at or a building rises on (a round of seven
    presets, 2 s to settle and 30 s of dwell each, takes nearly four minutes, longer than the
    whole demo), each road camera with the demo's stall time, each construction tower on the
    event's compressed days (``day_s``) and without the thermal stream where no fire is cued."""
    cameras = {c.device for c in cues if c.preset is None} | {
        e.camera for e in spec.road_obstructions
    }
    presets: dict[str, set[int]] = {}
    for cue in cues:
        if cue.preset is not None:
            presets.setdefault(cue.device, set()).add(cue.preset)
    for event in spec.constructions:
        presets.setdefault(event.tower, set()).add(event.preset)
    days = {e.tower: e.day_s for e in spec.constructions}
    burning = {c.device for c in cues if c.preset is not None}
    towers = tuple(
        _demo_tower(
            t.model_copy(update={"presets": tuple(p for p in t.presets if p.id in presets[t.id])}),
            days.get(t.id),
            t.id in burning,
        )
        for t in site.watchtowers
        if t.id in presets
    )
    return site.model_copy(
        update={
            "cameras": tuple(_demo_road(c) for c in site.cameras if c.id in cameras),
            "watchtowers": towers,
        }
    )


def _demo_tower(tower: Any, day_s: float | None, burning: bool) -> Any:
    if day_s is None:
        return tower
    watch = tower.vision.detectors.construction_change
    detectors = tower.vision.detectors.model_copy(
        update={"construction_change": watch.model_copy(update={"day_s": day_s})}
    )
    vision = tower.vision.model_copy(update={"detectors": detectors})
    patrol = {
        "vision": vision,
        "settle_s": PATROL_SETTLE_S,
        "dwell_s": PATROL_DWELL_S,
        "sample_fps": PATROL_SAMPLE_FPS,
    }
    return tower.model_copy(update=patrol if burning else patrol | {"thermal_url": None})


def compressed_days(site: Site) -> dict[str, float]:
    """The towers of ``site`` whose construction watch counts compressed days: their day, s."""
    return {
        t.id: watch.day_s
        for t in site.watchtowers
        if (watch := t.vision.detectors.construction_change) and watch.day_s < REAL_DAY_S
    }


def _demo_road(camera: Any) -> Any:
    traffic = camera.vision.detectors.traffic
    if traffic is None:
        return camera
    detectors = camera.vision.detectors.model_copy(
        update={"traffic": traffic.model_copy(update={"stall_s": ROAD_STALL_S})}
    )
    vision = camera.vision.model_copy(update={"detectors": detectors})
    return camera.model_copy(update={"vision": vision, "sample_fps": ROAD_SAMPLE_FPS})


def worker_name(worker: Any) -> str:
    """``camera CAM-004``, ``watchtower WT-01 thermal``…, as the summary lists workers."""
    name = f"{worker.source.type.value} {worker.source.id}"
    if not worker.fixed:
        name += " thermal" if worker.thermal else " visible"
    return name


class LiveCameras:
    """The watched devices served as HTTP MJPEG streams (RTSP is left to its own tests: a fresh
    clone has no GStreamer), one worker thread per stream, the cues played on ``play``."""

    def __init__(
        self,
        site: Site,
        cues: Sequence[Any],
        scenes: dict[str, str],
        run_dir: Path,
        publish: Any,
    ) -> None:
        from ingest.camera_evidence import EvidenceStore
        from simulators.camera_feeds import CameraSimulator, feeds_for_site

        self.site, self.cues, self.publish = site, list(cues), publish
        self.expected = {c.device for c in self.cues} | {k.partition(":")[0] for k in scenes}
        self.evidence = EvidenceStore(run_dir / "evidence")
        feeds = feeds_for_site(
            site,
            scenes,
            road_onset_s=ROAD_ONSET_S,
            fps=CLIP_FPS,
            seconds=CLIP_SECONDS,
            size=CLIP_SIZE,
            cues=self.cues,
            fire_age_s=FIRE_AGE_S,
        )
        self.sim = CameraSimulator(feeds, run_dir / "cameras", rtsp=False)
        self.workers: list[Any] = []
        self.failures: list[BaseException] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Render and serve the clips, then start a worker on every stream."""
        from ingest.camera_source import VideoSource
        from ingest.camera_worker import Ptz, worker_for
        from ingest.recorder import site_streams

        self.sim.start()
        self.served = self._served()
        for stream in site_streams(self.served):
            ptz = None
            tower = next((t for t in self.served.watchtowers if t.id == stream.device), None)
            if tower is not None and tower.ptz_url is not None:
                ptz = Ptz(tower.ptz_url)
            worker = worker_for(
                self.served, stream.device, stream.stream, self.publish, self.evidence, ptz=ptz
            )
            source = VideoSource(stream.url, backoff_s=(0.5, 2.0))
            thread = threading.Thread(
                target=self._work, args=(worker, source), name=worker_name(worker), daemon=True
            )
            self.workers.append(worker)
            self._threads.append(thread)
        for thread in self._threads:
            thread.start()

    def _served(self) -> Site:
        """The watched site as the simulator serves it: its streams' and heads' URLs."""
        from simulators.camera_feeds import stream_path

        sim = self.sim
        cameras = tuple(
            c.model_copy(update={"url": sim.mjpeg_url(stream_path(c.url, c.id.lower()))})
            for c in self.site.cameras
        )
        towers = []
        for t in self.site.watchtowers:
            base = t.id.lower()
            urls = {
                "visible_url": sim.mjpeg_url(stream_path(t.visible_url, f"{base}/visible")),
                "thermal_url": t.thermal_url
                and sim.mjpeg_url(stream_path(t.thermal_url, f"{base}/thermal")),
                "ptz_url": sim.ptz_url(t.id),
            }
            towers.append(t.model_copy(update=urls))
        return self.site.model_copy(update={"cameras": cameras, "watchtowers": tuple(towers)})

    def _work(self, worker: Any, source: Any) -> None:
        try:
            worker.run(source, self._stop)
        except BaseException as err:  # a dead worker fails the run; the others go on
            log.exception("camera worker %s died", worker_name(worker))
            self.failures.append(err)

    def reported(self) -> bool:
        """Whether every device of a camera event has published: its fire seen, its stream
        lost, its stalled car, its building confirmed."""
        published = {w.source.id for w in self.workers if w.stats.published}
        return self.expected <= published

    def play(self) -> None:
        """Start the cues' clocks: the scenario's time 0 is now."""
        self.sim.schedule(self.cues)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)
        self.sim.stop()
