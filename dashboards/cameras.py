"""Cameras and watchtowers: what each one detects, and on which watchtower preset.

A detection does not name the preset it was seen on; a watchtower's detection carries its
bearing, so it is put on the preset whose view is centred nearest to it (presets overlap). The
presets come from the site, as an inline VALUES list.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.builders import table, timeseries

from dashboards import variables
from dashboards.grafana import DATASOURCE, Sql
from gridwatch.site import Site

CAMERAS_UID = "gridwatch-cameras"
# Image sources, and the detections that are findings rather than the camera's own health.
IMAGE_FINDINGS = "source_type IN ('camera', 'watchtower') AND kind <> 'camera_health'"

DETECTIONS_PER_SOURCE = f"""
SELECT source_type, source_id, kind, count(*) AS detections,
       count(*) FILTER (WHERE NOT cleared) AS raised,
       round(avg(confidence)::numeric, 2) AS mean_confidence,
       count(snapshot) AS snapshots, max(ts) AS latest
FROM detections
WHERE $__timeFilter(ts) AND {IMAGE_FINDINGS}
GROUP BY 1, 2, 3
ORDER BY detections DESC, source_id
"""

DETECTIONS_PER_MINUTE = f"""
SELECT $__timeGroupAlias(ts, '1m'), source_id || ' ' || kind AS metric, count(*) AS value
FROM detections
WHERE $__timeFilter(ts) AND {IMAGE_FINDINGS}
GROUP BY 1, 2
ORDER BY 1
"""

# Operators' false alarms (gridwatch cameras false-alarm, cases closed as 误报) per camera and
# kind, against the raised detections of the same camera and kind in the range.
FALSE_ALARMS_PER_SOURCE = f"""
WITH marked AS (
  SELECT source_type, source_id, kind, count(*) AS false_alarms, max(marked_at) AS last_marked
  FROM false_alarms
  WHERE $__timeFilter(detection_ts)
  GROUP BY 1, 2, 3
), raised AS (
  SELECT source_type, source_id, kind, count(*) AS detections
  FROM detections
  WHERE $__timeFilter(ts) AND {IMAGE_FINDINGS} AND NOT cleared
  GROUP BY 1, 2, 3
)
SELECT m.source_type, m.source_id, m.kind, m.false_alarms, coalesce(r.detections, 0) AS detections,
       round(100.0 * m.false_alarms / nullif(r.detections, 0), 1) AS false_alarm_pct,
       m.last_marked
FROM marked m LEFT JOIN raised r USING (source_type, source_id, kind)
ORDER BY m.false_alarms DESC, m.source_id, m.kind
"""


def _presets(site: Site) -> str:
    rows = ",\n  ".join(
        f"('{t.id}', {p.id}, {p.pan_deg}, {p.fov_deg})" for t in site.watchtowers for p in t.presets
    )
    return rows or "(NULL, NULL, NULL, NULL)"


def detections_per_preset_sql(site: Site) -> str:
    return f"""
WITH presets (tower, preset, pan_deg, fov_deg) AS (VALUES
  {_presets(site)}
),
placed AS (
  SELECT DISTINCT ON (d.id) d.id, d.source_id, d.kind, d.confidence, d.ts, p.preset,
         abs(mod((d.bearing_deg - p.pan_deg)::numeric + 540, 360) - 180) AS off_axis_deg
  FROM detections d
  JOIN presets p ON p.tower = d.source_id
  WHERE $__timeFilter(d.ts) AND d.source_type = 'watchtower' AND d.bearing_deg IS NOT NULL
    AND d.kind <> 'camera_health'
    AND abs(mod((d.bearing_deg - p.pan_deg)::numeric + 540, 360) - 180) <= p.fov_deg / 2
  ORDER BY d.id, off_axis_deg
)
SELECT source_id AS watchtower, preset, kind, count(*) AS detections,
       round(avg(confidence)::numeric, 2) AS mean_confidence,
       round(avg(off_axis_deg), 1) AS mean_off_axis_deg, max(ts) AS latest
FROM placed
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3
"""


def cameras(site: Site) -> gd.Dashboard:
    return (
        gd.Dashboard("摄像头与瞭望塔 Cameras and watchtowers")
        .uid(CAMERAS_UID)
        .description("Detections per camera, watchtower and preset, and operators' false alarms.")
        .tags(["gridwatch"])
        .time("now-6h", "now")
        .refresh("1m")
        .annotation(variables.alert_annotation(scoped=False))
        .with_panel(
            table.Panel()
            .title("按设备 Detections per camera and watchtower")
            .datasource(DATASOURCE)
            .with_target(Sql(DETECTIONS_PER_SOURCE))
            .show_header(True)
            .height(8)
            .span(12)
        )
        .with_panel(
            table.Panel()
            .title("按预置位 Detections per watchtower preset")
            .description("Each detection on the preset whose centre is nearest its bearing.")
            .datasource(DATASOURCE)
            .with_target(Sql(detections_per_preset_sql(site)))
            .show_header(True)
            .height(8)
            .span(12)
        )
        .with_panel(
            table.Panel()
            .title("误报 False alarms per camera and kind")
            .description(
                "Detections operators rejected (gridwatch cameras false-alarm, or a case closed"
                " as 误报), and their share of the raised detections of that camera and kind."
            )
            .datasource(DATASOURCE)
            .with_target(Sql(FALSE_ALARMS_PER_SOURCE))
            .show_header(True)
            .height(8)
            .span(24)
        )
        .with_panel(
            timeseries.Panel()
            .title("检测趋势 Detections per minute")
            .datasource(DATASOURCE)
            .with_target(Sql(DETECTIONS_PER_MINUTE, "time_series"))
            .height(8)
            .span(24)
        )
    )
