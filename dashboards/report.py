"""A static picture of the command center, for people who are not in Grafana.

``gridwatch report`` runs the command-center dashboard's own panel queries (through
:mod:`dashboards.evaluate`, exactly as Grafana would, over the whole stored history) and draws
the incident map over the grid polygons beside the KPI table and the newest alerts, as a PNG.
Text is kept to ASCII (codes, kinds, levels) so the picture renders with matplotlib's bundled
font on any machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import shapely
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from dashboards.command_center import (
    COUNTS_BY_KIND,
    COUNTS_BY_LEVEL,
    INCIDENTS_ON_MAP,
    NEWEST_ALERTS,
    command_center,
)
from dashboards.evaluate import Result, execute, resolve_variables, timescaledb_in_use
from dashboards.governance import KPIS_NOW
from dashboards.grafana import to_json
from dashboards.macros import TimeRange, Variable, render
from gridwatch.events import Level
from gridwatch.geo import Geometry, GridIndex
from gridwatch.site import Site
from gridwatch.store.summary import collect

REPORT_FILE = "command-center.png"
LEVEL_RGB = {Level.YELLOW: "#F2CC0C", Level.ORANGE: "#FF780A", Level.RED: "#E02F44"}
_NEWEST_ALERTS_SHOWN = 8


@dataclass(frozen=True)
class Snapshot:
    """What the command center shows, read once from the database."""

    taken_at: datetime
    time_range: TimeRange
    incidents: Result
    by_level: Result
    by_kind: Result
    alerts: Result
    kpis: Result
    totals: dict[str, Any]


def _history(conn: psycopg.Connection, now: datetime) -> TimeRange:
    row = conn.execute(
        "SELECT least((SELECT min(ts) FROM readings), (SELECT min(ts) FROM incidents))"
    ).fetchone()
    start = row[0] if row and row[0] is not None else now - timedelta(hours=6)
    return TimeRange(min(start, now) - timedelta(minutes=1), now + timedelta(minutes=1))


def snapshot(conn: psycopg.Connection, site: Site) -> Snapshot:
    now = datetime.now(UTC)
    time_range = _history(conn, now)
    timescaledb = timescaledb_in_use(conn)
    variables: dict[str, Variable] = resolve_variables(
        to_json(command_center(site)), conn, time_range, timescaledb=timescaledb
    )

    def run(raw_sql: str) -> Result:
        return execute(conn, render(raw_sql, variables, time_range, timescaledb=timescaledb))

    return Snapshot(
        taken_at=now,
        time_range=time_range,
        incidents=run(INCIDENTS_ON_MAP),
        by_level=run(COUNTS_BY_LEVEL),
        by_kind=run(COUNTS_BY_KIND),
        alerts=run(NEWEST_ALERTS),
        kpis=run(KPIS_NOW),
        totals=collect(conn),
    )


def _records(result: Result) -> list[dict[str, Any]]:
    return [dict(zip(result.columns, row, strict=True)) for row in result.rows]


def _outline(ax: Axes, shape: Geometry, **style: Any) -> None:
    for part in shapely.get_parts(shape):
        xs, ys = part.exterior.xy
        ax.fill(xs, ys, **style)


def _draw_map(ax: Axes, site: Site, snap: Snapshot) -> None:
    index = GridIndex(site)
    for grid in site.grids:
        _outline(
            ax,
            index.grid_polygon(grid.code),
            facecolor="#DCE6F5",
            edgecolor="#7F95B5",
            linewidth=0.5,
        )
    for community in site.communities:
        _outline(
            ax,
            index.community_polygon(community.code),
            facecolor="none",
            edgecolor="#2B4A7A",
            linewidth=1.6,
        )
        centre = index.community_polygon(community.code).representative_point()
        ax.annotate(
            community.code[-3:],
            (centre.x, centre.y),
            color="#2B4A7A",
            fontsize=8,
            ha="center",
            alpha=0.7,
        )
    incidents = _records(snap.incidents)
    for incident in sorted(incidents, key=lambda i: Level(i["level"]).rank):
        colour = LEVEL_RGB[Level(incident["level"])]
        ax.scatter(
            [incident["lon"]],
            [incident["lat"]],
            s=260,
            color=colour,
            edgecolors="black",
            linewidths=1.2,
            zorder=3,
            alpha=0.5 if incident["ended"] else 1.0,
        )
        ax.annotate(
            f"{incident['kind']}\n{incident['grid_code']}",
            (incident["lon"], incident["lat"]),
            xytext=(9, 9),
            textcoords="offset points",
            fontsize=8,
            zorder=4,
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "alpha": 0.8},
        )
    x0, y0, x1, y1 = shapely.total_bounds([index.grid_polygon(g.code) for g in site.grids])
    ax.set_aspect(1 / math.cos(math.radians((y0 + y1) / 2)))
    ax.ticklabel_format(useOffset=False)
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    ax.set_title(
        f"Live incidents over {len(site.grids)} grids (street {site.street.code})",
        loc="left",
        fontsize=12,
    )
    handles = [
        Line2D(
            [],
            [],
            marker="o",
            linestyle="",
            markersize=10,
            markerfacecolor=rgb,
            markeredgecolor="black",
            label=level.value,
        )
        for level, rgb in LEVEL_RGB.items()
    ]
    ax.legend(handles=handles, loc="lower right", title="level", fontsize=8)


def _kpi_rows(snap: Snapshot) -> list[tuple[str, str]]:
    by_level = snap.by_level.rows[0] if snap.by_level.rows else ()
    totals = snap.totals
    rows = [
        ("incidents in view (yellow/orange/red)", " / ".join(str(n) for n in by_level)),
        *(
            (f"  {r['kind']}", " / ".join(str(r[c]) for c in snap.by_kind.columns[1:]))
            for r in _records(snap.by_kind)
        ),
        ("alerts firing / resolved", f"{totals['alerts_firing']} / {totals['alerts_resolved']}"),
        ("detections", str(totals["detections"])),
        ("readings stored", str(totals["readings_stored"])),
        ("dead letters", str(totals["deadletters"])),
        *_case_kpi_rows(snap),
    ]
    for name in ("reading", "alert"):
        latency = totals.get(f"{name}_latency_ms", {})
        rows.append(
            (
                f"sensor -> {name if name == 'alert' else 'stored'} p50 / p99 ms",
                f"{latency.get('p50')} / {latency.get('p99')}",
            )
        )
    return rows


def _case_kpi_rows(snap: Snapshot) -> list[tuple[str, str]]:
    """The closed loop's KPIs, by the grid-governance dashboard's own query."""
    kpis = _records(snap.kpis)[-1] if snap.kpis.rows else {}

    def show(*names: str) -> str:
        return " / ".join("-" if kpis.get(n) is None else f"{float(kpis[n]):g}" for n in names)

    return [
        ("cases due / closed / closed on time", show("due", "closed", "closed_on_time")),
        ("closure / on-time / rework rate %", show("closure_rate", "on_time_rate", "rework_rate")),
        ("closed within the community %", show("community_share")),
        ("mean time to accept / close s", show("mean_accept_s", "mean_close_s")),
    ]


def _draw_table(ax: Axes, title: str, rows: list[list[str]], header: list[str] | None) -> None:
    ax.axis("off")
    ax.set_title(title, loc="left", fontsize=12)
    if not rows:
        ax.text(0, 0.9, "none", fontsize=10, transform=ax.transAxes)
        return
    table = ax.table(cellText=rows, colLabels=header, loc="upper left", cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    table.scale(1, 1.35)


def render_png(site: Site, snap: Snapshot, path: Path) -> Path:
    figure = Figure(figsize=(16, 9), dpi=110, layout="constrained")
    grid = figure.add_gridspec(2, 2, width_ratios=(1.45, 1), height_ratios=(1, 1))
    _draw_map(figure.add_subplot(grid[:, 0]), site, snap)
    _draw_table(figure.add_subplot(grid[0, 1]), "KPIs", [list(r) for r in _kpi_rows(snap)], None)
    alerts = [
        [
            r["time"].astimezone(UTC).strftime("%H:%M:%S"),
            r["level"],
            r["state"],
            r["kind"],
            r["grid_code"],
        ]
        for r in _records(snap.alerts)[:_NEWEST_ALERTS_SHOWN]
    ]
    _draw_table(
        figure.add_subplot(grid[1, 1]),
        "Newest alerts (UTC)",
        alerts,
        ["time", "level", "state", "kind", "grid"],
    )
    start, end = snap.time_range.start, snap.time_range.end
    figure.suptitle(
        f"gridwatch command center - {snap.taken_at:%Y-%m-%d %H:%M} UTC "
        f"(data {start:%Y-%m-%d %H:%M} to {end:%H:%M} UTC)",
        fontsize=14,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def write_report(database_url: str, site: Site, path: Path) -> Path:
    with psycopg.connect(database_url) as conn:
        snap = snapshot(conn, site)
    return render_png(site, snap, path)
