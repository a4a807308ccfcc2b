"""Turn a panel's SQL into what Grafana's PostgreSQL datasource sends to the database.

Grafana does it in two steps: the browser substitutes template variables, then the datasource
backend expands the ``$__`` macros for the dashboard's time range. Both are reproduced here, for
the macros the dashboards use, so that tests and ``gridwatch report`` run exactly the SQL a
Grafana server would (see Grafana's ``pkg/tsdb/grafana-postgresql-datasource/macros.go``).
A macro or variable this module does not know is an error, never passed through.

A reference without a format gets the PostgreSQL datasource's default (its
``interpolateVariable``): the values of a multi-value or "All" variable quoted and comma-joined,
a single value inserted raw, and the values of a URL's repeated ``var-name=`` quoted and
comma-joined, so that ``'$name'`` can be closed from a URL. The dashboards therefore write every
variable as ``${name:sqlstring}``: each value single-quoted with its quotes doubled, whatever the
variable's settings or the URL.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

# The browser's forms of a variable reference: $name, ${name} and ${name:format}.
_VARIABLE = re.compile(r"\$(?:(?P<bare>\w+)|\{(?P<braced>\w+)(?::(?P<format>[^}]+))?\})")
_MACRO = re.compile(r"\$(__\w+)\(([^)]*)\)")
_INTERVAL = re.compile(r"^(\d+)(ms|s|m|h|d|w)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class MacroError(ValueError):
    """SQL that Grafana would not turn into a valid query."""


SQLSTRING = "sqlstring"


@dataclass(frozen=True)
class Variable:
    """A template variable's current value(s); ``multi`` when it may hold more than one."""

    values: tuple[str, ...]
    multi: bool

    def sqlstring(self) -> str:
        """Grafana's ``sqlstring`` format."""
        return ",".join("'" + v.replace("'", "''") + "'" for v in self.values)

    def default(self) -> str:
        """The PostgreSQL datasource's rendering of a reference without a format."""
        if self.multi or len(self.values) != 1:
            return self.sqlstring()
        return self.values[0]


@dataclass(frozen=True)
class TimeRange:
    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise MacroError("a time range needs timezone-aware datetimes")


def substitute_variables(raw_sql: str, variables: Mapping[str, Variable]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match["bare"] or match["braced"]
        if name.startswith("__"):
            return match[0]  # a macro (or built-in), expanded by the backend
        if name not in variables:
            raise MacroError(f"unknown template variable ${name}")
        if match["format"] is None:
            return variables[name].default()
        if match["format"] == SQLSTRING:
            return variables[name].sqlstring()
        raise MacroError(f"{match[0]}: the format {match['format']!r} is not supported")

    return _VARIABLE.sub(replace, raw_sql)


def grafana_time(moment: datetime) -> str:
    """Go's RFC3339Nano in UTC, as Grafana formats the bounds of the time range."""
    text = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0").rstrip(".")
    return text + "Z"


def interval_seconds(text: str) -> float:
    match = _INTERVAL.match(text.strip().strip("'\""))
    if match is None:
        raise MacroError(f"cannot parse interval {text!r}")
    return int(match[1]) * _UNIT_SECONDS[match[2]]


def expand_macros(raw_sql: str, time_range: TimeRange, *, timescaledb: bool) -> str:
    """Grafana's PostgreSQL macros; ``timescaledb`` is the datasource's TimescaleDB switch."""

    def replace(match: re.Match[str]) -> str:
        name = match[1]
        args = [a.strip() for a in match[2].split(",")] if match[2].strip() else []
        start, end = grafana_time(time_range.start), grafana_time(time_range.end)
        if name == "__time" and len(args) == 1:
            return f'{args[0]} AS "time"'
        if name == "__timeFilter" and len(args) == 1:
            return f"{args[0]} BETWEEN '{start}' AND '{end}'"
        if name == "__timeFrom" and not args:
            return f"'{start}'"
        if name == "__timeTo" and not args:
            return f"'{end}'"
        if name in {"__timeGroup", "__timeGroupAlias"} and len(args) == 2:
            seconds = interval_seconds(args[1])
            if timescaledb:
                group = f"time_bucket('{seconds:.0f}s',{args[0]})"
            else:
                group = f"floor(extract(epoch from {args[0]})/{seconds:g})*{seconds:g}"
            return group + (' AS "time"' if name == "__timeGroupAlias" else "")
        raise MacroError(f"unsupported macro ${name}({match[2]})")

    expanded = _MACRO.sub(replace, raw_sql)
    if "$__" in expanded:
        raise MacroError(f"macro left unexpanded in: {expanded}")
    return expanded


def render(
    raw_sql: str,
    variables: Mapping[str, Variable],
    time_range: TimeRange,
    *,
    timescaledb: bool,
) -> str:
    return expand_macros(
        substitute_variables(raw_sql, variables), time_range, timescaledb=timescaledb
    )


def covering(moments: Sequence[datetime], margin: timedelta = timedelta(minutes=5)) -> TimeRange:
    """A time range around some moments, as an operator would pick it to look at them."""
    return TimeRange(min(moments) - margin, max(moments) + margin)
