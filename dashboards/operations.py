"""The dashboards behind the command center: grid governance, sensors and pipeline health."""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as gc
from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.builders import stat, table, timeseries
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as gm

from dashboards import variables
from dashboards.grafana import (
    COUNT_BY_LEVEL,
    DATASOURCE,
    LEVEL_COLOURS,
    LEVEL_NAMES,
    Sql,
    colour_text_cells,
    fixed_colour,
)
from gridwatch.events import Level
from gridwatch.site import METRIC_DETECTS, Site, ThresholdRule

# The tables the store writer fills from the topics, with their event-time column.
WRITTEN_TABLES = (
    ("readings", "ts"),
    ("detections", "ts"),
    ("incidents", "ts"),
    ("alerts", "ts"),
    ("case_events", "ts"),
    ("deadletters", "ts"),
)
# A device that has not reported for this long is shown as offline.
OFFLINE_AFTER_S = 300


def _table(title: str, raw_sql: str, height: int, span: int) -> table.Panel:
    return (
        table.Panel()
        .title(title)
        .datasource(DATASOURCE)
        .with_target(Sql(raw_sql))
        .show_header(True)
        .height(height)
        .span(span)
    )


def _trend(title: str, raw_sql: str, unit: str, span: int = 12) -> timeseries.Panel:
    return (
        timeseries.Panel()
        .title(title)
        .datasource(DATASOURCE)
        .with_target(Sql(raw_sql, "time_series"))
        .unit(unit)
        .height(8)
        .span(span)
    )


def _base(title: str, uid: str, description: str) -> gd.Dashboard:
    return (
        gd.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["gridwatch"])
        .time("now-6h", "now")
        .refresh("1m")
    )


# --- grid governance ------------------------------------------------------------------------

BY_GRID = f"""
SELECT left(grid_code, 12) AS community_code, grid_code,
       {COUNT_BY_LEVEL},
       count(*) FILTER (WHERE NOT ended) AS open,
       count(*) AS incidents
FROM incidents_current
WHERE $__timeFilter(ts) AND {variables.SCOPE}
GROUP BY 1, 2
ORDER BY incidents DESC, grid_code
"""

WORKER_LOAD = f"""
SELECT t ->> 'id' AS worker, count(*) AS alerts, count(DISTINCT incident_id) AS incidents,
       count(*) FILTER (WHERE level = 'red') AS red, max(ts) AS latest
FROM alerts
CROSS JOIN LATERAL jsonb_array_elements(payload -> 'targets') AS t
WHERE $__timeFilter(ts) AND state = 'firing' AND t ->> 'role' = 'grid_worker' AND {variables.SCOPE}
GROUP BY 1
ORDER BY alerts DESC
"""

INCIDENTS_OVER_TIME = f"""
SELECT $__timeGroupAlias(first_seen, '10m'), kind AS metric, count(*) AS value
FROM incidents_current
WHERE $__timeFilter(first_seen) AND {variables.SCOPE}
GROUP BY 1, 2
ORDER BY 1
"""


def grid_governance(site: Site) -> gd.Dashboard:
    workers = {w.id: w.name for w in site.workers}
    load = _table("网格员负载 Grid workers' load", WORKER_LOAD, 9, 12).mappings(
        [
            gm.ValueMap(
                options={
                    worker: gm.ValueMappingResult(text=f"{name} ({worker})", index=i)
                    for i, (worker, name) in enumerate(sorted(workers.items()))
                }
            )
        ]
    )
    by_grid = _table("事件分布 Incidents by community and grid", BY_GRID, 9, 12)
    for level in Level:
        by_grid.override_by_name(LEVEL_NAMES[level], fixed_colour(LEVEL_COLOURS[level]))
        by_grid.override_by_name(LEVEL_NAMES[level], colour_text_cells())
    return (
        _base(
            "网格治理 Grid governance",
            "gridwatch-grid-governance",
            "Where incidents happen and who carries them, by community, grid and grid worker.",
        )
        .variables(variables.scoped(site))
        .annotation(variables.alert_annotation(scoped=True))
        .with_panel(by_grid)
        .with_panel(load)
        .with_panel(
            _trend("新增事件 New incidents per 10 minutes", INCIDENTS_OVER_TIME, "short", 24)
        )
    )


# --- sensors --------------------------------------------------------------------------------

METRIC_TITLES = {
    "water_level_m": ("水位 Water level", "lengthm"),
    "rainfall_mm_h": ("雨量 Rainfall", "mm/h"),
    "pm25_ugm3": ("PM2.5", "conμgm3"),
    "smoke_obscuration_pct": ("烟感 Smoke obscuration", "percent"),
    "temperature_c": ("温度 Temperature", "celsius"),
}


def metric_trend_sql(metric: str) -> str:
    return f"""
SELECT $__timeGroupAlias(ts, '10s'), device_id AS metric, avg(value) AS value
FROM readings
WHERE $__timeFilter(ts) AND metric = '{metric}'
GROUP BY 1, 2
ORDER BY 1
"""


DEVICES_LAST_REPORT = """
SELECT device_id, metric, max(ts) AS last_report,
       round(extract(epoch FROM now() - max(ts))::numeric, 0) AS silent_s,
       (array_agg(value ORDER BY ts DESC))[1] AS last_value
FROM readings
WHERE ts > now() - interval '7 days'
GROUP BY 1, 2
ORDER BY silent_s DESC, device_id
"""

DEADLETTERS_PER_MINUTE = """
SELECT $__timeGroupAlias(ts, '1m'), split_part(source, ':', 1) AS metric, count(*) AS value
FROM deadletters
WHERE $__timeFilter(ts)
GROUP BY 1, 2
ORDER BY 1
"""

