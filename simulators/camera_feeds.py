"""A street's simulated cameras and watchtowers, served as real ones are: MJPEG, RTSP and PTZ.

Every stream of a device (a fixed camera's, a watchtower's visible and thermal) is a ``Feed``:
its path and its clips by key, scenes of a fixed camera ("quiet", "farm_fire", …) or presets of
a watchtower. Each clip is rendered once, kept as JPEG frames for HTTP MJPEG and encoded to
H.264 for the RTSP server, and loops. A watchtower's head (``SimulatedPtz``) is moved through
``GET /ptz/<device>/preset/<n>`` on the HTTP port; its visible and thermal streams then show
that preset's clip on both protocols. A scene that changes the view for good (a building over
compressed days, a car that stalls and stays: ``camera_scenes.CHANGES``) plays on the stream's
clock instead, which starts with its first client (so a worker that connects late still sees
the view before the change), whatever the head did meanwhile, once and then looping its part
after the change. A scenario's events are ``Cue``s: from its time on a camera shows a fire at a
given image point, or a watchtower's preset does (and its thermal stream the fire's hotspot),
or a camera's stream goes down; ``CameraSimulator.schedule`` plays them. ``CameraSimulator`` is
the API the CLI and the demo use::

    with CameraSimulator(feeds_for_site(site, {"CAM-004": "farm_fire"}), work_dir) as sim:
        sim.rtsp_url("cam-004"), sim.mjpeg_url("cam-004"), sim.ptz_url("WT-01")
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from gridwatch.site import Site
from gridwatch.site_cameras import Camera, Watchtower
from gridwatch.site_detectors import REAL_DAY_S
from simulators.camera_ptz import SimulatedPtz
from simulators.camera_rtsp import Mount, RtspServer, encode_clip
from simulators.camera_scenes import CHANGES, ELEMENTS, POSITIVES, Image, Scenario
from simulators.camera_server import MjpegServer, frames_of, jpeg_of

log = logging.getLogger(__name__)
QUIET = "quiet"  # what a camera sees when nothing happens
ROAD_ONSET_S = 20.0  # empty road before the car stops: the traffic detector learns the lanes
# (its warm-up is 15 samples, at a road camera's 1 fps)
ROAD_AFTER_S = 30.0  # the stalled car's clip runs this long past the stall time, then loops
LOST = "lost"  # a cue that takes a camera's stream down
RENDER_THREADS = 2


@dataclass(frozen=True)
class Cue:
    """From ``at_s`` on, ``device`` shows ``scene`` standing at ``source`` (fractions of the
    image) in its view, or at its preset ``preset``; a ``LOST`` scene takes its stream down."""

    at_s: float
    device: str
    scene: str
    source: tuple[float, float] = (0.5, 0.7)
    preset: int | None = None

    @property
    def key(self) -> str:
        """The clip key of the cue's scene in its feed."""
        return self.scene if self.preset is None else f"{self.preset}/{self.scene}"

    @property
    def thermal_key(self) -> str | None:
        """The clip key of its hotspot in a watchtower's thermal feed, if the scene burns."""
        if self.preset is None or POSITIVES.get(self.scene) not in FLAMES:
            return None
        return f"{self.preset}/hotspot"


FLAMES = ("fire", "fire_and_smoke")  # scene labels a thermal camera sees as a hotspot


@dataclass(frozen=True)
class Feed:
    """One stream of a simulated device; with ``ptz`` its keys are the head's preset ids."""

    device: str
    path: str
    clips: Mapping[str, Scenario]
    start: str
    ptz: bool = False

    def __post_init__(self) -> None:
        if self.start not in self.clips:
            raise ValueError(f"feed {self.path}: no clip {self.start!r} to start with")


