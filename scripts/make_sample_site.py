"""Write gridwatch/sites/sample.yaml, the bundled site modelled on the seed street.

    .venv/bin/python scripts/make_sample_site.py          # rewrite the file
    .venv/bin/python scripts/make_sample_site.py --check  # fail if the file is out of date

The street: 50 km², 15 km² of it built up, 4 urban communities and 1 rural (团结), 47 grids,
233 micro-grids, 47 full-time grid workers. The seed is fixed, so the output is the same byte for
byte on every run and a diff of the YAML shows exactly what a change to this script did.

Geometry is made in metres on a local plane around the street's centre:
1. an irregular street boundary (a smooth random blob) scaled to 50 km², and a 15 km² built-up
   region on one side of it;
2. 195 seed points in the built-up region and 38 in the rest, each set relaxed (Lloyd) and turned
   into a Voronoi diagram clipped to its region: small even urban micro-grids, large rural ones;
3. the 233 cells cleaned into one coverage, neighbours sharing their edges vertex for vertex (so
   rounding to 1e-6° keeps the tiling exact);
4. communities and grids grown as contiguous regions over the micro-grids' adjacency graph, each
   region taken so that what is left stays in one piece.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import shapely
import yaml
from shapely import affinity
from shapely.ops import nearest_points

from gridwatch.events import Point
from gridwatch.geo import GridIndex, LocalProjection
from gridwatch.site import Site, load_site

HEADER = (
    "# The sample site, written by scripts/make_sample_site.py: change the script, not this file.\n"
)
OUT = Path(__file__).resolve().parents[1] / "gridwatch" / "sites" / "sample.yaml"
SEED = 20230047
CENTER = Point(lon=106.65, lat=26.62)
STREET_CODE = "520199003"  # county 520199 (fictional) + street 003
AREA_M2, BUILT_UP_M2 = 50e6, 15e6
# Village-level codes 001-199 are residents' committees and 200-399 villagers' committees
# (NBS statistical division codes), so the rural community is numbered 201.
URBAN = (
    ("001", "阳光社区", 11),
    ("002", "和平社区", 10),
    ("003", "文昌社区", 10),
    ("004", "河滨社区", 9),
)
RURAL = ("201", "团结社区", 7)
URBAN_MICRO, RURAL_MICRO = 195, 38
LLOYD_ITERATIONS = 40
RTSP = "rtsp://127.0.0.1:8554"  # `gridwatch simulate cameras` serves these streams
PTZ = "http://127.0.0.1:8080/ptz"  # and the watchtowers' PTZ API

Geometry = Any  # shapely geometries are untyped


class Flow(list[Any]):
    """A list written on one line: coordinates and points stay compact."""


class FlowMap(dict[str, Any]):
    """A mapping written on one line."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(Flow, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, True))
_Dumper.add_representer(FlowMap, lambda d, v: d.represent_mapping("tag:yaml.org,2002:map", v, True))


# -- geometry ------------------------------------------------------------------------------------


def blob(rng: np.random.Generator, cx: float, cy: float, amplitude: float) -> Geometry:
    """A smooth star-shaped polygon of unit-ish radius: a few random low harmonics."""
    theta = np.linspace(0, 2 * math.pi, 180, endpoint=False)
    r = np.ones_like(theta)
    for k in range(2, 7):
        r += amplitude / k * np.cos(k * theta + rng.uniform(0, 2 * math.pi))
    return shapely.Polygon(np.column_stack((cx + r * np.cos(theta), cy + r * np.sin(theta))))


def scaled_to_area(shape: Geometry, area: float, clip: Geometry | None = None) -> Geometry:
    """Scale ``shape`` about its centroid until (shape ∩ clip) has ``area`` (bisection)."""
    lo, hi = 0.0, 10 * math.sqrt(area / shape.area)
    for _ in range(60):
        mid = (lo + hi) / 2
        trial = affinity.scale(shape, mid, mid, origin="centroid")
        got = trial.intersection(clip) if clip is not None else trial
        lo, hi = (mid, hi) if got.area < area else (lo, mid)
    scaled = affinity.scale(shape, lo, lo, origin="centroid")
    return scaled.intersection(clip) if clip is not None else scaled


