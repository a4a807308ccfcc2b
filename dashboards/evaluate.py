"""Run a dashboard's queries against a database as Grafana would show it.

Template variables are resolved the way Grafana resolves them on load — a multi-value or "All"
variable takes all its options, any other its first — with query variables run in order so
that a chained variable sees the ones before it. Then each panel's and annotation's SQL is
rendered (:mod:`dashboards.macros`) and executed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg

from dashboards.macros import TimeRange, Variable, render

_CUSTOM_ITEM = re.compile(r"(?:\\,|[^,])+")


@dataclass(frozen=True)
class Query:
    """One SQL query of a dashboard: a panel target or an annotation."""

    where: str  # "panel 3 'Newest alerts'" or "annotation 'Alerts'"
    panel: dict[str, Any] | None  # the panel it feeds; None for an annotation
    raw_sql: str
    fmt: str


@dataclass(frozen=True)
class Result:
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]


def queries(document: Mapping[str, Any]) -> Iterator[Query]:
    for panel in document.get("panels", []):
        for target in panel.get("targets", []):
            where = f"panel {panel['id']} {panel.get('title', '')!r}"
            yield Query(where, panel, target["rawSql"], target.get("format", "table"))
    for annotation in document.get("annotations", {}).get("list", []):
        target = annotation.get("target", {})
        if "rawSql" in target:
            where = f"annotation {annotation['name']!r}"
            yield Query(where, None, target["rawSql"], target.get("format", "table"))


def custom_options(query: str) -> list[str]:
    """The values of a custom variable: ``text : value`` or bare items, commas escaped."""
    values = []
    for item in _CUSTOM_ITEM.findall(query):
        text = item.replace(r"\,", ",")
        values.append(text.rsplit(" : ", 1)[-1].strip())
    return values


def execute(conn: psycopg.Connection, sql: str) -> Result:
    cur = conn.execute(sql)
    columns = tuple(c.name for c in cur.description or ())
    return Result(columns, cur.fetchall() if cur.description else [])


def resolve_variables(
    document: Mapping[str, Any],
    conn: psycopg.Connection,
    time_range: TimeRange,
    *,
    timescaledb: bool,
    chosen: Mapping[str, str] | None = None,
) -> dict[str, Variable]:
    """Each variable's values; ``chosen`` pins single-value variables, as a URL's var-x= does."""
    resolved: dict[str, Variable] = {}
    for variable in document.get("templating", {}).get("list", []):
        name = variable["name"]
        if variable["type"] == "custom":
            options = custom_options(variable["query"])
        elif variable["type"] == "query":
            sql = render(variable["query"], resolved, time_range, timescaledb=timescaledb)
            result = execute(conn, sql)
            column = result.columns.index("__value") if "__value" in result.columns else 0
            options = [str(row[column]) for row in result.rows]
        elif variable["type"] == "constant":
            options = [str(variable["query"])]
        else:
            raise ValueError(f"variable {name!r}: type {variable['type']!r} is not supported")
        multi = bool(variable.get("multi") or variable.get("includeAll"))
        if chosen and name in chosen:
            options = [chosen[name]]
        elif not multi:
            options = options[:1]
        resolved[name] = Variable(tuple(options), multi)
    return resolved


def timescaledb_in_use(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT value FROM schema_info WHERE key = 'backend'").fetchone()
    return row is not None and row[0] == "timescaledb"
