"""Generated road-camera video with ground truth, deterministic from a seed.

A fixed camera looks across a two-lane road: buildings and sky above, kerbs, asphalt with its
grain and lane markings, traffic in both lanes and pedestrians crossing. The positives are a car
that stops in a lane for minutes (by day and by night, with its lights on) and water spreading
over the road; the negatives are what trips a single background model: dense passing traffic,
cars queueing at a red light for less than the stall time, night headlights, rain that darkens
the road, a cloud shadow drifting over it and a shaking camera. Scenes are rendered at a low
frame rate: a stall lasts minutes and a road camera is sampled about once a second.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt

from gridwatch.site_cameras import ImageZone, Vision
from gridwatch.site_detectors import Detectors, TrafficDetector

Image = npt.NDArray[np.uint8]
Canvas = npt.NDArray[np.float32]
ROAD = (0.55, 0.85)  # top and bottom of the carriageway, fractions of the height
LANES = ((0.55, 0.70), (0.70, 0.85))  # far lane: right to left; near lane: left to right
STALL_S = 60.0
"""The evaluation's configured stall time: shorter than a site's, so scenes stay short."""


@dataclass(frozen=True)
class RoadScenario:
    name: str
    label: str  # "traffic_obstruction", "road_water" or "none"
    element: str  # what happens: see POSITIVES and NEGATIVES
    seed: int
    duration_s: float = 240.0
    fps: float = 1.0
    onset_s: float | None = None  # when the car has stopped, or the water starts
    stop_s: float = 150.0  # how long the car stays (stalled_car, red_light)
    spot: float = 0.5  # where along the road it happens (fraction of the width)
    size: tuple[int, int] = (640, 360)
    vision: Vision = field(default_factory=lambda: road_vision())

    @property
    def frames(self) -> int:
        return round(self.duration_s * self.fps)


def road_zone() -> ImageZone:
    top, bottom = ROAD
    return ImageZone(
        kind="road", polygon=((0.0, top), (1.0, top), (1.0, bottom), (0.0, bottom)), name="lanes"
    )


def road_vision(stall_s: float = STALL_S) -> Vision:
    return Vision(
        zones=(road_zone(),),
        detectors=Detectors(fire_smoke_model=None, traffic=TrafficDetector(stall_s=stall_s)),
    )


@dataclass
class _Car:
    x: float
    lane: int
    speed: float  # px/s, signed
    length: float
    colour: tuple[float, float, float]
    stop_at: float | None = None  # x where it stops
    stop_from: float = math.inf
    stop_until: float = math.inf


class _Street:
    """The static view, rendered once per scenario."""

    def __init__(self, rng: np.random.Generator, size: tuple[int, int]) -> None:
        w, h = size
        self.w, self.h = w, h
        top, bottom = round(ROAD[0] * h), round(ROAD[1] * h)
        img = np.zeros((h, w, 3), np.float32)
        rows = np.linspace(0, 1, h, dtype=np.float32)[:, None]
        img[:] = (225 - 60 * rows)[..., None] * np.array([1.0, 0.9, 0.78], np.float32)
        x = 0
        while x < w:  # a row of buildings with windows
            bw = int(rng.integers(40, 110)) * w // 640
            bh = int(rng.integers(60, 150)) * h // 360
            tone = rng.uniform(90, 180, 3).astype(np.float32)
            cv2.rectangle(img, (x, top - 18 - bh), (x + bw, top - 18), tone.tolist(), -1)
            for wy in range(top - bh - 8, top - 30, max(8, 14 * h // 360)):
                for wx in range(x + 5, x + bw - 8, max(8, 14 * w // 640)):
                    cv2.rectangle(img, (wx, wy), (wx + 5, wy + 6), (tone * 0.55).tolist(), -1)
            x += bw + int(rng.integers(0, 10))
        img[top - 18 : top] = (150, 155, 160)  # pavement
        img[bottom:] = (120, 150, 130)  # verge
        grain = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 0.7)
        asphalt = 95 + 14 * grain
        img[top:bottom] = asphalt[top:bottom, :, None] * np.array([1.0, 1.0, 1.02], np.float32)
        for _ in range(12):  # repairs and stains: texture a background has to keep
            px, py = int(rng.integers(0, w)), int(rng.integers(top, bottom))
            cv2.ellipse(img, (px, py), (int(rng.integers(6, 25)), 4), 0, 0, 360, (80, 80, 82), -1)
        cv2.line(img, (0, top), (w, top), (200, 200, 200), 2)
        cv2.line(img, (0, bottom), (w, bottom), (200, 200, 200), 2)
        mid = round(LANES[0][1] * h)
        for dash in range(0, w, 40 * w // 640):
            cv2.line(img, (dash, mid), (dash + 20 * w // 640, mid), (230, 230, 225), 2)
        self.base = img


def _draw_car(img: Canvas, car: _Car, h: int, k: float, night: bool) -> None:
    top, bottom = LANES[car.lane]
    y0, y1 = round((top + 0.02) * h), round((bottom - 0.02) * h)
    x0, x1 = round(car.x), round(car.x + car.length)
    colour = np.array(car.colour, np.float32) * (0.25 if night else 1.0)
    cv2.rectangle(img, (x0, y0), (x1, y1), colour.tolist(), -1)
    cv2.rectangle(img, (x0, y0), (x1, y1), (20, 20, 20), 1)
    glass = (x0 + round(0.25 * car.length), y0 + 2, x1 - round(0.25 * car.length), y1 - 2)
    cv2.rectangle(img, glass[:2], glass[2:], (40, 45, 55), -1)
    if night:  # headlights ahead of it, tail lights behind
        front, back = (x1, x0) if car.speed > 0 else (x0, x1)
        cy = (y0 + y1) // 2
        cv2.circle(img, (front, cy), max(1, round(3 * k)), (235, 245, 255), -1)
        cv2.circle(img, (back, cy), max(1, round(2 * k)), (30, 30, 220), -1)


def _beam(img: Canvas, car: _Car, h: int, k: float) -> None:
    """A headlight beam lighting the road ahead of a car at night."""
    top, bottom = LANES[car.lane]
    cy = round((top + bottom) / 2 * h)
    ahead = car.x + car.length if car.speed > 0 else car.x - 90 * k
    beam = np.zeros(img.shape[:2], np.float32)
    cv2.ellipse(beam, (round(ahead + 45 * k), cy), (round(50 * k), round(12 * k)), 0, 0, 360, 1, -1)
    beam = np.asarray(cv2.GaussianBlur(beam, (0, 0), 6 * k), np.float32)
    img += beam[..., None] * np.array([120, 130, 140], np.float32)


def render(sc: RoadScenario) -> Iterator[tuple[float, Image]]:
    """(scenario seconds, BGR frame) for every frame; deterministic from ``sc.seed``."""
    rng = np.random.default_rng(sc.seed)
    w, h = sc.size
    k = w / 640.0
    street = _Street(rng, sc.size)
    e = sc.element
    night = e in ("stalled_car_night", "night_headlights")
    base = street.base * (0.2 if night else 1.0)
    onset = sc.onset_s if sc.onset_s is not None else math.inf
    busy = 0.5 if e == "dense_traffic" else 0.2
    cars: list[_Car] = []
    walkers: list[list[float]] = []
    water_r = 0.0
    wx = sc.spot * w
    shake = np.zeros(2)
    for i in range(sc.frames):
        t = i / sc.fps
        dt = 1 / sc.fps
        for lane, direction in ((0, -1.0), (1, 1.0)):
            if rng.random() < busy * dt:
                speed = direction * float(rng.uniform(40, 90)) * k
                start = -80 * k if direction > 0 else w + 10 * k
                b, g, r = (float(c) for c in rng.uniform(40, 230, 3))
                cars.append(_Car(start, lane, speed, float(rng.uniform(45, 70)) * k, (b, g, r)))
        if e in ("stalled_car", "stalled_car_night", "red_light") and not any(
            c.stop_at is not None for c in cars
        ):
            # the car that will stop: it arrives so as to stand still from ``onset``
            speed = 60.0 * k
            if t >= onset - (sc.spot * w + 80 * k) / speed:
                cars.append(
                    _Car(-80 * k, 1, speed, 60 * k, (40, 40, 190), sc.spot * w, onset,
                         onset + sc.stop_s)
                )  # fmt: skip
        if rng.random() < 0.05 * dt * (2 if e == "dense_traffic" else 1):
            walkers.append([float(rng.uniform(0.1, 0.9) * w), ROAD[1] * h + 5, -18.0 * k])
        img = base.copy()
        for car in cars:
            moving = not (car.stop_from <= t < car.stop_until)
            if (
                car.stop_at is not None
                and car.x + car.speed * dt >= car.stop_at
                and t < car.stop_until
            ):
                car.x = car.stop_at
                moving = False
            if moving:
                ahead = [
                    o.x for o in cars if o is not car and o.lane == car.lane
                    and 0 < (o.x - car.x) * math.copysign(1, car.speed) < car.length + 15 * k
                ]  # fmt: skip
                if ahead and e != "red_light" and car.stop_at is None:
                    car.lane = 1 - car.lane  # overtaking in the other lane
                if not ahead or e != "red_light":
                    car.x += car.speed * dt
        cars = [c for c in cars if -120 * k < c.x < w + 120 * k]
        if e == "road_water" and t >= onset:
            water_r = min(water_r + 8.0 * k * dt, 0.45 * w)
            water = np.zeros((h, w), np.float32)
            top, bottom = round(ROAD[0] * h), round(ROAD[1] * h)
            cv2.ellipse(water, (round(wx), bottom), (round(water_r), round(water_r * 0.35)),
                        0, 0, 360, 1, -1)  # fmt: skip
            water[:top] = 0
            water = np.asarray(cv2.GaussianBlur(water, (0, 0), 2 * k), np.float32)
            sky = np.array([200, 190, 175], np.float32) + rng.normal(0, 1.5)
            img = img * (1 - 0.92 * water[..., None]) + 0.92 * water[..., None] * sky
        for car in cars:
            if night:
                _beam(img, car, h, k)
            _draw_car(img, car, h, k, night)
        for wk in walkers:
            wk[1] += wk[2] * dt
            cv2.rectangle(img, (round(wk[0]), round(wk[1] - 14 * k)),
                          (round(wk[0] + 5 * k), round(wk[1])), (60, 50, 120), -1)  # fmt: skip
        walkers = [wk for wk in walkers if wk[1] > ROAD[0] * h - 30 * k]
        if e == "cloud_shadow":
            cx = (t * 3 * k) % (w * 1.6) - 0.3 * w
            shade = np.ones((h, w), np.float32)
            cv2.ellipse(shade, (round(cx), round(0.7 * h)), (round(170 * k), round(80 * k)),
                        0, 0, 360, 0.5, -1)  # fmt: skip
            img *= cv2.GaussianBlur(shade, (0, 0), 18 * k)[..., None]
        if e == "rain":
            wet = min(max(t - onset, 0) / 60.0, 1.0)
            img *= 1 - 0.3 * wet
            for _ in range(150):
                x, y = float(rng.uniform(0, w)), float(rng.uniform(0, h))
                cv2.line(img, (round(x), round(y)), (round(x + 2 * k), round(y + 12 * k)),
                         (200, 200, 200), 1)  # fmt: skip
        noise = rng.standard_normal(img.shape, dtype=np.float32)
        out = np.clip(img + 2.0 * noise, 0, 255)
        frame = out.astype(np.uint8)
        if e == "camera_shake":
            if t >= onset:  # gusts jiggle it, and it settles 2 px off where it was
                shake = rng.normal(0, 1.5 * k, 2) if rng.random() < 0.4 else np.array([2.0 * k, 0])
            m = np.array([[1, 0, shake[0]], [0, 1, shake[1]]], np.float32)
            frame = np.asarray(
                cv2.warpAffine(frame, m, (w, h), borderMode=cv2.BORDER_REPLICATE), np.uint8
            )
        yield t, frame


POSITIVES = {
    "stalled_car": "traffic_obstruction",
    "stalled_car_night": "traffic_obstruction",
    "road_water": "road_water",
}
NEGATIVES = (
    "dense_traffic",
    "red_light",
    "night_headlights",
    "rain",
    "cloud_shadow",
    "camera_shake",
)


def catalogue(seed: int = 1, per_kind: int = 4, duration_s: float = 240.0) -> list[RoadScenario]:
    """Every positive and every negative, ``per_kind`` seeded variants of each."""
    rng = np.random.default_rng(seed)
    out: list[RoadScenario] = []
    for element in (*POSITIVES, *NEGATIVES):
        for n in range(per_kind):
            onset = float(rng.uniform(30, 50))
            # a car stalls for over twice the stall time; a red light holds it for half of it
            stop = (
                float(rng.uniform(2.2, 2.6) * STALL_S) if element != "red_light" else 0.5 * STALL_S
            )
            out.append(
                RoadScenario(
                    name=f"{element}-{n:02d}",
                    label=POSITIVES.get(element, "none"),
                    element=element,
                    seed=int(rng.integers(1 << 31)),
                    duration_s=duration_s,
                    onset_s=onset,
                    stop_s=stop,
                    spot=float(rng.uniform(0.25, 0.75)),
                )
            )
    return out