def sample_in(rng: np.random.Generator, region: Geometry, n: int) -> np.ndarray:
    x0, y0, x1, y1 = region.bounds
    out: list[np.ndarray] = []
    while sum(len(o) for o in out) < n:
        xy = rng.uniform((x0, y0), (x1, y1), size=(4 * n, 2))
        out.append(xy[shapely.contains_xy(region, xy[:, 0], xy[:, 1])])
    return np.concatenate(out)[:n]


def voronoi_cells(points: np.ndarray, boundary: Geometry) -> np.ndarray:
    diagram = shapely.voronoi_polygons(shapely.MultiPoint(points), extend_to=boundary, ordered=True)
    cells: np.ndarray = shapely.intersection(shapely.get_parts(diagram), boundary)
    return cells


def relax(points: np.ndarray, region: Geometry) -> np.ndarray:
    """Lloyd relaxation: micro-grids of even size and compact shape."""
    for _ in range(LLOYD_ITERATIONS):
        centroids = shapely.centroid(voronoi_cells(points, region))
        points = np.column_stack((shapely.get_x(centroids), shapely.get_y(centroids)))
    return points


def single_polygons(cells: np.ndarray) -> np.ndarray:
    """A convex cell clipped by a concave region can fall apart: each stray piece goes to the
    neighbour it shares the longest edge with, so every micro-grid is one polygon."""
    cells = cells.copy()
    for i, cell in enumerate(cells):
        if cell.geom_type == "Polygon":
            continue
        parts = sorted(shapely.get_parts(cell), key=lambda p: -p.area)
        cells[i] = parts[0]
        for part in parts[1:]:
            shared = shapely.length(shapely.intersection(part.boundary, shapely.boundary(cells)))
            shared[i] = 0
            j = int(np.argmax(shared))
            cells[j] = shapely.union(cells[j], part)
    assert all(c.geom_type == "Polygon" for c in cells), "a micro-grid is not one polygon"  # noqa: S101
    return cells


def adjacency(cells: np.ndarray) -> list[set[int]]:
    """Neighbours share an edge, not just a corner."""
    tree = shapely.STRtree(cells)
    left, right = tree.query(cells, predicate="intersects")
    keep = left < right
    left, right = left[keep], right[keep]
    shared = shapely.length(
        shapely.intersection(shapely.boundary(cells[left]), shapely.boundary(cells[right]))
    )
    graph: list[set[int]] = [set() for _ in cells]
    for a, b, length in zip(left, right, shared, strict=True):
        if length > 1.0:
            graph[a].add(int(b))
            graph[b].add(int(a))
    return graph


def connected(nodes: set[int], graph: list[set[int]]) -> bool:
    if not nodes:
        return True
    start = next(iter(nodes))
    seen, todo = {start}, [start]
    while todo:
        for n in graph[todo.pop()] & nodes - seen:
            seen.add(n)
            todo.append(n)
    return seen == nodes


def split(
    nodes: set[int], sizes: list[int], graph: list[set[int]], xy: np.ndarray
) -> list[list[int]]:
    """Cut ``nodes`` into contiguous parts of exactly ``sizes``, each grown compactly from the
    periphery and never leaving the remainder in two pieces (which could not be filled later)."""
    assert sum(sizes) == len(nodes) and connected(nodes, graph)  # noqa: S101
    parts: list[list[int]] = []
    rest = set(nodes)
    for size in sizes[:-1]:
        middle = xy[sorted(rest)].mean(axis=0)
        seeds = sorted(rest, key=lambda n: -float(np.hypot(*(xy[n] - middle))))
        part = next(p for s in seeds if (p := grow(s, size, rest, graph, xy)) is not None)
        parts.append(part)
        rest -= set(part)
    parts.append(sorted(rest))
    return parts


def grow(
    seed: int, size: int, rest: set[int], graph: list[set[int]], xy: np.ndarray
) -> list[int] | None:
    part = [seed]
    if not connected(rest - {seed}, graph):
        return None
    while len(part) < size:
        centre = xy[part].mean(axis=0)
        frontier = sorted(
            set().union(*(graph[n] & rest for n in part)) - set(part),
            key=lambda n: float(np.hypot(*(xy[n] - centre))),
        )
        nxt = next((n for n in frontier if connected(rest - set(part) - {n}, graph)), None)
        if nxt is None:
            return None
        part.append(nxt)
    return part


def north_to_south(indices: Iterable[int], xy: np.ndarray) -> list[int]:
    return sorted(indices, key=lambda n: (-round(float(xy[n][1]), -2), float(xy[n][0])))


