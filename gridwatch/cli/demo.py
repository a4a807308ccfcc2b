"""`gridwatch demo`: embedded services, the runner (``demo_runner``) on them, its summary shown
(``demo_display``); the run fails when the scenario's events were not all found, or more was."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Annotated

import psycopg
import typer

from gridwatch.cli.common import (
    all_topics,
    app,
    console,
    embedded_services,
    fail,
    setup_logging,
    site_or_fail,
)
from gridwatch.cli.demo_display import LiveView, print_summary
from gridwatch.cli.demo_runner import Approval, DemoPlan, Feeds, run_demo
from gridwatch.cli.tools import report_into
from gridwatch.errors import GridwatchError
from gridwatch.scenario import DEMO_SCENARIO, load_scenario
from gridwatch.services import create_topics
from gridwatch.settings import Settings
from gridwatch.shared_data import FIRE_SMOKE
from gridwatch.store.schema import ensure_schema


@app.command()
def demo(
    summary_json: Annotated[Path | None, typer.Option(help="also write the summary here")] = None,
    run_dir: Annotated[
        Path | None, typer.Option(help="keep the run directory (data, logs) here")
    ] = None,
    duration: Annotated[float, typer.Option(help="scenario length in seconds")] = 20.0,
    rate: Annotated[float, typer.Option(help="reports per sensor per second")] = 5.0,
    timeout: Annotated[
        float | None,
        typer.Option(help="give up waiting after this many s [default: 90, 900 when manual]"),
    ] = None,
    approve: Annotated[
        Approval,
        typer.Option(help="red broadcasts: approved by the demo, or by you in the console"),
    ] = Approval.AUTO,
    scenario: Annotated[
        Path, typer.Option(help="the scenario file (events and their ground truth)")
    ] = DEMO_SCENARIO,
    record: Annotated[
        Path | None, typer.Option(help="also record the run's MQTT traffic and frames here")
    ] = None,
    replay: Annotated[
        Path | None,
        typer.Option(
            help="play this recording (of a run with the same scenario, duration and rate)"
            " instead of the scenario's sensors"
        ),
    ] = None,
) -> None:
    """Start embedded services, run every role and the duty officer's console, play a flood
    and a forest fire, summarise."""
    if timeout is None:
        timeout = 900.0 if approve is Approval.MANUAL else 90.0
    settings = Settings()
    site = site_or_fail(settings)
    try:
        spec = load_scenario(scenario)
        spec.check(site)
    except GridwatchError as err:
        raise fail(str(err)) from err
    if spec.fire is None:
        raise fail(f"{scenario}: the demo needs a forest_fire event")
    spec = spec.stretched(duration).model_copy(update={"rate_hz": rate})
    from simulators import camera_footage

    if camera_footage.load() is None:
        console.print(
            f"[yellow]no real fire footage in {FIRE_SMOKE / 'train'}"
            " (GRIDWATCH_SHARED_DATA):[/yellow] the cameras would show drawn flames, in which the"
            " learned model sees no fire, so no camera is expected to see a sensor's fire;"
            " the watchtowers' thermal streams still see the forest fire"
        )
        spec = spec.without_camera_sightings()
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        directory = run_dir.resolve()
    else:
        directory = Path(tempfile.mkdtemp(prefix="gridwatch-demo-"))
    setup_logging(settings, directory / "gridwatch.log")
    console.print(f"[bold]gridwatch demo[/bold] — {site.street.name}, run directory {directory}")
    with embedded_services(settings, directory) as urls:
        create_topics(urls.kafka_bootstrap, all_topics(), settings.topic_partitions)
        with psycopg.connect(urls.database_url) as conn:
            backend = ensure_schema(conn)
        plan = DemoPlan(
            site=site,
            urls=urls,
            run_dir=directory,
            spec=spec,
            timeout=timeout,
            feeds=Feeds(record=record, replay=replay),
            approve=approve,
            backend=backend.value,
            groups=settings.consumer_groups,
        )
        with LiveView() as view:
            summary = asyncio.run(run_demo(plan, view))
        report_into(directory, urls.database_url, site)
    print_summary(summary)
    if summary_json is not None:
        summary_json.write_text(summary.model_dump_json(indent=2) + "\n")
    if summary.failures:
        raise typer.Exit(code=1)