@dataclass
class ClipChannel:
    """A feed's rendered clips for MJPEG: the current one loops until the channel is dropped."""

    fps: float
    clips: dict[str, list[bytes]]
    key: str
    drops: int = 0
    down: bool = False  # a connection then gets no frame at all
    clocked: Mapping[str, int] = field(default_factory=dict)  # key → frame its loop starts at
    started: float | None = None  # time.monotonic() of the first client: clocked frame 0

    def jpegs(self) -> Iterator[bytes]:
        if self.started is None:
            self.started = time.monotonic()
        started = self.started
        drops, key, i = self.drops, self.key, 0
        while drops == self.drops and not self.down:
            if key != self.key:
                key, i = self.key, 0
            frames = self.clips[key]
            if key in self.clocked:
                at = (time.monotonic() - started) * self.fps
                yield frames[clock_frame(at, len(frames), self.clocked[key])]
            else:
                yield frames[i % len(frames)]
            i += 1


def clock_frame(at: float, frames: int, loop_from: int) -> int:
    """The frame a clocked clip shows ``at`` frames after it started: played once, then looped
    from ``loop_from``."""
    n = max(int(at), 0)
    return n if n < frames else loop_from + (n - loop_from) % (frames - loop_from)


def stream_path(url: str | None, fallback: str) -> str:
    """The path a site URL names on the simulator (``rtsp://host:8554/wt-01/visible``)."""
    path = urlsplit(url).path.strip("/") if url and "://" in url else ""
    return path.removesuffix(".mjpg") or fallback


def parse_scenes(items: list[str]) -> dict[str, str]:
    """``CAM-004=farm_fire`` or ``WT-01:2=smoke`` options as ``feeds_for_site`` takes them."""
    scenes: dict[str, str] = {}
    for item in items:
        device, sep, element = item.partition("=")
        if not sep or element not in ELEMENTS:
            raise ValueError(f"scene {item!r}: expected DEVICE=ELEMENT, ELEMENT one of {ELEMENTS}")
        scenes[device] = element
    return scenes


