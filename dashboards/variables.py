"""Template variables and annotations shared by the dashboards.

Communities, grids and incident kinds come from the site and the event models, not from the
database: a grid with no incident yet is still a grid an operator may want to look at. The grid
list is chained on the chosen communities by a query over an inline VALUES list, so it needs no
table of its own.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.models import dashboard as gm

from dashboards.grafana import DATASOURCE, kind_label, sql_annotation
from gridwatch import kinds
from gridwatch.site import Site

# Rows of the incidents/alerts tables in scope of the chosen grids and kinds.
SCOPE = "grid_code IN (${grid:sqlstring}) AND kind IN (${kind:sqlstring})"


def _custom_values(pairs: list[tuple[str, str]]) -> str:
    """Grafana's custom-variable syntax: ``text : value`` items, commas escaped."""
    return ",".join(text.replace(",", r"\,") + " : " + value for text, value in pairs)


def _sql_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def community(site: Site) -> gd.CustomVariable:
    return (
        gd.CustomVariable("community")
        .label("社区 community")
        .values(_custom_values([(f"{c.name} {c.code}", c.code) for c in site.communities]))
        .multi(True)
        .include_all(True)
        .current(gm.VariableOption(selected=True, text=["All"], value=["$__all"]))
    )


def grid(site: Site) -> gd.QueryVariable:
    rows = ",\n".join(f"({_sql_text(f'{g.name} {g.code}')}, '{g.code}')" for g in site.grids)
    query = (
        "SELECT __text, __value FROM (VALUES\n"
        f"{rows}\n) AS grids(__text, __value)\n"
        "WHERE left(__value, 12) IN (${community:sqlstring})\nORDER BY __value"
    )
    return (
        gd.QueryVariable("grid")
        .label("网格 grid")
        .datasource(DATASOURCE)
        .query(query)
        .refresh(gm.VariableRefresh.ON_DASHBOARD_LOAD)
        .multi(True)
        .include_all(True)
        .current(gm.VariableOption(selected=True, text=["All"], value=["$__all"]))
    )


def kind() -> gd.CustomVariable:
    return (
        gd.CustomVariable("kind")
        .label("类型 kind")
        .values(
            _custom_values(
                [(kind_label(info.label), k.value) for k, info in kinds.INCIDENT_KINDS.items()]
            )
        )
        .multi(True)
        .include_all(True)
        .current(gm.VariableOption(selected=True, text=["All"], value=["$__all"]))
    )


def scoped(site: Site) -> list[cogbuilder.Builder[gm.VariableModel]]:
    return [community(site), grid(site), kind()]


def alert_annotation(*, scoped: bool) -> gd.AnnotationQuery:
    """Alerts as annotations; ``scoped`` on dashboards that have the grid and kind variables."""
    return sql_annotation(
        "Alerts",
        f"""
SELECT ts AS "time", summary || ' (' || state || ')' AS text, level || ',' || kind AS tags
FROM alerts
WHERE $__timeFilter(ts){f" AND {SCOPE}" if scoped else ""}
ORDER BY ts
""",
        "red",
    )
