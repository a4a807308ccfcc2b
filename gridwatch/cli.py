"""The ``gridwatch`` command: the one place that wires the packages together.

``gridwatch demo`` runs every role in one process on embedded services; in production each role
runs as its own process (``gridwatch ingest mqtt``, ``gridwatch streams worker``, …).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import psycopg
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from gridwatch.errors import GridwatchError
from gridwatch.services import EmbeddedServices, ServiceUrls, create_topics, parse_mqtt_url
from gridwatch.settings import Settings
from gridwatch.site import Site, load_site
from gridwatch.store.schema import ensure_schema
from gridwatch.store.summary import NEW_ALERTS_SQL, collect, counts

app = typer.Typer(help="gridwatch: grid-governance data fusion and alerting.", no_args_is_help=True)
services_app = typer.Typer(help="Embedded local services.", no_args_is_help=True)
ingest_app = typer.Typer(help="Ingest roles.", no_args_is_help=True)
streams_app = typer.Typer(help="Stream-processing roles.", no_args_is_help=True)
alerts_app = typer.Typer(help="Alerting roles.", no_args_is_help=True)
store_app = typer.Typer(help="Storage roles.", no_args_is_help=True)
simulate_app = typer.Typer(help="Simulated feeds.", no_args_is_help=True)
for sub, name in (
    (services_app, "services"),
    (ingest_app, "ingest"),
    (streams_app, "streams"),
    (alerts_app, "alerts"),
    (store_app, "store"),
    (simulate_app, "simulate"),
):
    app.add_typer(sub, name=name)

console = Console()
log = logging.getLogger("gridwatch")
LEVEL_STYLE = {"yellow": "bold yellow", "orange": "bold dark_orange", "red": "bold red"}


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code=2)


def _site(settings: Settings) -> Site:
    try:
        return load_site(settings.site)
    except GridwatchError as err:
        raise _fail(str(err)) from err


def _log_to(path: Path, level: int = logging.INFO) -> None:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


@contextlib.contextmanager
def _services(settings: Settings, run_dir: Path) -> Iterator[ServiceUrls]:
    try:
        with EmbeddedServices(settings, run_dir) as urls:
            yield urls
    except GridwatchError as err:
        raise _fail(str(err)) from err


# --- configuration and services -------------------------------------------------------------


@app.command("check-config")
def check_config(site_file: Annotated[Path, typer.Argument(help="site YAML file")]) -> None:
    """Validate a site file and print what it describes."""
    try:
        site = load_site(site_file)
    except GridwatchError as err:
        raise _fail(str(err)) from err
    micro = sum(len(g.micro_grids) for g in site.grids)
    console.print(
        f"[green]ok[/green] {site.street.name} ({site.street.code}): "
        f"{len(site.communities)} communities, {len(site.grids)} grids, {micro} micro-grids, "
        f"{len(site.workers)} workers, {len(site.sensors)} sensors, {len(site.cameras)} cameras, "
        f"{len(site.watchtowers)} watchtowers"
    )


@services_app.command("up")
def services_up(
    run_dir: Annotated[Path | None, typer.Option(help="keep service data here")] = None,
) -> None:
    """Start the embedded services and print their URLs until interrupted."""
    settings = Settings()
    directory = run_dir or Path(tempfile.mkdtemp(prefix="gridwatch-"))
    directory.mkdir(parents=True, exist_ok=True)
    with _services(settings, directory) as urls:
        console.print(f"GRIDWATCH_DATABASE_URL={urls.database_url}")
        console.print(f"GRIDWATCH_KAFKA_BOOTSTRAP={urls.kafka_bootstrap}")
        console.print(f"GRIDWATCH_MQTT_URL=mqtt://{urls.mqtt_host}:{urls.mqtt_port}")
        console.print("[dim]Ctrl-C stops them.[/dim]")
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


# --- production roles -----------------------------------------------------------------------


def _required(settings: Settings) -> ServiceUrls:
    """Roles run against configured services; ``gridwatch services up`` prints a set."""
    missing = [
        name
        for name, value in (
            ("GRIDWATCH_DATABASE_URL", settings.database_url),
            ("GRIDWATCH_KAFKA_BOOTSTRAP", settings.kafka_bootstrap),
            ("GRIDWATCH_MQTT_URL", settings.mqtt_url),
        )
        if value is None
    ]
    if missing:
        raise _fail(f"set {', '.join(missing)} (or run `gridwatch demo` for embedded services)")
    assert settings.database_url and settings.kafka_bootstrap and settings.mqtt_url  # noqa: S101
    try:
        mqtt_host, mqtt_port = parse_mqtt_url(settings.mqtt_url)
    except GridwatchError as err:
        raise _fail(str(err)) from err
    return ServiceUrls(
        database_url=settings.database_url.get_secret_value(),
        kafka_bootstrap=settings.kafka_bootstrap,
        mqtt_host=mqtt_host,
        mqtt_port=mqtt_port,
    )


def _mqtt_credentials(settings: Settings) -> tuple[str | None, str | None]:
    user = urlsplit(settings.mqtt_url).username if settings.mqtt_url else None
    password = settings.mqtt_password.get_secret_value() if settings.mqtt_password else None
    return user, password


async def _until_signal(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


@ingest_app.command("mqtt")
def ingest_mqtt() -> None:
    """Bridge device telemetry from MQTT to Kafka."""
    from gridwatch import kafka
    from ingest.mqtt_bridge import MqttBridge

    settings = Settings()
    urls, site = _required(settings), _site(settings)
    create_topics(urls.kafka_bootstrap, _topics(), settings.topic_partitions)
    user, password = _mqtt_credentials(settings)
    bridge = MqttBridge(
        site,
        kafka.producer(urls.kafka_bootstrap),
        urls.mqtt_host,
        urls.mqtt_port,
        username=user,
        password=password,
    )
    bridge.start()
    with contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()
    bridge.stop()


@streams_app.command("worker")
def streams_worker(
    datadir: Annotated[Path, typer.Option(help="Faust state directory")] = Path("faust-data"),
) -> None:
    """Run the Faust worker: sensor rules and fusion."""
    from mode import Worker

    from streams.app import build_app

    settings = Settings()
    urls, site = _required(settings), _site(settings)
    create_topics(urls.kafka_bootstrap, _topics(), settings.topic_partitions)
    Worker(
        build_app(site, urls.kafka_bootstrap, datadir), loglevel="INFO"
    ).execute_from_commandline()


@alerts_app.command("engine")
def alerts_engine() -> None:
    """Grade incidents and emit deduplicated alerts."""
    from alerts.engine import run_engine
    from gridwatch import kafka

    settings = Settings()
    urls, site = _required(settings), _site(settings)
    create_topics(urls.kafka_bootstrap, _topics(), settings.topic_partitions)

    async def main() -> None:
        stop = asyncio.Event()
        await _until_signal(stop)
        await run_engine(site, urls.kafka_bootstrap, kafka.producer(urls.kafka_bootstrap), stop)

    asyncio.run(main())


@store_app.command("writer")
def store_writer() -> None:
    """Write every topic to the database in idempotent batches."""
    from streams.persist import run_persist

    settings = Settings()
    urls = _required(settings)
    create_topics(urls.kafka_bootstrap, _topics(), settings.topic_partitions)
    with psycopg.connect(urls.database_url) as conn:
        ensure_schema(conn)

    async def main() -> None:
        stop = asyncio.Event()
        await _until_signal(stop)
        await run_persist(urls.database_url, urls.kafka_bootstrap, stop)

    asyncio.run(main())


@simulate_app.command("sensors")
def simulate_sensors(
    duration: Annotated[float, typer.Option(help="seconds")] = 60.0,
    rate: Annotated[float, typer.Option(help="reports per sensor per second")] = 1.0,
    seed: Annotated[int, typer.Option()] = 7,
) -> None:
    """Play the sample sensor scenario over MQTT."""
    from simulators.sensors import MqttPublisher, Scenario, Truth, messages

    settings = Settings()
    urls, site = _required(settings), _site(settings)
    user, password = _mqtt_credentials(settings)
    truth = Truth()
    publisher = MqttPublisher(urls.mqtt_host, urls.mqtt_port, username=user, password=password)
    acked = publisher.play(messages(site, Scenario(duration, rate, seed), truth))
    console.print(f"published {acked} messages, {truth.readings_sent} readings")


def _topics() -> tuple[str, ...]:
    from gridwatch import topics

    return topics.ALL


# --- the demo -------------------------------------------------------------------------------


@app.command()
def demo(
    summary_json: Annotated[Path | None, typer.Option(help="also write the summary here")] = None,
    run_dir: Annotated[
        Path | None, typer.Option(help="keep the run directory (data, logs) here")
    ] = None,
    duration: Annotated[float, typer.Option(help="scenario length in seconds")] = 20.0,
    rate: Annotated[float, typer.Option(help="reports per sensor per second")] = 5.0,
    timeout: Annotated[float, typer.Option(help="give up waiting after this many s")] = 90.0,
) -> None:
    """Start embedded services, run every role, play a flood scenario, summarise."""
    from simulators.sensors import Scenario

    settings = Settings()
    site = _site(settings)
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        directory = run_dir.resolve()
    else:
        directory = Path(tempfile.mkdtemp(prefix="gridwatch-demo-"))
    _log_to(directory / "gridwatch.log")
    console.print(f"[bold]gridwatch demo[/bold] — {site.street.name}, run directory {directory}")
    with _services(settings, directory) as urls:
        create_topics(urls.kafka_bootstrap, _topics(), settings.topic_partitions)
        with psycopg.connect(urls.database_url) as conn:
            backend = ensure_schema(conn)
        summary = asyncio.run(_run_demo(site, urls, directory, Scenario(duration, rate), timeout))
    summary["backend"] = backend.value
    _print_summary(summary)
    if summary_json is not None:
        summary_json.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    if summary["lost_readings"] or not summary["complete"]:
        raise typer.Exit(code=1)


async def _run_demo(
    site: Site, urls: ServiceUrls, run_dir: Path, scenario: Any, timeout: float
) -> dict[str, Any]:
    from alerts.engine import run_engine
    from gridwatch import kafka
    from ingest.mqtt_bridge import MqttBridge
    from simulators.sensors import MqttPublisher, Truth, messages
    from streams.app import build_app
    from streams.persist import run_persist

    stop = asyncio.Event()
    producer = kafka.producer(urls.kafka_bootstrap)
    bridge = MqttBridge(site, producer, urls.mqtt_host, urls.mqtt_port)
    faust_app = build_app(site, urls.kafka_bootstrap, run_dir / "faust")
    with console.status("starting roles (MQTT bridge, stream worker, alert engine, writer)…"):
        await asyncio.to_thread(bridge.start)
        await faust_app.start()
        ready = [asyncio.Event(), asyncio.Event()]
        roles = [
            asyncio.create_task(
                run_engine(site, urls.kafka_bootstrap, producer, stop, ready=ready[0])
            ),
            asyncio.create_task(
                run_persist(urls.database_url, urls.kafka_bootstrap, stop, ready=ready[1])
            ),
        ]
        # Play only once every consumer group has its partitions, so latency is the pipeline's.
        await asyncio.wait_for(
            asyncio.gather(*(e.wait() for e in ready), _assigned(faust_app)), timeout=60
        )
    truth = Truth()
    publisher = MqttPublisher(urls.mqtt_host, urls.mqtt_port)
    started = time.monotonic()
    player = asyncio.create_task(asyncio.to_thread(publisher.play, messages(site, scenario, truth)))
    complete = False
    with psycopg.connect(urls.database_url, autocommit=True) as conn:
        seen = datetime.fromtimestamp(0, UTC)
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=console,
        )
        with progress:
            task = progress.add_task("readings stored", total=None, status="")
            quiet_since = None
            while time.monotonic() - started < timeout:
                await asyncio.sleep(0.5)
                now = counts(conn)
                for stored_at, level, state, _kind, grid, summary, reasons in conn.execute(
                    NEW_ALERTS_SQL, (seen,)
                ).fetchall():
                    seen = stored_at
                    style = LEVEL_STYLE.get(level, "bold")
                    progress.console.print(
                        f"[{style}]● {state.upper():8} {summary}[/{style}]  "
                        f"[dim]grid {grid}; {'; '.join(reasons or [])}[/dim]"
                    )
                progress.update(
                    task,
                    completed=now["readings_stored"],
                    total=truth.readings_sent if player.done() else None,
                    status=f"detections {now['detections']} · incidents {now['incidents']} · "
                    f"alerts {now['alerts_firing']} · dead letters {now['deadletters']}",
                )
                caught_up = (
                    player.done()
                    and now["readings_stored"] >= truth.readings_sent
                    and (now["deadletters"] >= truth.bad_sent)
                )
                # Caught up, then one quiet second so the last alerts land too.
                quiet_since = (quiet_since or time.monotonic()) if caught_up else None
                if quiet_since and time.monotonic() - quiet_since > 1.0:
                    complete = True
                    break
        summary = collect(conn)
    stop.set()
    await asyncio.gather(*roles, return_exceptions=True)
    await faust_app.stop()
    await asyncio.to_thread(bridge.stop)
    acked = await player if player.done() else 0
    summary.update(
        complete=complete,
        scenario_seconds=scenario.duration_s,
        messages_acked_by_broker=acked,
        readings_sent=truth.readings_sent,
        bad_messages_sent=truth.bad_sent,
        lost_readings=max(truth.readings_sent - summary["readings_stored"], 0),
        wall_seconds=round(time.monotonic() - started, 1),
    )
    return summary


async def _assigned(faust_app: Any) -> None:
    while not faust_app.consumer.assignment():
        await asyncio.sleep(0.1)


def _print_summary(summary: dict[str, Any]) -> None:
    table = Table(title="gridwatch demo summary", show_header=False)
    by_level = summary["alerts_by_level"]
    rows = [
        ("readings sent / stored", f"{summary['readings_sent']} / {summary['readings_stored']}"),
        ("lost readings", str(summary["lost_readings"])),
        ("detections", str(summary["detections"])),
        ("incidents", str(summary["incidents"])),
        (
            "alerts (yellow / orange / red)",
            f"{by_level.get('yellow', 0)} / {by_level.get('orange', 0)} / {by_level.get('red', 0)}",
        ),
        ("alerts resolved", str(summary["alerts_resolved"])),
        (
            "dead letters (bad messages sent)",
            f"{summary['deadletters']} ({summary['bad_messages_sent']})",
        ),
        ("latency sensor→stored p50 / p99 ms", _pair(summary["reading_latency_ms"])),
        ("latency sensor→alert p50 / p99 ms", _pair(summary["alert_latency_ms"])),
        ("database backend", summary.get("backend", "?")),
        ("wall time s", str(summary["wall_seconds"])),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    if not summary["complete"]:
        console.print("[red]the pipeline did not catch up before the timeout[/red]")


def _pair(p: dict[str, float | None]) -> str:
    return f"{p['p50']} / {p['p99']}"
