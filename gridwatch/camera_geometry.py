"""Where a pixel looks, and where a place shows: a bearing for any camera, a ground point for a
fixed one, and the inverse, the image point of a place (a pinhole over flat ground)."""

from __future__ import annotations

import math

from gridwatch.events import Point
from gridwatch.geo import LocalProjection

MAX_RANGE_M = 5000.0  # beyond this a ground fix from one camera's tilt is guesswork
Box = tuple[int, int, int, int]  # x, y, width, height in pixels


def bearing_deg(heading_deg: float, fov_deg: float, box: Box, width: int) -> float:
    """Heading plus the box centre's angle off the optical axis (pinhole model)."""
    x, _, w, _ = box
    offset = (x + w / 2) / width - 0.5
    off_axis = math.degrees(math.atan(2 * offset * math.tan(math.radians(fov_deg / 2))))
    return (heading_deg + off_axis) % 360


def _half_vertical(fov_deg: float, shape: tuple[int, int]) -> float:
    h, w = shape
    return math.atan(math.tan(math.radians(fov_deg / 2)) * h / w)


def ground_point(
    at: Point,
    height_m: float,
    heading_deg: float,
    tilt_deg: float,
    fov_deg: float,
    box: Box,
    shape: tuple[int, int],
) -> Point | None:
    """Where the bottom centre of a box meets flat ground, or None above the horizon."""
    h, w = shape
    x, y, bw, bh = box
    row = (y + bh) / h - 0.5
    depression = -math.radians(tilt_deg) + math.atan(
        2 * row * math.tan(_half_vertical(fov_deg, shape))
    )
    if depression <= math.radians(0.2):
        return None
    distance = min(height_m / math.tan(depression), MAX_RANGE_M)
    bearing = math.radians(bearing_deg(heading_deg, fov_deg, box, w))
    projection = LocalProjection(at)
    return projection.point(distance * math.sin(bearing), distance * math.cos(bearing))


def bearing_to(at: Point, target: Point) -> float:
    """The compass bearing from ``at`` to ``target``, degrees."""
    x, y = LocalProjection(at).xy(target)
    return math.degrees(math.atan2(x, y)) % 360


def off_axis_deg(heading_deg: float, bearing: float) -> float:
    """How far ``bearing`` lies right of ``heading_deg``, in (-180, 180]."""
    return -((heading_deg - bearing + 180) % 360 - 180)


def image_point(
    at: Point,
    height_m: float,
    heading_deg: float,
    tilt_deg: float,
    fov_deg: float,
    target: Point,
    shape: tuple[int, int],
) -> tuple[float, float] | None:
    """Where ``target`` on flat ground shows in the view, in fractions of the image's width and
    height (what ``bearing_deg`` and ``ground_point`` read back), or None outside the view."""
    off = math.radians(off_axis_deg(heading_deg, bearing_to(at, target)))
    if abs(off) >= math.radians(fov_deg / 2):
        return None
    x = 0.5 + math.tan(off) / (2 * math.tan(math.radians(fov_deg / 2)))
    distance = math.hypot(*LocalProjection(at).xy(target))
    depression = math.atan2(height_m, distance)
    row = math.tan(depression + math.radians(tilt_deg)) / (
        2 * math.tan(_half_vertical(fov_deg, shape))
    )
    if abs(row) >= 0.5:
        return None
    return x, 0.5 + row
