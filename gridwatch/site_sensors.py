"""Site configuration of IoT sensors: metrics, plausible ranges and the rules run on them."""

from __future__ import annotations

from functools import cached_property
from typing import Annotated, Literal

from pydantic import (
    Discriminator,
    Field,
    Tag,
    model_validator,
)

from gridwatch.events import DetectionKind, Level, Model, Point


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
    max_ahead_s: float = Field(
        default=300.0,
        ge=0,
        description="a reading stamped further ahead of the receiver's clock is refused",
    )
    max_age_s: float = Field(
        default=7 * 86400.0,
        gt=0,
        description="a reading stamped further behind the receiver's clock is refused",
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

    @cached_property
    def _by_metric(self) -> dict[str, tuple[SensorRule, ...]]:
        return {m: tuple(r for r in self.rules if r.metric == m) for m in self.metrics}

    def rules_for(self, metric: str) -> tuple[SensorRule, ...]:
        """The rules on ``metric``, in site-file order (looked up once per reading)."""
        return self._by_metric.get(metric, ())

    @cached_property
    def _lookback(self) -> dict[str, tuple[float, int]]:
        return {
            metric: (
                max((r.window_s for r in rules), default=0.0),
                max((r.samples for r in rules), default=1),
            )
            for metric, rules in self._by_metric.items()
        }

    def lookback(self, metric: str) -> tuple[float, int]:
        """How far back the rules on ``metric`` look: their longest window in seconds, and
        their largest count of newest values."""
        return self._lookback.get(metric, (0.0, 1))

    @cached_property
    def _judging(self) -> dict[str, tuple[tuple[SensorRule, ...], float, int]]:
        return {m: (rules, *self.lookback(m)) for m, rules in self._by_metric.items()}

    def judging(self, metric: str) -> tuple[tuple[SensorRule, ...], float, int]:
        """``rules_for`` and ``lookback`` of ``metric`` in one look-up, made once per reading."""
        return self._judging.get(metric, ((), 0.0, 1))