NEWEST_DEADLETTERS = """
SELECT ts AS "time", source, reason, length(payload) AS bytes
FROM deadletters
WHERE $__timeFilter(ts)
ORDER BY ts DESC
LIMIT 50
"""


def _shared_thresholds(site: Site, metric: str) -> ThresholdRule | None:
    """The rule every sensor of this metric shares, if they do; else no line is drawn."""
    rules = {
        (r.yellow, r.orange, r.red): r
        for s in site.sensors
        for r in s.rules
        if isinstance(r, ThresholdRule) and r.metric == metric
    }
    return next(iter(rules.values())) if len(rules) == 1 else None


def _with_thresholds(panel: timeseries.Panel, rule: ThresholdRule) -> timeseries.Panel:
    steps = [gm.Threshold(value=None, color="green")] + [
        gm.Threshold(value=limit, color=LEVEL_COLOURS[level])
        for level, limit in (
            (Level.YELLOW, rule.yellow),
            (Level.ORANGE, rule.orange),
            (Level.RED, rule.red),
        )
    ]
    return panel.thresholds(
        gd.ThresholdsConfig().mode(gm.ThresholdsMode.ABSOLUTE).steps(steps)
    ).thresholds_style(gc.GraphThresholdsStyleConfig().mode(cm.GraphTresholdsStyleMode.DASHED))


def sensors(site: Site) -> gd.Dashboard:
    reported = sorted({m for s in site.sensors for m in s.metrics if m in METRIC_DETECTS})
    dashboard = _base(
        "传感器 Sensors",
        "gridwatch-sensors",
        "Trends per metric with the rule thresholds, devices' last reports, dead letters.",
    ).annotation(variables.alert_annotation(scoped=False))
    for metric in reported:
        title, unit = METRIC_TITLES.get(metric, (metric, "short"))
        panel = _trend(title, metric_trend_sql(metric), unit)
        rule = _shared_thresholds(site, metric)
        dashboard.with_panel(_with_thresholds(panel, rule) if rule else panel)
    silent = _table("设备最后上报 Devices: last report", DEVICES_LAST_REPORT, 9, 12)
    silent.override_by_name(
        "silent_s",
        [
            gm.DynamicConfigValue(
                id_val="thresholds",
                value={
                    "mode": "absolute",
                    "steps": [
                        {"value": None, "color": "green"},
                        {"value": OFFLINE_AFTER_S, "color": "red"},
                    ],
                },
            ),
            *colour_text_cells(),
        ],
    )
    return (
        dashboard.with_panel(silent)
        .with_panel(_trend("死信 Dead letters per minute", DEADLETTERS_PER_MINUTE, "short"))
        .with_panel(_table("最新死信 Newest dead letters", NEWEST_DEADLETTERS, 8, 24))
    )


# --- pipeline health ------------------------------------------------------------------------

READINGS_PER_SECOND = """
SELECT $__timeGroupAlias(stored_at, '10s'), count(*) / 10.0 AS "readings/s"
FROM readings
WHERE $__timeFilter(stored_at)
GROUP BY 1
ORDER BY 1
"""

READING_LATENCY = """
SELECT $__timeGroupAlias(ts, '10s'),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99
FROM (SELECT ts, extract(epoch FROM stored_at - ts) * 1000 AS ms FROM readings) AS r
WHERE $__timeFilter(ts)
GROUP BY 1
ORDER BY 1
"""

# From the reading that moved the incident to the alert's row being stored.
ALERT_LATENCY = """
SELECT a.ts AS "time", a.level AS metric, extract(epoch FROM a.stored_at - i.ts) * 1000 AS value
FROM alerts a
JOIN incidents i
  ON i.incident_id = a.incident_id AND i.revision = (a.payload ->> 'incident_revision')::int
WHERE $__timeFilter(a.ts)
ORDER BY 1
"""

ROWS_STORED = "SELECT " + ", ".join(
    f"(SELECT count(*) FROM {t} WHERE $__timeFilter({c})) AS {t}" for t, c in WRITTEN_TABLES
)

# How far behind the writer is: the newest row's age per table (a consumer-lag proxy).
FRESHNESS = " UNION ALL ".join(
    f"SELECT '{t}' AS \"table\", max(stored_at) AS newest, "
    f"round(extract(epoch FROM now() - max(stored_at))::numeric, 1) AS age_s FROM {t}"
    for t, _ in WRITTEN_TABLES
)


def pipeline() -> gd.Dashboard:
    rows = (
        stat.Panel()
        .title("入库 Rows stored in the time range")
        .datasource(DATASOURCE)
        .with_target(Sql(ROWS_STORED))
        .graph_mode(cm.BigValueGraphMode.NONE)
        .height(5)
        .span(24)
    )
    return (
        _base(
            "管道健康 Pipeline health",
            "gridwatch-pipeline",
            "Throughput, latency sensor → stored and sensor → alert, and the writer's freshness.",
        )
        .annotation(variables.alert_annotation(scoped=False))
        .with_panel(rows)
        .with_panel(_trend("吞吐 Readings stored per second", READINGS_PER_SECOND, "reqps"))
        .with_panel(_trend("延迟 Sensor → stored latency", READING_LATENCY, "ms"))
        .with_panel(_trend("延迟 Sensor → alert latency", ALERT_LATENCY, "ms"))
        .with_panel(_table("新鲜度 Newest row per table", FRESHNESS, 8, 12))
    )
