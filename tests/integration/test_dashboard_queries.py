"""Every panel's SQL, as Grafana would send it, on the database the demo's scenario filled.

A panel whose query fails, lacks a column the panel reads, or returns nothing fails here. The
time range is the one an operator would pick to look at the run: around its stored rows. The
queries run as Grafana's read-only role (``gridwatch store grant-reader``), so a relation the
dashboards read without a grant fails here too; what else that role may do is tested below.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import errors
from psycopg.conninfo import make_conninfo

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
from dashboards.macros import TimeRange, Variable, covering, render
from dashboards.report import REPORT_FILE
from gridwatch.settings import SAMPLE_SITE
from gridwatch.site import load_site
from gridwatch.store.feedback import mark_false_alarm
from gridwatch.store.reader import DASHBOARD_RELATIONS, DEFAULT_READER, grant_reader
from tests.conftest import DemoRun

_LINK_FIELD = re.compile(r"\$\{__data\.fields\.(\w+)\}")


@cache
def documents() -> dict[str, dict[str, Any]]:
    return build.dashboards(load_site(SAMPLE_SITE))


READER_PASSWORD = "reader-" + uuid.uuid4().hex  # noqa: S105 - made up for this session


@pytest.fixture(scope="module")
def admin(demo_run: DemoRun) -> Iterator[psycopg.Connection]:
    """The demo database's owner, a superuser: what Grafana logged in as before."""
    with psycopg.connect(demo_run.database_url, autocommit=True) as connection:
        yield connection


@pytest.fixture(scope="module")
def false_alarms(demo_run: DemoRun, admin: psycopg.Connection) -> int:
    """Operators reject a few of the run's camera detections, as they would on the console."""
    rows = admin.execute(
        "SELECT id::text FROM detections WHERE source_type IN ('camera', 'watchtower')"
        " AND kind <> 'camera_health' AND NOT cleared ORDER BY ts, id LIMIT 3"
    ).fetchall()
    for (detection_id,) in rows:
        mark_false_alarm(
            admin,
            detection_id=detection_id,
            operator="值班员",
            reason="夕阳反光",
            evidence_dir=demo_run.run_dir,
        )
    return len(rows)


@pytest.fixture(scope="module")
def conn(
    demo_run: DemoRun, admin: psycopg.Connection, false_alarms: int
) -> Iterator[psycopg.Connection]:
    """Grafana's connection: the read-only role, granted twice as a re-run would."""
    assert false_alarms, "the demo stored no camera detection to reject"
    for _ in range(2):
        with psycopg.connect(demo_run.database_url) as owner:
            grant_reader(owner, DEFAULT_READER, READER_PASSWORD)
    url = make_conninfo(demo_run.database_url, user=DEFAULT_READER, password=READER_PASSWORD)
    with psycopg.connect(url, autocommit=True) as connection:
        yield connection


@pytest.fixture(scope="module")
def timescaledb(admin: psycopg.Connection) -> bool:
    return timescaledb_in_use(admin)


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
    conn: psycopg.Connection,
    name: str,
    time_range: TimeRange,
    chosen: dict[str, str] | None,
    *,
    timescaledb: bool,
) -> dict[str, Result]:
    document = documents()[name]
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
    conn: psycopg.Connection, run_range: TimeRange, timescaledb: bool, name: str
) -> None:
    results = run_all(conn, name, run_range, None, timescaledb=timescaledb)
    empty = [where for where, result in results.items() if not has_data(result)]
    assert not empty, f"{name}: no data for {empty}"


def test_the_false_alarm_panel_counts_the_marks_and_their_share(
    conn: psycopg.Connection, run_range: TimeRange, timescaledb: bool, false_alarms: int
) -> None:
    results = run_all(conn, "cameras.json", run_range, None, timescaledb=timescaledb)
    (result,) = [r for where, r in results.items() if "False alarms" in where]
    rows = [dict(zip(result.columns, row, strict=True)) for row in result.rows]
    assert sum(r["false_alarms"] for r in rows) == false_alarms
    for row in rows:
        (raised,) = conn.execute(
            "SELECT count(*) FROM detections WHERE source_id = %s AND kind = %s"
            " AND NOT cleared AND ts BETWEEN %s AND %s",
            (row["source_id"], row["kind"], run_range.start, run_range.end),
        ).fetchone() or (0,)
        assert row["detections"] == raised > 0
        assert float(row["false_alarm_pct"]) == pytest.approx(
            100 * row["false_alarms"] / raised, abs=0.05
        )


def test_every_incident_panel_has_data_for_some_incident(
    conn: psycopg.Connection, run_range: TimeRange, timescaledb: bool
) -> None:
    incidents = [i for (i,) in conn.execute("SELECT incident_id::text FROM incidents_current")]
    assert incidents, "the scenario produced no incident"
    filled: set[str] = set()
    for incident in incidents[:20]:
        chosen = {"incident": incident}
        results = run_all(conn, "incident.json", run_range, chosen, timescaledb=timescaledb)
        filled |= {where for where, result in results.items() if has_data(result)}
    every = {q.where for q in queries(documents()["incident.json"])}
    assert filled == every, f"never any data: {every - filled}"


def test_variables_resolve_to_the_sites_grids(
    conn: psycopg.Connection, run_range: TimeRange, timescaledb: bool
) -> None:
    document = documents()["command-center.json"]
    variables = resolve_variables(document, conn, run_range, timescaledb=timescaledb)
    site = load_site(SAMPLE_SITE)
    assert set(variables["grid"].values) == {g.code for g in site.grids}
    assert set(variables["community"].values) == {c.code for c in site.communities}


