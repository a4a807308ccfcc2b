"""The table of kinds: every detection and incident kind walks through fusion, grading, CAP
and routing on the sample street, with complete facts; the table's own rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from alerts.cap import Notice, to_cap, to_ebm
from alerts.engine import AlertEngine
from dashboards.grafana import value_mappings
from gridwatch import kinds
from gridwatch.events import (
    Detection,
    DetectionKind,
    Incident,
    IncidentKind,
    Level,
    SourceRef,
    SourceType,
    ZoneKind,
)
from gridwatch.geo import GridIndex
from gridwatch.site import Site
from streams.fusion import FusionContext, FusionState, fuse

T0 = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)


def _ctx(site: Site, index: GridIndex) -> FusionContext:
    return FusionContext(
        locate=index.locate,
        projection=index.projection,
        towers={t.id: t.location for t in site.watchtowers},
        departments=site.departments_for,
    )


def test_every_kind_has_an_entry_and_nothing_else_does() -> None:
    assert set(kinds.DETECTION_KINDS) == set(DetectionKind)
    assert set(kinds.INCIDENT_KINDS) == set(IncidentKind)
    assert set(kinds.LEVELS) == set(Level)


@pytest.mark.parametrize("kind", list(DetectionKind))
def test_every_detection_kind_fuses_into_its_incident(
    kind: DetectionKind, site: Site, index: GridIndex
) -> None:
    info = kinds.detection(kind)
    assert info.label.zh and info.label.en
    sensor = site.sensors[0]
    detection = Detection(
        kind=kind,
        source=SourceRef(type=SourceType.SENSOR, id=sensor.id),
        ts=T0,
        confidence=0.9,
        level=Level.YELLOW,
        location=sensor.location,
    )
    _, incident = fuse(FusionState(), detection, _ctx(site, index))
    assert incident is not None and incident.kind is info.incident
    for zone, other in info.by_zone:
        zoned = detection.model_copy(update={"zones": (zone,)})
        _, incident = fuse(FusionState(), zoned, _ctx(site, index))
        assert incident is not None and incident.kind is other


def _incident(site: Site, kind: IncidentKind, level: Level) -> Incident:
    grid = site.grids[0]
    point = grid.micro_grids[0].polygon[0]
    return Incident(
        kind=kind,
        location={"lon": point[0], "lat": point[1]},  # type: ignore[arg-type]
        community_code=grid.community_code,
        grid_code=grid.code,
        micro_grid_code=None,
        level=level,
        confidence=0.9,
        sources=(SourceRef(type=SourceType.SENSOR, id="X"),),
        detection_ids=(),
        departments=site.departments_for(kind),
        first_seen=T0,
        last_seen=T0,
    )


@pytest.mark.parametrize("kind", list(IncidentKind))
def test_every_incident_kind_is_graded_routed_and_broadcast(kind: IncidentKind, site: Site) -> None:
    info = kinds.incident(kind)
    for text in (info.label, info.cap_event, info.instruction):
        assert text.zh and text.en
    assert info.radius_m > 0 and info.window > timedelta(0) and info.quiet_after > info.window
    route = site.departments_for(kind)
    assert route, f"no department of the sample street handles {kind}"
    engine = AlertEngine(site)
    alerts = engine.on_incident(_incident(site, kind, Level.RED), T0)
    red = next(a for a in alerts if a.level is Level.RED)
    assert {t.id for t in red.targets if t.role == "department"} == set(route)
    assert kinds.incident(kind).label.zh in red.summary
    for level in Level:
        notice = Notice(
            identifier="GW-1.alert",
            sender="gridwatch@kinds-test.invalid",
            sent=T0,
            msg_type="Alert",
            drill=False,
            kind=kind,
            level=level,
            area=kinds.Text("网格 1", "grid 1"),
            reasons=red.reasons,
            location=red.location,
            radius_km=1,
            polygon=(),
            grid_code=red.grid_code,
            community_code=red.grid_code[:12],
            expires=T0 + timedelta(hours=1),
        )
        assert f"<category>{info.cap_category}</category>".encode() in to_cap(notice)
        assert to_ebm(notice)


def test_every_kind_has_a_dashboard_label() -> None:
    [mapping] = value_mappings()
    options = mapping.options
    for kind in (*IncidentKind, *DetectionKind):
        assert kind.value in options, kind


def test_route_is_the_tables_order_of_the_sites_handling_departments() -> None:
    # The table's order first (water before emergency for a flood), then the street's others.
    assert kinds.route(IncidentKind.FLOOD, ("emergency", "canal", "water")) == (
        "water",
        "emergency",
        "canal",
    )
    assert kinds.route(IncidentKind.FLOOD, ()) == ()


def test_sample_street_routes_traffic_safety_to_the_traffic_police(site: Site) -> None:
    assert site.departments_for(IncidentKind.TRAFFIC_SAFETY) == ("traffic_police",)
    police = next(d for d in site.departments if d.id == "traffic_police")
    assert police.name == "交警大队"


def test_fire_over_farmland_is_straw_burning_and_road_water_is_corroborated_by_gauges() -> None:
    assert kinds.incident_kind(DetectionKind.FIRE, (ZoneKind.FARMLAND,)) is (
        IncidentKind.STRAW_BURNING
    )
    assert kinds.incident_kind(DetectionKind.FIRE, (ZoneKind.ROAD,)) is IncidentKind.FOREST_FIRE
    assert kinds.corroborated(DetectionKind.WATER_LEVEL) == (IncidentKind.TRAFFIC_SAFETY,)
    assert kinds.corroborated(DetectionKind.RAINFALL) == (IncidentKind.TRAFFIC_SAFETY,)
    assert kinds.corroborated(DetectionKind.FIRE) == ()


def test_sensitive_zones_default_from_the_table(site: Site) -> None:
    sensitive = site.policy.grading.sensitive_zones
    assert IncidentKind.FOREST_FIRE in sensitive[ZoneKind.FOREST]
    assert IncidentKind.TRAFFIC_SAFETY in sensitive[ZoneKind.SCHOOL]
    assert IncidentKind.DEVICE_FAULT not in sensitive[ZoneKind.SCHOOL]
