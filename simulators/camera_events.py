"""A scenario's camera events as the simulated cameras play them (``camera_feeds.Cue``).

Each fire is drawn where its place really shows in the view that sees it: a tower's sighting at
the preset whose view holds the fire's bearing (unless the scenario names one), at the pixel
column of that bearing, so the worker's bearing, and two towers' triangulation, land on the
place; a fixed camera's sighting of a sensor's fire at the sensor's image point. A lost stream
is a cue of its own.
"""

from __future__ import annotations

from gridwatch.camera_geometry import bearing_to, image_point, off_axis_deg
from gridwatch.events import Point
from gridwatch.scenario import ForestFire, Scenario, SensorRise, StreamLost, place_point
from gridwatch.site import Site
from gridwatch.site_cameras import Preset, Watchtower
from simulators.camera_feeds import LOST, Cue


def preset_facing(tower: Watchtower, target: Point) -> Preset:
    """The widest preset of ``tower`` whose view holds ``target``'s bearing (the nearest to its
    centre among equals): the one a patrol sees it from."""
    bearing = bearing_to(tower.location, target)
    seeing = [p for p in tower.presets if abs(off_axis_deg(p.pan_deg, bearing)) < p.fov_deg / 2]
    if not seeing:
        raise ValueError(f"no preset of {tower.id} looks towards bearing {bearing:.1f}°")
    return min(seeing, key=lambda p: (-p.fov_deg, abs(off_axis_deg(p.pan_deg, bearing))))


def scenario_cues(site: Site, spec: Scenario, size: tuple[int, int]) -> list[Cue]:
    """Every camera event of ``spec`` as a cue, for frames of ``size`` (width, height)."""
    shape = (size[1], size[0])
    towers = {t.id: t for t in site.watchtowers}
    cameras = {c.id: c for c in site.cameras}
    cues = []
    for event in spec.events:
        if isinstance(event, StreamLost):
            cues.append(Cue(at_s=event.at_s, device=event.camera, scene=LOST))
            continue
        where = place_point(site, event.place)
        if isinstance(event, ForestFire):
            for sighting in event.towers:
                tower = towers[sighting.tower]
                preset = (
                    preset_facing(tower, where)
                    if sighting.preset is None
                    else next(p for p in tower.presets if p.id == sighting.preset)
                )
                point = image_point(
                    tower.location, tower.height_m, preset.pan_deg, preset.tilt_deg,
                    preset.fov_deg, where, shape,
                )  # fmt: skip
                if point is None:
                    raise ValueError(f"{event.name}: not in view of {tower.id} at {preset.id}")
                cues.append(Cue(sighting.at_s, tower.id, sighting.scene, point, preset.id))
        elif isinstance(event, SensorRise):
            for seen in event.cameras:
                camera = cameras[seen.camera]
                point = image_point(
                    camera.location, camera.height_m, camera.heading_deg, camera.tilt_deg,
                    camera.fov_deg, where, shape,
                )  # fmt: skip
                if point is None:
                    raise ValueError(f"{event.name}: not in view of camera {camera.id}")
                cues.append(Cue(seen.at_s, camera.id, seen.scene, point))
    return sorted(cues, key=lambda c: c.at_s)
