"""Grid governance (网格治理): cases by state, the closed loop's KPIs, deadlines, workers' load.

The KPIs are computed in SQL from the case audit log by the definitions of :mod:`alerts.kpi`
(a test checks both agree on the demo's run): the cases received in the time range, judged on
their audit entries up to each moment. Cases are scoped by the grid and kind variables.
"""

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
    incident_link,
    sql_annotation,
    value_mappings,
)
from gridwatch.events import Level
from gridwatch.site import Site

GOVERNANCE_UID = "gridwatch-grid-governance"

# KPI column → how it is shown; the columns are named as the fields of ``alerts.kpi.Kpis``.
KPI_PERCENT = {
    "closure_rate": "结案率 %",
    "on_time_rate": "按期结案率 %",
    "community_share": "社区内解决 % (within the community)",
    "rework_rate": "返工率 %",
}
KPI_SECONDS = {
    "mean_accept_s": "平均签收时长 mean time to accept",
    "mean_close_s": "平均结案时长 mean time to close",
}

# Moments at which the KPIs are judged: about a hundred across the range, at least a minute apart.
KPI_MOMENTS = """
SELECT generate_series($__timeFrom()::timestamptz, $__timeTo()::timestamptz,
         greatest(interval '1 minute',
                  ($__timeTo()::timestamptz - $__timeFrom()::timestamptz) / 100)) AS t
UNION SELECT $__timeTo()::timestamptz
"""
KPI_NOW = "SELECT $__timeTo()::timestamptz AS t"


KPI_COLUMNS = {
    "due": "due",
    "closed": "closed",
    "closed_on_time": "closed_on_time",
    "closure_rate": "round(100.0 * closed / nullif(due, 0), 2)",
    "on_time_rate": "round(100.0 * closed_on_time / nullif(due, 0), 2)",
    "rework_rate": "round(100.0 * reworked / nullif(closed, 0), 2)",
    "community_share": "round(100.0 * in_community / nullif(closed, 0), 2)",
    "mean_accept_s": "round(accept_s::numeric, 1)",
    "mean_close_s": "round(close_s::numeric, 1)",
}
CASE_SCOPE = "c.grid_code IN (${grid:sqlstring}) AND c.kind IN (${kind:sqlstring})"


def kpi_sql(moments: str, columns: tuple[str, ...] = tuple(KPI_COLUMNS)) -> str:
    """The KPIs as of each moment, over the audit entries recorded by then (see alerts.kpi)."""
    selected = ",\n       ".join(f"{KPI_COLUMNS[c]} AS {c}" for c in columns)
    return f"""
WITH moments AS ({moments.strip()}),
trails AS (
  SELECT m.t, a.case_id,
         (array_agg(a.due_at ORDER BY a.seq DESC))[1] AS due_at,
         (array_agg(a.ts ORDER BY a.seq))[1] AS received,
         (array_agg(a.ts ORDER BY a.seq) FILTER (WHERE a.to_state = 'closed'))[1] AS closed,
         (array_agg(a.due_at ORDER BY a.seq) FILTER (WHERE a.to_state = 'closed'))[1]
           AS closed_due,
         (array_agg(a.ts ORDER BY a.seq) FILTER (WHERE a.action = 'dispatch'))[1] AS dispatched,
         (array_agg(a.ts ORDER BY a.seq) FILTER (WHERE a.action = 'accept'))[1] AS accepted,
         bool_or(a.action = 'rework') AS reworked,
         bool_and(a.tier <> 'street') AS in_community
  FROM moments m
  JOIN case_audit a ON a.ts <= m.t
  JOIN cases c ON c.case_id = a.case_id
  WHERE $__timeFilter(c.opened_at) AND {CASE_SCOPE}
  GROUP BY m.t, a.case_id
),
totals AS (
  SELECT t,
         count(*) FILTER (WHERE closed IS NOT NULL OR due_at <= t) AS due,
         count(closed) AS closed,
         count(*) FILTER (WHERE closed <= closed_due) AS closed_on_time,
         count(*) FILTER (WHERE closed IS NOT NULL AND reworked) AS reworked,
         count(*) FILTER (WHERE closed IS NOT NULL AND in_community) AS in_community,
         avg(extract(epoch FROM accepted - dispatched)) AS accept_s,
         avg(extract(epoch FROM closed - received)) AS close_s
  FROM trails
  GROUP BY t
)
SELECT t AS "time",
       {selected}
FROM totals
ORDER BY t
"""


