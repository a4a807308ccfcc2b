"""The site's alerting, case and delivery policy (DESIGN.md §5, §6): grading rules, Alertmanager
timers, case time limits and the downstream systems, all as data in the site file.

Alert timers are in seconds, case limits in hours; the demo compresses the alert timers with
:meth:`SitePolicy.compressed` instead of carrying special cases in the code.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field, field_validator, model_validator

from gridwatch import kinds
from gridwatch.events import IncidentKind, Level, Model, ZoneKind

PerLevel = dict[Level, float]


class Grading(Model):
    """Three-colour grading: start from the observed level, then each rule raises or lowers it."""

    corroboration_sources: int = Field(
        default=2, ge=2, description="independent sources that raise the grade one level"
    )
    sensitive_zones: dict[ZoneKind, tuple[IncidentKind, ...]] = Field(
        default_factory=kinds.sensitive_zones,
        description="zone kinds that raise the grade one level for the incident kinds listed"
        " (default: each kind's sensitive zones in gridwatch.kinds)",
    )
    growth_ratio: float = Field(
        default=2.0, gt=1, description="evidence that grew by this factor raises one level"
    )
    low_confidence: float = Field(
        default=0.3, ge=0, le=1, description="below this fused confidence the grade drops one"
    )
    floor: dict[IncidentKind, Level] = Field(
        default={},
        description="the least level an incident of a kind is graded (default: gridwatch.kinds)",
    )

    def floor_of(self, kind: IncidentKind) -> Level | None:
        return self.floor.get(kind, kinds.incident(kind).floor)


class IncidentTimes(Model):
    """How long an incident no detection touches stays open, per kind (default: its
    ``quiet_after`` in gridwatch.kinds): the end of an incident whose clear was lost."""

    quiet_after_minutes: dict[IncidentKind, float] = Field(
        default={}, description="minutes without a detection after which an incident ends"
    )

    def quiet_after(self, kind: IncidentKind) -> timedelta:
        minutes = self.quiet_after_minutes.get(kind)
        return kinds.incident(kind).quiet_after if minutes is None else timedelta(minutes=minutes)

    @field_validator("quiet_after_minutes")
    @classmethod
    def _positive(cls, value: dict[IncidentKind, float]) -> dict[IncidentKind, float]:
        for kind, minutes in value.items():
            if minutes <= 0:
                raise ValueError(f"{kind.value}: quiet_after_minutes must be positive")
        return value


class AlertTimers(Model):
    """Alertmanager's timers per level. Red never waits: its wait and interval must be 0."""

    group_wait_s: PerLevel = Field(default={Level.YELLOW: 30, Level.ORANGE: 10, Level.RED: 0})
    group_interval_s: PerLevel = Field(default={Level.YELLOW: 300, Level.ORANGE: 60, Level.RED: 0})
    repeat_interval_s: PerLevel = Field(
        default={Level.YELLOW: 14400, Level.ORANGE: 7200, Level.RED: 1800}
    )

    @model_validator(mode="after")
    def _complete_and_red_never_waits(self) -> AlertTimers:
        for name in ("group_wait_s", "group_interval_s", "repeat_interval_s"):
            values: PerLevel = getattr(self, name)
            if set(values) != set(Level):
                raise ValueError(f"{name} needs a value for each of yellow, orange and red")
        if self.group_wait_s[Level.RED] or self.group_interval_s[Level.RED]:
            raise ValueError("red never waits: group_wait_s.red and group_interval_s.red be 0")
        return self


class CaseLimits(Model):
    """Time to close a case per kind and level; acceptance limits are the site's ``escalation``."""

    close_hours: PerLevel = Field(default={Level.YELLOW: 72, Level.ORANGE: 24, Level.RED: 4})
    close_hours_by_kind: dict[IncidentKind, PerLevel] = Field(
        default={}, description="overrides close_hours for a kind"
    )
    extension_hours: float = Field(default=24, gt=0, description="one 延期 adds this much")

    def close_within_h(self, kind: IncidentKind, level: Level) -> float:
        return self.close_hours_by_kind.get(kind, self.close_hours)[level]


class HttpSink(Model):
    url: str = Field(description="where the relay POSTs")
    secret_env: str = Field(
        default="SINK_HMAC_KEY", description="environment variable with the HMAC key"
    )
    timeout_s: float = Field(default=5.0, gt=0)


class Broadcast(HttpSink):
    """Emergency broadcast (CAP 1.2 and the EBM profile) for red incidents."""

    sender: str | None = Field(
        default=None,
        pattern=r"^[^\s,&<]+$",
        description="CAP sender: the street's alerting authority's address; required to broadcast",
    )
    approval_required: bool = Field(
        default=True, description="red waits for an operator's approval before broadcast"
    )
    drill: bool = Field(default=False, description="every message is marked as an exercise")
    radius_km: float = Field(default=3.0, gt=0, description="CAP circle around the incident")
    expires_hours: float = Field(default=6.0, gt=0)


class Delivery(Model):
    """The outbox relay: attempts and exponential backoff with full jitter."""

    # 24 attempts at the default backoff keep retrying for about 40 minutes on average (hardly
    # ever under ten), so a sink down for ten minutes loses nothing; 8 gave up after about one.
    max_attempts: int = Field(default=24, ge=1)
    backoff_base_s: float = Field(default=1.0, gt=0)
    backoff_max_s: float = Field(default=300.0, gt=0)


class SitePolicy(Model):
    grading: Grading = Grading()
    incidents: IncidentTimes = IncidentTimes()
    timers: AlertTimers = AlertTimers()
    cases: CaseLimits = CaseLimits()
    dispatch: HttpSink = HttpSink(url="http://127.0.0.1:8701/v1/cases")
    broadcast: Broadcast = Broadcast(url="http://127.0.0.1:8702/v1/broadcasts")
    delivery: Delivery = Delivery()

    def compressed(self, factor: float) -> SitePolicy:
        """Alert timers divided by ``factor``: a demo plays minutes of grouping in seconds."""
        timers = AlertTimers(
            group_wait_s={lv: v / factor for lv, v in self.timers.group_wait_s.items()},
            group_interval_s={lv: v / factor for lv, v in self.timers.group_interval_s.items()},
            repeat_interval_s={lv: v / factor for lv, v in self.timers.repeat_interval_s.items()},
        )
        return self.model_copy(update={"timers": timers})
