"""Where things are: a local metric plane and the point → micro-grid → grid → community lookup.

Site polygons are stored in lon/lat (WGS 84), but every distance, area and nearest-neighbour
question is answered in metres on a local azimuthal-equidistant plane centred on the street:
within a few kilometres of its centre that plane distorts lengths by well under a millimetre per
kilometre, so plain Euclidean geometry on it is as good as geodesics, and much cheaper.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import shapely
from pyproj import CRS, Transformer

from gridwatch.events import Point
from gridwatch.site import Site, Zone

Coord = TypeVar("Coord", float, npt.NDArray[np.float64])
"""A scalar or an array of coordinates; the projection returns the same shape it was given."""

Geometry = Any  # shapely ships no type information; this names what a parameter holds


class LocalProjection:
    """Azimuthal-equidistant plane in metres (x east, y north) around ``center``.

    Distances and bearings from the centre are exact; elsewhere within ~10 km they are off by
    less than 1e-6 relative, so one projection serves a whole street. For bearings measured at a
    watchtower far from the centre, build a projection centred on the tower instead.
    A projection holds pyproj transformers, which must not be shared between threads.
    """

    def __init__(self, center: Point) -> None:
        self.center = center
        local = CRS.from_proj4(
            f"+proj=aeqd +lat_0={center.lat} +lon_0={center.lon} +datum=WGS84 +units=m +no_defs"
        )
        self._forward = Transformer.from_crs("EPSG:4326", local, always_xy=True)
        self._inverse = Transformer.from_crs(local, "EPSG:4326", always_xy=True)

    def to_xy(self, lon: Coord, lat: Coord) -> tuple[Coord, Coord]:
        x, y = self._forward.transform(lon, lat, errcheck=True)
        return x, y

    def to_lonlat(self, x: Coord, y: Coord) -> tuple[Coord, Coord]:
        lon, lat = self._inverse.transform(x, y, errcheck=True)
        return lon, lat

    def xy(self, point: Point) -> tuple[float, float]:
        return self.to_xy(point.lon, point.lat)

    def point(self, x: float, y: float) -> Point:
        lon, lat = self.to_lonlat(x, y)
        return Point(lon=lon, lat=lat)

    def project(self, geometry: Geometry) -> Geometry:
        """lon/lat geometry (or array of them) → metres, all coordinates in one call."""
        return shapely.transform(geometry, self._forward_array)

    def unproject(self, geometry: Geometry) -> Geometry:
        """Metres → lon/lat, the inverse of :meth:`project`."""
        return shapely.transform(geometry, self._inverse_array)

    def distance_m(self, a: Point, b: Point) -> float:
        (ax, ay), (bx, by) = self.xy(a), self.xy(b)
        return math.hypot(bx - ax, by - ay)

    def _forward_array(self, coords: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        x, y = self.to_xy(coords[:, 0], coords[:, 1])
        return np.column_stack((x, y))

    def _inverse_array(self, coords: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        lon, lat = self.to_lonlat(coords[:, 0], coords[:, 1])
        return np.column_stack((lon, lat))


@dataclass(frozen=True, slots=True)
class GridMatch:
    """Where a point falls. Outside the street it is the nearest micro-grid, ``inside`` False."""

    community_code: str
    grid_code: str
    micro_grid_code: str
    inside: bool
    distance_m: float


class GridIndex:
    """Point → micro-grid → grid → community, over an STRtree of the site's micro-grids."""

    def __init__(self, site: Site, projection: LocalProjection | None = None) -> None:
        entries = [(g.code, m.code, m.polygon) for g in site.grids for m in g.micro_grids]
        self._grid_codes = tuple(grid for grid, _, _ in entries)
        self._micro_codes = tuple(micro for _, micro, _ in entries)
        self._polygons = np.array([shapely.Polygon(ring) for _, _, ring in entries], dtype=object)
        if projection is None:
            x0, y0, x1, y1 = shapely.total_bounds(self._polygons)
            projection = LocalProjection(Point(lon=(x0 + x1) / 2, lat=(y0 + y1) / 2))
        self.projection = projection
        # The tree holds metric polygons so that nearest-neighbour distances are in metres.
        self._tree = shapely.STRtree(projection.project(self._polygons))
        self._members: dict[str, list[int]] = {}
        for i, (grid, micro) in enumerate(zip(self._grid_codes, self._micro_codes, strict=True)):
            for code in (grid[:12], grid, micro):
                self._members.setdefault(code, []).append(i)
        self._unions: dict[str, Geometry] = {}

    def locate(self, point: Point) -> GridMatch:
        x, y = self.projection.xy(point)
        here = shapely.Point(x, y)
        hits = self._tree.query(here, predicate="intersects")
        if len(hits):
            # A point on a shared edge touches two micro-grids; the first in file order wins,
            # so the same point always lands in the same grid.
            return self._match(int(hits.min()), inside=True, distance_m=0.0)
        nearest, distances = self._tree.query_nearest(here, return_distance=True, all_matches=False)
        return self._match(int(nearest[0]), inside=False, distance_m=float(distances[0]))

    def micro_grid_polygon(self, code: str) -> Geometry:
        return self._union(code, 16)

    def grid_polygon(self, code: str) -> Geometry:
        return self._union(code, 14)

    def community_polygon(self, code: str) -> Geometry:
        return self._union(code, 12)

    def _union(self, code: str, length: int) -> Geometry:
        """The lon/lat union of the micro-grids under ``code``, computed once."""
        members = self._members.get(code) if len(code) == length else None
        if members is None:
            raise KeyError(f"no {_LEVEL_NAMES[length]} with code {code!r}")
        if code not in self._unions:
            self._unions[code] = shapely.union_all(self._polygons[members])
        return self._unions[code]

    def _match(self, index: int, *, inside: bool, distance_m: float) -> GridMatch:
        grid = self._grid_codes[index]
        return GridMatch(grid[:12], grid, self._micro_codes[index], inside, distance_m)