KPIS_OVER_TIME = kpi_sql(KPI_MOMENTS)
KPIS_NOW = kpi_sql(KPI_NOW)
KPI_RATES_OVER_TIME = kpi_sql(KPI_MOMENTS, tuple(KPI_PERCENT))
KPI_DURATIONS_OVER_TIME = kpi_sql(KPI_MOMENTS, tuple(KPI_SECONDS))

# The case states of alerts.cases (dashboards use the core only; a test keeps them equal).
CASE_STATES = {
    "received": "受理",
    "registered": "立案",
    "dispatched": "派遣",
    "accepted": "签收",
    "handling": "处置",
    "reported": "反馈",
    "verified": "核查",
    "closed": "结案",
    "parked": "挂账",
}
_STATES = ", ".join(
    f"count(*) FILTER (WHERE state = '{state}') AS \"{label} {state}\""
    for state, label in CASE_STATES.items()
)
# Cases still open, and those received in the time range.
CASES_IN_VIEW = f"(state <> 'closed' OR $__timeFilter(opened_at)) AND {variables.SCOPE}"

CASES_BY_STATE = f"""
SELECT community_code, grid_code, {_STATES},
       count(*) FILTER (WHERE state <> 'closed' AND (overdue OR due_at < now())) AS overdue,
       count(*) AS cases
FROM cases
WHERE {CASES_IN_VIEW}
GROUP BY 1, 2
ORDER BY cases DESC, grid_code
"""

# Open cases first, the overdue ones on top; closed ones show whether they closed in time.
CASE_DEADLINES = f"""
SELECT case_id, kind, level, state, tier, grid_code, opened_at, due_at, closed_at,
       (overdue OR coalesce(closed_at, now()) > due_at) AS overdue,
       round(extract(epoch FROM due_at - coalesce(closed_at, now()))::numeric) AS time_left_s,
       incident_id::text AS incident_id
FROM cases
WHERE (state <> 'closed' OR $__timeFilter(closed_at)) AND {variables.SCOPE}
ORDER BY (overdue OR coalesce(closed_at, now()) > due_at) DESC, state = 'closed', due_at
LIMIT 100
"""

WORKER_LOAD = f"""
SELECT t ->> 'id' AS worker,
       count(*) FILTER (WHERE c.state <> 'closed') AS open,
       count(*) FILTER (WHERE c.state <> 'closed' AND (c.overdue OR c.due_at < now())) AS overdue,
       count(*) FILTER (WHERE $__timeFilter(c.opened_at)) AS received,
       count(*) FILTER (WHERE $__timeFilter(c.closed_at)) AS closed,
       max(c.updated_at) AS latest
FROM cases c
CROSS JOIN LATERAL jsonb_array_elements(c.alert -> 'targets') AS t
WHERE t ->> 'role' = 'grid_worker'
  AND (c.state <> 'closed' OR $__timeFilter(c.opened_at) OR $__timeFilter(c.closed_at))
  AND {CASE_SCOPE}
GROUP BY 1
ORDER BY open DESC, overdue DESC, received DESC
"""

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

INCIDENTS_OVER_TIME = f"""
SELECT $__timeGroupAlias(first_seen, '10m'), kind AS metric, count(*) AS value
FROM incidents_current
WHERE $__timeFilter(first_seen) AND {variables.SCOPE}
GROUP BY 1, 2
ORDER BY 1
"""


def case_annotation(condition: str) -> gd.AnnotationQuery:
    """Each change of a case's state (受理 → … → 结案) from the audit log, as an annotation."""
    return sql_annotation(
        "Case transitions",
        f"""
SELECT a.ts AS "time",
       a.case_id || ': ' || coalesce(a.from_state, '-') || ' → ' || a.to_state
         || ' (' || a.action || ', ' || a.actor || ')' AS text,
       'case,' || a.action || ',' || a.tier AS tags
FROM case_audit a
JOIN cases c ON c.case_id = a.case_id
WHERE $__timeFilter(a.ts) AND a.from_state IS DISTINCT FROM a.to_state AND {condition}
ORDER BY a.ts
""",
        "blue",
    )


def scoped_case_annotation() -> gd.AnnotationQuery:
    return case_annotation(CASE_SCOPE)


def deadlines_table() -> table.Panel:
    return (
        table.Panel()
        .title("超期案件 Cases overdue (then open, then closed in range)")
        .description("Open cases and those closed in the time range; overdue ones first.")
        .datasource(DATASOURCE)
        .with_target(Sql(CASE_DEADLINES))
        .show_header(True)
        .mappings(value_mappings())
        .override_by_name("level", colour_text_cells())
        .override_by_name(
            "overdue",
            [
                gm.DynamicConfigValue(
                    id_val="mappings",
                    value=[
                        {
                            "type": "value",
                            "options": {
                                "true": {"text": "超期 overdue", "color": "red", "index": 0},
                                "false": {"text": "in time", "color": "green", "index": 1},
                            },
                        }
                    ],
                ),
                *colour_text_cells(),
            ],
        )
        .override_by_name("time_left_s", [gm.DynamicConfigValue(id_val="unit", value="s")])
        .data_links([incident_link()])
    )


