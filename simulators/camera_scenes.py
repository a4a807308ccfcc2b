"""Generated camera video with ground truth, deterministic from a seed.

Each scenario is one camera's view for a minute or two: a textured landscape under a sky, sensor
noise, and either a positive (a flickering flame, a drifting smoke plume, both, a fire in
farmland, a thermal hotspot) or one of the negatives that trip real systems (clouds, fog, sun
glare, night traffic, swaying trees, steam from a configured chimney, moving cloud shadows, a red
car, an IR switch, a frozen stream, a stuck PTZ head whose every preset shows the same drifting
clouds). The scenario carries the camera's vision settings (horizon,
masks, zones), as a site file would.

Two elements are drawn by their own generators: ``construction`` is a watched plot over
compressed days of ``day_s`` seconds (``simulators.camera_sites``: each day another hour's
shadows, a little more or less light and a slightly different aim; a building stands from the
first day after
``onset_s``), and ``road_obstruction`` a road where a car stops in a lane at ``onset_s`` and
stays (``simulators.road_scenes``). Such a scene changes for good: with ``loop_from_s`` it plays
on its stream's clock and loops only its part after the change (``camera_feeds``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt

from gridwatch.site_cameras import ImageZone, Vision
from gridwatch.site_detectors import ThermalHotspotSettings
from simulators import camera_footage, road_scenes
from simulators.camera_sites import SiteScenario, render_days

Image = npt.NDArray[np.uint8]
Canvas = npt.NDArray[np.float32]
HORIZON = 0.32


@dataclass(frozen=True)
class Scenario:
    name: str
    label: str  # "fire", "smoke", "fire_and_smoke", a CHANGES detection or "none"
    element: str  # what is drawn: see ELEMENTS
    seed: int
    duration_s: float = 90.0
    fps: float = 5.0
    onset_s: float | None = None  # when the positive (or the fault) starts
    expect_health: str | None = None  # the camera-health issue the scenario must raise
    thermal: bool = False
    source: tuple[float, float] = (0.5, 0.7)  # where a fire, plume or chimney stands
    size: tuple[int, int] = (640, 360)
    vision: Vision = field(default_factory=lambda: Vision(horizon=HORIZON))
    footage: bool = False  # real flames and smoke from the training images (camera_footage)
    day_s: float | None = None  # construction: a compressed day, seconds
    loop_from_s: float | None = None  # None: loops whole; else played once, looped from here

    @property
    def frames(self) -> int:
        return round(self.duration_s * self.fps)


class _Scene:
    """The static landscape, rendered once per scenario."""

    def __init__(self, rng: np.random.Generator, size: tuple[int, int], night: bool) -> None:
        w, h = size
        self.w, self.h, self.horizon = w, h, round(HORIZON * h)
        img = np.zeros((h, w, 3), np.float32)
        rows = np.linspace(0, 1, self.horizon, dtype=np.float32)[:, None]
        img[: self.horizon] = (235 - 50 * rows)[..., None] * np.array([1.0, 0.85, 0.65])
        low = cv2.resize(rng.random((12, 20)).astype(np.float32), (w, h - self.horizon))
        fine = cv2.GaussianBlur(
            rng.random((h - self.horizon, w)).astype(np.float32), (0, 0), 0.8 * w / 640
        )
        green = np.stack([40 + 30 * low, 85 + 50 * low, 55 + 40 * (1 - low)], axis=-1)
        img[self.horizon :] = green * (0.6 + 0.8 * fine[..., None])
        for _ in range(150):  # tree crowns give the terrain edges for smoke to hide
            x, y = int(rng.integers(0, w)), int(rng.integers(self.horizon + 5, h))
            r = int(rng.integers(2, 4 + (y - self.horizon) // 25))
            tone = float(rng.uniform(0.5, 0.8))
            cv2.circle(img, (x, y), r, (30 * tone, 70 * tone, 35 * tone), -1)
        if night:
            img *= 0.12
        self.base = img


def _fire(img: Canvas, rng: np.random.Generator, x: float, y: float, size: float) -> None:
    """A flame of width ``size`` standing on (x, y): tongues that change every frame."""
    for scale, colour in ((1.0, (20, 70, 225)), (0.65, (40, 170, 250)), (0.3, (190, 240, 255))):
        for _ in range(5):
            tw = size * scale * rng.uniform(0.25, 0.45)
            th = size * scale * rng.uniform(0.8, 2.0)
            cx = x + rng.normal(0, size * 0.18 * scale)
            cv2.ellipse(
                img,
                (round(cx), round(y - th / 2)),
                (max(1, round(tw)), max(1, round(th / 2))),
                float(rng.normal(0, 10)),
                0,
                360,
                colour,
                -1,
            )


@dataclass
class _Plume:
    """Puffs emitted at a source, rising, spreading and thinning in the wind."""

    x: float
    y: float
    wind: float
    colour: tuple[float, float, float]
    rise: float = 6.0
    puffs: list[list[float]] = field(default_factory=list)  # x, y, radius, opacity

    def step(self, rng: np.random.Generator, dt: float, emit: float, scale: float) -> None:
        for p in self.puffs:
            p[0] += (self.wind + rng.normal(0, 2)) * dt * scale
            p[1] -= self.rise * dt * scale * rng.uniform(0.7, 1.3)
            p[2] += 1.5 * dt * scale
            p[3] *= math.exp(-dt / 25.0)
        if rng.random() < emit * dt:
            self.puffs.append([self.x + rng.normal(0, 2 * scale), self.y, 3 * scale, 0.55])
        self.puffs = [p for p in self.puffs if p[3] > 0.03 and p[1] > -p[2]]

    def draw(self, img: Canvas) -> None:
        alpha = np.zeros(img.shape[:2], np.float32)
        for x, y, r, o in self.puffs:
            cv2.circle(alpha, (round(x), round(y)), max(1, round(r)), float(o), -1)
        alpha = np.minimum(cv2.GaussianBlur(alpha, (0, 0), 3), 0.85)[..., None]
        img *= 1 - alpha
        img += alpha * np.array(self.colour, np.float32)


ELEMENTS = (
    "quiet",  # nothing happens: the landscape and sensor noise
    "fire",
    "smoke",
    "fire_and_smoke",
    "farm_fire",
    "hotspot",
    "clouds",
    "fog",
    "sun_glare",
    "night_traffic",
    "swaying_trees",
    "steam",
    "cloud_shadows",
    "red_car",
    "ir_switch",
    "frozen",
    "thermal_quiet",
    "stuck_ptz",
    "construction",
    "road_obstruction",
)


def render(sc: Scenario) -> Iterator[tuple[float, Image]]:
    """(scenario seconds, BGR frame) for every frame; deterministic from ``sc.seed``."""
    if sc.element == "construction":
        yield from _construction(sc)
        return
    if sc.element == "road_obstruction":
        yield from _road_obstruction(sc)
        return
    rng = np.random.default_rng(sc.seed)
    w, h = sc.size
    k = w / 640.0
    scene = _Scene(rng, sc.size, night=sc.element == "night_traffic")
    onset = sc.onset_s if sc.onset_s is not None else math.inf
    # Where a positive stands: on the terrain, away from the frame edges.
    sx, sy = sc.source[0] * w, sc.source[1] * h
    plume = _Plume(sx, sy, float(rng.uniform(-4, 4)), (200, 198, 195))
    if sc.element == "steam":
        plume = _Plume(sx, sy, float(rng.uniform(-3, 3)), (250, 250, 250), rise=8.0)
    clouds = [
        [float(rng.uniform(0, w)), float(rng.uniform(0.05, 0.8) * scene.horizon), 0.0]
        for _ in range(4)
    ]
    wind = float(rng.uniform(4, 10)) * rng.choice([-1.0, 1.0])
    last: Image | None = None
    burns = sc.element in ("fire", "smoke", "fire_and_smoke", "farm_fire")
    real = camera_footage.load() if sc.footage and burns else None
    flames = real.fire[sc.seed % len(real.fire)] if real is not None else ()
    smoke = real.smoke[sc.seed % len(real.smoke)] if real is not None else ()
    for i in range(sc.frames):
        t = i / sc.fps
        dt = 1 / sc.fps
        img = scene.base.copy()
        since = t - onset
        e = sc.element
        if e in ("smoke", "fire_and_smoke", "farm_fire") and since >= 0 and smoke:
            # a plume stands on its fire's flames, or on the ground where it smoulders
            lift = camera_footage.FIRE.at(since) * w / 2 if e != "smoke" else 0.0
            frame_of = smoke[int(since / camera_footage.FRAME_S) % len(smoke)]
            width = camera_footage.SMOKE.at(since) * w
            frame_of.paste(img, sx, sy - lift, width, camera_footage.SMOKE_OPACITY)
        elif e in ("smoke", "fire_and_smoke", "farm_fire", "steam") and since >= 0:
            plume.step(rng, dt, emit=3.0, scale=k)
            plume.draw(img)
        if e in ("fire", "fire_and_smoke", "farm_fire") and since >= 0:
            if flames:
                frame_of = flames[int(since / camera_footage.FRAME_S) % len(flames)]
                frame_of.paste(img, sx, sy, camera_footage.FIRE.at(since) * w, 1.0)
            else:
                _fire(img, rng, sx, sy, (6 + min(since, 60) * 0.25) * k)
        if e in ("clouds", "stuck_ptz"):
            for c in clouds:
                c[0] = (c[0] + wind * k * dt) % (w + 80 * k)
                cv2.ellipse(
                    img,
                    (round(c[0] - 40 * k), round(c[1])),
                    (round(45 * k), round(14 * k)),
                    0,
                    0,
                    360,
                    (245, 245, 245),
                    -1,
                )
        if e == "cloud_shadows":
            x = (t * 6 * k) % (w * 1.5) - 0.25 * w
            shade = np.ones((h, w), np.float32)
            cv2.ellipse(
                shade,
                (round(x), round(0.7 * h)),
                (round(120 * k), round(50 * k)),
                0,
                0,
                360,
                0.55,
                -1,
            )
            img *= cv2.GaussianBlur(shade, (0, 0), 15 * k)[..., None]
            img *= 0.85 + 0.15 * math.cos(t / sc.duration_s * math.pi)
        if e == "fog":
            density = min(max(since, 0) / 40.0, 0.85)
            img = img * (1 - density) + 205 * density
        if e == "sun_glare":
            cx, cy = 0.3 * w + t * 0.5 * k, scene.horizon - 12 * k
            shimmer = 1 + 0.15 * rng.normal()
            glow = np.zeros((h, w), np.float32)
            cv2.circle(glow, (round(cx), round(cy)), round(30 * k * shimmer), 1.0, -1)
            glow = np.asarray(cv2.GaussianBlur(glow, (0, 0), 12 * k), np.float32)
            cv2.circle(img, (round(cx), round(cy)), round(9 * k), (200, 245, 255), -1)
            img += glow[..., None] * np.array([60, 170, 255], np.float32)
        if e == "night_traffic":
            road = round(0.78 * h)
            cv2.line(img, (0, road), (w, road), (25, 25, 25), round(14 * k))
            for lane, speed in ((0, 60.0), (1, -45.0)):
                x = (rng.uniform(0, 1) * 4 + t * speed * k) % (w + 200) - 100
                y = road + (lane * 8 - 4) * k
                colour = (235, 245, 255) if speed > 0 else (40, 40, 230)
                for dx in (0, 10 * k):
                    cv2.circle(img, (round(x + dx), round(y)), round(3 * k), colour, -1)
        if e == "swaying_trees":
            for j in range(3):
                bx = (0.2 + 0.3 * j) * w
                lean = 10 * k * math.sin(2 * math.pi * t / (2.5 + j) + j)
                cv2.ellipse(
                    img,
                    (round(bx + lean), scene.horizon + round(5 * k)),
                    (round(22 * k), round(45 * k)),
                    0,
                    0,
                    360,
                    (30, 80, 40),
                    -1,
                )
        if e == "red_car":
            x = (t * 50 * k) % (w + 100) - 50
            cv2.rectangle(
                img,
                (round(x), round(0.8 * h)),
                (round(x + 30 * k), round(0.8 * h + 12 * k)),
                (30, 60, 220),
                -1,
            )
        out = np.clip(img + rng.normal(0, 2.0, img.shape).astype(np.float32), 0, 255)
        frame = out.astype(np.uint8)
        if e == "ir_switch" and since >= 0:
            grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
            boosted = cv2.convertScaleAbs(grey, alpha=1.4, beta=20)
            frame = np.asarray(cv2.cvtColor(boosted, cv2.COLOR_GRAY2BGR), np.uint8)
        if e == "frozen" and since >= 0 and last is not None:
            frame = last
        last = frame
        yield t, frame


def _construction(sc: Scenario) -> Iterator[tuple[float, Image]]:
    """The watched plot, one view a compressed day with fresh sensor noise on every frame; the
    building stands in full from the first whole day after ``onset_s``."""
    if sc.day_s is None:
        raise ValueError(f"scene {sc.name}: construction needs day_s, the compressed day")
    days = max(math.ceil(sc.duration_s / sc.day_s), 1)
    start = math.ceil(sc.onset_s / sc.day_s) if sc.onset_s is not None else days
    # mild light from day to day: a patrol coming back to the preset must not see the whole
    # view change (a global change, which suspends analysis), only another hour's shadows
    site = SiteScenario(
        sc.name, sc.seed, builds=start < days, days=days, start_day=start, rise_days=1,
        size=sc.size, light=(0.95, 1.05),
    )  # fmt: skip
    views = [image.astype(np.float32) for _, image in render_days(site)]
    rng = np.random.default_rng(sc.seed + 1)
    for i in range(sc.frames):
        t = i / sc.fps
        view = views[min(int(t // sc.day_s), days - 1)]
        out = np.clip(view + rng.normal(0, 2.0, view.shape).astype(np.float32), 0, 255)
        yield t, out.astype(np.uint8)


def _road_obstruction(sc: Scenario) -> Iterator[tuple[float, Image]]:
    """A road camera's view where a car stops in the near lane at ``onset_s`` and stays."""
    onset = sc.onset_s if sc.onset_s is not None else math.inf
    road = road_scenes.RoadScenario(
        name=sc.name,
        label="traffic_obstruction",
        element="stalled_car",
        seed=sc.seed,
        duration_s=sc.duration_s,
        fps=sc.fps,
        onset_s=onset,
        stop_s=math.inf,
        size=sc.size,
        vision=sc.vision,
    )
    yield from road_scenes.render(road)


