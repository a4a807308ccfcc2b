"""Every panel's SQL, as Grafana would send it, on the database the demo's scenario filled.

A panel whose query fails, lacks a column the panel reads, or returns nothing fails here. The
time range is the one an operator would pick to look at the run: around its stored rows.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from functools import cache
from typing import Any

import psycopg
import pytest

from alerts.closed_loop import load_audit
from alerts.kpi import compute
from dashboards import build
from dashboards.evaluate import (
    Query,
    Result,
    execute,
    queries,
    resolve_variables,
    timescaledb_in_use,
)
from dashboards.governance import KPI_MOMENTS, kpi_sql
from dashboards.macros import TimeRange, covering, render
from dashboards.report import REPORT_FILE
from gridwatch.settings import SAMPLE_SITE
from gridwatch.site import load_site
from tests.conftest import DemoRun

_LINK_FIELD = re.compile(r"\$\{__data\.fields\.(\w+)\}")


@cache
def documents() -> dict[str, dict[str, Any]]:
    return build.dashboards(load_site(SAMPLE_SITE))


@pytest.fixture(scope="module")
def conn(demo_run: DemoRun) -> Iterator[psycopg.Connection]:
    with psycopg.connect(demo_run.database_url, autocommit=True) as connection:
        yield connection


@pytest.fixture(scope="module")
def run_range(conn: psycopg.Connection) -> TimeRange:
    moments: list[datetime] = [
        m
        for (m,) in conn.execute(
            "SELECT min(ts) FROM readings UNION ALL SELECT max(stored_at) FROM readings"
            " UNION ALL SELECT max(stored_at) FROM alerts"
        ).fetchall()
        if m is not None
    ]
    assert moments, "the demo stored nothing"
    return covering(moments)


def required_columns(query: Query) -> set[str]:
    """The columns the panel (or annotation) reads by name, from its own JSON."""
    if query.panel is None:
        return {"time", "text"}
    panel = query.panel
    needed = set(_LINK_FIELD.findall(str(panel.get("fieldConfig", {}))))
    # In a table an override names a column; in a time series it names a series (a value).
    if query.fmt == "table":
        for override in panel.get("fieldConfig", {}).get("overrides", []):
            if override["matcher"]["id"] == "byName":
                needed.add(override["matcher"]["options"])
    options = panel.get("options") or {}
    for layer in options.get("layers", []):
        location = layer.get("location") or {}
        needed |= {location[k] for k in ("latitude", "longitude") if k in location}
        style = (layer.get("config") or {}).get("style", {})
        needed |= {style[k]["field"] for k in ("color", "text") if "field" in style.get(k, {})}
    if "xField" in options:
        needed.add(options["xField"])
    if query.fmt == "time_series":
        needed.add("time")
    return needed


def run_all(
    conn: psycopg.Connection, name: str, time_range: TimeRange, chosen: dict[str, str] | None
) -> dict[str, Result]:
    document = documents()[name]
    timescaledb = timescaledb_in_use(conn)
    variables = resolve_variables(
        document, conn, time_range, timescaledb=timescaledb, chosen=chosen
    )
    results = {}
    for query in queries(document):
        sql = render(query.raw_sql, variables, time_range, timescaledb=timescaledb)
        try:
            results[query.where] = execute(conn, sql)
        except psycopg.Error as err:
            pytest.fail(f"{name} {query.where} fails: {err}\n{sql}")
        missing = required_columns(query) - set(results[query.where].columns)
        assert not missing, f"{name} {query.where} lacks columns {missing}"
    return results


def has_data(result: Result) -> bool:
    """Rows, and for a one-row count panel at least one count that is not zero."""
    if not result.rows:
        return False
    if len(result.rows) == 1 and all(isinstance(v, int) for v in result.rows[0]):
        return any(result.rows[0])
    return True


@pytest.mark.parametrize("name", sorted(set(build.BUILDERS) - {"incident.json"}))
def test_every_panel_returns_rows_on_the_seeded_run(
    conn: psycopg.Connection, run_range: TimeRange, name: str
) -> None:
    results = run_all(conn, name, run_range, None)
    empty = [where for where, result in results.items() if not has_data(result)]
    assert not empty, f"{name}: no data for {empty}"


def test_every_incident_panel_has_data_for_some_incident(
    conn: psycopg.Connection, run_range: TimeRange
) -> None:
    incidents = [i for (i,) in conn.execute("SELECT incident_id::text FROM incidents_current")]
    assert incidents, "the scenario produced no incident"
    filled: set[str] = set()
    for incident in incidents[:20]:
        results = run_all(conn, "incident.json", run_range, {"incident": incident})
        filled |= {where for where, result in results.items() if has_data(result)}
    every = {q.where for q in queries(documents()["incident.json"])}
    assert filled == every, f"never any data: {every - filled}"


def test_variables_resolve_to_the_sites_grids(
    conn: psycopg.Connection, run_range: TimeRange
) -> None:
    document = documents()["command-center.json"]
    variables = resolve_variables(document, conn, run_range, timescaledb=timescaledb_in_use(conn))
    site = load_site(SAMPLE_SITE)
    assert set(variables["grid"].values) == {g.code for g in site.grids}
    assert set(variables["community"].values) == {c.code for c in site.communities}


def test_the_demo_leaves_a_command_center_snapshot(demo_run: DemoRun) -> None:
    png = demo_run.run_dir / REPORT_FILE
    assert png.is_file(), "gridwatch demo writes the report into its run directory"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    assert REPORT_FILE in demo_run.stdout


def test_the_kpis_in_sql_equal_the_closed_loops_own(
    conn: psycopg.Connection, run_range: TimeRange
) -> None:
    """At every moment of the KPI trend, the SQL gives what alerts.kpi computes from the log."""
    document = documents()["grid-governance.json"]
    timescaledb = timescaledb_in_use(conn)
    variables = resolve_variables(document, conn, run_range, timescaledb=timescaledb)
    sql = render(kpi_sql(KPI_MOMENTS), variables, run_range, timescaledb=timescaledb)
    result = execute(conn, sql)
    audit = load_audit(conn)
    assert audit and result.rows, "the demo's cases left no audit log"
    in_range = {
        case_id
        for (case_id,) in conn.execute(
            "SELECT case_id FROM cases WHERE opened_at BETWEEN %s AND %s",
            (run_range.start, run_range.end),
        )
    }
    for row in result.rows:
        values = dict(zip(result.columns, row, strict=True))
        moment = values.pop("time")
        expected = compute(
            [e for e in audit if e.ts <= moment and e.case_id in in_range], moment
        ).as_dict()
        for name, value in values.items():
            want = expected[name]
            if want is None or value is None:
                assert want is value, f"{name} at {moment}: SQL {value}, Python {want}"
            else:
                assert float(value) == pytest.approx(want, abs=0.011), f"{name} at {moment}"
    final = dict(zip(result.columns, result.rows[-1], strict=True))
    assert final["closed"] > 0 and final["closure_rate"] is not None
