"""Generated daily views of watched sites, for construction-change ground truth.

Every day the camera sees the same place at a different hour (sun, shadows), a little off its
previous aim (a PTZ never returns exactly), with the season turning the fields; at a positive
site a building rises from day ``start_day`` on, at a negative one nothing is built.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

Image = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class SiteScenario:
    name: str
    seed: int
    builds: bool
    days: int = 8
    start_day: int = 2
    rise_days: int = 3  # days the building takes to reach its full height
    light: tuple[float, float] = (0.7, 1.2)  # range of the day's overall brightness
    size: tuple[int, int] = (640, 360)
    site: tuple[float, float, float, float] = (0.35, 0.45, 0.3, 0.35)  # x, y, w, h fractions


def _landscape(rng: np.random.Generator, w: int, h: int) -> tuple[Image, list[tuple[int, ...]]]:
    img = np.zeros((h, w, 3), np.float32)
    img[:] = (120, 140, 150)  # bare ground
    houses: list[tuple[int, ...]] = []
    for _ in range(14):  # fields, roads and houses give registration something to hold on to
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        fw, fh = int(rng.integers(30, 120)), int(rng.integers(20, 80))
        colour = (60, 150, 70) if rng.random() < 0.6 else (90, 120, 140)
        cv2.rectangle(img, (x, y), (x + fw, y + fh), colour, -1)
    for _ in range(10):
        x, y = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
        cv2.rectangle(img, (x, y), (x + 14, y + 12), (170, 170, 180), -1)
        cv2.rectangle(img, (x, y), (x + 14, y + 4), (60, 60, 150), -1)
        houses.append((x, y))
    texture = rng.normal(0, 10, (h, w, 1)).astype(np.float32)
    return np.clip(img + texture, 0, 255).astype(np.uint8), houses


def render_days(sc: SiteScenario) -> Iterator[tuple[int, Image]]:
    rng = np.random.default_rng(sc.seed)
    w, h = sc.size
    land, houses = _landscape(rng, w, h)
    sx, sy, sw, sh = (round(v * s) for v, s in zip(sc.site, (w, h, w, h), strict=True))
    for day in range(sc.days):
        img = land.astype(np.float32)
        season = day / max(sc.days - 1, 1)
        green = (img[..., 1] > img[..., 2] + 20)[..., None]
        autumn = np.array([50, 130, 160], np.float32)  # crops ripen from green to straw
        img = np.where(green, img * (1 - season) + autumn * season, img)
        if sc.builds and day >= sc.start_day:
            grown = min((day - sc.start_day + 1) / sc.rise_days, 1.0)
            top = sy + round(sh * (1 - grown))
            cv2.rectangle(img, (sx, top), (sx + sw, sy + sh), (150, 150, 155), -1)
            for wx in range(sx + 6, sx + sw - 8, 14):
                for wy in range(top + 6, sy + sh - 8, 16):
                    cv2.rectangle(img, (wx, wy), (wx + 6, wy + 8), (70, 50, 40), -1)
        hour = float(rng.uniform(8, 17))  # the sun's side sets the shadows' direction
        dx = round((hour - 12.5) * 4)
        shade = np.ones((h, w), np.float32)
        for x, y in houses:
            cv2.rectangle(shade, (x + dx, y + 12), (x + 14 + dx, y + 22), 0.55, -1)
        img *= shade[..., None] * float(rng.uniform(*sc.light))
        shift = np.array([[1, 0, rng.normal(0, 3)], [0, 1, rng.normal(0, 2)]], np.float32)
        img = np.asarray(
            cv2.warpAffine(img, shift, (w, h), borderMode=cv2.BORDER_REFLECT), np.float32
        )
        noise = rng.normal(0, 3, img.shape)
        yield day, np.clip(img + noise, 0, 255).astype(np.uint8)


def site_catalogue(seed: int = 3, per_kind: int = 10) -> list[SiteScenario]:
    rng = np.random.default_rng(seed)
    return [
        SiteScenario(
            f"{'build' if builds else 'quiet'}-{n:02d}", int(rng.integers(1 << 31)), builds
        )
        for builds in (True, False)
        for n in range(per_kind)
    ]
