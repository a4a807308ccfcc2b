"""Grid lookup and the local metric projection."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import shapely
from pyproj import Geod

from gridwatch.events import Point
from gridwatch.geo import GridIndex, LocalProjection
from gridwatch.site import Site

WGS84 = Geod(ellps="WGS84")  # the reference: exact geodesics, independent of the projection
CENTER = Point(lon=106.65, lat=26.62)


def test_every_micro_grid_resolves_to_itself(site: Site, index: GridIndex) -> None:
    seen = 0
    for grid in site.grids:
        for micro in grid.micro_grids:
            spot = shapely.Polygon(micro.polygon).representative_point()
            match = index.locate(Point(lon=spot.x, lat=spot.y))
            assert (match.micro_grid_code, match.grid_code) == (micro.code, grid.code)
            assert match.community_code == grid.community_code
            assert match.inside and match.distance_m == 0.0
            seen += 1
    assert seen == 233


def test_point_outside_resolves_to_the_nearest_micro_grid(site: Site, index: GridIndex) -> None:
    proj = index.projection
    micro = [(g, m) for g in site.grids for m in g.micro_grids]
    polygons_m = proj.project(np.array([shapely.Polygon(m.polygon) for _, m in micro]))
    street = shapely.union_all(polygons_m)
    # 300 m beyond the street's easternmost point, straight east.
    x0, y0 = max(street.exterior.coords, key=lambda c: c[0])
    outside = proj.point(x0 + 300, y0)
    match = index.locate(outside)
    assert not match.inside
    # Nothing of the street lies east of that vertex, so it is the nearest point: 300 m exactly.
    assert match.distance_m == pytest.approx(300, abs=0.01)
    # Brute force over every micro-grid agrees on which one is nearest and how far it is.
    distances = shapely.distance(polygons_m, shapely.Point(x0 + 300, y0))
    grid, nearest = micro[int(np.argmin(distances))]
    assert (match.micro_grid_code, match.grid_code) == (nearest.code, grid.code)
    assert match.community_code == grid.community_code
    assert match.distance_m == pytest.approx(float(distances.min()), abs=1e-6)


def test_far_away_point_reports_its_distance(index: GridIndex) -> None:
    lon, lat, _ = WGS84.fwd(106.65, 26.62, 180.0, 100_000)  # 100 km south of the street
    match = index.locate(Point(lon=lon, lat=lat))
    assert not match.inside
    assert 94_000 < match.distance_m < 99_000  # the street reaches ~2-5 km south of its centre


def test_shared_edge_resolves_the_same_way_every_time(site: Site, index: GridIndex) -> None:
    a, b = site.grids[0].micro_grids[0], site.grids[0].micro_grids[1]
    edge = shapely.Polygon(a.polygon).intersection(shapely.Polygon(b.polygon))
    assert edge.length > 0, "the sample's first two micro-grids are neighbours"
    middle = edge.interpolate(0.5, normalized=True)
    matches = {index.locate(Point(lon=middle.x, lat=middle.y)) for _ in range(3)}
    assert len(matches) == 1
    (match,) = matches
    assert match.inside and match.micro_grid_code in {a.code, b.code}


def test_grid_match_is_frozen(index: GridIndex) -> None:
    match = index.locate(CENTER)
    with pytest.raises(dataclasses.FrozenInstanceError):
        match.inside = False  # type: ignore[misc]


def test_grid_and_community_polygons_are_unions(site: Site, index: GridIndex) -> None:
    proj = index.projection
    grid = site.grids[5]
    polygon = index.grid_polygon(grid.code)
    parts = [shapely.Polygon(m.polygon) for m in grid.micro_grids]
    assert proj.project(polygon).area == pytest.approx(
        sum(proj.project(p).area for p in parts), rel=1e-9
    )
    assert index.grid_polygon(grid.code) is polygon  # computed once
    community_area = sum(
        proj.project(index.community_polygon(c.code)).area for c in site.communities
    )
    street_area = proj.project(shapely.union_all([index.grid_polygon(g.code) for g in site.grids]))
    assert community_area == pytest.approx(street_area.area, rel=1e-9)
    micro = grid.micro_grids[0]
    assert index.micro_grid_polygon(micro.code).equals(shapely.Polygon(micro.polygon))


@pytest.mark.parametrize("code", ["52019900399901", "520199003001", "5201990030010101"])
def test_grid_polygon_rejects_unknown_or_wrong_level_codes(index: GridIndex, code: str) -> None:
    with pytest.raises(KeyError, match=code):
        index.grid_polygon(code)


def test_projection_round_trip_is_below_a_centimetre() -> None:
    proj = LocalProjection(CENTER)
    rng = np.random.default_rng(7)
    lon = CENTER.lon + rng.uniform(-0.1, 0.1, 1000)  # ±10 km: well beyond the street
    lat = CENTER.lat + rng.uniform(-0.1, 0.1, 1000)
    x, y = proj.to_xy(lon, lat)
    back_lon, back_lat = proj.to_lonlat(x, y)
    _, _, error_m = WGS84.inv(lon, lat, back_lon, back_lat)
    assert np.max(error_m) < 0.01
    assert np.max(np.hypot(x, y)) > 10_000  # the sample really spread that far


def test_projection_is_metric_around_the_centre() -> None:
    proj = LocalProjection(CENTER)
    assert proj.xy(CENTER) == pytest.approx((0.0, 0.0), abs=1e-6)
    lon, lat, _ = WGS84.fwd(CENTER.lon, CENTER.lat, 90.0, 1000)  # 1 km due east
    x, y = proj.to_xy(lon, lat)
    assert x == pytest.approx(1000, abs=0.01) and y == pytest.approx(0, abs=0.01)
    assert isinstance(x, float)


def test_known_one_kilometre_offset_measures_one_kilometre() -> None:
    proj = LocalProjection(CENTER)
    # Start 3 km from the centre, where the plane is no longer exact by construction.
    lon, lat, _ = WGS84.fwd(CENTER.lon, CENTER.lat, 40.0, 3000)
    start = Point(lon=lon, lat=lat)
    for azimuth in (0.0, 73.0, 151.0, 260.0):
        end_lon, end_lat, _ = WGS84.fwd(lon, lat, azimuth, 1000)
        assert proj.distance_m(start, Point(lon=end_lon, lat=end_lat)) == pytest.approx(
            1000, abs=1.0
        )


def test_project_and_unproject_geometries() -> None:
    proj = LocalProjection(CENTER)
    square = shapely.box(-500, -500, 500, 500)
    lonlat = proj.unproject(square)
    assert lonlat.bounds[0] == pytest.approx(CENTER.lon - 0.005, abs=0.0005)
    assert proj.project(lonlat).area == pytest.approx(1e6, rel=1e-9)
    centre = proj.point(0.0, 0.0)
    assert (centre.lon, centre.lat) == pytest.approx((CENTER.lon, CENTER.lat), abs=1e-9)
