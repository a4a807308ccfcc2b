"""The table of kinds: every fact about an incident kind and a detection kind, in one place.

Fusion (which incident a detection is evidence of, how far and how long apart its evidence may
be), grading (the zones that make a kind more serious, its floor), the alert engine and CAP
(labels, event, category, instruction in Chinese and English) and routing (the order in which
departments take a kind) all read these entries. A new hazard is one ``IncidentKindInfo``, its
detection kinds' ``DetectionKindInfo`` and a detector; ``tests/unit/test_kinds.py`` walks every
enum member through each reader, so a kind without complete facts fails there.

Routing: the table gives the order of precedence of department ids for a kind (the lead first,
then those a returned case goes to next); the site file's ``departments[].handles`` says which
of its departments take the kind at all. A street's route is its handling departments in the
table's order, then any others that handle the kind, in file order.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

# ZoneKind is defined with the wire models, which carry it (``Detection.zones``).
from gridwatch.events import DetectionKind, IncidentKind, Level, ZoneKind

Language = Literal["zh", "en"]


# CAP 1.2 <category> values (the XSD's enumeration).
CapCategory = Literal[
    "Geo", "Met", "Safety", "Security", "Rescue", "Fire", "Health", "Env", "Transport", "Infra",
    "CBRNE", "Other",
]  # fmt: skip


@dataclass(frozen=True)
class Text:
    """The same words in Chinese (zh-CN) and English (en-US)."""

    zh: str
    en: str

    def of(self, language: Language) -> str:
        return self.zh if language == "zh" else self.en


@dataclass(frozen=True)
class IncidentKindInfo:
    label: Text  # what operators and alerts call it
    cap_category: CapCategory
    cap_event: Text  # CAP <event>: the subject of the broadcast
    instruction: Text  # CAP <instruction>: what the public should do
    radius_m: float  # how far apart two detections of one event can be
    window: timedelta  # how far apart in time, beyond the incident's span
    quiet_after: timedelta  # an incident no detection touched this long ends
    sensitive_zones: tuple[ZoneKind, ...]  # ground that raises its grade one level
    routing: tuple[str, ...]  # department ids, in order of precedence
    floor: Level | None = None  # the least level it is graded
    # Detection kinds that say where it is: the first of them to join moves an incident opened
    # by another kind to its own place (a river gauge over the rain gauge that read the storm).
    placed_by: tuple[DetectionKind, ...] = ()


@dataclass(frozen=True)
class Corroboration:
    """Detections of other incidents' kinds that corroborate this one when close enough: a
    gauge near water over a road. They join such an incident as sources but never open one,
    and do not keep it open once its own evidence has cleared."""

    by: tuple[DetectionKind, ...]
    radius_m: float


@dataclass(frozen=True)
class DetectionKindInfo:
    label: Text
    incident: IncidentKind
    by_zone: tuple[tuple[ZoneKind, IncidentKind], ...] = ()  # inside such a zone, that incident
    corroboration: Corroboration | None = None


@dataclass(frozen=True)
class LevelInfo:
    """A colour of the three-colour warning (三色预警) as people and CAP name it."""

    colour: Text  # 红色 / red
    severity: Text  # 特别严重 / extreme: the Chinese warning scale's word for it
    cap_severity: Literal["Extreme", "Severe", "Moderate"]  # blue → Minor is reserved
    ebm_severity: int  # the emergency-broadcast profile's 1 (most severe) .. 4 (blue, reserved)


LEVELS: dict[Level, LevelInfo] = {
    Level.YELLOW: LevelInfo(Text("黄色", "yellow"), Text("较重", "moderate"), "Moderate", 3),
    Level.ORANGE: LevelInfo(Text("橙色", "orange"), Text("严重", "severe"), "Severe", 2),
    Level.RED: LevelInfo(Text("红色", "red"), Text("特别严重", "extreme"), "Extreme", 1),
}


def level(value: Level) -> LevelInfo:
    return LEVELS[value]


_MIN = timedelta(minutes=1)

INCIDENT_KINDS: dict[IncidentKind, IncidentKindInfo] = {
    IncidentKind.FOREST_FIRE: IncidentKindInfo(
        label=Text("森林火情", "forest fire"),
        cap_category="Fire",
        cap_event=Text("森林火情", "Forest fire"),
        instruction=Text(
            "请远离林区，服从现场指挥，切勿进山扑火。",
            "Keep away from the forest, follow the instructions of the responders on site and"
            " do not go into the hills to fight the fire.",
        ),
        radius_m=1500.0,
        window=30 * _MIN,
        quiet_after=360 * _MIN,
        sensitive_zones=(ZoneKind.FOREST, ZoneKind.SCHOOL, ZoneKind.DENSE_HOUSING),
        routing=("emergency", "natural_resources", "enforcement"),
    ),
    IncidentKind.STRAW_BURNING: IncidentKindInfo(
        label=Text("秸秆焚烧", "straw burning"),
        cap_category="Fire",
        cap_event=Text("秸秆焚烧", "Straw burning"),
        instruction=Text(
            "秸秆禁烧，请立即停止焚烧并配合现场处置；周边群众请关闭门窗，减少外出。",
            "Burning straw is forbidden: stop burning at once and follow the responders on"
            " site; people nearby should keep windows closed and stay indoors.",
        ),
        radius_m=1000.0,
        window=30 * _MIN,
        quiet_after=180 * _MIN,
        sensitive_zones=(ZoneKind.SCHOOL, ZoneKind.DENSE_HOUSING),
        routing=("ecology", "enforcement", "emergency"),
    ),
    IncidentKind.ILLEGAL_CONSTRUCTION: IncidentKindInfo(
        label=Text("违法建设", "illegal construction"),
        cap_category="Safety",
        cap_event=Text("违法建设", "Illegal construction"),
        instruction=Text(
            "请勿进入施工区域，等待执法人员核查。",
            "Do not enter the building site; enforcement officers will inspect it.",
        ),
        radius_m=300.0,
        # Construction is confirmed over days; its evidence comes a day apart.
        window=36 * 60 * _MIN,
        quiet_after=14 * 24 * 60 * _MIN,
        sensitive_zones=(ZoneKind.SCHOOL, ZoneKind.DENSE_HOUSING),
        routing=("natural_resources", "enforcement"),
    ),
    IncidentKind.FLOOD: IncidentKindInfo(
        label=Text("防汛风险", "flood risk"),
        cap_category="Met",
        cap_event=Text("防汛风险", "Flood risk"),
        instruction=Text(
            "请远离河道低洼地带，做好转移准备。",
            "Keep away from rivers and low-lying ground and be ready to move to safety.",
        ),
        radius_m=5000.0,
        window=30 * _MIN,
        quiet_after=720 * _MIN,
        sensitive_zones=(ZoneKind.SCHOOL, ZoneKind.DENSE_HOUSING),
        routing=("water", "emergency"),
        placed_by=(DetectionKind.WATER_LEVEL,),
    ),
    IncidentKind.TRAFFIC_SAFETY: IncidentKindInfo(
        label=Text("交通安全", "traffic safety"),
        cap_category="Transport",
        cap_event=Text("道路交通险情", "Road hazard"),
        instruction=Text(
            "前方道路受阻，请减速慢行、注意避让，服从交警指挥。",
            "The road ahead is blocked: slow down, keep clear and follow the traffic police.",
        ),
        radius_m=200.0,
        window=15 * _MIN,
        quiet_after=120 * _MIN,
        sensitive_zones=(ZoneKind.SCHOOL,),
        routing=("traffic_police", "emergency"),
    ),
    IncidentKind.DEVICE_FAULT: IncidentKindInfo(
        label=Text("设备故障", "device fault"),
        cap_category="Infra",
        cap_event=Text("监测设备故障", "Monitoring device fault"),
        instruction=Text(
            "监测设备故障，运维人员正在处理，无需采取行动。",
            "A monitoring device is out of order and being repaired; no action is needed.",
        ),
        radius_m=1.0,  # a fault is the device itself
        window=30 * _MIN,
        quiet_after=24 * 60 * _MIN,
        sensitive_zones=(),
        routing=("ops",),
    ),
}

_STRAW = ((ZoneKind.FARMLAND, IncidentKind.STRAW_BURNING),)

DETECTION_KINDS: dict[DetectionKind, DetectionKindInfo] = {
    DetectionKind.FIRE: DetectionKindInfo(Text("明火", "fire"), IncidentKind.FOREST_FIRE, _STRAW),
    DetectionKind.SMOKE: DetectionKindInfo(Text("烟雾", "smoke"), IncidentKind.FOREST_FIRE, _STRAW),
    DetectionKind.THERMAL_HOTSPOT: DetectionKindInfo(
        Text("热点", "thermal hotspot"), IncidentKind.FOREST_FIRE, _STRAW
    ),
    DetectionKind.SMOKE_SENSOR: DetectionKindInfo(
        Text("烟感报警", "smoke sensor"), IncidentKind.FOREST_FIRE, _STRAW
    ),
    DetectionKind.TEMPERATURE: DetectionKindInfo(
        Text("温度异常", "temperature"), IncidentKind.FOREST_FIRE
    ),
    DetectionKind.PM25: DetectionKindInfo(Text("PM2.5 超标", "PM2.5"), IncidentKind.STRAW_BURNING),
    DetectionKind.CONSTRUCTION_CHANGE: DetectionKindInfo(
        Text("地物变化", "construction change"), IncidentKind.ILLEGAL_CONSTRUCTION
    ),
    DetectionKind.WATER_LEVEL: DetectionKindInfo(Text("水位", "water level"), IncidentKind.FLOOD),
    DetectionKind.RAINFALL: DetectionKindInfo(Text("雨量", "rainfall"), IncidentKind.FLOOD),
    DetectionKind.TRAFFIC_OBSTRUCTION: DetectionKindInfo(
        Text("道路障碍", "traffic obstruction"), IncidentKind.TRAFFIC_SAFETY
    ),
    DetectionKind.ROAD_WATER: DetectionKindInfo(
        Text("道路积水", "water on the road"),
        IncidentKind.TRAFFIC_SAFETY,
        corroboration=Corroboration(
            by=(DetectionKind.WATER_LEVEL, DetectionKind.RAINFALL), radius_m=1000.0
        ),
    ),
    DetectionKind.DEVICE_OFFLINE: DetectionKindInfo(
        Text("设备离线", "device offline"), IncidentKind.DEVICE_FAULT
    ),
    DetectionKind.SENSOR_FAULT: DetectionKindInfo(
        Text("传感器故障", "sensor fault"),
        IncidentKind.DEVICE_FAULT,  # flatline, out of range
    ),
    DetectionKind.CAMERA_HEALTH: DetectionKindInfo(
        Text("摄像机异常", "camera health"), IncidentKind.DEVICE_FAULT
    ),
}


def incident(kind: IncidentKind) -> IncidentKindInfo:
    return INCIDENT_KINDS[kind]


def detection(kind: DetectionKind) -> DetectionKindInfo:
    return DETECTION_KINDS[kind]


def incident_kind(kind: DetectionKind, zones: Iterable[ZoneKind] = ()) -> IncidentKind:
    """The incident a detection of ``kind`` lying in ``zones`` is evidence of: fire or smoke
    over farmland is straw burning, elsewhere a forest fire."""
    info = DETECTION_KINDS[kind]
    inside = set(zones)
    return next((to for zone, to in info.by_zone if zone in inside), info.incident)


def corroborated(kind: DetectionKind) -> tuple[IncidentKind, ...]:
    """The incident kinds a detection of ``kind`` may corroborate, besides its own."""
    return tuple(
        dict.fromkeys(
            info.incident
            for info in DETECTION_KINDS.values()
            if info.corroboration is not None and kind in info.corroboration.by
        )
    )


def route(kind: IncidentKind, handling: Iterable[str]) -> tuple[str, ...]:
    """The departments a case of ``kind`` goes to, in turn: of ``handling`` (the site's
    departments that take the kind, in file order) those the table names, in its order, then
    the rest in file order."""
    handling = tuple(handling)
    order = INCIDENT_KINDS[kind].routing
    return tuple(d for d in order if d in handling) + tuple(d for d in handling if d not in order)


def sensitive_zones() -> dict[ZoneKind, tuple[IncidentKind, ...]]:
    """Zone kind → the incident kinds it raises one level (the grading's default)."""
    out: dict[ZoneKind, tuple[IncidentKind, ...]] = {}
    for kind, info in INCIDENT_KINDS.items():
        for zone in info.sensitive_zones:
            out[zone] = (*out.get(zone, ()), kind)
    return out


def warning_summary(kind: IncidentKind, level: Level, grid_code: str, *, resolved: bool) -> str:
    """One line for an alert or a case: 红色预警：森林火情，网格 52019900320101."""
    done = "（已解除）" if resolved else ""
    what = INCIDENT_KINDS[kind].label.zh
    return f"{LEVELS[level].colour.zh}预警：{what}，网格 {grid_code}{done}"
