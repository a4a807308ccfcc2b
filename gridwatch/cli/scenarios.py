"""``gridwatch eval scenario``: a run scored against its scenario's ground truth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import psycopg
import typer
from rich.table import Table

from gridwatch.cli.common import console, eval_app, fail, site_or_fail
from gridwatch.errors import GridwatchError
from gridwatch.scenario import DEMO_SCENARIO, Scenario, load_scenario
from gridwatch.scenario_score import ScenarioScore, run_incidents, score
from gridwatch.settings import Settings
from gridwatch.store.summary import incident_list


@eval_app.command("scenario")
def eval_scenario(
    scenario_file: Annotated[
        Path, typer.Option("--scenario", help="the scenario file the run played")
    ] = DEMO_SCENARIO,
    summary: Annotated[
        Path | None, typer.Option(help="a run's summary (`gridwatch demo --summary-json`)")
    ] = None,
    database_url: Annotated[
        str | None, typer.Option(help="a run's database (default: GRIDWATCH_DATABASE_URL)")
    ] = None,
    duration: Annotated[
        float | None,
        typer.Option(help="the run's length, if stretched (default: the summary's, or the file's)"),
    ] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="write the score here")] = None,
) -> None:
    """Score a run: events detected, time to first alert, location error, false incidents."""
    settings = Settings()
    site = site_or_fail(settings)
    try:
        spec = load_scenario(scenario_file)
        spec.check(site)
    except GridwatchError as err:
        raise fail(str(err)) from err
    if summary is not None:
        try:
            run = json.loads(summary.read_text(encoding="utf-8"))
            listed = run["incident_list"]
        except (OSError, ValueError, KeyError) as err:
            raise fail(f"{summary}: not a run summary ({err})") from err
        duration = duration or run.get("scenario_seconds")
    else:
        url = database_url or (settings.database_url and settings.database_url.get_secret_value())
        if not url:
            raise fail("give --summary, --database-url or GRIDWATCH_DATABASE_URL")
        with psycopg.connect(url) as conn:
            listed = incident_list(conn)
    result = score(_stretched(spec, duration), site, run_incidents(listed))
    report = result.report()
    print_score(result)
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    if not result.passed:
        raise typer.Exit(code=1)


def _stretched(spec: Scenario, duration: float | None) -> Scenario:
    return spec if duration is None else spec.stretched(duration)


def print_score(result: ScenarioScore) -> None:
    table = Table(title=f"scenario {result.scenario}")
    for column in ("event", "expected", "detected", "level", "sources", "error m", "alert s"):
        table.add_column(column)
    for e in result.events:
        table.add_row(
            e.event,
            e.expected.value,
            "yes" if e.detected else "[red]missed[/red]",
            _mark(e.level.value if e.level else "", e.level_ok),
            _mark("" if e.sources is None else str(e.sources), e.sources_ok),
            "" if e.location_error_m is None else f"{e.location_error_m:.0f}",
            "" if e.time_to_first_alert_s is None else f"{e.time_to_first_alert_s:.1f}",
        )
    console.print(table)
    for i in result.false_incidents:
        console.print(
            f"[red]false incident[/red] {i.kind.value} {i.level.value} at {i.lon},{i.lat}"
        )
    console.print(
        f"detected {result.detected} of {len(result.events)}, missed {result.missed},"
        f" false incidents {len(result.false_incidents)}: "
        + ("[green]pass[/green]" if result.passed else "[red]fail[/red]")
    )


def _mark(text: str, ok: bool) -> str:
    return text if ok or not text else f"[red]{text}[/red]"