def feeds_for_site(
    site: Site,
    scenes: Mapping[str, str] | None = None,
    *,
    fps: float = 10.0,
    seconds: float = 12.0,
    size: tuple[int, int] = (640, 360),
    seed: int = 1,
    footage: bool = True,
    cues: Iterable[Cue] = (),
    fire_age_s: float = 0.0,
    road_onset_s: float = ROAD_ONSET_S,
) -> list[Feed]:
    """Every camera and watchtower of ``site``, quiet unless ``scenes`` says otherwise.

    ``scenes`` maps a camera id, or ``TOWER:PRESET``, to a scene element of
    ``simulators.camera_scenes`` (``fire``, ``smoke``, ``farm_fire``…). A fixed camera with a
    scene starts on it and can be switched to ``quiet``; a watchtower's thermal stream shows a
    hotspot at every preset whose visible scene burns. Each of ``cues`` adds the clip its
    scene plays from its time on (``CameraSimulator.schedule``), its fire ``fire_age_s`` old
    when it comes into view (a loop restarts it at that age). With ``footage`` the flames
    and smoke are real ones from the training images where those are present
    (``camera_footage``). A ``road_obstruction`` road is empty for ``road_onset_s``; a
    ``construction`` preset needs its tower's compressed day (``construction_change.day_s``).
    """
    scenes = dict(scenes or {})
    cues = [c for c in cues if c.scene != LOST]
    known = {c.id for c in site.cameras} | {
        f"{t.id}:{p.id}" for t in site.watchtowers for p in t.presets
    }
    if unknown := sorted(set(scenes) - known):
        raise ValueError(f"no camera or watchtower preset {', '.join(unknown)} in the site")

    def scenario(
        name: str,
        element: str,
        n: int,
        *,
        thermal: bool = False,
        source: tuple[float, float] = (0.5, 0.7),
        onset_s: float = 0.0,
    ) -> Scenario:
        return Scenario(
            name=name,
            label=POSITIVES.get(element) or CHANGES.get(element, "none"),
            element=element,
            seed=seed * 1000 + n,
            duration_s=seconds,
            fps=fps,
            onset_s=onset_s if element != QUIET else None,
            thermal=thermal,
            source=source,
            size=size,
            footage=footage,
        )

    def event(camera: Camera, name: str, element: str, n: int) -> Scenario:
        sc = scenario(name, element, n)
        if element == "road_obstruction":
            return _road_obstruction(sc, camera, road_onset_s)
        return sc

    feeds: list[Feed] = []
    n = 0
    for camera in site.cameras:
        path = stream_path(camera.url, camera.id.lower())
        clips = {"quiet": scenario(f"{path}-quiet", QUIET, n)}
        if camera.id in scenes:
            clips[scenes[camera.id]] = event(camera, f"{path}-event", scenes[camera.id], n)
        for cue in (c for c in cues if c.device == camera.id):
            clips[cue.key] = scenario(
                f"{path}-{cue.scene}", cue.scene, n, source=cue.source, onset_s=-fire_age_s
            )
        feeds.append(Feed(camera.id, path, clips, scenes.get(camera.id, "quiet")))
        n += 1
    for tower in site.watchtowers:
        visible, thermal = {}, {}
        for p in tower.presets:
            element = scenes.get(f"{tower.id}:{p.id}", QUIET)
            visible[str(p.id)] = scenario(f"{tower.id}-{p.id}", element, n)
            if element == "construction":
                visible[str(p.id)] = _construction(visible[str(p.id)], tower, p.id)
            hot = "hotspot" if POSITIVES.get(element) in ("fire", "fire_and_smoke") else None
            thermal[str(p.id)] = scenario(
                f"{tower.id}-{p.id}-ir", hot or "thermal_quiet", n, thermal=True
            )
            for cue in (c for c in cues if c.device == tower.id and c.preset == p.id):
                age = -fire_age_s
                visible[cue.key] = scenario(
                    f"{tower.id}-{cue.key}", cue.scene, n, source=cue.source, onset_s=age
                )
                if cue.thermal_key is not None:
                    thermal[cue.thermal_key] = scenario(
                        f"{tower.id}-{cue.key}-ir", "hotspot", n, thermal=True,
                        source=cue.source, onset_s=age,
                    )  # fmt: skip
            n += 1
        first = str(tower.presets[0].id)
        base = tower.id.lower()
        feeds.append(
            Feed(tower.id, stream_path(tower.visible_url, f"{base}/visible"), visible, first, True)
        )
        feeds.append(
            Feed(tower.id, stream_path(tower.thermal_url, f"{base}/thermal"), thermal, first, True)
        )
    return feeds


def _road_obstruction(sc: Scenario, camera: Camera, onset_s: float) -> Scenario:
    """The camera's road, empty for ``onset_s``, then a car that stops and stays: the clip
    runs past the camera's stall time and loops after the stop."""
    traffic = camera.vision.detectors.traffic
    if traffic is None:
        raise ValueError(f"{camera.id}: road_obstruction needs the camera's traffic detector")
    return replace(
        sc,
        onset_s=onset_s,
        duration_s=onset_s + traffic.stall_s + ROAD_AFTER_S,
        loop_from_s=onset_s + 1.0,
        vision=camera.vision,
    )


WORKER_START_S = 10.0


def _construction(sc: Scenario, tower: Watchtower, preset: int) -> Scenario:
    """A building on the preset's watched plot over the tower's compressed days.

    The plot is empty through the patrol's first visit to the preset (the view's baseline)
    and a day more, counted from the stream's first client plus ``WORKER_START_S`` (a worker
    connects before it has loaded its models, longer on a busy machine); the building then
    stands for the ``days`` a change needs and two more, which loop."""
    watch = tower.vision.detectors.construction_change
    if watch is None or watch.day_s >= REAL_DAY_S:
        raise ValueError(
            f"{tower.id}:{preset}: a construction scene needs compressed days"
            " (vision.detectors.construction_change.day_s)"
        )
    visit = tower.settle_s + tower.dwell_s
    index = next(i for i, p in enumerate(tower.presets) if p.id == preset)
    seen = WORKER_START_S + (index + 1) * visit + watch.day_s  # the first visit, a day more
    start = math.ceil(seen / watch.day_s) * watch.day_s
    return replace(
        sc,
        onset_s=start,
        day_s=watch.day_s,
        duration_s=start + (watch.days + 2) * watch.day_s,
        loop_from_s=start,
    )


