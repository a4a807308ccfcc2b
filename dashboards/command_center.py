"""The command center (街道基层治理指挥中心) and the incident page it clicks through to."""

from __future__ import annotations

from grafana_foundation_sdk.builders import barchart, geomap, stat, table, timeseries
from grafana_foundation_sdk.builders import common as gc
from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as gm
from grafana_foundation_sdk.models import geomap as gmm

from dashboards import governance, variables
from dashboards.grafana import (
    CONSOLE_URL,
    COUNT_BY_LEVEL,
    DATASOURCE,
    INCIDENT_UID,
    LEVEL_COLOURS,
    LEVEL_NAMES,
    Sql,
    colour_text_cells,
    console_link,
    console_variable,
    fixed_colour,
    image_cells,
    incident_link,
    table_panel,
    value_mappings,
)
from gridwatch.events import Level
from gridwatch.site import Site

COMMAND_CENTER_UID = "gridwatch-command-center"
# Served by Grafana itself: docker-compose mounts dashboards/geo/ under public/maps/.
GRIDS_GEOJSON_URL = "public/maps/gridwatch/grids.geojson"

# Live: every incident still open, and those that ended inside the time range.
IN_VIEW = f"(NOT ended OR $__timeFilter(ts)) AND {variables.SCOPE}"

COUNTS_BY_LEVEL = f"""
SELECT {COUNT_BY_LEVEL}
FROM incidents_current
WHERE {IN_VIEW}
"""

INCIDENTS_ON_MAP = f"""
SELECT incident_id::text AS incident_id, kind, level, round(confidence::numeric, 2) AS confidence,
       lat, lon, grid_code, micro_grid_code, first_seen, ts AS last_update, ended
FROM incidents_current
WHERE {IN_VIEW}
ORDER BY ts DESC
"""

COUNTS_BY_KIND = f"""
SELECT kind, {COUNT_BY_LEVEL}
FROM incidents_current
WHERE {IN_VIEW}
GROUP BY kind
ORDER BY kind
"""

NEWEST_ALERTS = f"""
SELECT ts AS "time", level, state, kind, grid_code, summary, incident_id::text AS incident_id
FROM alerts
WHERE $__timeFilter(ts) AND {variables.SCOPE}
ORDER BY ts DESC
LIMIT 50
"""

ALERTS_PER_MINUTE = f"""
SELECT $__timeGroupAlias(ts, '1m'), level AS metric, count(*) AS value
FROM alerts
WHERE $__timeFilter(ts) AND state = 'firing' AND {variables.SCOPE}
GROUP BY 1, 2
ORDER BY 1
"""


def _level_colours(panel: stat.Panel | barchart.Panel | timeseries.Panel) -> None:
    for level in Level:
        panel.override_by_name(LEVEL_NAMES[level], fixed_colour(LEVEL_COLOURS[level]))


def _incident_map() -> geomap.Panel:
    grids = (
        gc.MapLayerOptions()
        .type("geojson")
        .name("网格 grids")
        .config(
            {
                "src": GRIDS_GEOJSON_URL,
                "rules": [],
                "style": {
                    "color": {"fixed": "#5794F2"},
                    "opacity": 0.15,
                    "lineWidth": 1,
                },
            }
        )
        .tooltip(False)
    )
    incidents = (
        gc.MapLayerOptions()
        .type("markers")
        .name("事件 incidents")
        .location(
            gc.FrameGeometrySource()
            .mode(cm.FrameGeometrySourceMode.COORDS)
            .latitude("lat")
            .longitude("lon")
        )
        .config(
            {
                "showLegend": True,
                "style": {
                    "color": {"field": "level", "fixed": "red"},
                    "size": {"fixed": 14},
                    "symbol": {"mode": "fixed", "fixed": "img/icons/marker/circle.svg"},
                    "opacity": 0.9,
                    "text": {"field": "kind", "mode": "field"},
                    "textConfig": {"fontSize": 11, "offsetY": -16},
                },
            }
        )
        .tooltip(True)
    )
    return (
        geomap.Panel()
        .title("实时事件 Live incidents")
        .description("Open incidents and those ended in the time range, over the grid polygons.")
        .datasource(DATASOURCE)
        .with_target(Sql(INCIDENTS_ON_MAP))
        .view(geomap.MapViewConfig().id(gmm.MapCenterID.FIT).all_layers(True))
        .controls(geomap.ControlsOptions().show_zoom(True).mouse_wheel_zoom(True).show_scale(True))
        .basemap(gc.MapLayerOptions().type("default").name("底图 basemap"))
        .layers([grids, incidents])
        .tooltip(geomap.TooltipOptions().mode(gmm.TooltipMode.DETAILS))
        .mappings(value_mappings())
        .data_links([incident_link()])
        .height(16)
        .span(16)
    )