_LEVEL_NAMES = {12: "community", 14: "grid", 16: "micro-grid"}


class ZoneIndex:
    """The site's ground zones (forest, farmland, school, road, …) a point lies in."""

    def __init__(self, zones: tuple[Zone, ...]) -> None:
        self.zones = zones
        self._tree = shapely.STRtree([shapely.Polygon(z.polygon) for z in zones])

    def at(self, point: Point) -> list[Zone]:
        hits = self._tree.query(shapely.Point(point.lon, point.lat), predicate="intersects")
        return [self.zones[i] for i in sorted(hits)]


@dataclass(frozen=True)
class Triangulation:
    point: Point
    error_m: float  # one-sigma position error from the bearings' uncertainty
    ranges_m: tuple[float, float]  # distance from each observer
    crossing_deg: float  # angle between the two rays; small angles give large errors


MIN_CROSSING_DEG = 5.0  # nearly parallel rays fix no point worth reporting


def triangulate_bearings(
    a: Point,
    bearing_a_deg: float,
    b: Point,
    bearing_b_deg: float,
    sigma_deg: float = 0.5,
) -> Triangulation | None:
    """Where two bearings (clockwise from north) from two observers cross, or None when they do
    not cross ahead of both observers or cross too flat to fix a point.

    The error estimate propagates ``sigma_deg`` of each bearing: each ray's cross-track error is
    range × σ, and the crossing turns both into a position error divided by sin(crossing).
    """
    projection = LocalProjection(Point(lon=(a.lon + b.lon) / 2, lat=(a.lat + b.lat) / 2))
    ax, ay = projection.xy(a)
    bx, by = projection.xy(b)
    da = (math.sin(math.radians(bearing_a_deg)), math.cos(math.radians(bearing_a_deg)))
    db = (math.sin(math.radians(bearing_b_deg)), math.cos(math.radians(bearing_b_deg)))
    cross = da[0] * db[1] - da[1] * db[0]
    crossing = math.degrees(math.asin(min(abs(cross), 1.0)))
    if crossing < MIN_CROSSING_DEG:
        return None
    # Solve a + t·da = b + s·db for the ranges t and s (Cramer's rule).
    rx, ry = bx - ax, by - ay
    t = (rx * db[1] - ry * db[0]) / cross
    s = (rx * da[1] - ry * da[0]) / cross
    if t <= 0 or s <= 0:
        return None
    sigma = math.radians(sigma_deg)
    error = math.hypot(t * sigma, s * sigma) / abs(cross)
    return Triangulation(
        point=projection.point(ax + t * da[0], ay + t * da[1]),
        error_m=error,
        ranges_m=(t, s),
        crossing_deg=crossing,
    )


def ray_through(
    origin: Point, bearing_deg: float, polygon: Geometry, reach_m: float = 20_000.0
) -> tuple[Point, float] | None:
    """Where a ray from ``origin`` at ``bearing_deg`` (clockwise from north) runs through the
    lon/lat ``polygon``: the middle of the first stretch inside it and that middle's range in
    metres, or None when the ray misses it within ``reach_m``.

    A single watchtower's bearing fixes no range; where it crosses a zone the tower watches,
    the middle of the crossing is the best guess, off by at most half the stretch."""
    projection = LocalProjection(origin)  # centred on the observer: its bearings are exact
    heading = math.radians(bearing_deg)
    ray = shapely.LineString([(0, 0), (reach_m * math.sin(heading), reach_m * math.cos(heading))])
    inside = ray.intersection(projection.project(polygon))
    pieces = [p for p in shapely.get_parts(inside) if p.geom_type == "LineString" and p.length]
    if not pieces:
        return None
    first = min(pieces, key=lambda p: ray.project(p.interpolate(0.5, normalized=True)))
    middle = first.interpolate(0.5, normalized=True)
    return projection.point(middle.x, middle.y), float(math.hypot(middle.x, middle.y))
