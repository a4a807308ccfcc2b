import itertools
import math

import pytest

from gridwatch.events import Point
from gridwatch.geo import LocalProjection, triangulate_bearings

CENTER = Point(lon=106.65, lat=26.62)
PROJ = LocalProjection(CENTER)


def bearing(frm: Point, to: Point) -> float:
    (x0, y0), (x1, y1) = PROJ.xy(frm), PROJ.xy(to)
    return math.degrees(math.atan2(x1 - x0, y1 - y0)) % 360


def test_exact_bearings_recover_the_point() -> None:
    a, b, fire = PROJ.point(-3000, 0), PROJ.point(3000, 0), PROJ.point(400, 2500)
    fix = triangulate_bearings(a, bearing(a, fire), b, bearing(b, fire))
    assert fix is not None
    assert PROJ.distance_m(fix.point, fire) < 0.5
    assert fix.ranges_m[0] == pytest.approx(PROJ.distance_m(a, fire), abs=0.5)


def test_half_degree_error_at_five_km_stays_within_100_m() -> None:
    # Two towers 7.07 km apart, a fire 5 km from each (rays cross at right angles).
    a, b, fire = PROJ.point(-3535.5, 0), PROJ.point(3535.5, 0), PROJ.point(0, 3535.5)
    assert PROJ.distance_m(a, fire) == pytest.approx(5000, abs=1)
    worst = 0.0
    for ea, eb in itertools.product((-0.5, 0.0, 0.5), repeat=2):
        fix = triangulate_bearings(a, bearing(a, fire) + ea, b, bearing(b, fire) + eb)
        assert fix is not None
        worst = max(worst, PROJ.distance_m(fix.point, fire))
        assert fix.error_m == pytest.approx(61.7, abs=1.5)  # √2 · 5 km · 0.5° / sin 90°
    assert 50 < worst <= 100


def test_parallel_or_diverging_rays_fix_nothing() -> None:
    a, b = PROJ.point(-1000, 0), PROJ.point(1000, 0)
    assert triangulate_bearings(a, 0.0, b, 0.0) is None  # parallel
    assert triangulate_bearings(a, 300.0, b, 60.0) is None  # crossing behind both towers
