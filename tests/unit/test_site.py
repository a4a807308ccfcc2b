"""The bundled sample site (the seed street) and the site loader's error messages."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely
import yaml

from gridwatch.errors import ConfigError
from gridwatch.events import IncidentKind, Level, Point
from gridwatch.geo import GridIndex, ray_through
from gridwatch.settings import SAMPLE_SITE
from gridwatch.site import Site, load_site


@pytest.fixture(scope="module")
def micro_m(site: Site, index: GridIndex) -> np.ndarray:
    """Every micro-grid polygon in metres, in file order."""
    rings = [m.polygon for g in site.grids for m in g.micro_grids]
    polygons: np.ndarray = index.projection.project(np.array([shapely.Polygon(r) for r in rings]))
    return polygons


def km2(index: GridIndex, lonlat_geometry: Any) -> float:
    return float(index.projection.project(lonlat_geometry).area) / 1e6


def test_sample_has_the_seed_streets_counts(site: Site) -> None:
    micro = [m for g in site.grids for m in g.micro_grids]
    assert (len(site.communities), len(site.grids), len(micro), len(site.workers)) == (
        5,
        47,
        233,
        47,
    )
    kinds = sorted(c.kind for c in site.communities)
    assert kinds == ["rural", "urban", "urban", "urban", "urban"]
    assert [c.name for c in site.communities if c.kind == "rural"] == ["团结社区"]


def test_one_worker_per_grid(site: Site) -> None:
    assert sorted(g.worker for g in site.grids) == sorted(w.id for w in site.workers)
    assert len({w.name for w in site.workers}) == 47


def test_codes_have_the_right_length_and_prefix(site: Site) -> None:
    street = site.street.code
    assert len(street) == 9 and street.isdigit()
    communities = {c.code for c in site.communities}
    assert all(len(c) == 12 and c.startswith(street) for c in communities)
    for grid in site.grids:
        assert len(grid.code) == 14 and grid.code[:12] in communities
        for micro in grid.micro_grids:
            assert len(micro.code) == 16 and micro.code[:14] == grid.code


def test_areas_match_the_street(site: Site, index: GridIndex, micro_m: np.ndarray) -> None:
    total = shapely.union_all(micro_m).area / 1e6
    assert abs(total - 50) <= 1.0
    assert abs(total - site.street.area_km2) <= 0.02 * site.street.area_km2
    urban = sum(km2(index, index.community_polygon(c.code)) for c in site.communities[:4])
    assert [c.kind for c in site.communities[:4]] == ["urban"] * 4
    assert abs(urban - site.street.built_up_km2) <= 0.02 * site.street.built_up_km2
    assert abs(urban - 15) <= 0.3


def test_rural_community_has_fewer_larger_grids(site: Site, index: GridIndex) -> None:
    (rural,) = [c.code for c in site.communities if c.kind == "rural"]
    per_community: dict[str, list[float]] = {}
    for grid in site.grids:
        per_community.setdefault(grid.community_code, []).append(
            km2(index, index.grid_polygon(grid.code))
        )
    rural_grids = per_community.pop(rural)
    assert km2(index, index.community_polygon(rural)) > 25  # most of the street
    assert all(len(rural_grids) < len(urban) for urban in per_community.values())
    smallest_rural = min(rural_grids)
    assert all(smallest_rural > max(urban) for urban in per_community.values())


def test_micro_grids_tile_the_street(micro_m: np.ndarray) -> None:
    union = shapely.union_all(micro_m)
    # One polygon without holes: no gaps inside the street.
    assert union.geom_type == "Polygon" and len(union.interiors) == 0
    assert all(p.is_valid and p.geom_type == "Polygon" for p in micro_m)
    # Areas add up: no overlaps.
    assert abs(sum(p.area for p in micro_m) - union.area) <= 1e-6 * union.area
    left, right = shapely.STRtree(micro_m).query(micro_m, predicate="intersects")
    pairs = left < right
    overlap = shapely.area(shapely.intersection(micro_m[left[pairs]], micro_m[right[pairs]]))
    assert overlap.max() < 1e-3  # m²: neighbours share edges, nothing more
    assert pairs.sum() >= 233  # and they do touch: a tiling, not scattered islands


def test_grids_and_communities_are_contiguous(site: Site, index: GridIndex) -> None:
    for grid in site.grids:
        assert index.grid_polygon(grid.code).geom_type == "Polygon", grid.code
    for community in site.communities:
        assert index.community_polygon(community.code).geom_type == "Polygon", community.code


def test_every_incident_kind_has_a_department(site: Site) -> None:
    for kind in IncidentKind:
        assert site.departments_for(kind), kind
    assert "emergency" in site.departments_for(IncidentKind.FOREST_FIRE)
    assert set(site.departments_for(IncidentKind.STRAW_BURNING)) >= {"ecology", "enforcement"}


def test_water_level_gauges_and_their_thresholds(site: Site) -> None:
    gauges = [s for s in site.sensors if s.kind == "water_level"]
    assert [g.id for g in gauges] == ["WL-001", "WL-002", "WL-003"]
    for gauge in gauges:
        spec = gauge.metrics["water_level_m"]
        assert (spec.unit, spec.min, spec.max) == ("m", 0, 15)
        (rule,) = gauge.rules
        assert (rule.yellow, rule.orange, rule.red) == (2.5, 3.0, 3.5)
        assert rule.level_of(3.2) is Level.ORANGE and rule.level_of(2.0) is None
    metrics = {m for s in site.sensors for m in s.metrics}
    assert metrics == {
        "water_level_m",
        "rainfall_mm_h",
        "smoke_obscuration_pct",
        "temperature_c",
        "pm25_ugm3",
    }


def test_devices_and_zones_sit_where_they_belong(site: Site, index: GridIndex) -> None:
    located = [(s.id, s.location) for s in site.sensors]
    located += [(c.id, c.location) for c in site.cameras]
    located += [(t.id, t.location) for t in site.watchtowers]
    assert len(located) == len(list(site.device_ids()))
    for device_id, location in located:
        assert index.locate(location).inside, device_id
    rural = {c.code for c in site.communities if c.kind == "rural"}
    zones: dict[str, list[Any]] = {}
    for zone in site.zones:
        zones.setdefault(zone.kind, []).append(shapely.Polygon(zone.polygon))
    assert set(zones) == {"forest", "farmland", "construction_watch", "school", "dense_housing"}
    (forest,) = zones["forest"]
    forest_towers = [t for t in site.watchtowers if t.id in ("WT-01", "WT-02")]
    assert len(forest_towers) == 2
    for tower in forest_towers:
        assert forest.contains(shapely.Point(tower.location.lon, tower.location.lat))
        assert index.locate(tower.location).community_code in rural
        assert len(tower.presets) >= 3
    # the rooftop tower in the town watches the new-city works across one of its presets
    (rooftop,) = (t for t in site.watchtowers if t not in forest_towers)
    assert index.locate(rooftop.location).community_code not in rural
    (watch,) = (z for z in rooftop.vision.zones if z.kind == "construction_watch")
    works = next(shapely.Polygon(z.polygon) for z in site.zones if z.name == watch.name)
    preset = next(p for p in rooftop.presets if p.id == watch.preset)
    assert ray_through(rooftop.location, preset.pan_deg, works) is not None
    for kind, expect_rural in (("farmland", True), ("school", False), ("dense_housing", False)):
        for zone in zones[kind]:
            spot = zone.representative_point()
            match = index.locate(Point(lon=spot.x, lat=spot.y))
            assert (match.community_code in rural) is expect_rural, kind


# -- loader errors ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def raw_sample() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(SAMPLE_SITE.read_text(encoding="utf-8"))
    return loaded


def _write(tmp_path: Path, raw: dict[str, Any]) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


def _unknown_key(raw: dict[str, Any]) -> None:
    raw["grids"][3]["micro_grids"][0]["colour"] = "red"


def _short_code(raw: dict[str, Any]) -> None:
    micro = raw["grids"][3]["micro_grids"][0]
    micro["code"] = micro["code"][:-1]


def _missing_community(raw: dict[str, Any]) -> None:
    grid = raw["grids"][3]
    grid["code"] = "52019900300901"
    for micro in grid["micro_grids"]:
        micro["code"] = grid["code"] + micro["code"][-2:]


def _bow_tie(raw: dict[str, Any]) -> None:
    square = [[106.6, 26.6], [106.61, 26.61], [106.61, 26.6], [106.6, 26.61]]
    raw["grids"][3]["micro_grids"][0]["polygon"] = square


def _duplicate_device(raw: dict[str, Any]) -> None:
    raw["sensors"][2]["id"] = raw["sensors"][0]["id"]


def _ground_mask(raw: dict[str, Any]) -> None:
    raw["zones"][0]["kind"] = "mask"


@pytest.mark.parametrize(
    ("change", "where", "problem"),
    [
        (_ground_mask, "zones[0].kind", "a mask is a camera's image zone"),
        (_unknown_key, "grids[3].micro_grids[0].colour", "Extra inputs are not permitted"),
        (_short_code, "grids[3].micro_grids[0].code", "should match pattern"),
        (_missing_community, "grids[3].code", "no community 520199003009"),
        (_bow_tie, "grids[3].micro_grids[0].polygon", "not a simple polygon"),
        (_duplicate_device, "sensors[2].id", "duplicate device id 'WL-001'"),
    ],
)
def test_config_error_names_file_path_and_problem(
    tmp_path: Path, raw_sample: dict[str, Any], change: Any, where: str, problem: str
) -> None:
    raw = copy.deepcopy(raw_sample)
    change(raw)
    path = _write(tmp_path, raw)
    with pytest.raises(ConfigError) as caught:
        load_site(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: 1 problem(s)")
    (line,) = [ln for ln in message.splitlines() if ln.strip().startswith(f"{where}:")]
    assert problem in line


def test_config_error_for_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("street:\n  name: x\n  code: [1, 2\ngrids: []\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_site(path)
    message = str(caught.value)
    # The flow sequence opened on line 3 is still open where line 4 starts a new key.
    assert message.startswith(f"{path}: line 4, column 6: not valid YAML: ")
    assert "line 3, column 9" in message


def test_sample_reloads_unchanged_through_yaml(tmp_path: Path, raw_sample: dict[str, Any]) -> None:
    # The error tests above edit a round-tripped copy; an unedited copy must load cleanly,
    # or they would pass for the wrong reason.
    assert load_site(_write(tmp_path, copy.deepcopy(raw_sample))) == load_site(SAMPLE_SITE)


def test_a_key_given_twice_is_an_error_not_a_silent_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "twice.yaml"
    text = SAMPLE_SITE.read_text(encoding="utf-8")
    path.write_text(text + "\nsensors: []\n", encoding="utf-8")
    with pytest.raises(
        ConfigError, match=r"twice\.yaml: line \d+, column 1: .*duplicate key 'sensors'"
    ):
        load_site(path)


def test_a_json_site_file_is_the_same_site(tmp_path: Path, raw_sample: dict[str, Any]) -> None:
    path = tmp_path / "site.json"
    path.write_text(json.dumps(raw_sample), encoding="utf-8")
    assert load_site(path) == load_site(SAMPLE_SITE)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"street": {"name": "a", "name": "b"}}', "duplicate key 'name'"),
        ('{"street": ', "line 1, column 12: not valid JSON"),
    ],
)
def test_a_json_site_file_names_its_problem(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "site.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_site(path)
    assert str(caught.value).startswith(f"{path}: ") and problem in str(caught.value)
