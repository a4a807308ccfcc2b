"""The camera worker: sample frames, gate on health, analyse, publish detections with evidence.

One worker serves one fixed camera or one watchtower. A watchtower patrols its presets: after a
move it waits ``settle_s`` for the picture to stop moving, then analyses for ``dwell_s`` with the
preset's own analyser (background, references, tracks), so each preset keeps its baseline. Frames
stay here; only detections leave, carrying a snapshot path in the evidence store. A view with
a construction-watch zone also gives its first healthy, settled frame of each day to the
construction patrol (see ``ingest.camera_construction``).
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from detectors.frame import Box, Frame, Image, grey_of, to_work
from detectors.health import Issue, same_view
from detectors.motion import GATE_WIDTH
from detectors.scene import Analysis, Hit, SceneAnalyzer
from gridwatch import topics
from gridwatch.camera_geometry import bearing_deg, ground_point
from gridwatch.errors import ConfigError
from gridwatch.events import Detection, DetectionKind, Point, SourceRef, SourceType, ZoneKind
from gridwatch.liveness import Heartbeat
from gridwatch.site import Site, Zone
from gridwatch.site_cameras import Camera, Vision, Watchtower
from ingest.camera_construction import ConstructionPatrol
from ingest.camera_evidence import BaselineStore, EvidenceStore
from ingest.camera_source import Captured, FrameSource, Lost, Restored, SourceEvent

log = logging.getLogger(__name__)

Publish = Callable[[Detection], None]


class PtzHead(Protocol):
    """Anything that aims a PTZ head at a preset: the HTTP client below, or a simulated head."""

    def goto(self, preset: int) -> None: ...


class Ptz:
    """Moves a PTZ head to a preset over HTTP (``url`` holds ``{preset}``)."""

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url = url
        self.timeout_s = timeout_s

    def goto(self, preset: int) -> None:
        target = self.url.format(preset=preset)
        if not target.startswith(("http://", "https://")):
            raise ValueError(f"PTZ URL must be HTTP(S): {target}")
        with urllib.request.urlopen(target, timeout=self.timeout_s) as reply:  # noqa: S310
            reply.read()


@dataclass
class Sampler:
    """Analyse ``fps`` frames a second, ``burst_fps`` for ``burst_s`` after a candidate."""

    fps: float
    burst_fps: float
    burst_s: float
    _next: float = float("-inf")
    _burst_until: float = float("-inf")

    def wants(self, ts: float) -> bool:
        """Whether a frame at ``ts`` would be due, without taking it."""
        return ts + 1e-6 >= self._next

    def due(self, ts: float) -> bool:
        if not self.wants(ts):
            return False
        rate = self.burst_fps if ts < self._burst_until else self.fps
        # A steady cadence, restarted from now after a gap so it never tries to catch up.
        following = self._next + 1 / rate
        self._next = following if following > ts else ts + 1 / rate
        return True

    def burst(self, ts: float) -> None:
        if ts >= self._burst_until:
            self._burst_until = ts + self.burst_s
            self._next = ts  # the very next frame is due


@dataclass
class View:
    """What one camera position sees: a fixed camera, or one preset of a watchtower."""

    preset: int | None
    heading_deg: float
    fov_deg: float
    tilt_deg: float
    analyzer: SceneAnalyzer


@dataclass
class WorkerStats:
    frames_read: int = 0
    frames_analysed: int = 0
    analyse_s: float = 0.0
    published: int = 0


class CameraWorker:
    def __init__(
        self,
        source_type: SourceType,
        source_id: str,
        location: Point,
        height_m: float,
        views: list[View],
        sample: Sampler,
        publish: Publish,
        evidence: EvidenceStore,
        *,
        fixed: bool,
        ptz: PtzHead | None = None,
        settle_s: float = 0.0,
        dwell_s: float = float("inf"),
        thermal: bool = False,
        construction: ConstructionPatrol | None = None,
    ) -> None:
        self.source = SourceRef(type=source_type, id=source_id)
        self.location = location
        self.height_m = height_m
        self.views = views
        self.sample = sample
        self.publish = publish
        self.evidence = evidence
        self.fixed = fixed
        self.ptz = ptz
        self.settle_s = settle_s
        self.dwell_s = dwell_s
        self.thermal = thermal
        self.construction = construction
        self.stats = WorkerStats()
        self._view = 0
        self._moved_at: float | None = None
        self._stuck = False
        self._last_grey: dict[int, Image] = {}
        self._health: set[Issue] = set()

    @classmethod
    def for_camera(cls, camera: Camera, publish: Publish, evidence: EvidenceStore) -> CameraWorker:
        v = camera.vision
        view = View(None, camera.heading_deg, camera.fov_deg, camera.tilt_deg, SceneAnalyzer(v))
        return cls(
            SourceType.CAMERA,
            camera.id,
            camera.location,
            camera.height_m,
            [view],
            Sampler(camera.sample_fps, v.burst_fps, v.burst_s),
            publish,
            evidence,
            fixed=True,
            construction=_construction(camera.id, v, evidence),
        )

    @classmethod
    def for_watchtower(
        cls,
        tower: Watchtower,
        publish: Publish,
        evidence: EvidenceStore,
        *,
        thermal: bool = False,
        ptz: PtzHead | None = None,
        zones: tuple[Zone, ...] = (),
    ) -> CameraWorker:
        """``zones`` are the site's map zones: a construction change is placed on the
        ``construction_watch`` one its bearing crosses (``ConstructionPatrol.place``)."""
        v: Vision = tower.vision
        views = [
            View(p.id, p.pan_deg, p.fov_deg, p.tilt_deg, SceneAnalyzer(v, p.id))
            for p in tower.presets
        ]
        if ptz is None and tower.ptz_url is not None:
            ptz = Ptz(tower.ptz_url)
        return cls(
            SourceType.WATCHTOWER,
            tower.id,
            tower.location,
            tower.height_m,
            views,
            Sampler(tower.sample_fps, v.burst_fps, v.burst_s),
            publish,
            evidence,
            fixed=False,
            ptz=ptz,
            settle_s=tower.settle_s,
            dwell_s=tower.dwell_s,
            thermal=thermal,
            construction=None if thermal else _construction(tower.id, v, evidence, zones),
        )

    def run(
        self, source: FrameSource, stop: threading.Event, heartbeat: Heartbeat | None = None
    ) -> WorkerStats:
        def wants(ts: datetime) -> bool:
            if heartbeat is not None:
                heartbeat.beat()  # per packet read, decoded or not: a hung read goes stale
            return self.wants(ts)

        for event in source.frames(stop, wants):
            if heartbeat is not None:
                heartbeat.beat()  # a frame or a loss event
            self.handle(event)
        return self.stats

    def wants(self, ts: datetime) -> bool:
        """Whether a frame of that time would be looked at, so the source decodes only those:
        sampled frames, and during a patrol the frame that moves on, never one while the head
        settles or stays stuck."""
        t = ts.timestamp()
        if self.ptz is not None:
            if self._moved_at is None or t - self._moved_at >= self.settle_s + self.dwell_s:
                return True
            if t - self._moved_at < self.settle_s or self._stuck:
                return False
        return self.sample.wants(t)

    def handle(self, event: SourceEvent) -> None:
        if isinstance(event, Lost):
            self._report_health(Issue.STREAM_LOST, True, None)
        elif isinstance(event, Restored):
            self._report_health(Issue.STREAM_LOST, False, None)
        elif isinstance(event, Captured):
            self._captured(event)

    def _captured(self, event: Captured) -> None:
        self.stats.frames_read += 1
        view = self.views[self._view]
        frame = Frame(event.image, event.ts, self.source.id, view.preset, self.thermal)
        ts = frame.seconds
        if self.ptz is not None and not self._patrol(frame, ts):
            return
        if self._stuck or not self.sample.due(ts):
            return
        started = time.thread_time()  # CPU, not wall: other cameras share the core
        analysis = view.analyzer.analyse(frame)
        self.stats.analyse_s += time.thread_time() - started
        self.stats.frames_analysed += 1
        if analysis.pending:
            self.sample.burst(ts)
        self._emit(analysis, frame, view)
        if not analysis.suppressed and self.construction and self.construction.due(frame):
            self._construction(frame, view)

    def _construction(self, frame: Frame, view: View) -> None:
        assert self.construction is not None  # noqa: S101
        change = self.construction.observe(frame)
        if change is None:
            return
        hit = Hit(
            DetectionKind.CONSTRUCTION_CHANGE,
            "confirmed",
            change.box,
            change.confidence,
            0,
            ("construction_watch",),
        )
        detection = self._detection(hit, frame, view)
        if detection.location is None and detection.bearing_deg is not None:
            place = self.construction.place(self.location, detection.bearing_deg, view.preset)
            detection = detection.model_copy(update={"location": place})
        self._publish(detection, frame, hit.box)

    def _patrol(self, frame: Frame, ts: float) -> bool:
        """Move between presets; True when this frame is settled and should be analysed."""
        assert self.ptz is not None  # noqa: S101
        if self._moved_at is None or ts - self._moved_at >= self.settle_s + self.dwell_s:
            if self._moved_at is not None:
                self._last_grey[self._view] = _gate_grey(frame)
                self._view = (self._view + 1) % len(self.views)
            self.ptz.goto(self.views[self._view].preset or 0)
            self._moved_at = ts
            self._stuck = False
            return False
        if ts - self._moved_at < self.settle_s:
            return False
        previous = self._last_grey.pop((self._view - 1) % len(self.views), None)
        if previous is not None and len(self.views) > 1:
            self._stuck = same_view(_gate_grey(frame), previous)
            self._report_health(Issue.STUCK_PTZ, self._stuck, frame)
        return not self._stuck

    def _emit(self, analysis: Analysis, frame: Frame, view: View) -> None:
        for change in analysis.health:
            self._report_health(change.issue, change.active, frame)
        for hit in analysis.hits:
            self._publish(self._detection(hit, frame, view), frame, hit.box)

    def _detection(self, hit: Hit, frame: Frame, view: View) -> Detection:
        shape = (frame.image.shape[0], frame.image.shape[1])
        location = None
        if self.fixed:
            location = ground_point(
                self.location,
                self.height_m,
                view.heading_deg,
                view.tilt_deg,
                view.fov_deg,
                hit.box,
                shape,
            )
        return Detection(
            kind=hit.kind,
            source=self.source,
            ts=frame.ts,
            confidence=hit.confidence,
            location=location,
            bearing_deg=bearing_deg(view.heading_deg, view.fov_deg, hit.box, shape[1]),
            bbox=hit.box,
            rule=f"camera:{hit.kind.value}",
            cleared=hit.state == "cleared",
            zones=tuple(ZoneKind(z) for z in hit.zones),
        )

    def _report_health(self, issue: Issue, active: bool, frame: Frame | None) -> None:
        if active == (issue in self._health):
            return
        if active:
            self._health.add(issue)
        else:
            self._health.discard(issue)
        detection = Detection(
            kind=DetectionKind.CAMERA_HEALTH,
            source=self.source,
            ts=frame.ts if frame is not None else datetime.now(UTC),
            confidence=1.0,
            location=self.location,  # a fault is at the device itself
            rule=f"camera_health:{issue.value}",
            cleared=not active,
        )
        log.info("camera %s health %s %s", self.source.id, issue.value, active)
        self._publish(detection, frame, None)

    def _publish(self, detection: Detection, frame: Frame | None, box: Box | None) -> None:
        if frame is not None and not detection.cleared:
            snapshot = self.evidence.save(frame, box, detection.id)
            detection = detection.model_copy(update={"snapshot": snapshot})
        self.stats.published += 1
        self.publish(detection)


def worker_for(
    site: Site,
    device: str,
    stream: str,
    publish: Publish,
    evidence: EvidenceStore,
    *,
    ptz: PtzHead | None = None,
) -> CameraWorker:
    """The worker of one stream (``visible`` or ``thermal``) of a camera or tower of ``site``."""
    camera = next((c for c in site.cameras if c.id == device), None)
    if camera is not None:
        return CameraWorker.for_camera(camera, publish, evidence)
    tower = next((t for t in site.watchtowers if t.id == device), None)
    if tower is None:
        raise ConfigError(f"the site has no camera or watchtower {device!r}")
    return CameraWorker.for_watchtower(
        tower, publish, evidence, thermal=stream == "thermal", ptz=ptz, zones=site.zones
    )


def _construction(
    source_id: str, vision: Vision, evidence: EvidenceStore, zones: tuple[Zone, ...] = ()
) -> ConstructionPatrol:
    watched = tuple(z for z in zones if z.kind is ZoneKind.CONSTRUCTION_WATCH)
    return ConstructionPatrol(source_id, vision, BaselineStore(evidence.root), watched)


def _gate_grey(frame: Frame) -> Image:
    return grey_of(to_work(to_work(frame.image), GATE_WIDTH))


def kafka_publish(producer: Any) -> Publish:
    """Detections to ``gw.detections``, keyed by source so each camera's stay in order."""

    def send(detection: Detection) -> None:
        producer.send(
            topics.DETECTIONS, key=detection.source.id.encode(), value=detection.to_bytes()
        )

    return send