def render_thermal(sc: Scenario) -> Iterator[tuple[float, Image]]:
    """A thermal view as grey levels over the temperature range of the vision's hotspot
    detector (its default when the scenario switched it off)."""
    rng = np.random.default_rng(sc.seed)
    w, h = sc.size
    k = w / 640.0
    low, high = (sc.vision.detectors.thermal_hotspot or ThermalHotspotSettings()).range_c

    def grey(c: float) -> float:
        return (c - low) / (high - low) * 255

    base = np.full((h, w), grey(18.0), np.float32)
    base[round(HORIZON * h) :] = grey(24.0)
    for _ in range(20):  # sun-warmed rock and roofs: warm, never fire-hot
        x, y = int(rng.integers(0, w)), int(rng.integers(round(HORIZON * h), h))
        cv2.circle(base, (x, y), int(rng.integers(2, 8)), grey(float(rng.uniform(40, 60))), -1)
    sx, sy = sc.source[0] * w, sc.source[1] * h
    onset = sc.onset_s if sc.onset_s is not None else math.inf
    for i in range(sc.frames):
        t = i / sc.fps
        img = base.copy()
        if sc.element == "hotspot" and t >= onset:
            r = (1.5 + min(t - onset, 60) * 0.05) * k
            cv2.circle(
                img,
                (round(sx), round(sy)),
                max(1, round(r + rng.normal(0, 0.3))),
                grey(float(rng.uniform(180, 260))),
                -1,
            )
        out = np.clip(img + rng.normal(0, 1.5, img.shape), 0, 255).astype(np.uint8)
        yield t, out