# -- output --------------------------------------------------------------------------------------


def ring(proj: LocalProjection, polygon: Geometry) -> Flow:
    """Exterior of a metric polygon as rounded lon/lat pairs, counter-clockwise, not closed."""
    coords = np.round(shapely.get_coordinates(proj.unproject(polygon.exterior)), 6)[:-1]
    # Rounding can merge two vertices a few centimetres apart; both neighbours merge them alike.
    keep = np.any(coords != np.roll(coords, 1, axis=0), axis=1)
    coords = coords[keep]
    if not shapely.LinearRing(coords).is_ccw:
        coords = coords[::-1]
    return Flow(Flow([float(x), float(y)]) for x, y in coords)


def at(proj: LocalProjection, x: float, y: float) -> FlowMap:
    lon, lat = proj.to_lonlat(x, y)
    return FlowMap(lon=round(lon, 6), lat=round(lat, 6))


def heading(src: Any, dst: Any) -> float:
    """Compass bearing (0 = north, clockwise) from one metric point to another."""
    return round(math.degrees(math.atan2(dst.x - src.x, dst.y - src.y)) % 360, 1)


def rectangle(cx: float, cy: float, w: float, h: float, angle: float) -> Geometry:
    return affinity.rotate(shapely.box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), angle)


def place(
    rng: np.random.Generator, inside: Geometry, away: list[Geometry], w: float, h: float, gap: float
) -> Geometry:
    """A rotated rectangle wholly inside ``inside`` and at least ``gap`` from each of ``away``."""
    for _ in range(10_000):
        (cx, cy), angle = sample_in(rng, inside, 1)[0], rng.uniform(0, 180)
        rect = rectangle(cx, cy, w, h, angle)
        if inside.contains(rect) and all(rect.distance(a) >= gap for a in away):
            return rect
    raise RuntimeError("no room for a zone")


SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董潘袁蔡蒋余杜叶程"
GIVEN_NAMES = (
    "伟 芳 敏 静 磊 军 勇 艳 杰 涛 明 超 秀英 志强 海燕 建国 丽娟 晓东 婷 浩然 思雨 子涵 俊杰 文静 "
    "国华 建华 玉兰 德明 春燕 永红 立新 雪梅 桂芬 长林 小平 光荣 红霞 家豪 欣怡 明辉 金凤 正刚"
).split()


def worker_names(rng: np.random.Generator, n: int) -> list[str]:
    names: list[str] = []
    while len(names) < n:
        name = str(rng.choice(list(SURNAMES))) + str(rng.choice(GIVEN_NAMES))
        if name not in names:
            names.append(name)
    return names


def tessellate() -> tuple[Geometry, np.ndarray]:
    """The street boundary and its micro-grids, the first URBAN_MICRO of them urban."""
    rng = np.random.default_rng(SEED)
    street = scaled_to_area(blob(rng, 0, 0, 0.3), AREA_M2)
    urban_shape = blob(rng, 0.55 * 4000 * math.cos(0.7), 0.55 * 4000 * math.sin(0.7), 0.25)
    urban = scaled_to_area(urban_shape, BUILT_UP_M2, clip=street)
    rural = street.difference(urban)
    assert urban.geom_type == rural.geom_type == "Polygon"  # noqa: S101
    parts = []
    for region, n in ((urban, URBAN_MICRO), (rural, RURAL_MICRO)):
        points = relax(sample_in(rng, region, n), region)
        parts.append(single_polygons(voronoi_cells(points, region)))
    # The two diagrams meet along the urban edge at different vertices; cleaning the coverage
    # puts every vertex on both sides, so neighbours share their edges exactly.
    cells = shapely.coverage_clean(np.concatenate(parts))
    assert all(c.geom_type == "Polygon" for c in cells)  # noqa: S101
    return street, cells


