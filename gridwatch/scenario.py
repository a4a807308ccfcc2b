"""Scenario files: the events a run plays (time, place, kind) and their ground truth.

A scenario is YAML validated strictly, like a site file. Each event names what the simulators
do and what the pipeline should make of it (``expect``: the incident kind, its colour, how far
from the event's place the incident may be). The simulators play the events; ``gridwatch eval
scenario`` scores a run against the ``expect`` of each. The bundled ``scenarios/demo.yaml`` is
the demo's: a flood rise, a PM2.5 plume over farmland, a forest fire seen by two towers and a
smoke sensor, a lost camera stream, a stalled car and a building rising on the new-city works over
a rooftop tower's compressed days, on the bundled sample street.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from gridwatch.errors import ConfigError
from gridwatch.events import (
    IncidentKind,
    Level,
    Model,
    Point,
    ZoneKind,
    describe_validation_error,
)
from gridwatch.geo import LocalProjection
from gridwatch.site import Site, yaml_problem

SCENARIOS = Path(__file__).parent / "scenarios"
DEMO_SCENARIO = SCENARIOS / "demo.yaml"

Seconds = Annotated[float, Field(ge=0)]


class Expect(Model):
    """The ground truth of one event: the incident the pipeline should open for it."""

    incident: IncidentKind
    level: Level = Field(description="the highest colour it should reach")
    within_m: float = Field(gt=0, description="how far from the event's place it may be")
    sources: int | None = Field(default=None, ge=1, description="sources that should agree")


class Place(Model):
    """A device of the site, or a point east and north of it."""

    device: str
    east_m: float = 0.0
    north_m: float = 0.0


Burning = Literal["fire", "smoke", "fire_and_smoke", "farm_fire"]
"""The scenes of ``simulators.camera_scenes`` that show a fire."""


class CameraSighting(Model):
    """A fixed camera sees the event's place burn from ``at_s`` on."""

    camera: str
    at_s: Seconds
    scene: Burning = "farm_fire"


class AlongRise(Model):
    """Another sensor's metric rising with an event's own: the rain over a rising river."""

    sensor: str
    metric: str


class SensorRise(Model):
    """A sensor's metric rises from its baseline at ``start_s`` to just past red at ``peak_s``
    (a smoke metric falls back as fast as it rose), and each of ``along`` likewise; the
    ``cameras`` see the fire that raises it burn at the sensor, each from its time on."""

    kind: Literal["sensor_rise"]
    name: str
    sensor: str
    metric: str
    start_s: Seconds
    peak_s: Seconds
    along: tuple[AlongRise, ...] = ()
    cameras: tuple[CameraSighting, ...] = ()
    expect: Expect

    @model_validator(mode="after")
    def _ordered(self) -> SensorRise:
        if self.peak_s <= self.start_s:
            raise ValueError(f"peak_s ({self.peak_s}) must come after start_s ({self.start_s})")
        return self

    @property
    def start(self) -> float:
        return min([self.start_s, *(c.at_s for c in self.cameras)])

    @property
    def place(self) -> Place:
        return Place(device=self.sensor)


class TowerSighting(Model):
    """A watchtower sees the fire from ``at_s`` on, in its visible and thermal streams, at the
    preset ``preset`` (default: the widest preset whose view holds the fire's bearing)."""

    tower: str
    at_s: Seconds
    preset: int | None = None
    scene: Burning = "fire_and_smoke"


class ForestFire(Model):
    """A fire at ``place``: the towers see it burn from their times on, at its true bearing,
    then the smoke sensor rises to ``smoke_peak`` × its red."""

    kind: Literal["forest_fire"]
    name: str
    place: Place
    towers: tuple[TowerSighting, ...] = Field(min_length=1)
    smoke_sensor: str
    smoke_rise_s: tuple[Seconds, Seconds]
    smoke_peak: float = Field(default=1.25, gt=1)
    expect: Expect

    @property
    def start(self) -> float:
        return min([self.smoke_rise_s[0], *(t.at_s for t in self.towers)])


class StreamLost(Model):
    """A camera's stream goes down at ``at_s`` and stays down: a device fault at the camera."""

    kind: Literal["stream_lost"]
    name: str
    camera: str
    at_s: Seconds
    expect: Expect

    @property
    def start(self) -> float:
        return self.at_s

    @property
    def place(self) -> Place:
        return Place(device=self.camera)


class RoadObstruction(Model):
    """A car stalls in a lane of ``camera``'s road zone and stays, at ``place``, once the
    camera's traffic detector has learned the empty road (the simulator's road onset)."""

    kind: Literal["road_obstruction"]
    name: str
    camera: str
    place: Place
    expect: Expect

    @property
    def start(self) -> float:
        return 0.0  # the car stops on the simulator's clock, from before the run plays


class Construction(Model):
    """A building rises on the plot that ``tower`` watches at its preset ``preset``, at
    ``place``, and stands. The tower's patrol counts compressed days of ``day_s`` in the run;
    the building rises on the simulator's clock once the patrol has its baseline of the empty
    plot (``simulators.camera_feeds``), and is confirmed after ``construction_change.days``."""

    kind: Literal["construction"]
    name: str
    tower: str
    preset: int
    day_s: float = Field(gt=0, description="the tower's compressed day in the run, s")
    place: Place
    expect: Expect

    @property
    def start(self) -> float:
        return 0.0  # the building rises on the simulator's clock, from before the run plays


