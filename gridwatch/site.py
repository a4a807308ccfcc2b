"""The site: a street as configuration (DESIGN.md §4), loaded from YAML into frozen models.

Unknown keys are rejected and every error names the file, the path inside it and the problem.
Grid polygons are not stored: a grid is the union of its micro-grids, a community of its grids.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import shapely
import yaml
from pydantic import (
    AfterValidator,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from gridwatch.errors import ConfigError
from gridwatch.events import DetectionKind, IncidentKind, Lat, Level, Lon, Model, Point
from gridwatch.policy import SitePolicy


def _simple_polygon(ring: tuple[tuple[float, float], ...]) -> tuple[tuple[float, float], ...]:
    # A self-intersecting ring would make grid lookup and unions fail far from the file's mistake.
    reason = shapely.is_valid_reason(shapely.Polygon(ring))
    if reason != "Valid Geometry":
        raise ValueError(f"not a simple polygon: {reason}")
    return ring


Ring = Annotated[tuple[tuple[Lon, Lat], ...], AfterValidator(_simple_polygon)]
"""A closed polygon ring as (lon, lat) pairs; the first point is not repeated at the end."""


class Street(Model):
    name: str
    code: str = Field(pattern=r"^\d{9}$", description="county 6 + street 3")
    timezone: str = "Asia/Shanghai"
    area_km2: float = Field(gt=0)
    built_up_km2: float = Field(gt=0)


class Community(Model):
    code: str = Field(pattern=r"^\d{12}$", description="street code + community 3")
    name: str
    kind: Literal["urban", "rural"]


class MicroGrid(Model):
    code: str = Field(pattern=r"^\d{16}$", description="grid code + micro-grid 2")
    name: str
    polygon: Ring = Field(min_length=3)


class Grid(Model):
    code: str = Field(pattern=r"^\d{14}$", description="community code + grid 2")
    name: str
    worker: str = Field(description="id of the grid's full-time worker")
    micro_grids: tuple[MicroGrid, ...] = Field(min_length=1)

    @property
    def community_code(self) -> str:
        return self.code[:12]

    @model_validator(mode="after")
    def _micro_grids_belong(self) -> Grid:
        for mg in self.micro_grids:
            if not mg.code.startswith(self.code):
                raise ValueError(f"micro-grid {mg.code} does not start with grid code {self.code}")
        return self


class Worker(Model):
    id: str
    name: str
    phone: str | None = None


class Department(Model):
    id: str
    name: str
    handles: tuple[IncidentKind, ...] = Field(description="incident kinds routed to it")


class MetricSpec(Model):
    """What a device reports for one metric, and what values are physically plausible."""

    unit: str
    min: float
    max: float

    @model_validator(mode="after")
    def _ordered(self) -> MetricSpec:
        if self.min >= self.max:
            raise ValueError(f"min {self.min} must be below max {self.max}")
        return self


# What a rule on a well-known metric detects, so site files need not repeat it.
METRIC_DETECTS: dict[str, DetectionKind] = {
    "water_level_m": DetectionKind.WATER_LEVEL,
    "rainfall_mm_h": DetectionKind.RAINFALL,
    "smoke_obscuration_pct": DetectionKind.SMOKE_SENSOR,
    "pm25_ugm3": DetectionKind.PM25,
    "temperature_c": DetectionKind.TEMPERATURE,
}


class _MetricRule(Model):
    """What every sensor rule shares: the metric it watches and the detection kind it raises."""

    type: str
    metric: str
    detects: DetectionKind | None = Field(
        default=None, description="detection kind; defaults by metric (METRIC_DETECTS)"
    )

    @model_validator(mode="after")
    def _default_kind(self) -> _MetricRule:
        if self.detects is None:
            kind = self._default_detects()
            if kind is None:
                raise ValueError(f"say what a rule on {self.metric!r} detects (detects: ...)")
            object.__setattr__(self, "detects", kind)
        return self

    def _default_detects(self) -> DetectionKind | None:
        return METRIC_DETECTS.get(self.metric)

    @property
    def detection_kind(self) -> DetectionKind:
        assert self.detects is not None  # set by the validator  # noqa: S101
        return self.detects

    @property
    def window_s(self) -> float:
        """How far back in event time the rule looks; 0 for rules on the newest value alone."""
        return 0.0

    @property
    def samples(self) -> int:
        """How many of the newest values the rule needs to see."""
        return 1

    @property
    def name(self) -> str:
        return f"{self.type}:{self.metric}"


class ThresholdRule(_MetricRule):
    """A level per threshold: the highest threshold the value reaches sets the level."""

    type: Literal["threshold"] = "threshold"
    yellow: float
    orange: float
    red: float
    hysteresis: float = Field(default=0.0, ge=0, description="drop below by this much to clear")

    @model_validator(mode="after")
    def _rising(self) -> ThresholdRule:
        if not self.yellow < self.orange < self.red:
            raise ValueError("thresholds must rise: yellow < orange < red")
        return self

    def level_of(self, value: float) -> Level | None:
        for level, limit in ((Level.RED, self.red), (Level.ORANGE, self.orange)):
            if value >= limit:
                return level
        return Level.YELLOW if value >= self.yellow else None


class RateOfRiseRule(_MetricRule):
    """Fires when the value rose by ``rise`` or more within ``window_s`` of event time."""

    type: Literal["rate_of_rise"] = "rate_of_rise"
    rise: float = Field(gt=0, description="rise within the window that fires the rule")
    window: float = Field(gt=0, description="seconds of event time")
    level: Level = Level.YELLOW
    hysteresis: float = Field(default=0.0, ge=0, description="rise must fall this far below")

    @property
    def window_s(self) -> float:
        return self.window


class NOfMRule(_MetricRule):
    """Confirmation: fires when ``n`` of the newest ``m`` values are at or above ``above``."""

    type: Literal["n_of_m"] = "n_of_m"
    above: float
    n: int = Field(ge=1)
    m: int = Field(ge=1)
    level: Level = Level.YELLOW

    @model_validator(mode="after")
    def _n_within_m(self) -> NOfMRule:
        if self.n > self.m:
            raise ValueError(f"n ({self.n}) cannot exceed m ({self.m})")
        return self

    @property
    def samples(self) -> int:
        return self.m


class FlatlineRule(_MetricRule):
    """A stale sensor: every value within ``tolerance`` of each other for ``window`` seconds."""

    type: Literal["flatline"] = "flatline"
    window: float = Field(gt=0, description="seconds of event time")
    tolerance: float = Field(default=0.0, ge=0)
    level: Level = Level.YELLOW

    def _default_detects(self) -> DetectionKind:
        return DetectionKind.SENSOR_FAULT

    @property
    def window_s(self) -> float:
        return self.window


class OutOfRangeRule(_MetricRule):
    """A plausible value outside the operating range the sensor is installed for."""

    type: Literal["out_of_range"] = "out_of_range"
    low: float
    high: float
    level: Level = Level.YELLOW

    @model_validator(mode="after")
    def _ordered(self) -> OutOfRangeRule:
        if self.low >= self.high:
            raise ValueError(f"low {self.low} must be below high {self.high}")
        return self

    def _default_detects(self) -> DetectionKind:
        return DetectionKind.SENSOR_FAULT


def _rule_type(value: object) -> str | None:
    # Site files written before rule types existed name no type: those are threshold rules.
    if isinstance(value, dict):
        return str(value.get("type", "threshold"))
    return getattr(value, "type", None)


SensorRule = Annotated[
    Annotated[ThresholdRule, Tag("threshold")]
    | Annotated[RateOfRiseRule, Tag("rate_of_rise")]
    | Annotated[NOfMRule, Tag("n_of_m")]
    | Annotated[FlatlineRule, Tag("flatline")]
    | Annotated[OutOfRangeRule, Tag("out_of_range")],
    Discriminator(_rule_type),
]


class TelemetryPolicy(Model):
    """Event-time handling of sensor readings, for every sensor unless it overrides a value."""

    allowed_lateness_s: float = Field(
        default=0.0,
        ge=0,
        description="how long rules wait for out-of-order readings before judging one",
    )
    heartbeat_s: float = Field(
        default=300.0, gt=0, description="a device silent this long is raised as offline"
    )


class Sensor(Model):
    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    kind: Literal["water_level", "rain_gauge", "smoke", "temperature", "pm25", "multi"]
    location: Point
    metrics: dict[str, MetricSpec] = Field(min_length=1)
    rules: tuple[SensorRule, ...] = ()
    heartbeat_s: float | None = Field(
        default=None, gt=0, description="overrides the site's telemetry.heartbeat_s"
    )

    @model_validator(mode="after")
    def _rules_on_known_metrics(self) -> Sensor:
        for rule in self.rules:
            if rule.metric not in self.metrics:
                raise ValueError(f"rule on metric {rule.metric!r} the sensor does not report")
        return self


class Zone(Model):
    name: str
    kind: Literal["forest", "farmland", "construction_watch", "school", "dense_housing"]
    polygon: Ring = Field(min_length=3)


Fraction = Annotated[float, Field(ge=0, le=1)]


class ImageZone(Model):
    """A region of a camera image in fractions of its width and height, (0, 0) at the top left.

    ``mask`` regions are never analysed (a chimney, a road with headlights, a flag); the other
    kinds say what the ground there is, so a fire in ``farmland`` is straw burning and change is
    only sought in ``construction_watch``.
    """

    kind: Literal["mask", "farmland", "forest", "construction_watch"]
    polygon: tuple[tuple[Fraction, Fraction], ...] = Field(min_length=3)
    preset: int | None = Field(default=None, description="watchtower preset; None: every view")
    name: str = ""


class Vision(Model):
    """Per-camera detector settings; the defaults suit a 1-2 km view from 10-40 m up."""

    horizon: Fraction | None = Field(
        default=None, description="image row (fraction of height) above which there is only sky"
    )
    zones: tuple[ImageZone, ...] = ()
    confirm_hits: int = Field(default=5, ge=2, description="consecutive hits that confirm")
    clear_misses: int = Field(default=8, ge=1, description="consecutive misses that clear")
    burst_fps: float = Field(default=5.0, gt=0, description="sampling rate around a candidate")
    burst_s: float = Field(default=6.0, ge=0, description="how long a burst lasts")
    fire_min_area: float = Field(default=0.00015, gt=0, description="fraction of the frame")
    smoke_min_area: float = Field(default=0.0006, gt=0, description="fraction of the frame")
    thermal_range_c: tuple[float, float] = Field(
        default=(-20.0, 300.0), description="temperatures of grey level 0 and 255"
    )
    thermal_threshold_c: float = Field(default=90.0, description="hotspot temperature")
    thermal_min_px: int = Field(default=4, ge=1, description="smallest hotspot, working pixels")
    construction_days: int = Field(default=3, ge=1, description="days a change must persist")


class Camera(Model):
    id: str
    name: str
    url: str
    location: Point
    height_m: float = Field(gt=0)
    heading_deg: float = Field(ge=0, lt=360)
    fov_deg: float = Field(gt=0, le=180)
    sample_fps: float = Field(default=1.0, gt=0)
    tilt_deg: float = Field(default=-8.0, ge=-90, le=90, description="optical axis, up positive")
    vision: Vision = Vision()


class Preset(Model):
    id: int = Field(ge=0)
    pan_deg: float = Field(ge=0, lt=360)
    tilt_deg: float = Field(ge=-90, le=90)
    zoom: float = Field(default=1.0, gt=0)
    fov_deg: float = Field(gt=0, le=180)


class Watchtower(Model):
    id: str
    name: str
    location: Point
    height_m: float = Field(gt=0)
    visible_url: str
    thermal_url: str | None = None
    presets: tuple[Preset, ...] = Field(min_length=1)
    ptz_url: str | None = Field(
        default=None, description="HTTP template that moves to a preset, with {preset}"
    )
    settle_s: float = Field(default=2.0, ge=0, description="wait after a move before analysing")
    dwell_s: float = Field(default=30.0, gt=0, description="time spent on each preset")
    sample_fps: float = Field(default=1.0, gt=0)
    vision: Vision = Vision()


class Escalation(Model):
    """Minutes a case may wait for acceptance at each level before it escalates one level."""

    accept_minutes: dict[Level, float] = Field(
        default={Level.YELLOW: 30, Level.ORANGE: 15, Level.RED: 5}
    )


class Site(Model):
    street: Street
    communities: tuple[Community, ...] = Field(min_length=1)
    grids: tuple[Grid, ...] = Field(min_length=1)
    workers: tuple[Worker, ...] = ()
    departments: tuple[Department, ...] = ()
    sensors: tuple[Sensor, ...] = ()
    cameras: tuple[Camera, ...] = ()
    watchtowers: tuple[Watchtower, ...] = ()
    zones: tuple[Zone, ...] = ()
    escalation: Escalation = Escalation()
    policy: SitePolicy = SitePolicy()
    telemetry: TelemetryPolicy = TelemetryPolicy()

    @field_validator("communities")
    @classmethod
    def _unique_communities(cls, v: tuple[Community, ...]) -> tuple[Community, ...]:
        _require_unique("community code", (((i, "code"), c.code) for i, c in enumerate(v)))
        return v

    @model_validator(mode="after")
    def _references_resolve(self) -> Site:
        grids = list(enumerate(self.grids))
        _require_unique("grid code", ((("grids", i, "code"), g.code) for i, g in grids))
        _require_unique(
            "micro-grid code",
            (
                (("grids", i, "micro_grids", j, "code"), m.code)
                for i, g in grids
                for j, m in enumerate(g.micro_grids)
            ),
        )
        _require_unique(
            "device id",
            (
                ((section, i, "id"), device.id)
                for section in ("sensors", "cameras", "watchtowers")
                for i, device in enumerate(getattr(self, section))
            ),
        )
        communities = {c.code for c in self.communities}
        workers = {w.id for w in self.workers}
        for i, grid in grids:
            if not grid.code.startswith(self.street.code):
                raise _error_at(("grids", i, "code"), f"not in street {self.street.code}")
            if grid.community_code not in communities:
                raise _error_at(("grids", i, "code"), f"no community {grid.community_code}")
            if workers and grid.worker not in workers:
                raise _error_at(("grids", i, "worker"), f"no worker {grid.worker!r}")
        return self

    def device_ids(self) -> Iterator[str]:
        yield from (s.id for s in self.sensors)
        yield from (c.id for c in self.cameras)
        yield from (t.id for t in self.watchtowers)

    def sensor(self, device_id: str) -> Sensor | None:
        return self._sensors.get(device_id)

    @cached_property
    def _sensors(self) -> dict[str, Sensor]:
        return {s.id: s for s in self.sensors}

    def heartbeat_s(self, sensor: Sensor) -> float:
        return sensor.heartbeat_s or self.telemetry.heartbeat_s

    def departments_for(self, kind: IncidentKind) -> tuple[str, ...]:
        return tuple(d.id for d in self.departments if kind in d.handles)


Loc = tuple[int | str, ...]


def _require_unique(what: str, entries: Iterable[tuple[Loc, str]]) -> None:
    seen: set[str] = set()
    for loc, value in entries:
        if value in seen:
            raise _error_at(loc, f"duplicate {what} {value!r}")
        seen.add(value)


def _error_at(loc: Loc, problem: str) -> ValidationError:
    """An error placed on the entry at fault, so the message points there and not at the top."""
    error = PydanticCustomError("site_reference", "{problem}", {"problem": problem})
    return ValidationError.from_exception_data(
        "Site", [InitErrorDetails(type=error, loc=loc, input=None)]
    )


# libyaml reads the bundled site several times faster; the pure-Python loader is the fallback.
class _SafeLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """Rejects a key given twice in one mapping: YAML would silently keep only the last."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping


