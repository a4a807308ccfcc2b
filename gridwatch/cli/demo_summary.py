"""What a demo run returns: its figures as one typed record, scored against its scenario."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, field_serializer

from gridwatch.events import IncidentKind, Level
from gridwatch.scenario_score import ScenarioScore


class Latency(BaseModel):
    p50: float | None
    p99: float | None


class IncidentSummary(BaseModel):
    """An incident as the run left it, with the sources (``camera CAM-004``…) that raised it."""

    kind: IncidentKind
    level: Level
    lon: float
    lat: float
    grid_code: str
    location_error_m: float | None
    sources: int
    raised_by: list[str]
    first_alert_s: float | None


class Recording(BaseModel):
    file: str
    messages: int
    frames: int
    notes: list[str]


class DemoSummary(BaseModel):
    """The demo's summary; ``--summary-json`` writes it as it is, key for key."""

    model_config = ConfigDict(extra="forbid")

    # What the run sent, and how it ended.
    scenario: str
    started_at: str
    replayed: str | None
    complete: bool
    scenario_seconds: float
    wall_seconds: float
    backend: str
    messages_acked_by_broker: int
    readings_sent: int
    bad_messages_sent: int
    camera_frames_analysed: int
    camera_workers: dict[str, int]  # frames each camera worker analysed
    camera_workers_died: list[str]
    compressed_days_s: dict[str, float]  # by tower: its construction watch's day in the run
    fire: dict[str, float]
    lost_readings: int
    dispatch_messages_received: int
    broadcast_messages_received: int
    broadcasts_played: int
    recording: Recording | None = None
    # What the database holds (gridwatch.store.summary.collect).
    readings_stored: int
    corrections: int
    detections: int
    incidents: int
    alerts_firing: int
    alerts_resolved: int
    deadletters: int
    cases: int
    cases_closed: int
    outbox_pending: int
    outbox_dead: int
    broadcasts_waiting: int
    alerts_by_level: dict[str, int]
    cases_by_state: dict[str, int]
    broadcasts: dict[str, int]
    incident_list: list[IncidentSummary]
    reading_latency_ms: Latency
    alert_latency_ms: Latency
    kpis: dict[str, float | int | None]
    # The run scored against its scenario's ground truth.
    score: ScenarioScore

    @field_serializer("score")
    def _score_report(self, score: ScenarioScore) -> dict[str, Any]:
        """As ``gridwatch eval scenario --json`` writes it, so the two can be compared."""
        return score.report()

    @property
    def by_kind(self) -> Mapping[IncidentKind, list[IncidentSummary]]:
        kinds: dict[IncidentKind, list[IncidentSummary]] = {}
        for incident in self.incident_list:
            kinds.setdefault(incident.kind, []).append(incident)
        return kinds

    @property
    def failures(self) -> list[str]:
        """Why the run failed, one line each; empty when it passed."""
        reasons = []
        if not self.complete:
            reasons.append("the pipeline did not catch up before the timeout")
        if self.lost_readings:
            reasons.append(f"{self.lost_readings} readings were not stored")
        for error in self.camera_workers_died:
            reasons.append(f"a camera worker died: {error}")
        score = self.score
        if score.missed:
            reasons.append(f"{score.missed} scenario events were missed")
        if score.false_incidents:
            reasons.append(f"{len(score.false_incidents)} false incidents were opened")
        wrong = [e.event for e in score.events if e.detected and not (e.level_ok and e.sources_ok)]
        if wrong:
            reasons.append(f"not at the expected colour or sources: {', '.join(wrong)}")
        return reasons