def command_center(site: Site) -> gd.Dashboard:
    counts = (
        stat.Panel()
        .title("按颜色 Incidents by colour")
        .datasource(DATASOURCE)
        .with_target(Sql(COUNTS_BY_LEVEL))
        .color_mode(cm.BigValueColorMode.BACKGROUND)
        .graph_mode(cm.BigValueGraphMode.NONE)
        .height(5)
        .span(8)
    )
    _level_colours(counts)
    by_kind = (
        barchart.Panel()
        .title("按类型 Incidents by kind")
        .datasource(DATASOURCE)
        .with_target(Sql(COUNTS_BY_KIND))
        .x_field("kind")
        .mappings(value_mappings())
        .stacking(cm.StackingMode.NORMAL)
        .show_value(cm.VisibilityMode.AUTO)
        .height(6)
        .span(8)
    )
    _level_colours(by_kind)
    alerts = (
        table.Panel()
        .title("最新预警 Newest alerts")
        .datasource(DATASOURCE)
        .with_target(Sql(NEWEST_ALERTS))
        .show_header(True)
        .override_by_name("level", colour_text_cells())
        .mappings(value_mappings())
        .data_links([incident_link()])
        .height(9)
        .span(16)
    )
    per_minute = (
        timeseries.Panel()
        .title("预警趋势 Alerts fired per minute")
        .datasource(DATASOURCE)
        .with_target(Sql(ALERTS_PER_MINUTE, "time_series"))
        .draw_style(cm.GraphDrawStyle.BARS)
        .stacking(gc.StackingConfig().mode(cm.StackingMode.NORMAL))
        .height(9)
        .span(8)
    )
    for level in Level:
        per_minute.override_by_name(level.value, fixed_colour(LEVEL_COLOURS[level]))
    return (
        gd.Dashboard("指挥中心 Command center")
        .uid(COMMAND_CENTER_UID)
        .description("What is burning, flooding or being built right now, where, and how sure.")
        .tags(["gridwatch"])
        .time("now-6h", "now")
        .refresh("30s")
        .variables(variables.scoped(site))
        .annotation(variables.alert_annotation(scoped=True))
        .annotation(governance.scoped_case_annotation())
        .with_panel(_incident_map())
        .with_panel(counts)
        .with_panel(by_kind)
        .with_panel(per_minute)
        .with_panel(alerts)
        .with_panel(governance.deadlines_table().height(8).span(24))
    )


# --- the incident page ----------------------------------------------------------------------

THE_INCIDENT = "incident_id = ${incident:sqlstring}::uuid"

INCIDENT_CHOICES = """
SELECT incident_id::text AS __value,
       kind || ' · ' || level || ' · ' || grid_code || ' · '
         || to_char(first_seen AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') || 'Z' AS __text
FROM incidents_current
ORDER BY ts DESC
LIMIT 200
"""

INCIDENT_FACTS = f"""
SELECT kind, level, round(confidence::numeric, 2) AS confidence, grid_code, micro_grid_code,
       first_seen, (payload ->> 'last_seen')::timestamptz AS last_seen, ended, revision,
       array_to_string(ARRAY(SELECT jsonb_array_elements_text(payload -> 'departments')), ', ')
         AS departments
FROM incidents_current
WHERE {THE_INCIDENT}
"""

EVIDENCE = f"""
SELECT d.ts AS "time", d.kind, d.source_type, d.source_id, round(d.confidence::numeric, 2)
       AS confidence, d.level, d.rule, d.snapshot
FROM detections d
WHERE d.id IN (
  SELECT jsonb_array_elements_text(payload -> 'detection_ids')::uuid
  FROM incidents_current WHERE {THE_INCIDENT}
)
ORDER BY d.ts DESC
"""