ScenarioEvent = Annotated[
    SensorRise | ForestFire | StreamLost | RoadObstruction | Construction,
    Field(discriminator="kind"),
]


class Scenario(Model):
    name: str
    description: str = ""
    duration_s: float = Field(gt=0, description="the run's length; event times are within it")
    rate_hz: float = Field(gt=0, description="reports per sensor per second")
    seed: int = 7
    bad_messages: bool = Field(
        default=True, description="a malformed message and an unknown device, at mid-run"
    )
    events: tuple[ScenarioEvent, ...]

    @model_validator(mode="after")
    def _one_fire(self) -> Scenario:
        if sum(isinstance(e, ForestFire) for e in self.events) > 1:
            raise ValueError("at most one forest_fire event: it takes over its smoke sensor")
        return self

    @property
    def fire(self) -> ForestFire | None:
        return next((e for e in self.events if isinstance(e, ForestFire)), None)

    @property
    def road_obstructions(self) -> tuple[RoadObstruction, ...]:
        return tuple(e for e in self.events if isinstance(e, RoadObstruction))

    @property
    def constructions(self) -> tuple[Construction, ...]:
        return tuple(e for e in self.events if isinstance(e, Construction))

    @property
    def expected_deadletters(self) -> int:
        return 2 if self.bad_messages else 0

    def stretched(self, duration_s: float) -> Scenario:
        """The same scenario over ``duration_s``: every event time scaled alike."""
        k = duration_s / self.duration_s
        raw = self.model_dump(mode="json")
        for event in raw["events"]:
            for key in ("start_s", "peak_s", "at_s", "day_s"):
                if key in event:
                    event[key] *= k
            if "smoke_rise_s" in event:
                event["smoke_rise_s"] = [t * k for t in event["smoke_rise_s"]]
            for sighting in (*event.get("towers", []), *event.get("cameras", [])):
                sighting["at_s"] *= k
        return Scenario.model_validate({**raw, "duration_s": duration_s})

    def without_camera_sightings(self) -> Scenario:
        """The scenario with no camera seeing a sensor's fire, each event expecting those cameras
        fewer: what holds where the real footage the cameras would show is absent (the learned
        model rightly sees no fire in drawn flames)."""
        events: list[ScenarioEvent] = []
        for event in self.events:
            if isinstance(event, SensorRise) and event.cameras:
                sources = event.expect.sources
                if sources is not None:
                    sources -= len({c.camera for c in event.cameras})
                expect = event.expect.model_copy(update={"sources": sources or None})
                event = event.model_copy(update={"cameras": (), "expect": expect})
            events.append(event)
        return self.model_copy(update={"events": tuple(events)})

    def check(self, site: Site) -> None:
        """Every device an event names is in ``site``."""
        known = {s.id for s in site.sensors}
        cameras = {c.id for c in site.cameras}
        towers = {t.id: {p.id for p in t.presets} for t in site.watchtowers}
        for i, event in enumerate(self.events):
            where = f"events[{i}] ({event.name})"
            named = [event.place.device]
            if isinstance(event, SensorRise):
                named += [a.sensor for a in event.along]
            if isinstance(event, ForestFire):
                named.append(event.smoke_sensor)
                for seen in event.towers:
                    if seen.tower not in towers:
                        raise ConfigError(f"{where}: the site has no watchtower {seen.tower!r}")
                    if seen.preset is not None and seen.preset not in towers[seen.tower]:
                        raise ConfigError(
                            f"{where}: watchtower {seen.tower} has no preset {seen.preset}"
                        )
            if isinstance(event, Construction):
                _check_watch(site, event, where)
            watched = [c.camera for c in getattr(event, "cameras", ())]
            if isinstance(event, StreamLost | RoadObstruction):
                watched.append(event.camera)
            for camera in watched:
                if camera not in cameras:
                    raise ConfigError(f"{where}: the site has no camera {camera!r}")
            for device in named:
                if device not in known | cameras | set(towers):
                    raise ConfigError(f"{where}: the site has no {device!r}")


def _check_watch(site: Site, event: Construction, where: str) -> None:
    """The event's tower watches its preset for construction."""
    tower = next((t for t in site.watchtowers if t.id == event.tower), None)
    if tower is None:
        raise ConfigError(f"{where}: the site has no watchtower {event.tower!r}")
    if event.preset not in {p.id for p in tower.presets}:
        raise ConfigError(f"{where}: watchtower {tower.id} has no preset {event.preset}")
    watched = any(
        z.kind is ZoneKind.CONSTRUCTION_WATCH and z.preset in (None, event.preset)
        for z in tower.vision.zones
    )
    if tower.vision.detectors.construction_change is None or not watched:
        raise ConfigError(
            f"{where}: watchtower {tower.id} does not watch preset {event.preset} for"
            " construction (a construction_watch zone and detectors.construction_change)"
        )


def place_point(site: Site, place: Place) -> Point:
    """Where ``place`` is on the ground."""
    devices = {s.id: s.location for s in site.sensors}
    devices |= {t.id: t.location for t in site.watchtowers}
    devices |= {c.id: c.location for c in site.cameras}
    if place.device not in devices:
        raise ConfigError(f"the site has no device {place.device!r}")
    origin = devices[place.device]
    if not (place.east_m or place.north_m):
        return origin
    return LocalProjection(origin).point(place.east_m, place.north_m)


def load_scenario(path: Path = DEMO_SCENARIO) -> Scenario:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: {yaml_problem(err)}") from err
    try:
        return Scenario.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"{path}: {describe_validation_error(err)}") from err
