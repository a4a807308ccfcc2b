"""Every CAP message kind the system emits validates against the official CAP 1.2 XSD, signed
(an enveloped XML-DSig signature) as well as unsigned."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from lxml import etree

from alerts.cap import CAP_NS, InvalidCap, Notice, sign_cap, to_cap, to_ebm, validate_cap
from gridwatch import kinds
from gridwatch.errors import ConfigError
from gridwatch.events import IncidentKind, Level, Point
from gridwatch.xml_signature import (
    SignatureError,
    XmlSigner,
    load_certificate,
    load_signer,
    make_throwaway,
    verify,
)

SENT = datetime(2026, 4, 5, 6, 7, 8, 123456, tzinfo=UTC)


def notice(
    msg_type: str = "Alert",
    drill: bool = False,
    level: Level = Level.RED,
    references: tuple[Notice, ...] = (),
) -> Notice:
    return Notice(
        identifier=f"GW-0190a.{msg_type.lower()}",
        sender="gridwatch@cap-test.invalid",
        sent=SENT,
        msg_type=msg_type,  # type: ignore[arg-type]
        drill=drill,
        kind=IncidentKind.FOREST_FIRE,
        level=level,
        area=kinds.Text("示例街道网格 52019900320101", "grid 52019900320101 of street 520199003"),
        reasons=("corroborated by 3 independent sources", "in sensitive zone: forest 团结林区"),
        location=Point(lon=106.63, lat=26.61),
        radius_km=3,
        polygon=((106.62, 26.60), (106.64, 26.60), (106.64, 26.62)),
        grid_code="52019900320101",
        community_code="520199003201",
        expires=SENT + timedelta(hours=6),
        references=tuple(r.reference for r in references),
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
            "<references>gridwatch@cap-test.invalid,GW-0190a.alert,2026-04-05T14:07:08+08:00"
            in text
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


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> XmlSigner:
    return load_signer(*make_throwaway(tmp_path_factory.mktemp("cap"), "test CAP sender"))


@pytest.mark.parametrize("msg_type", ["Alert", "Update", "Cancel"])
def test_a_signed_message_is_valid_cap_and_verifies(signer: XmlSigner, msg_type: str) -> None:
    refs = (notice(),) if msg_type != "Alert" else ()
    signed = sign_cap(to_cap(notice(msg_type, references=refs)), signer)
    validate_cap(signed)  # the schema allows ds:Signature at the end of alert
    assert signed.rstrip().endswith(b"</ds:Signature></alert>")
    verify(signed, signer.certificate)


def test_one_altered_byte_of_the_text_fails_verification(signer: XmlSigner) -> None:
    signed = sign_cap(to_cap(notice()), signer)
    at = signed.index(b"corroborated")
    altered = signed[:at] + b"C" + signed[at + 1 :]
    validate_cap(altered)  # still valid CAP: only the signature can tell
    with pytest.raises(SignatureError, match="does not verify"):
        verify(altered, signer.certificate)


def test_an_unsigned_message_or_another_senders_is_refused(
    signer: XmlSigner, tmp_path: Path
) -> None:
    with pytest.raises(SignatureError, match="missing"):
        verify(to_cap(notice()), signer.certificate)
    _, other = make_throwaway(tmp_path, "someone else")
    with pytest.raises(SignatureError, match="does not verify"):
        verify(sign_cap(to_cap(notice()), signer), load_certificate(other))


def test_a_key_and_a_certificate_that_do_not_belong_together_are_refused(tmp_path: Path) -> None:
    key, _ = make_throwaway(tmp_path / "a", "a")
    _, cert = make_throwaway(tmp_path / "b", "b")
    with pytest.raises(ConfigError, match="is not the certificate of"):
        load_signer(key, cert)


@pytest.mark.parametrize("kind", list(IncidentKind))
def test_every_incident_kind_has_a_cap_event_and_an_ebm_twin(kind: IncidentKind) -> None:
    alert = dataclasses.replace(notice(), kind=kind)
    text = to_cap(alert).decode()  # validated against the XSD on the way out
    assert f"<category>{kinds.incident(kind).cap_category}</category>" in text
    assert json.loads(to_ebm(alert))


NS = {"cap": CAP_NS}


def _infos(document: bytes) -> list[etree._Element]:
    return etree.fromstring(document).findall("cap:info", NS)  # type: ignore[no-any-return]


def _text(info: etree._Element, path: str) -> str:
    return str(info.findtext(path, namespaces=NS))


def _has_cjk(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


@pytest.mark.parametrize("msg_type", ["Alert", "Update", "Cancel"])
@pytest.mark.parametrize("level", list(Level))
def test_a_chinese_info_block_then_an_english_one_each_naming_the_colour(
    msg_type: str, level: Level
) -> None:
    refs = (notice(),) if msg_type != "Alert" else ()
    zh, en = _infos(to_cap(notice(msg_type, level=level, references=refs)))
    assert (_text(zh, "cap:language"), _text(en, "cap:language")) == ("zh-CN", "en-US")
    colour = kinds.level(level).colour
    for field in ("cap:event", "cap:headline", "cap:description", "cap:senderName"):
        assert _has_cjk(_text(zh, field)), field
    for field in ("cap:event", "cap:headline", "cap:senderName"):
        assert not _has_cjk(_text(en, field)), field
    assert colour.zh in _text(zh, "cap:headline") and colour.zh in _text(zh, "cap:description")
    assert colour.en in _text(en, "cap:headline").lower()
    assert colour.en in _text(en, "cap:description")
    others = [kinds.level(lv).colour for lv in Level if lv is not level]
    for other in others:
        assert other.zh not in _text(zh, "cap:description")
        assert other.en not in _text(en, "cap:description")
    if msg_type != "Cancel":
        info = kinds.incident(IncidentKind.FOREST_FIRE)
        assert _text(zh, "cap:instruction") == info.instruction.zh
        assert _text(en, "cap:instruction") == info.instruction.en


def test_the_geocodes_carry_the_grid_the_county_and_the_statistical_code() -> None:
    for info in _infos(to_cap(notice())):
        codes = {
            g.findtext("cap:valueName", namespaces=NS): g.findtext("cap:value", namespaces=NS)
            for g in info.findall("cap:area/cap:geocode", NS)
        }
        assert codes == {
            "grid_code": "52019900320101",
            "GB/T 2260": "520199",
            "统计用区划代码": "520199003201",
        }


def test_an_update_references_every_earlier_message_the_previous_last() -> None:
    first = notice()
    second = dataclasses.replace(notice("Update", level=Level.ORANGE), identifier="GW-0190a.u1")
    third = notice("Update", references=(first, second))
    text = to_cap(third).decode()
    assert f"<references>{first.reference} {second.reference}</references>" in text
    assert json.loads(to_ebm(third))["RelatedEBMID"] == "GW-0190a.u1"