def build() -> dict[str, Any]:
    rng = np.random.default_rng([SEED, 1])
    proj = LocalProjection(CENTER)
    street, cells = tessellate()
    xy = shapely.get_coordinates(shapely.point_on_surface(cells))
    graph = adjacency(cells)

    def grid_sizes(count: int, total: int) -> list[int]:
        base, extra = divmod(total, count)
        sizes = [base + 1] * extra + [base] * (count - extra)
        return [int(s) for s in rng.permutation(sizes)]

    urban_sizes = grid_sizes(sum(g for _, _, g in URBAN), URBAN_MICRO)
    per_community, start = [], 0
    for _, _, n_grids in URBAN:
        per_community.append(urban_sizes[start : start + n_grids])
        start += n_grids
    urban_parts = split(set(range(URBAN_MICRO)), [sum(s) for s in per_community], graph, xy)
    layout = [
        (code, name, "urban", split(set(part), sizes, graph, xy))
        for (code, name, _), part, sizes in zip(URBAN, urban_parts, per_community, strict=True)
    ]
    rural_grids = split(
        set(range(URBAN_MICRO, len(cells))), grid_sizes(RURAL[2], RURAL_MICRO), graph, xy
    )
    layout.append((RURAL[0], RURAL[1], "rural", rural_grids))

    names = iter(worker_names(rng, sum(len(grids) for *_, grids in layout)))
    communities: list[dict[str, Any]] = []
    grids: list[dict[str, Any]] = []
    workers: list[dict[str, str]] = []
    for code, name, kind, parts in layout:
        community = STREET_CODE + code
        communities.append({"code": community, "name": name, "kind": kind})
        for g, part in enumerate(parts, start=1):
            worker = f"W{len(workers) + 1:02d}"
            workers.append({"id": worker, "name": next(names)})
            grid_name = f"{name}第{g:02d}网格"
            micro = [
                FlowMap(
                    code=f"{community}{g:02d}{m:02d}",
                    name=f"{grid_name}{m}号微网格",
                    polygon=ring(proj, cells[n]),
                )
                for m, n in enumerate(north_to_south(part, xy), start=1)
            ]
            grids.append(
                dict(code=f"{community}{g:02d}", name=grid_name, worker=worker, micro_grids=micro)
            )

    urban, rural = (shapely.union_all(c) for c in (cells[:URBAN_MICRO], cells[URBAN_MICRO:]))
    departments = [dict(id=i, name=n, handles=Flow(h.split())) for i, n, h in DEPARTMENTS]
    return {
        "street": {
            "name": "示例街道",
            "code": STREET_CODE,
            "timezone": "Asia/Shanghai",
            "area_km2": AREA_M2 / 1e6,
            "built_up_km2": BUILT_UP_M2 / 1e6,
        },
        "communities": communities,
        "grids": grids,
        "workers": workers,
        "departments": departments,
        **devices_and_zones(rng, proj, street, urban, rural),
        "escalation": {"accept_minutes": {"yellow": 30, "orange": 15, "red": 5}},
    }


DEPARTMENTS = (  # id, name, incident kinds routed to it
    ("emergency", "街道应急管理办公室", "forest_fire flood"),
    ("natural_resources", "自然资源和规划所", "illegal_construction"),
    ("ecology", "生态环境分局", "straw_burning"),
    ("water", "水务站", "flood"),
    ("enforcement", "综合行政执法大队", "illegal_construction straw_burning"),
    ("traffic_police", "交警大队", "traffic_safety"),
    ("ops", "指挥中心运维组", "device_fault"),
)

# metric: (unit, plausible min, max, yellow, orange, red, hysteresis)
METRICS = {
    "water_level_m": ("m", 0, 15, 2.5, 3.0, 3.5, 0.1),
    "rainfall_mm_h": ("mm/h", 0, 300, 20, 30, 50, 5),
    "smoke_obscuration_pct": ("%/m", 0, 100, 2, 4, 8, 0.5),
    "temperature_c": ("°C", -40, 85, 45, 55, 65, 2),
    "pm25_ugm3": ("µg/m³", 0, 1000, 115, 150, 250, 10),
}


def sensor(proj: LocalProjection, id_: str, kind: str, where: Any, metric: str) -> dict[str, Any]:
    unit, lo, hi, yellow, orange, red, hysteresis = METRICS[metric]
    return {
        "id": id_,
        "kind": kind,
        "location": at(proj, where.x, where.y),
        "metrics": {metric: FlowMap(unit=unit, min=lo, max=hi)},
        "rules": [
            FlowMap(metric=metric, yellow=yellow, orange=orange, red=red, hysteresis=hysteresis)
        ],
    }