def load_site(path: Path) -> Site:
    """Read and validate a site file. Every problem becomes a ConfigError naming file and path."""
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_SafeLoader)  # noqa: S506
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: {_yaml_problem(err)}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top, got {type(raw).__name__}")
    try:
        return Site.model_validate(raw)
    except ValidationError as err:
        lines = [f"{path}: {err.error_count()} problem(s)"]
        for e in err.errors(include_url=False):
            where = _path_text(e["loc"]) or "<top>"
            lines.append(f"  {where}: {e['msg']}")
        raise ConfigError("\n".join(lines)) from err


def _yaml_problem(err: yaml.YAMLError) -> str:
    """'line 4, column 6: not valid YAML: did not find expected ',' or ']' (while parsing a flow
    sequence at line 3, column 9)' — the parser's own text repeats a meaningless stream name."""
    if not isinstance(err, yaml.MarkedYAMLError) or err.problem_mark is None:
        return f"not valid YAML: {err}"
    mark, context = err.problem_mark, err.context_mark
    text = f"line {mark.line + 1}, column {mark.column + 1}: not valid YAML: {err.problem}"
    if err.context and context is not None:
        text += f" ({err.context} at line {context.line + 1}, column {context.column + 1})"
    return text


_IDENT = re.compile(r"^[A-Za-z_]\w*$")


def _path_text(loc: tuple[int | str, ...]) -> str:
    """('grids', 3, 'micro_grids', 0, 'code') → 'grids[3].micro_grids[0].code'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENT.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out
