"""Every dashboard of gridwatch, written out as Grafana provisioning files.

``gridwatch dashboards build`` writes ``dashboards/json/*.json`` (loaded by the file provider in
``dashboards/provisioning/dashboards/``) and ``dashboards/geo/grids.geojson`` (the grid polygons
the command-center map draws). Both are committed; a test checks they equal what this module
generates from the bundled sample site, so the files never drift from the code.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import shapely

from dashboards.cameras import cameras
from dashboards.command_center import command_center, incident
from dashboards.governance import grid_governance
from dashboards.grafana import to_json
from dashboards.operations import pipeline, sensors
from gridwatch.geo import GridIndex
from gridwatch.site import Site

HERE = Path(__file__).parent
JSON_DIR = HERE / "json"
GEO_DIR = HERE / "geo"
GRIDS_FILE = "grids.geojson"
_COORD_DECIMALS = 6  # ~0.1 m: finer than any grid boundary is surveyed

BUILDERS: dict[str, Callable[[Site], Any]] = {
    "command-center.json": command_center,
    "incident.json": lambda _site: incident(),
    "grid-governance.json": grid_governance,
    "sensors.json": sensors,
    "cameras.json": cameras,
    "pipeline.json": lambda _site: pipeline(),
}


def dashboards(site: Site, console_url: str | None = None) -> dict[str, dict[str, Any]]:
    """File name → provisioning JSON of each dashboard; ``console_url`` is where the incident
    dashboard's links open the console (the committed files use ``CONSOLE_URL``)."""
    documents = {name: to_json(build(site)) for name, build in BUILDERS.items()}
    if console_url is not None:
        documents["incident.json"] = to_json(incident(console_url))
    return documents


def grids_geojson(site: Site) -> dict[str, Any]:
    index = GridIndex(site)
    community_names = {c.code: c.name for c in site.communities}
    features = []
    for grid in site.grids:
        shape = shapely.normalize(
            shapely.set_precision(index.grid_polygon(grid.code), 10**-_COORD_DECIMALS)
        )
        features.append(
            {
                "type": "Feature",
                "id": grid.code,
                "properties": {
                    "code": grid.code,
                    "name": grid.name,
                    "community": community_names.get(grid.community_code, grid.community_code),
                    "worker": grid.worker,
                },
                "geometry": json.loads(shapely.to_geojson(shape)),
            }
        )
    return {"type": "FeatureCollection", "features": features}


def serialise(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def files(site: Site, json_dir: Path = JSON_DIR, geo_dir: Path = GEO_DIR) -> dict[Path, str]:
    """Every generated file with its content."""
    out = {json_dir / name: serialise(doc) for name, doc in dashboards(site).items()}
    out[geo_dir / GRIDS_FILE] = serialise(grids_geojson(site))
    return out


def write(site: Site, json_dir: Path = JSON_DIR, geo_dir: Path = GEO_DIR) -> list[Path]:
    """Write the files; dashboards no longer generated are removed from ``json_dir``."""
    generated = files(site, json_dir, geo_dir)
    json_dir.mkdir(parents=True, exist_ok=True)
    geo_dir.mkdir(parents=True, exist_ok=True)
    for stale in set(json_dir.glob("*.json")) - set(generated):
        stale.unlink()
    for path, text in generated.items():
        path.write_text(text, encoding="utf-8")
    return sorted(generated)
