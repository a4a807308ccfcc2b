"""Fusion of the traffic detector's kinds: a stalled vehicle opens a traffic-safety incident for
the traffic police (road water and the gauges that corroborate it: tests/unit/test_fusion.py)."""

from datetime import UTC, datetime, timedelta

from gridwatch.events import Detection, DetectionKind, IncidentKind, Point, SourceRef
from gridwatch.events import SourceType as St
from gridwatch.geo import GridIndex
from gridwatch.site import Site
from streams.fusion import FusionContext, FusionState, fuse

T0 = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)
ROAD = Point(lon=106.6052, lat=26.6051)
GAUGE = Point(lon=106.605, lat=26.605)


def context(site: Site) -> FusionContext:
    index = GridIndex(site)
    return FusionContext(
        locate=index.locate,
        projection=index.projection,
        towers={},
        departments=site.departments_for,
    )


def camera(kind: DetectionKind, minutes: float) -> Detection:
    return Detection(
        kind=kind,
        source=SourceRef(type=St.CAMERA, id="CAM-ROAD"),
        ts=T0 + timedelta(minutes=minutes),
        confidence=0.8,
        location=ROAD,
        bbox=(100, 200, 160, 240),
        rule=f"camera:{kind.value}",
    )


def test_a_stalled_vehicle_is_a_traffic_safety_incident_for_the_traffic_police(
    tiny_site: Site,
) -> None:
    data = tiny_site.model_dump()
    police = {"id": "traffic_police", "name": "交警大队", "handles": ["traffic_safety"]}
    data["departments"] = [*data["departments"], police]
    ctx = context(Site.model_validate(data))
    _, incident = fuse(FusionState(), camera(DetectionKind.TRAFFIC_OBSTRUCTION, 0), ctx)
    assert incident is not None and incident.kind is IncidentKind.TRAFFIC_SAFETY
    assert incident.departments == ("traffic_police",)
    assert incident.grid_code == "52019900300101"