def devices_and_zones(
    rng: np.random.Generator,
    proj: LocalProjection,
    street: Geometry,
    urban: Geometry,
    rural: Geometry,
) -> dict[str, Any]:
    town = urban.point_on_surface()
    far = max((shapely.Point(c) for c in rural.exterior.coords), key=town.distance)
    # The forest covers the hills at the far end of the rural community, away from the town.
    hills = shapely.Point(town.x + 0.7 * (far.x - town.x), town.y + 0.7 * (far.y - town.y))
    hill_shape = affinity.scale(blob(rng, hills.x, hills.y, 0.35), 2000, 2000, origin=hills)
    # Simplified (the street's edge is finely drawn) and kept 20 m inside it, so no corner is cut
    # outside the street.
    forest = hill_shape.difference(urban.buffer(500)).simplify(20).intersection(rural.buffer(-20))
    forest = max(shapely.get_parts(forest.simplify(20)), key=lambda p: p.area)
    inner_rural = rural.buffer(-150)
    farms: list[Geometry] = []
    for _ in range(3):
        farms.append(place(rng, inner_rural, [forest, urban, *farms], 700, 450, 300))
    inner_urban = urban.buffer(-100)
    school = place(rng, inner_urban, [], 240, 180, 0)
    housing = [place(rng, inner_urban, [school], 600, 450, 150)]
    housing.append(place(rng, inner_urban, [school, *housing], 500, 400, 150))
    # New-city construction happens at the edge of the built-up area.
    edge = urban.boundary.intersection(rural.boundary).interpolate(0.5, normalized=True)
    works = rectangle(edge.x, edge.y, 900, 600, float(rng.uniform(0, 180))).intersection(street)

    zones = [("团结林区", "forest", forest)]
    zones += [(f"团结社区农田（{'一二三'[i]}）", "farmland", f) for i, f in enumerate(farms)]
    zones += [("新城建设监控区", "construction_watch", works), ("民族中学", "school", school)]
    zones += [(f"老城密集住宅区（{'一二'[i]}）", "dense_housing", h) for i, h in enumerate(housing)]

    # Gauges along the stream that runs from the hills down through the town and out.
    def along(fraction: float) -> Any:
        p = shapely.Point(
            hills.x + fraction * (town.x - hills.x), hills.y + fraction * (town.y - hills.y)
        )
        return p if street.buffer(-200).contains(p) else nearest_points(street.buffer(-200), p)[0]

    sensors = [
        sensor(proj, f"WL-00{i + 1}", "water_level", along(f), "water_level_m")
        for i, f in enumerate((0.35, 0.9, 1.3))
    ]
    sensors += [
        sensor(proj, "RG-001", "rain_gauge", town, "rainfall_mm_h"),
        sensor(proj, "RG-002", "rain_gauge", along(0.2), "rainfall_mm_h"),
        sensor(proj, "SM-001", "smoke", forest.point_on_surface(), "smoke_obscuration_pct"),
        sensor(proj, "TMP-001", "temperature", nearest_points(forest, hills)[0], "temperature_c"),
        sensor(proj, "PM-001", "pm25", farms[0].centroid, "pm25_ugm3"),
        sensor(proj, "PM-002", "pm25", farms[1].centroid, "pm25_ugm3"),
    ]

    cameras = []
    targets = [
        ("新城建设工地", works),
        ("民族中学校门", school),
        ("老城住宅区", housing[0]),
        ("团结农田一", farms[0]),
        ("团结农田二", farms[1]),
    ]
    for i, (name, target) in enumerate(targets, start=1):
        aim = target.centroid
        spot = affinity.rotate(
            shapely.Point(aim.x, aim.y - 350), float(rng.uniform(0, 360)), origin=aim
        )
        cameras.append(
            {
                "id": f"CAM-00{i}",
                "name": f"雪亮工程·{name}",
                "url": f"{RTSP}/cam-00{i}",
                "location": at(proj, spot.x, spot.y),
                "height_m": 12.0,
                "heading_deg": heading(spot, aim),
                "fov_deg": 70.0,
            }
        )
    # The farm cameras look out over their fields from the edge: the ground in view is farmland,
    # so a fire they see is straw burning wherever its ground fix lands.
    for camera, field_name in (
        (cameras[3], "团结社区农田（一）"),
        (cameras[4], "团结社区农田（二）"),
    ):
        camera["vision"] = {
            "horizon": FARM_HORIZON,
            "zones": [
                FlowMap(kind="farmland", name=field_name,
                        polygon=Flow(Flow(p) for p in FARM_IMAGE_ZONE))
            ],
        }  # fmt: skip

    # Two towers on the forest's long axis, far enough apart for their bearings to triangulate.
    box = forest.minimum_rotated_rectangle.exterior.coords
    sides = [shapely.LineString([box[i], box[i + 1]]) for i in range(4)]
    long_side = max(sides, key=lambda s: s.length)
    opposite = sides[(sides.index(long_side) + 2) % 4]
    towers, spots = [], []
    for i, t in enumerate((0.25, 0.75), start=1):
        ends = (
            long_side.interpolate(t, normalized=True),
            opposite.interpolate(1 - t, normalized=True),
        )
        spot = shapely.LineString(ends).interpolate(0.5, normalized=True)
        spot = spot if forest.contains(spot) else nearest_points(forest.buffer(-100), spot)[0]
        start = heading(spot, forest.centroid)
        # Six wide presets sweep the full circle; a seventh zooms in towards the forest's heart.
        pans = [round((start + 60 * k) % 360, 1) for k in range(6)]
        presets = [
            FlowMap(id=k, pan_deg=p, tilt_deg=-3.0, zoom=1.0, fov_deg=64.0)
            for k, p in enumerate(pans)
        ]
        presets.append(FlowMap(id=6, pan_deg=start, tilt_deg=-5.0, zoom=4.0, fov_deg=16.0))
        spots.append((spot, pans))
        towers.append(
            {
                "id": f"WT-0{i}",
                "name": f"团结林区{'一二'[i - 1]}号瞭望塔",
                "location": at(proj, spot.x, spot.y),
                "height_m": 35.0,
                "visible_url": f"{RTSP}/wt-0{i}/visible",
                "thermal_url": f"{RTSP}/wt-0{i}/thermal",
                "ptz_url": f"{PTZ}/WT-0{i}/preset/{{preset}}",
                "presets": presets,
            }
        )

    # The first tower's third preset watches a plot in the forest for illegal building: the
    # image zone names the map zone, which lies where that preset's bearing meets it.
    spot, pans = spots[0]
    plot_name = "团结林区违建监控点"
    aim = math.radians(pans[WATCH_PRESET])
    plot = rectangle(
        spot.x + WATCH_RANGE_M * math.sin(aim), spot.y + WATCH_RANGE_M * math.cos(aim), 300, 300, 0
    )
    zones.append((plot_name, "construction_watch", plot))
    towers[0]["vision"] = {
        "zones": [
            FlowMap(kind="construction_watch", preset=WATCH_PRESET, name=plot_name,
                    polygon=Flow(Flow(p) for p in WATCH_IMAGE_ZONE))
        ],
        "detectors": {"construction_change": FlowMap(days=3)},
    }  # fmt: skip

    # An urban 高空瞭望 on a tall building in the town, looking out over the new-city works for
    # illegal building (and straw burning beyond): four presets, the second across the works, its
    # image zone naming the works' map zone, which its bearing crosses.
    rooftop = nearest_points(urban.buffer(-ROOFTOP_INSET_M), works.centroid)[0]
    aim = heading(rooftop, works.centroid)
    towers.append(
        {
            "id": "WT-03",
            "name": "新城高空瞭望点",
            "location": at(proj, rooftop.x, rooftop.y),
            "height_m": 80.0,
            "visible_url": f"{RTSP}/wt-03/visible",
            "thermal_url": f"{RTSP}/wt-03/thermal",
            "ptz_url": f"{PTZ}/WT-03/preset/{{preset}}",
            "presets": [
                FlowMap(id=k, pan_deg=round((aim + 90 * (k - WORKS_PRESET)) % 360, 1),
                        tilt_deg=-4.0, zoom=1.0, fov_deg=64.0)
                for k in range(4)
            ],
            "vision": {
                "zones": [
                    FlowMap(kind="construction_watch", preset=WORKS_PRESET, name="新城建设监控区",
                            polygon=Flow(Flow(p) for p in WATCH_IMAGE_ZONE))
                ],
                "detectors": {"construction_change": FlowMap(days=3)},
            },
        }
    )  # fmt: skip

    # A road camera at the town's ramp, beside the rain gauge: a stalled car or water in a lane
    # is a traffic-safety case, the gauge corroborates water.
    ramp = shapely.Point(town.x + 250, town.y + 150)
    cameras.append(
        {
            "id": "CAM-006",
            "name": "雪亮工程·正舟路苏家坝段匝道口",
            "url": f"{RTSP}/cam-006",
            "location": at(proj, ramp.x, ramp.y),
            "height_m": 10.0,
            "heading_deg": 60.0,
            "fov_deg": 60.0,
            "tilt_deg": -15.0,
            "vision": {
                "zones": [
                    FlowMap(kind="road", name="正舟路车道",
                            polygon=Flow(Flow(p) for p in ROAD_IMAGE_ZONE))
                ],
                "detectors": {"fire_smoke_model": None, "traffic": FlowMap(stall_s=60.0)},
            },
        }
    )  # fmt: skip

    return {
        "sensors": sensors,
        "cameras": cameras,
        "watchtowers": towers,
        "zones": [FlowMap(name=n, kind=k, polygon=ring(proj, p)) for n, k, p in zones],
    }


