"""The incident dashboard opens the same incident and case in the duty officer's console, at
the configured base URL, on routes the console serves."""

from __future__ import annotations

import re
from pathlib import Path

from alerts.console.web import Console, build_app
from dashboards import build
from dashboards.grafana import CONSOLE_URL
from gridwatch.settings import SAMPLE_SITE
from gridwatch.site import Site, load_site


def _console_links(document: dict[str, object]) -> list[str]:
    links = [str(link["url"]) for link in document["links"]]  # type: ignore[attr-defined]
    for panel in document["panels"]:  # type: ignore[attr-defined]
        links += [str(link["url"]) for link in panel["fieldConfig"]["defaults"].get("links", [])]
    return [url for url in links if url.startswith("${console}")]


def test_incident_dashboard_links_land_on_console_routes(tmp_path: Path, tiny_site: Site) -> None:
    site = load_site(SAMPLE_SITE)
    committed = build.dashboards(site)["incident.json"]
    links = _console_links(committed)
    assert sorted(links) == ["${console}/cases/${__data.fields.case_id}",
                             "${console}/incidents/${incident}"]  # fmt: skip
    (console,) = [v for v in committed["templating"]["list"] if v["name"] == "console"]
    assert console["query"] == CONSOLE_URL

    app = build_app(Console(tiny_site, "postgresql://unused/db", tmp_path))
    routes = [r.canonical for r in app.router.resources()]
    for link in links:
        path = re.sub(r"\$\{[^}]+\}", "{id}", link.removeprefix("${console}"))
        pattern = re.sub(r"\{[^}]+\}", "{}", path)
        assert any(re.sub(r"\{[^}]+\}", "{}", r) == pattern for r in routes), link

    configured = build.dashboards(site, "https://console.example/")["incident.json"]
    (console,) = [v for v in configured["templating"]["list"] if v["name"] == "console"]
    assert console["query"] == "https://console.example"
