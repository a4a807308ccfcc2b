"""What every gridwatch dashboard shares, on top of grafana-foundation-sdk.

The SDK has builders for panels, variables and annotations but no query type for Grafana's
PostgreSQL datasource, so this module adds one (raw SQL in code mode) and an annotation target
that carries SQL. Everything else is the SDK's own builders.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.builders import table
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as gm

from gridwatch import kinds
from gridwatch.events import Level

DATASOURCE_UID = "gridwatch-db"
DATASOURCE_TYPE = "grafana-postgresql-datasource"
DATASOURCE = gm.DataSourceRef(type_val=DATASOURCE_TYPE, uid=DATASOURCE_UID)
FOLDER_UID = "gridwatch"
INCIDENT_UID = "gridwatch-incident"
GRID_COLUMNS = 24

QueryFormat = Literal["table", "time_series"]

# Grafana's named palette colours for the three warning levels (三色预警).
LEVEL_COLOURS: dict[Level, str] = {
    Level.YELLOW: "yellow",
    Level.ORANGE: "orange",
    Level.RED: "red",
}
LEVEL_NAMES: dict[Level, str] = {
    Level.YELLOW: "黄 yellow",
    Level.ORANGE: "橙 orange",
    Level.RED: "红 red",
}
# One count column per level, named as the level is shown.
COUNT_BY_LEVEL = ", ".join(
    f"count(*) FILTER (WHERE level = '{level.value}') AS \"{LEVEL_NAMES[level]}\""
    for level in Level
)


class SqlQuery(cogvariants.Dataquery):
    """A query of Grafana's PostgreSQL datasource, written as raw SQL."""

    def __init__(self, raw_sql: str, fmt: QueryFormat, ref_id: str) -> None:
        self.raw_sql = raw_sql
        self.fmt = fmt
        self.ref_id = ref_id

    def to_json(self) -> dict[str, object]:
        return {
            "refId": self.ref_id,
            "datasource": DATASOURCE.to_json(),
            "editorMode": "code",
            "format": self.fmt,
            "rawQuery": True,
            "rawSql": self.raw_sql,
        }


class Sql(cogbuilder.Builder[cogvariants.Dataquery]):
    def __init__(self, raw_sql: str, fmt: QueryFormat = "table", ref_id: str = "A") -> None:
        self._query = SqlQuery(raw_sql.strip(), fmt, ref_id)

    def build(self) -> cogvariants.Dataquery:
        return self._query


class _SqlAnnotationTarget(gm.AnnotationTarget):
    """An annotation query of a SQL datasource: rows with ``time``, ``text`` and ``tags``."""

    def __init__(self, raw_sql: str) -> None:
        super().__init__()
        self.raw_sql = raw_sql

    def to_json(self) -> dict[str, object]:
        return SqlQuery(self.raw_sql, "table", "Anno").to_json()


class _SqlAnnotationTargetBuilder(cogbuilder.Builder[gm.AnnotationTarget]):
    def __init__(self, raw_sql: str) -> None:
        self._target = _SqlAnnotationTarget(raw_sql.strip())

    def build(self) -> gm.AnnotationTarget:
        return self._target


def sql_annotation(name: str, raw_sql: str, colour: str) -> gd.AnnotationQuery:
    return (
        gd.AnnotationQuery()
        .name(name)
        .datasource(DATASOURCE)
        .enable(True)
        .icon_color(colour)
        .target(_SqlAnnotationTargetBuilder(raw_sql))
    )


def kind_label(label: kinds.Text) -> str:
    """How a dashboard names a kind: 森林火情 forest fire."""
    return f"{label.zh} {label.en}"


def value_mappings() -> list[gm.ValueMapping]:
    """Show a level as its colour and bilingual name, and an incident or detection kind as its
    bilingual label (``gridwatch.kinds``), wherever it appears as a value."""
    labels = [
        *((k.value, kind_label(info.label)) for k, info in kinds.INCIDENT_KINDS.items()),
        *((k.value, kind_label(info.label)) for k, info in kinds.DETECTION_KINDS.items()),
    ]
    options = {
        level.value: gm.ValueMappingResult(
            text=LEVEL_NAMES[level], color=LEVEL_COLOURS[level], index=i
        )
        for i, level in enumerate(Level)
    }
    options |= {
        value: gm.ValueMappingResult(text=text, index=len(options) + i)
        for i, (value, text) in enumerate(labels)
    }
    return [gm.ValueMap(options=options)]


def fixed_colour(colour: str) -> list[gm.DynamicConfigValue]:
    return [gm.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": colour})]


def colour_text_cells() -> list[gm.DynamicConfigValue]:
    return [gm.DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-text"})]


def image_cells() -> list[gm.DynamicConfigValue]:
    return [gm.DynamicConfigValue(id_val="custom.cellOptions", value={"type": "image"})]


def incident_link(field: str = "incident_id") -> gd.DashboardLink:
    """Click-through from any row carrying an incident id to the incident's own dashboard."""
    return (
        gd.DashboardLink("Open incident")
        .url(
            f"/d/{INCIDENT_UID}/incident?var-incident=${{__data.fields.{field}}}&${{__url_time_range}}"
        )
        .target_blank(False)
    )


# Where the duty officer's console is, as the operators' browsers reach it; the committed
# files use this default, `gridwatch dashboards push` the GRIDWATCH_CONSOLE_URL setting.
CONSOLE_URL = "http://localhost:8710"


def console_variable(url: str) -> gd.ConstantVariable:
    """``$console``: the console's base URL, for links that open an incident or case there."""
    return gd.ConstantVariable("console").label("控制台 console").value(url.rstrip("/"))


def console_link(title: str, path: str) -> gd.DashboardLink:
    """A link into the console (``path`` may use Grafana's variables)."""
    return gd.DashboardLink(title).url(f"${{console}}{path}").target_blank(False)


def to_json(dashboard: gd.Dashboard) -> dict[str, Any]:
    """The provisioning JSON of a dashboard, panels numbered and laid out in order.

    Each panel goes where it sits highest on Grafana's 24-column grid (leftmost on a tie), as
    Grafana's own compaction would move it, so a column of small panels stacks beside a big one.
    """
    document: dict[str, Any] = json.loads(json.dumps(dashboard.build(), cls=JSONEncoder))
    skyline = [0] * GRID_COLUMNS
    for number, panel in enumerate(document.get("panels", []), start=1):
        panel["id"] = number
        pos = panel["gridPos"]
        width = min(pos["w"], GRID_COLUMNS)
        tops = [max(skyline[x : x + width]) for x in range(GRID_COLUMNS - width + 1)]
        pos["y"] = min(tops)
        pos["x"] = tops.index(pos["y"])
        skyline[pos["x"] : pos["x"] + width] = [pos["y"] + pos["h"]] * width
    document["annotations"] = {"list": document.get("annotations", {}).get("list", [])}
    return document


def table_panel(title: str, raw_sql: str, height: int, span: int) -> table.Panel:
    """A table panel; a `level` column is shown in its alert colour, kinds by their labels."""
    panel = (
        table.Panel()
        .title(title)
        .datasource(DATASOURCE)
        .with_target(Sql(raw_sql))
        .show_header(True)
        .height(height)
        .span(span)
    )
    panel.mappings(value_mappings())
    if " level" in raw_sql:
        panel.override_by_name("level", colour_text_cells())
    return panel