POSITIVES = {
    "fire": "fire",
    "smoke": "smoke",
    "fire_and_smoke": "fire_and_smoke",
    "farm_fire": "fire_and_smoke",
    "hotspot": "fire",
}
CHANGES = {"construction": "construction_change", "road_obstruction": "traffic_obstruction"}
"""Scenes of the simulator whose event changes the view for good, and what a worker detects."""
NEGATIVES = {
    "clouds": None,
    "fog": "low_visibility",
    "sun_glare": None,
    "night_traffic": None,
    "swaying_trees": None,
    "steam": None,
    "cloud_shadows": None,
    "red_car": None,
    "ir_switch": "ir_mode",
    "frozen": "frozen",
    "thermal_quiet": None,
    "stuck_ptz": "stuck_ptz",  # played through a watchtower patrol whose head never moves
}
PATROL = frozenset({"stuck_ptz"})


def catalogue(seed: int = 1, per_kind: int = 8, duration_s: float = 90.0) -> list[Scenario]:
    """Every positive and every negative, ``per_kind`` seeded variants of each."""
    rng = np.random.default_rng(seed)
    out: list[Scenario] = []
    for element in (*POSITIVES, *NEGATIVES):
        for n in range(per_kind):
            source = (float(rng.uniform(0.15, 0.85)), float(rng.uniform(0.5, 0.9)))
            onset = float(rng.uniform(10, 30))
            vision = Vision(horizon=HORIZON, zones=_zones(element, source))
            out.append(
                Scenario(
                    name=f"{element}-{n:02d}",
                    label=POSITIVES.get(element, "none"),
                    element=element,
                    seed=int(rng.integers(1 << 31)),
                    duration_s=duration_s,
                    onset_s=onset,
                    expect_health=NEGATIVES.get(element),
                    thermal=element in ("hotspot", "thermal_quiet"),
                    source=source,
                    vision=vision,
                )
            )
    return out


def _zones(element: str, source: tuple[float, float]) -> tuple[ImageZone, ...]:
    x, y = source
    if element == "steam":  # the operator masked the chimney and the air above it
        ring = (
            (max(x - 0.2, 0), 0.0),
            (min(x + 0.2, 1), 0.0),
            (min(x + 0.2, 1), min(y + 0.03, 1)),
            (max(x - 0.2, 0), min(y + 0.03, 1)),
        )
        return (ImageZone(kind="mask", polygon=ring, name="chimney"),)
    if element == "farm_fire":
        ring = (
            (max(x - 0.15, 0), y - 0.08),
            (min(x + 0.15, 1), y - 0.08),
            (min(x + 0.15, 1), min(y + 0.08, 1)),
            (max(x - 0.15, 0), min(y + 0.08, 1)),
        )
        return (ImageZone(kind="farmland", polygon=ring, name="field"),)
    return ()