WATCH_PRESET = 2  # of the first tower
WATCH_RANGE_M = 900.0
WORKS_PRESET = 1  # of the rooftop tower, across the new-city works
ROOFTOP_INSET_M = 150.0  # the rooftop stands this far inside the built-up area
# Where the plot lies in that preset's image (simulators.camera_sites draws it there), and the
# lanes of the road camera (simulators.road_scenes.road_zone), in fractions of width and height.
WATCH_IMAGE_ZONE = ((0.3, 0.4), (0.7, 0.4), (0.7, 0.85), (0.3, 0.85))
ROAD_IMAGE_ZONE = ((0.0, 0.55), (1.0, 0.55), (1.0, 0.85), (0.0, 0.85))
FARM_HORIZON = 0.32  # simulators.camera_scenes.HORIZON
FARM_IMAGE_ZONE = ((0, FARM_HORIZON), (1, FARM_HORIZON), (1, 1), (0, 1))


# -- checks --------------------------------------------------------------------------------------


def verify(site: Site) -> list[str]:
    """What the file promises: counts, areas, an exact tiling, contiguous grids and communities."""
    index = GridIndex(site, LocalProjection(CENTER))
    micro = np.array([shapely.Polygon(m.polygon) for g in site.grids for m in g.micro_grids])
    metric = index.projection.project(micro)
    total = shapely.union_all(metric)
    urban = sum(
        index.projection.project(index.community_polygon(c.code)).area
        for c in site.communities
        if c.kind == "urban"
    )
    problems = []
    counts = (len(site.communities), len(site.grids), len(micro), len(site.workers))
    if counts != (5, 47, 233, 47):
        problems.append(f"counts {counts}")
    if not shapely.coverage_is_valid(micro) or total.geom_type != "Polygon" or total.interiors:
        problems.append("micro-grids do not tile the street")
    if abs(total.area / AREA_M2 - 1) > 0.02 or abs(urban / BUILT_UP_M2 - 1) > 0.02:
        problems.append(f"areas {total.area / 1e6:.2f} km², built-up {urban / 1e6:.2f} km²")
    for code in [g.code for g in site.grids] + [c.code for c in site.communities]:
        shape = index.grid_polygon(code) if len(code) == 14 else index.community_polygon(code)
        if shape.geom_type != "Polygon":
            problems.append(f"{code} is not contiguous")
    # Zones may follow the street's edge; rounding to 1e-6° moves such a vertex up to ~5 cm.
    street = index.projection.unproject(total.buffer(0.1))
    for device_id, location in device_locations(site):
        if not index.locate(location).inside:
            problems.append(f"{device_id} is outside the street")
    for zone in site.zones:
        if not street.contains(shapely.Polygon(zone.polygon)):
            problems.append(f"zone {zone.name} is not inside the street")
    return problems


def device_locations(site: Site) -> list[tuple[str, Point]]:
    located = [(s.id, s.location) for s in site.sensors]
    located += [(c.id, c.location) for c in site.cameras]
    return located + [(t.id, t.location) for t in site.watchtowers]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--check", action="store_true", help="fail if the file is out of date")
    args = parser.parse_args()
    text = HEADER + yaml.dump(
        build(), Dumper=_Dumper, allow_unicode=True, sort_keys=False, width=1 << 20
    )
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
        print("up to date" if current == text else f"{args.out} is out of date")
        return 0 if current == text else 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    problems = verify(load_site(args.out))
    for problem in problems:
        print("problem:", problem, file=sys.stderr)
    print(f"wrote {args.out} ({len(text.encode()) / 1024:.0f} KiB)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