def _display_names(panel: timeseries.Panel | stat.Panel, names: dict[str, str]) -> None:
    for column, name in names.items():
        panel.override_by_name(column, [gm.DynamicConfigValue(id_val="displayName", value=name)])


def _kpi_trend(title: str, raw_sql: str, names: dict[str, str], unit: str) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description("Cases received in the time range, judged as of each moment.")
        .datasource(DATASOURCE)
        .with_target(Sql(raw_sql, "time_series"))
        .unit(unit)
        .height(8)
        .span(12)
    )
    _display_names(panel, names)
    return panel


def grid_governance(site: Site) -> gd.Dashboard:
    workers = {w.id: w.name for w in site.workers}
    load = (
        table.Panel()
        .title("网格员负载 Grid workers' load (open cases)")
        .datasource(DATASOURCE)
        .with_target(Sql(WORKER_LOAD))
        .show_header(True)
        .mappings(
            [
                gm.ValueMap(
                    options={
                        worker: gm.ValueMappingResult(text=f"{name} ({worker})", index=i)
                        for i, (worker, name) in enumerate(sorted(workers.items()))
                    }
                )
            ]
        )
        .height(8)
        .span(12)
    )
    by_state = (
        table.Panel()
        .title("案件状态 Cases by state per community and grid")
        .datasource(DATASOURCE)
        .with_target(Sql(CASES_BY_STATE))
        .show_header(True)
        .height(8)
        .span(12)
    )
    now = (
        stat.Panel()
        .title("考核指标 KPIs at the end of the range")
        .description("Cases received in the time range; definitions as in alerts/kpi.py.")
        .datasource(DATASOURCE)
        .with_target(Sql(KPIS_NOW))
        .reduce_options(
            gc.ReduceDataOptions()
            .calcs(["lastNotNull"])
            .fields("/^(" + "|".join([*KPI_PERCENT, *KPI_SECONDS]) + ")$/")
        )
        .graph_mode(cm.BigValueGraphMode.NONE)
        .height(5)
        .span(24)
    )
    _display_names(now, {**KPI_PERCENT, **KPI_SECONDS})
    for column in KPI_SECONDS:
        now.override_by_name(column, [gm.DynamicConfigValue(id_val="unit", value="s")])
    for column in KPI_PERCENT:
        now.override_by_name(column, [gm.DynamicConfigValue(id_val="unit", value="percent")])
    rates = _kpi_trend(
        "考核指标趋势 结案率, 按期结案率, 返工率, within the community",
        KPI_RATES_OVER_TIME,
        KPI_PERCENT,
        "percent",
    )
    durations = _kpi_trend(
        "办理时长 Mean time to accept and to close", KPI_DURATIONS_OVER_TIME, KPI_SECONDS, "s"
    )
    deadlines = deadlines_table().height(8).span(24)
    by_grid = (
        table.Panel()
        .title("事件分布 Incidents by community and grid")
        .datasource(DATASOURCE)
        .with_target(Sql(BY_GRID))
        .show_header(True)
        .height(8)
        .span(12)
    )
    for level in Level:
        by_grid.override_by_name(LEVEL_NAMES[level], fixed_colour(LEVEL_COLOURS[level]))
        by_grid.override_by_name(LEVEL_NAMES[level], colour_text_cells())
    new_incidents = (
        timeseries.Panel()
        .title("新增事件 New incidents per 10 minutes")
        .datasource(DATASOURCE)
        .with_target(Sql(INCIDENTS_OVER_TIME, "time_series"))
        .height(8)
        .span(12)
    )
    return (
        gd.Dashboard("网格治理 Grid governance")
        .uid(GOVERNANCE_UID)
        .description("Cases by state, the closed loop's KPIs, deadlines and grid workers' load.")
        .tags(["gridwatch"])
        .time("now-6h", "now")
        .refresh("1m")
        .variables(variables.scoped(site))
        .annotation(variables.alert_annotation(scoped=True))
        .annotation(scoped_case_annotation())
        .with_panel(now)
        .with_panel(by_state)
        .with_panel(load)
        .with_panel(rates)
        .with_panel(durations)
        .with_panel(deadlines)
        .with_panel(by_grid)
        .with_panel(new_incidents)
    )
