"""Dashboards as code: the committed provisioning files, their structure, Grafana's SQL macros."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from dashboards import build
from dashboards.evaluate import custom_options, queries
from dashboards.grafana import DATASOURCE_TYPE, DATASOURCE_UID, FOLDER_UID, INCIDENT_UID
from dashboards.macros import (
    MacroError,
    TimeRange,
    Variable,
    expand_macros,
    grafana_time,
    substitute_variables,
)
from gridwatch.settings import SAMPLE_SITE
from gridwatch.site import Site, load_site

ROOT = Path(__file__).resolve().parents[2]
PROVISIONING = ROOT / "dashboards" / "provisioning"
_VARIABLE_USE = re.compile(r"\$(?:\{(\w+)[^}]*\}|(\w+))")
_LINK_FIELD = re.compile(r"\$\{__data\.fields\.(\w+)\}")


@cache
def sample_site() -> Site:
    return load_site(SAMPLE_SITE)


@cache
def generated() -> dict[str, dict[str, Any]]:
    return build.dashboards(sample_site())


def all_documents() -> Iterator[tuple[str, dict[str, Any]]]:
    yield from generated().items()


def test_committed_files_are_what_the_code_generates() -> None:
    expected = build.files(sample_site())
    for path, text in expected.items():
        assert path.is_file(), f"{path} is missing: run `gridwatch dashboards build`"
        assert path.read_text(encoding="utf-8") == text, (
            f"{path.name} differs from the code: run `gridwatch dashboards build`"
        )
    committed = set(build.JSON_DIR.glob("*.json"))
    assert committed == {p for p in expected if p.suffix == ".json"}, "stale dashboard files"


def test_every_dashboard_has_a_unique_uid_and_title() -> None:
    uids = [doc["uid"] for doc in generated().values()]
    titles = [doc["title"] for doc in generated().values()]
    assert len(set(uids)) == len(uids) and len(set(titles)) == len(titles)
    assert all(3 <= len(uid) <= 40 for uid in uids), "Grafana uids are at most 40 characters"


@pytest.mark.parametrize("name", sorted(build.BUILDERS))
def test_panels_have_unique_ids_and_fit_the_grid(name: str) -> None:
    panels = generated()[name]["panels"]
    ids = [p["id"] for p in panels]
    assert len(set(ids)) == len(ids), "panel ids must be unique"
    for panel in panels:
        pos = panel["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24, panel["title"]
        assert pos["h"] > 0 and panel.get("title")


def _datasource_refs(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if isinstance(node.get("datasource"), dict):
            yield node["datasource"]
        for value in node.values():
            yield from _datasource_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _datasource_refs(item)


@pytest.mark.parametrize("name", sorted(build.BUILDERS))
def test_every_query_uses_the_provisioned_datasource(name: str) -> None:
    document = generated()[name]
    refs = list(_datasource_refs(document))
    assert refs, "no datasource reference"
    for ref in refs:
        assert ref == {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID}
    provisioned = yaml.safe_load((PROVISIONING / "datasources" / "gridwatch.yaml").read_text())
    [source] = provisioned["datasources"]
    assert (source["uid"], source["type"]) == (DATASOURCE_UID, DATASOURCE_TYPE)
    for panel in document["panels"]:
        assert panel.get("targets"), f"panel {panel['title']!r} has no query"


@pytest.mark.parametrize("name", sorted(build.BUILDERS))
def test_variables_used_exist_and_come_before_their_users(name: str) -> None:
    document = generated()[name]
    defined: list[str] = []
    for variable in document.get("templating", {}).get("list", []):
        for used in _used_variables(variable.get("query", "")):
            assert used in defined, f"variable {variable['name']} uses ${used} defined after it"
        defined.append(variable["name"])
    for query in queries(document):
        for used in _used_variables(query.raw_sql):
            assert used in defined, f"{query.where} uses undefined ${used}"


def _used_variables(text: str) -> set[str]:
    return (
        {a or b for a, b in _VARIABLE_USE.findall(text)}
        - {""}
        - {n for n in (a or b for a, b in _VARIABLE_USE.findall(text)) if n.startswith("__")}
    )


def test_links_lead_to_a_dashboard_and_variable_that_exist() -> None:
    by_uid = {doc["uid"]: doc for doc in generated().values()}
    linked = 0
    for _, document in all_documents():
        for panel in document["panels"]:
            for link in panel.get("fieldConfig", {}).get("defaults", {}).get("links", []):
                if link["url"].startswith("${console}"):
                    continue  # into the console: test_console_links.py
                match = re.match(r"/d/([\w-]+)/[\w-]+\?var-(\w+)=", link["url"])
                assert match, link["url"]
                uid, variable = match.groups()
                assert uid == INCIDENT_UID and uid in by_uid
                names = [v["name"] for v in by_uid[uid]["templating"]["list"]]
                assert variable in names
                assert _LINK_FIELD.search(link["url"]), "the link carries the row's incident"
                linked += 1
    assert linked >= 2, "the map and the alert table click through to the incident"


def test_the_command_center_has_the_map_variables_and_annotations() -> None:
    document = generated()["command-center.json"]
    [geomap] = [p for p in document["panels"] if p["type"] == "geomap"]
    layers = {layer["type"]: layer for layer in geomap["options"]["layers"]}
    assert layers["geojson"]["config"]["src"].endswith(build.GRIDS_FILE)
    assert layers["markers"]["config"]["style"]["color"]["field"] == "level"
    assert [v["name"] for v in document["templating"]["list"]] == ["community", "grid", "kind"]
    names = {a["name"] for a in document["annotations"]["list"]}
    assert "Alerts" in names


def test_the_grid_geojson_has_every_grid() -> None:
    geojson = json.loads((build.GEO_DIR / build.GRIDS_FILE).read_text(encoding="utf-8"))
    codes = {f["properties"]["code"] for f in geojson["features"]}
    assert codes == {g.code for g in sample_site().grids}
    assert all(f["geometry"]["type"] in {"Polygon", "MultiPolygon"} for f in geojson["features"])


def test_the_community_variable_lists_every_community() -> None:
    [community] = [
        v
        for v in generated()["command-center.json"]["templating"]["list"]
        if v["name"] == "community"
    ]
    assert custom_options(community["query"]) == [c.code for c in sample_site().communities]
    assert custom_options(r"a\,b : x,c") == ["x", "c"]


def test_provisioning_puts_dashboards_in_the_gridwatch_folder() -> None:
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "gridwatch.yaml").read_text())
    assert provider["providers"][0]["folderUid"] == FOLDER_UID


# --- Grafana's macros and variable interpolation --------------------------------------------

RANGE = TimeRange(
    datetime(2024, 5, 1, 8, 0, tzinfo=UTC), datetime(2024, 5, 1, 9, 30, 15, 250000, tzinfo=UTC)
)


def test_time_filter_is_formatted_like_grafana() -> None:
    assert grafana_time(RANGE.end) == "2024-05-01T09:30:15.25Z"
    assert grafana_time(RANGE.start) == "2024-05-01T08:00:00Z"
    sql = expand_macros("WHERE $__timeFilter(ts) AND x > $__timeFrom()", RANGE, timescaledb=False)
    assert sql == (
        "WHERE ts BETWEEN '2024-05-01T08:00:00Z' AND '2024-05-01T09:30:15.25Z'"
        " AND x > '2024-05-01T08:00:00Z'"
    )


def test_time_group_differs_between_timescaledb_and_postgresql() -> None:
    raw = "SELECT $__timeGroupAlias(ts, '1m'), $__timeGroup(ts, 1h)"
    assert expand_macros(raw, RANGE, timescaledb=False) == (
        'SELECT floor(extract(epoch from ts)/60)*60 AS "time", '
        "floor(extract(epoch from ts)/3600)*3600"
    )
    assert expand_macros(raw, RANGE, timescaledb=True) == (
        "SELECT time_bucket('60s',ts) AS \"time\", time_bucket('3600s',ts)"
    )


def test_unknown_macros_and_variables_are_errors() -> None:
    with pytest.raises(MacroError, match="unsupported macro"):
        expand_macros("$__unixEpochFilter(ts)", RANGE, timescaledb=False)
    with pytest.raises(MacroError, match="unknown template variable"):
        substitute_variables("kind IN ($nope)", {})


def test_variables_are_expanded_as_grafanas_sqlstring_format() -> None:
    variables = {
        "kind": Variable(("flood", "o'brien"), multi=True),
        "incident": Variable(("x'); COPY (SELECT 1) TO PROGRAM 'id'; --",), multi=False),
    }
    sql = substitute_variables(
        "k IN (${kind:sqlstring}) AND i = ${incident:sqlstring} AND $__timeFilter(ts)", variables
    )
    assert sql == (
        "k IN ('flood','o''brien') AND i = 'x''); COPY (SELECT 1) TO PROGRAM ''id''; --'"
        " AND $__timeFilter(ts)"
    )


def test_a_variable_without_a_format_is_inserted_as_grafanas_postgresql_datasource_does() -> None:
    """Raw when single-valued, quoted when multi-valued or repeated in the URL: either way a
    hand-quoted '$incident' can be closed by the value."""
    single = {"incident": Variable(("x'; DROP TABLE t; --",), multi=False)}
    assert substitute_variables("i = '$incident'", single) == "i = 'x'; DROP TABLE t; --'"
    repeated = {"incident": Variable(("; DROP TABLE t; --", "x"), multi=False)}
    assert substitute_variables("i = '$incident'", repeated) == "i = ''; DROP TABLE t; --','x''"
    multi = {"kind": Variable(("flood", "o'brien"), multi=True)}
    assert substitute_variables("k IN ($kind)", multi) == "k IN ('flood','o''brien')"
    with pytest.raises(MacroError, match="not supported"):
        substitute_variables("${kind:raw}", multi)


def test_every_variable_in_the_dashboards_sql_is_a_quoted_literal() -> None:
    """Panels, annotations and query variables: each reference is ${name:sqlstring}."""
    reference = re.compile(r"\$(?!__)(\w+|\{(?!__)[^}]*\})")
    seen = set()
    for name, document in build.dashboards(sample_site()).items():
        variables = document.get("templating", {}).get("list", [])
        texts = [q.raw_sql for q in queries(document)]
        texts += [v["query"] for v in variables if v["type"] == "query"]
        for text in texts:
            for found in reference.findall(text):
                assert re.fullmatch(r"\{\w+:sqlstring\}", found), f"{name}: ${found} in {text}"
                seen.add(found)
    assert seen == {f"{{{v}:sqlstring}}" for v in ("community", "grid", "kind", "incident")}


def test_the_case_states_shown_are_the_closed_loops() -> None:
    from alerts.cases import LABEL, State
    from dashboards.governance import CASE_STATES

    assert CASE_STATES == {s.value: LABEL[s] for s in State}
