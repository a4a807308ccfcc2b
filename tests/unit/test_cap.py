"""Every CAP message kind the system emits validates against the official CAP 1.2 XSD."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta

import pytest

from alerts.cap import EVENT, InvalidCap, Notice, to_cap, to_ebm, validate_cap
from gridwatch.events import IncidentKind, Level, Point

SENT = datetime(2026, 4, 5, 6, 7, 8, 123456, tzinfo=UTC)


def notice(
    msg_type: str = "Alert",
    drill: bool = False,
    level: Level = Level.RED,
    references: tuple[Notice, ...] = (),
) -> Notice:
    return Notice(
        identifier=f"GW-0190a.{msg_type.lower()}",
        sender="gridwatch@example.gov.cn",
        sent=SENT,
        msg_type=msg_type,  # type: ignore[arg-type]
        drill=drill,
        kind=IncidentKind.FOREST_FIRE,
        level=level,
        headline="红色预警：森林火情，网格 52019900320101",
        description="corroborated by 3 independent sources；in sensitive zone: forest 团结林区",
        location=Point(lon=106.63, lat=26.61),
        radius_km=3,
        area_desc="示例街道 网格 52019900320101",
        polygon=((106.62, 26.60), (106.64, 26.60), (106.64, 26.62)),
        grid_code="52019900320101",
        community_code="520199003201",
        expires=SENT + timedelta(hours=6),
        references=references,
    )


@pytest.mark.parametrize("level", list(Level))
@pytest.mark.parametrize("drill", [False, True])
@pytest.mark.parametrize("msg_type", ["Alert", "Update", "Cancel"])
def test_every_kind_validates(msg_type: str, drill: bool, level: Level) -> None:
    refs = (notice(),) if msg_type != "Alert" else ()
    document = to_cap(notice(msg_type, drill, level, refs))
    validate_cap(document)  # to_cap validates already; this states it
    text = document.decode()
    assert "<sent>2026-04-05T14:07:08+08:00</sent>" in text
    assert f"<msgType>{msg_type}</msgType>" in text
    assert ("<status>Exercise</status>" in text) is drill
    assert f"<value>{level.value}</value>" in text  # the colour kept in a parameter
    assert "<circle>26.610000,106.630000 3</circle>" in text
    assert "<value>52019900320101</value>" in text  # the grid as a geocode
    if refs:
        assert (
            "<references>gridwatch@example.gov.cn,GW-0190a.alert,2026-04-05T14:07:08+08:00" in text
        )


def test_severity_mapping_and_ebm_profile() -> None:
    assert "<severity>Extreme</severity>" in to_cap(notice()).decode()
    assert "<severity>Moderate</severity>" in to_cap(notice(level=Level.YELLOW)).decode()
    ebm = json.loads(to_ebm(notice("Cancel", references=(notice(),))))
    assert ebm["MsgBasicInfo"]["MsgType"] == 2 and ebm["MsgBasicInfo"]["Severity"] == 1
    assert ebm["RelatedEBMID"] == "GW-0190a.alert"
    assert ebm["MsgContent"]["AreaCode"] == ["520199003201"]


def test_an_invalid_document_is_refused_with_the_schema_reason() -> None:
    bad = to_cap(notice()).replace(b"<msgType>Alert</msgType>", b"<msgType>Panic</msgType>")
    with pytest.raises(InvalidCap, match="msgType"):
        validate_cap(bad)


@pytest.mark.parametrize("kind", list(IncidentKind))
def test_every_incident_kind_has_a_cap_event_and_an_ebm_twin(kind: IncidentKind) -> None:
    alert = dataclasses.replace(notice(), kind=kind)
    text = to_cap(alert).decode()  # validated against the XSD on the way out
    assert f"<category>{EVENT[kind][0]}</category>" in text
    assert json.loads(to_ebm(alert))
