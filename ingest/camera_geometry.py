"""Where a pixel looks: a bearing for any camera, a ground point for a fixed one."""

from __future__ import annotations

import math

from detectors.frame import Box
from gridwatch.events import Point
from gridwatch.geo import LocalProjection

MAX_RANGE_M = 5000.0  # beyond this a ground fix from one camera's tilt is guesswork


def bearing_deg(heading_deg: float, fov_deg: float, box: Box, width: int) -> float:
    """Heading plus the box centre's angle off the optical axis (pinhole model)."""
    x, _, w, _ = box
    offset = (x + w / 2) / width - 0.5
    off_axis = math.degrees(math.atan(2 * offset * math.tan(math.radians(fov_deg / 2))))
    return (heading_deg + off_axis) % 360


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
    half_v = math.atan(math.tan(math.radians(fov_deg / 2)) * h / w)
    row = (y + bh) / h - 0.5
    depression = -math.radians(tilt_deg) + math.atan(2 * row * math.tan(half_v))
    if depression <= math.radians(0.2):
        return None
    distance = min(height_m / math.tan(depression), MAX_RANGE_M)
    bearing = math.radians(bearing_deg(heading_deg, fov_deg, box, w))
    projection = LocalProjection(at)
    return projection.point(distance * math.sin(bearing), distance * math.cos(bearing))