SOURCES = f"""
SELECT s ->> 'type' AS source_type, s ->> 'id' AS source_id, count(d.id) AS detections,
       round(max(d.confidence)::numeric, 2) AS best_confidence,
       min(d.ts) AS first, max(d.ts) AS last
FROM incidents_current i
CROSS JOIN LATERAL jsonb_array_elements(i.payload -> 'sources') AS s
LEFT JOIN detections d
  ON d.source_id = s ->> 'id'
 AND d.id IN (SELECT jsonb_array_elements_text(i.payload -> 'detection_ids')::uuid)
WHERE i.{THE_INCIDENT}
GROUP BY 1, 2
ORDER BY detections DESC
"""

# The sensors that took part, from a quarter of an hour before the incident to one after it.
READINGS_AROUND = f"""
SELECT r.ts AS "time", r.device_id || ' ' || r.metric AS metric, r.value
FROM incidents_current i
CROSS JOIN LATERAL jsonb_array_elements(i.payload -> 'sources') AS s
JOIN readings r
  ON r.device_id = s ->> 'id'
 AND r.ts BETWEEN i.first_seen - interval '15 minutes'
              AND (i.payload ->> 'last_seen')::timestamptz + interval '15 minutes'
WHERE i.{THE_INCIDENT} AND s ->> 'type' = 'sensor'
ORDER BY 1
"""

REVISIONS = f"""
SELECT ts AS "time", revision, level, round(confidence::numeric, 2) AS confidence, ended
FROM incidents
WHERE {THE_INCIDENT}
ORDER BY revision
"""

CASE_TIMELINE = f"""
SELECT a.ts AS "time", a.case_id, a.seq, a.action, a.from_state, a.to_state, a.actor, a.tier,
       a.level, a.due_at, a.note
FROM case_audit a
JOIN cases c ON c.case_id = a.case_id
WHERE c.{THE_INCIDENT}
ORDER BY a.case_id, a.seq
"""

INCIDENT_ALERTS = f"""
SELECT ts AS "time", level, state, summary, fingerprint,
       array_to_string(ARRAY(
         SELECT t ->> 'role' || ':' || (t ->> 'id')
         FROM jsonb_array_elements(payload -> 'targets') AS t
       ), ', ') AS targets
FROM alerts
WHERE {THE_INCIDENT}
ORDER BY ts
"""


def incident(console_url: str = CONSOLE_URL) -> gd.Dashboard:
    choice = (
        gd.QueryVariable("incident")
        .label("事件 incident")
        .datasource(DATASOURCE)
        .query(INCIDENT_CHOICES)
        .refresh(gm.VariableRefresh.ON_TIME_RANGE_CHANGED)
    )
    readings = (
        timeseries.Panel()
        .title("周边读数 Readings around it")
        .description("The incident's sensors, 15 minutes either side of it.")
        .datasource(DATASOURCE)
        .with_target(Sql(READINGS_AROUND, "time_series"))
        .height(9)
        .span(12)
    )
    timeline = table_panel("案件时间线 Case timeline (audit log)", CASE_TIMELINE, 9, 24)
    timeline.data_links(
        [
            console_link(
                "在控制台办理 Open the case in the console", "/cases/${__data.fields.case_id}"
            )
        ]
    )
    evidence = table_panel("证据 Evidence (detections, snapshots)", EVIDENCE, 9, 24)
    evidence.override_by_name("snapshot", image_cells())
    return (
        gd.Dashboard("事件 Incident")
        .uid(INCIDENT_UID)
        .description(
            "One incident: its evidence, the sources that agree, readings, alerts and its case."
        )
        .tags(["gridwatch"])
        .time("now-24h", "now")
        .with_variable(choice)
        .with_variable(console_variable(console_url))
        .link(console_link("在控制台处置 Open in the console", "/incidents/${incident}"))
        .annotation(governance.case_annotation(f"c.{THE_INCIDENT}"))
        .with_panel(table_panel("事件 Incident", INCIDENT_FACTS, 4, 24))
        .with_panel(evidence)
        .with_panel(table_panel("一致来源 Sources that agree", SOURCES, 9, 12))
        .with_panel(readings)
        .with_panel(table_panel("修订 Revisions", REVISIONS, 8, 12))
        .with_panel(table_panel("预警 Alerts", INCIDENT_ALERTS, 8, 12))
        .with_panel(timeline)
    )
