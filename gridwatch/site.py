"""The site: a street as configuration (DESIGN.md §4), loaded from YAML into frozen models.

Unknown keys are rejected and every error names the file, the path inside it and the problem.
Grid polygons are not stored: a grid is the union of its micro-grids, a community of its grids.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import shapely
import yaml
from pydantic import (
    AfterValidator,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from gridwatch import kinds
from gridwatch.errors import ConfigError
from gridwatch.events import IncidentKind, Lat, Level, Lon, Model, ZoneKind, location
from gridwatch.policy import SitePolicy
from gridwatch.site_cameras import Camera, Watchtower
from gridwatch.site_sensors import Sensor, TelemetryPolicy


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
    handles: tuple[IncidentKind, ...] = Field(
        description="incident kinds routed to it; their order among departments: gridwatch.kinds"
    )


class Zone(Model):
    name: str
    kind: ZoneKind
    polygon: Ring = Field(min_length=3)

    @field_validator("kind")
    @classmethod
    def _ground(cls, kind: ZoneKind) -> ZoneKind:
        if kind is ZoneKind.MASK:
            raise ValueError("a mask is a camera's image zone (cameras[].vision.zones), not ground")
        return kind


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
        """The departments a case of ``kind`` goes to, in turn (``gridwatch.kinds.route``)."""
        return kinds.route(kind, (d.id for d in self.departments if kind in d.handles))


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
            where = location(e["loc"], whole="<top>")
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