class CameraSimulator:
    """Serves ``feeds`` over HTTP MJPEG (with the PTZ API) and, when ``rtsp``, over RTSP."""

    def __init__(
        self,
        feeds: list[Feed],
        work_dir: Path,
        *,
        rtsp: bool = True,
        rtsp_port: int = 0,
        http_port: int = 0,
        stuck: frozenset[str] = frozenset(),
    ) -> None:
        if len({f.path for f in feeds}) != len(feeds):
            raise ValueError("two feeds share a stream path")
        self.feeds = {f.path: f for f in feeds}
        self.work_dir = work_dir
        self.channels: dict[str, ClipChannel] = {}
        self.heads: dict[str, SimulatedPtz] = {}
        self._shown: dict[tuple[str, int], Cue] = {}  # what a cue put at a tower's preset
        self._timers: list[threading.Timer] = []
        self._stuck = stuck
        self._rtsp_wanted = rtsp
        self._rtsp_port = rtsp_port
        self._http_port = http_port
        self.rtsp: RtspServer | None = None
        self.http: MjpegServer | None = None

    def start(self) -> None:
        mounts: dict[str, Mount] = {}
        clips = [
            (path, key, sc) for path, feed in self.feeds.items() for key, sc in feed.clips.items()
        ]
        # Rendering is most of the start-up, and OpenCV and NumPy let go of the GIL: two at once.

        def render(clip: tuple[str, str, Scenario]) -> tuple[list[bytes], Path]:
            path, key, sc = clip
            return self._render(
                sc, self.work_dir / "clips" / f"{path.replace('/', '-')}-{key}.gwh264"
            )

        with ThreadPoolExecutor(RENDER_THREADS) as pool:
            done = pool.map(render, clips)
            rendered = dict(zip([(path, key) for path, key, _ in clips], done, strict=True))
        for path, feed in self.feeds.items():
            jpegs: dict[str, list[bytes]] = {}
            files: dict[str, Path] = {}
            for key in feed.clips:
                jpegs[key], files[key] = rendered[path, key]
            clocked = {
                key: round(sc.loop_from_s * sc.fps)
                for key, sc in feed.clips.items()
                if sc.loop_from_s is not None
            }
            fps = feed.clips[feed.start].fps
            self.channels[path] = ClipChannel(fps, jpegs, feed.start, clocked=clocked)
            mounts[path] = Mount(fps, files, feed.start, clocked)
            if feed.ptz and feed.device not in self.heads:
                first = {int(k): _first_frame(s) for k, s in feed.clips.items() if k.isdigit()}
                head = SimulatedPtz(first, stuck=feed.device in self._stuck)
                head.preset = int(feed.start)
                self.heads[feed.device] = head
        ptz = {device: self._goto_of(device) for device in self.heads}
        self.http = MjpegServer(self.channels, ptz=ptz, port=self._http_port)
        self.http.__enter__()
        if self._rtsp_wanted:
            self.rtsp = RtspServer(mounts, port=self._rtsp_port)
            try:
                self.rtsp.start()
            except Exception:
                self.stop()
                raise

    def _render(self, sc: Scenario, target: Path) -> tuple[list[bytes], Path]:
        jpegs: list[bytes] = []

        def frames() -> Iterator[Image]:
            for _, image in frames_of(sc):
                jpegs.append(jpeg_of(image))
                yield image

        if self._rtsp_wanted:
            encode_clip(frames(), sc.fps, target)
        else:
            for _ in frames():
                pass
        return jpegs, target

    def _goto_of(self, device: str) -> Callable[[int], None]:
        def goto(preset: int) -> None:
            head = self.heads[device]
            head.goto(preset)
            log.info("PTZ %s to preset %d (at %d)", device, preset, head.preset)
            self._show(device, head.preset)

        return goto

    def _show(self, device: str, preset: int) -> None:
        """The head's streams show what is at ``preset`` now: a cue's scene, or its own clip."""
        cue = self._shown.get((device, preset))
        for path, feed in self.feeds.items():
            if feed.device == device and feed.ptz:
                cued = () if cue is None else (cue.key, cue.thermal_key)
                self.select(path, next((k for k in cued if k and k in feed.clips), str(preset)))

    def schedule(self, cues: Iterable[Cue]) -> None:
        """Play each cue ``at_s`` seconds from now (on a timer thread)."""
        for cue in cues:
            timer = threading.Timer(cue.at_s, self.cue, args=(cue,))
            timer.daemon = True
            timer.start()
            self._timers.append(timer)

    def cue(self, cue: Cue) -> None:
        """What ``cue`` says happens, now."""
        paths = [p for p, f in self.feeds.items() if f.device == cue.device]
        if not paths:
            raise KeyError(f"no feed of {cue.device}")
        log.info("cue at %.1f s: %s shows %s", cue.at_s, cue.device, cue.key)
        if cue.scene == LOST:
            for path in paths:
                self.cut(path)
        elif cue.preset is None:
            for path in paths:
                self.select(path, cue.key)
        else:
            self._shown[(cue.device, cue.preset)] = cue
            if self.heads[cue.device].preset == cue.preset:
                self._show(cue.device, cue.preset)

    def select(self, path: str, key: str) -> None:
        """The stream at ``path`` shows clip ``key`` from its next frame, on both protocols."""
        channel = self.channels[path]
        if key not in channel.clips:
            raise KeyError(f"{path} has no clip {key!r}")
        channel.key = key
        if self.rtsp is not None:
            self.rtsp.select(path, key)

    def drop(self, path: str) -> None:
        """Cut the current clients of the stream at ``path`` off (they may reconnect)."""
        self.channels[path].drops += 1
        if self.rtsp is not None:
            self.rtsp.drop(path)

    def cut(self, path: str) -> None:
        """Take the stream at ``path`` down for good: its clients are cut off and find no
        frame when they reconnect (MJPEG only: an RTSP client is only dropped)."""
        self.channels[path].down = True
        self.drop(path)

    def mjpeg_url(self, path: str) -> str:
        assert self.http is not None  # noqa: S101
        return self.http.url(path)

    def rtsp_url(self, path: str) -> str:
        if self.rtsp is None:
            raise RuntimeError("the simulator serves no RTSP")
        return self.rtsp.url(path)

    def ptz_url(self, device: str) -> str:
        assert self.http is not None  # noqa: S101
        return self.http.ptz_url(device)

    def urls(self) -> dict[str, dict[str, str]]:
        """Every stream's URLs by path (``rtsp``, ``mjpeg``) and every head's ``ptz``."""
        out: dict[str, dict[str, str]] = {}
        for path, feed in self.feeds.items():
            out[path] = {"device": feed.device, "mjpeg": self.mjpeg_url(path)}
            if self.rtsp is not None:
                out[path]["rtsp"] = self.rtsp_url(path)
            if feed.ptz:
                out[path]["ptz"] = self.ptz_url(feed.device)
        return out

    def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        if self.rtsp is not None:
            self.rtsp.stop()
            self.rtsp = None
        for channel in self.channels.values():
            channel.drops += 1  # ends every MJPEG connection's loop
        if self.http is not None:
            self.http.__exit__(None, None, None)
            self.http = None

    def __enter__(self) -> CameraSimulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _first_frame(sc: Scenario) -> Image:
    return next(iter(frames_of(replace(sc, duration_s=1 / sc.fps))))[1]
