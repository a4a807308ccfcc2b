"""The dashboards behind the command center: sensors and pipeline health."""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as gc
from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.builders import stat, timeseries
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as gm

from dashboards import variables
from dashboards.grafana import (
    DATASOURCE,
    LEVEL_COLOURS,
    Sql,
    colour_text_cells,
    table_panel,
)
from gridwatch.events import Level
from gridwatch.site import Site
from gridwatch.site_sensors import METRIC_DETECTS, ThresholdRule
from gridwatch.store.schema import EVENT_TABLES

# A device that has not reported for this long is shown as offline.
OFFLINE_AFTER_S = 300


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


# --- sensors --------------------------------------------------------------------------------

METRIC_TITLES = {
    "water_level_m": ("水位 Water level", "lengthm"),
    "rainfall_mm_h": ("雨量 Rainfall", "mm/h"),
    "pm25_ugm3": ("PM2.5", "conμgm3"),
    "smoke_obscuration_pct": ("烟感 Smoke obscuration", "percent"),
    "temperature_c": ("温度 Temperature", "celsius"),
}


def metric_trend_sql(metric: str) -> str:
    """Per-minute means from the ``readings_1m`` rollup, and from raw rows where it lags.

    The rollup is refreshed behind the stream (a timer, or TimescaleDB's policy), so its newest
    bucket may be partial: minutes from that bucket on are averaged from ``readings`` instead.
    """
    return f"""
WITH edge AS (
  SELECT coalesce(max(bucket), '-infinity'::timestamptz) AS bucket
  FROM readings_1m WHERE metric = '{metric}'
)
SELECT r.bucket AS "time", r.device_id AS metric, r.avg AS value
FROM readings_1m r, edge
WHERE r.metric = '{metric}' AND r.bucket < edge.bucket
  AND r.bucket BETWEEN $__timeFrom()::timestamptz - interval '1 minute' AND $__timeTo()
UNION ALL
SELECT date_trunc('minute', r.ts), r.device_id, avg(r.value)
FROM readings r, edge
WHERE r.metric = '{metric}' AND r.ts >= edge.bucket AND $__timeFilter(r.ts)
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
    silent = table_panel("设备最后上报 Devices: last report", DEVICES_LAST_REPORT, 9, 12)
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
        .with_panel(table_panel("最新死信 Newest dead letters", NEWEST_DEADLETTERS, 8, 24))
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
    f"(SELECT count(*) FROM {t} WHERE $__timeFilter({c})) AS {t}" for t, c in EVENT_TABLES
)

# How far behind the writer is: the newest row's age per table (a consumer-lag proxy).
FRESHNESS = " UNION ALL ".join(
    f"SELECT '{t}' AS \"table\", max(stored_at) AS newest, "
    f"round(extract(epoch FROM now() - max(stored_at))::numeric, 1) AS age_s FROM {t}"
    for t, _ in EVENT_TABLES
)


# The outbox's rows waiting at each moment: created, neither delivered nor dead-lettered yet.
OUTBOX_BACKLOG = """
WITH moments AS (
  SELECT generate_series($__timeFrom()::timestamptz, $__timeTo()::timestamptz,
           greatest(interval '5 seconds',
                    ($__timeTo()::timestamptz - $__timeFrom()::timestamptz) / 200)) AS t
)
SELECT m.t AS "time", o.sink AS metric,
       count(*) FILTER (WHERE o.created_at <= m.t AND coalesce(o.delivered_at, 'infinity') > m.t)
         AS value
FROM moments m
CROSS JOIN outbox o
WHERE o.created_at <= $__timeTo() AND coalesce(o.delivered_at, 'infinity') >= $__timeFrom()
GROUP BY 1, 2
ORDER BY 1
"""

OUTBOX_BY_SINK = """
WITH sinks AS (SELECT sink FROM outbox UNION SELECT sink FROM outbox_deadletters)
SELECT s.sink,
       count(o.id) FILTER (WHERE o.delivered_at IS NULL) AS pending,
       count(o.delivered_at) FILTER (WHERE $__timeFilter(o.delivered_at)) AS delivered,
       count(o.id) FILTER (WHERE o.attempts > 1 OR o.last_error IS NOT NULL) AS retried,
       (SELECT count(*) FROM outbox_deadletters d
        WHERE d.sink = s.sink AND $__timeFilter(d.failed_at)) AS dead_letters,
       round(percentile_cont(0.5) WITHIN GROUP (
         ORDER BY extract(epoch FROM o.delivered_at - o.created_at) * 1000)::numeric, 1)
         AS p50_ms,
       round(max(extract(epoch FROM o.delivered_at - o.created_at) * 1000)::numeric, 1)
         AS max_ms,
       max(o.last_error) AS last_error
FROM sinks s
LEFT JOIN outbox o
  ON o.sink = s.sink AND ($__timeFilter(o.created_at) OR o.delivered_at IS NULL)
GROUP BY s.sink
ORDER BY s.sink
"""

OUTBOX_DELIVERY_LATENCY = """
SELECT created_at AS "time", sink AS metric,
       extract(epoch FROM delivered_at - created_at) * 1000 AS value
FROM outbox
WHERE $__timeFilter(created_at) AND delivered_at IS NOT NULL
ORDER BY 1
"""

# Per case, from the first detection of its incident to dispatch delivered, accepted and closed.
END_TO_END = """
SELECT c.opened_at AS "time", c.case_id, c.kind, c.level, c.state,
       round(extract(epoch FROM c.opened_at - i.first_seen)::numeric, 1) AS detection_to_case_s,
       round(extract(epoch FROM o.delivered - c.opened_at)::numeric, 1) AS case_to_dispatched_s,
       round(extract(epoch FROM a.accepted - c.opened_at)::numeric, 1) AS case_to_accepted_s,
       round(extract(epoch FROM c.closed_at - c.opened_at)::numeric, 1) AS case_to_closed_s
FROM cases c
JOIN LATERAL (
  SELECT min(first_seen) AS first_seen FROM incidents WHERE incident_id = c.incident_id
) AS i ON true
LEFT JOIN LATERAL (
  SELECT min(delivered_at) AS delivered FROM outbox
  WHERE case_id = c.case_id AND sink = 'dispatch'
) AS o ON true
LEFT JOIN LATERAL (
  SELECT min(ts) AS accepted FROM case_audit WHERE case_id = c.case_id AND action = 'accept'
) AS a ON true
WHERE $__timeFilter(c.opened_at)
ORDER BY c.opened_at DESC
LIMIT 100
"""


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
            "Throughput, latencies up to the case's dispatch, writer freshness and the outbox.",
        )
        .annotation(variables.alert_annotation(scoped=False))
        .with_panel(rows)
        .with_panel(_trend("吞吐 Readings stored per second", READINGS_PER_SECOND, "reqps"))
        .with_panel(_trend("延迟 Sensor → stored latency", READING_LATENCY, "ms"))
        .with_panel(_trend("延迟 Sensor → alert latency", ALERT_LATENCY, "ms"))
        .with_panel(table_panel("新鲜度 Newest row per table", FRESHNESS, 8, 12))
        .with_panel(_trend("外发积压 Outbox backlog by sink", OUTBOX_BACKLOG, "short"))
        .with_panel(
            table_panel("外发 Outbox by sink: delivered, retried, dead", OUTBOX_BY_SINK, 8, 12)
        )
        .with_panel(_trend("外发延迟 Outbox: created → delivered", OUTBOX_DELIVERY_LATENCY, "ms"))
        .with_panel(table_panel("端到端 End to end per case (s)", END_TO_END, 8, 12))
    )