def test_the_demo_leaves_a_command_center_snapshot(demo_run: DemoRun) -> None:
    png = demo_run.run_dir / REPORT_FILE
    assert png.is_file(), "gridwatch demo writes the report into its run directory"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    assert REPORT_FILE in demo_run.stdout


def test_the_kpis_in_sql_equal_the_closed_loops_own(
    conn: psycopg.Connection, run_range: TimeRange, timescaledb: bool
) -> None:
    """At every moment of the KPI trend, the SQL gives what alerts.kpi computes from the log."""
    document = documents()["grid-governance.json"]
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


# --- Grafana's doors: the read-only role and hostile variables ------------------------------


@pytest.fixture
def reader(demo_run: DemoRun, conn: psycopg.Connection) -> Iterator[psycopg.Connection]:
    """A reader connection of the test's own, which turns the read-only default off first, as
    anyone who can type SQL into Grafana could: the grants, not the default, must hold."""
    url = make_conninfo(demo_run.database_url, user=DEFAULT_READER, password=READER_PASSWORD)
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("SET default_transaction_read_only = off")
        yield connection


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO readings (ts, device_id, metric, value, unit, id, received_at)"
        " VALUES (now(), 'x', 'm', 1, 'u', gen_random_uuid(), now())",
        "UPDATE cases SET state = 'closed'",
        "DELETE FROM alerts",
        "CREATE TABLE intruder (x int)",
        "CREATE FUNCTION intruder() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "COPY (SELECT 1) TO PROGRAM 'id'",
        "COPY readings FROM PROGRAM 'id'",
        "SELECT pg_read_file('/etc/passwd')",
        "SELECT * FROM silences",
        "SELECT * FROM schema_info",
        "GRANT pg_execute_server_program TO " + DEFAULT_READER,
    ],
)
def test_the_reader_may_not(reader: psycopg.Connection, statement: str) -> None:
    with pytest.raises(errors.InsufficientPrivilege):
        reader.execute(statement)


def test_the_reader_is_a_plain_role_with_a_statement_timeout(
    admin: psycopg.Connection, conn: psycopg.Connection
) -> None:
    row = admin.execute(
        "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls,"
        " (SELECT count(*) FROM pg_auth_members WHERE member = r.oid)"
        " FROM pg_roles r WHERE rolname = %s",
        (DEFAULT_READER,),
    ).fetchone()
    assert row == (False, False, False, False, False, 0)
    assert conn.execute("SHOW statement_timeout").fetchone() == ("30s",)
    with pytest.raises(errors.ReadOnlySqlTransaction):
        conn.execute("CREATE TEMP TABLE scratch (x int)")
    granted = {
        name
        for (name,) in admin.execute(
            "SELECT DISTINCT table_name FROM information_schema.role_table_grants"
            " WHERE grantee = %s",
            (DEFAULT_READER,),
        )
    }
    assert granted == set(DASHBOARD_RELATIONS)
    privileges = {
        p
        for (p,) in admin.execute(
            "SELECT DISTINCT privilege_type FROM information_schema.role_table_grants"
            " WHERE grantee = %s",
            (DEFAULT_READER,),
        )
    }
    assert privileges == {"SELECT"}


def test_every_granted_relation_is_one_a_dashboard_reads() -> None:
    read = set()
    for document in documents().values():
        texts = [q.raw_sql for q in queries(document)]
        texts += [v["query"] for v in document.get("templating", {}).get("list", [])]
        for text in texts:
            read |= set(re.findall(r"\b(?:FROM|JOIN)\s+(\w+)", str(text), re.I))
    assert set(DASHBOARD_RELATIONS) <= read, set(DASHBOARD_RELATIONS) - read


def _hostile(marker: Path) -> list[tuple[str, ...]]:
    """Values that would run a program on the database server if a variable broke out of its
    literal: as the brief example, closing '$x'::uuid, and repeated in the URL."""
    touch = f"COPY (SELECT 1) TO PROGRAM 'touch {marker}'"
    nil = "00000000-0000-0000-0000-000000000000"
    return [
        (f"x'); {touch}; --",),
        (f"{nil}'::uuid; {touch}; SELECT '{nil}",),
        (f"{nil}') OR true; {touch}; --",),
        (f"; {touch.replace(chr(39), '$$')}; SELECT $$", "x"),
        (f"x\\'; {touch}; --",),
    ]


def test_a_hostile_variable_value_never_executes(
    conn: psycopg.Connection, admin: psycopg.Connection, run_range: TimeRange, timescaledb: bool
) -> None:
    """Each variable of each dashboard, set to each hostile value, in every query that uses it:
    an error or no data, never the program. Run as the reader and, to show that the quoting
    holds by itself, as the superuser Grafana used to be."""
    marker = Path("/tmp") / f"gridwatch-hostile-{uuid.uuid4().hex}"  # noqa: S108 - the server's
    tried = 0
    try:
        for name, document in documents().items():
            resolved = resolve_variables(document, conn, run_range, timescaledb=timescaledb)
            texts = [q.raw_sql for q in queries(document)]
            variables = document.get("templating", {}).get("list", [])
            texts += [v["query"] for v in variables if v["type"] == "query"]
            for variable in resolved:
                for values in _hostile(marker):
                    hostile = {**resolved, variable: Variable(values, multi=False)}
                    for text in texts:
                        if not re.search(rf"\$\{{?{variable}\b", text):
                            continue
                        sql = render(text, hostile, run_range, timescaledb=timescaledb)
                        for who in (conn, admin):
                            tried += 1
                            try:
                                result = execute(who, sql)
                            except psycopg.Error:
                                continue
                            if name == "incident.json":
                                assert not has_data(result), f"{name}: data for {values}: {sql}"
                        assert not marker.exists(), f"{name} ${variable} executed: {sql}"
    finally:
        marker.unlink(missing_ok=True)
    assert tried > 100
