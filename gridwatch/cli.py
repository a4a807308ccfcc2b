"""The ``gridwatch`` command: the one place that wires the packages together.

``gridwatch demo`` runs every role in one process on embedded services; in production each role
runs as its own process (``gridwatch ingest mqtt``, ``gridwatch streams worker``, …).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
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
from gridwatch.store.summary import NEW_ALERTS_SQL, closed_loop_counts, collect, counts

app = typer.Typer(help="gridwatch: grid-governance data fusion and alerting.", no_args_is_help=True)
services_app = typer.Typer(help="Embedded local services.", no_args_is_help=True)
ingest_app = typer.Typer(help="Ingest roles.", no_args_is_help=True)
streams_app = typer.Typer(help="Stream-processing roles.", no_args_is_help=True)
alerts_app = typer.Typer(help="Alerting roles.", no_args_is_help=True)
store_app = typer.Typer(help="Storage roles.", no_args_is_help=True)
simulate_app = typer.Typer(help="Simulated feeds.", no_args_is_help=True)
dashboards_app = typer.Typer(help="Grafana dashboards as code.", no_args_is_help=True)
eval_app = typer.Typer(help="Detector evaluation on labelled media.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks.", no_args_is_help=True)
cameras_app = typer.Typer(help="Camera operations.", no_args_is_help=True)
for sub, name in (
    (cameras_app, "cameras"),
    (eval_app, "eval"),
    (bench_app, "bench"),
    (dashboards_app, "dashboards"),
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
    """Grade incidents and emit deduplicated, grouped, inhibited and silenced alerts."""
    from alerts.roles import run_engine
    from gridwatch import kafka

    settings = Settings()
    urls, site = _required(settings), _site(settings)
    create_topics(urls.kafka_bootstrap, _topics(), settings.topic_partitions)

    async def main() -> None:
        stop = asyncio.Event()
        await _until_signal(stop)
        producer = kafka.producer(urls.kafka_bootstrap)
        await run_engine(site, urls.kafka_bootstrap, producer, stop, database_url=urls.database_url)

    asyncio.run(main())


@alerts_app.command("relay")
def alerts_relay(
    callback_port: Annotated[int, typer.Option(help="port of the status callback API")] = 8700,
) -> None:
    """The closed loop: cases from alerts and callbacks, timers, the outbox relay to the
    dispatch and broadcast systems, and the HTTP endpoint their callbacks come to."""
    import os

    from alerts.callbacks import CallbackServer
    from alerts.roles import run_closed_loop, run_relay
    from alerts.sinks import BROADCAST, DISPATCH
    from gridwatch import kafka

    settings = Settings()
    urls, site = _required(settings), _site(settings)
    create_topics(urls.kafka_bootstrap, _topics(), settings.topic_partitions)
    with psycopg.connect(urls.database_url) as conn:
        ensure_schema(conn)
    sinks = {DISPATCH: site.policy.dispatch, BROADCAST: site.policy.broadcast}
    missing = sorted({s.secret_env for s in sinks.values() if not os.environ.get(s.secret_env)})
    if missing:
        raise _fail(f"set {', '.join(missing)} (the HMAC keys shared with the sinks)")
    keys = {name: os.environ[s.secret_env].encode() for name, s in sinks.items()}

    async def main() -> None:
        stop = asyncio.Event()
        await _until_signal(stop)
        producer = kafka.producer(urls.kafka_bootstrap)
        callbacks = CallbackServer(keys[DISPATCH], producer)
        await callbacks.start("0.0.0.0", callback_port)  # noqa: S104 - the sinks call in
        try:
            await asyncio.gather(
                run_closed_loop(site, urls.database_url, urls.kafka_bootstrap, producer, stop),
                run_relay(site, urls.database_url, producer, keys, stop),
            )
        finally:
            await callbacks.stop()

    asyncio.run(main())


@alerts_app.command("approve")
def alerts_approve(
    case_id: Annotated[str, typer.Argument(help="the red case whose broadcast to approve")],
    operator: Annotated[str, typer.Option(help="who approves; recorded in the audit log")],
) -> None:
    """Approve (or re-issue) a red case's emergency broadcast."""
    from alerts.cases import IllegalTransition
    from alerts.closed_loop import ClosedLoop

    settings = Settings()
    urls, site = _required(settings), _site(settings)
    with psycopg.connect(urls.database_url) as conn, conn.transaction():
        try:
            ClosedLoop(site).approve_broadcast(conn, case_id, operator)
        except IllegalTransition as err:
            raise _fail(str(err)) from err
    console.print(f"[green]approved[/green] broadcast of {case_id} by {operator}")


@alerts_app.command("silence")
def alerts_silence(
    matcher: Annotated[
        list[str], typer.Argument(help="label=value, e.g. grid_code=52019900300101")
    ],
    author: Annotated[str, typer.Option(help="who silences; kept on record")],
    comment: Annotated[str, typer.Option(help="why")],
    minutes: Annotated[float, typer.Option(help="how long")] = 60.0,
) -> None:
    """Mute matching alerts for a while (resolved notifications still go out)."""
    from datetime import timedelta

    from alerts.silences import Silence, add_silence

    settings = Settings()
    urls = _required(settings)
    now = datetime.now(UTC)
    pairs = dict(m.split("=", 1) for m in matcher if "=" in m)
    silence = Silence(
        matchers=pairs,
        starts_at=now,
        ends_at=now + timedelta(minutes=minutes),
        author=author,
        comment=comment,
    )
    with psycopg.connect(urls.database_url) as conn, conn.transaction():
        add_silence(conn, silence)
    console.print(f"silence {silence.id} until {silence.ends_at.isoformat()}")


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
    """Start embedded services, run every role, play a flood and a forest fire, summarise."""
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
        _report_into(directory, urls.database_url, site)
    summary["backend"] = backend.value
    _print_summary(summary)
    if summary_json is not None:
        summary_json.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    if summary["lost_readings"] or not summary["complete"]:
        raise typer.Exit(code=1)


async def _run_demo(
    site: Site, urls: ServiceUrls, run_dir: Path, scenario: Any, timeout: float
) -> dict[str, Any]:
    from alerts.callbacks import CallbackServer
    from alerts.roles import run_closed_loop, run_engine, run_relay
    from alerts.sinks import BROADCAST, DISPATCH
    from gridwatch import kafka
    from ingest.mqtt_bridge import MqttBridge
    from simulators.broadcast_receiver import BroadcastReceiver
    from simulators.dispatch_desk import DeskPolicy, DispatchDesk
    from simulators.fire_scenario import (
        FireTruth,
        fire_point,
        publish_towers,
        sensor_messages,
        tower_detections,
    )
    from simulators.sensors import MqttPublisher, Truth
    from streams.app import build_app
    from streams.persist import run_persist

    stop = asyncio.Event()
    producer = kafka.producer(urls.kafka_bootstrap)
    secret = secrets.token_bytes(32)
    received = run_dir / "received"
    callbacks = CallbackServer(secret, producer)
    callback_url = await callbacks.start()
    # The desk takes a second per step, so the flood case is still open when it turns red.
    desk = DispatchDesk(
        secret,
        f"{callback_url}/v1/callbacks/dispatch",
        received / "dispatch",
        DeskPolicy(step_delay_s=1.0, rework_kinds=("flood",)),
    )
    receiver = BroadcastReceiver(
        secret, f"{callback_url}/v1/callbacks/broadcast", received / "broadcast"
    )
    policy = site.policy.compressed(DEMO_TIME_FACTOR)
    policy = policy.model_copy(
        update={
            "dispatch": policy.dispatch.model_copy(update={"url": await desk.start()}),
            "broadcast": policy.broadcast.model_copy(update={"url": await receiver.start()}),
        }
    )
    site = site.model_copy(update={"policy": policy})
    bridge = MqttBridge(site, producer, urls.mqtt_host, urls.mqtt_port)
    faust_app = build_app(site, urls.kafka_bootstrap, run_dir / "faust")
    db = urls.database_url
    with console.status("starting roles (MQTT bridge, streams, alerts, closed loop, writer)…"):
        await asyncio.to_thread(bridge.start)
        await faust_app.start()
        ready = [asyncio.Event(), asyncio.Event(), asyncio.Event()]
        roles = [
            asyncio.create_task(
                run_engine(
                    site, urls.kafka_bootstrap, producer, stop, database_url=db, ready=ready[0]
                )
            ),
            asyncio.create_task(run_persist(db, urls.kafka_bootstrap, stop, ready=ready[1])),
            asyncio.create_task(
                run_closed_loop(site, db, urls.kafka_bootstrap, producer, stop, ready=ready[2])
            ),
            asyncio.create_task(
                run_relay(site, db, producer, {DISPATCH: secret, BROADCAST: secret}, stop)
            ),
            asyncio.create_task(_approve_broadcasts(site, db, stop)),
        ]
        # Play only once every consumer group has its partitions, so latency is the pipeline's.
        await asyncio.wait_for(
            asyncio.gather(*(e.wait() for e in ready), _assigned(faust_app)), timeout=60
        )
    truth, fire = Truth(), FireTruth(fire_point(site))
    publisher = MqttPublisher(urls.mqtt_host, urls.mqtt_port)
    started = time.monotonic()
    player = asyncio.create_task(
        asyncio.to_thread(publisher.play, sensor_messages(site, scenario, truth))
    )
    towers = asyncio.create_task(publish_towers(producer, tower_detections(site, fire), fire))
    complete = False
    with psycopg.connect(db, autocommit=True) as conn:
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
                loop_now = closed_loop_counts(conn)
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
                    status=f"incidents {now['incidents']} · alerts {now['alerts_firing']} · "
                    f"cases {loop_now['cases']} (closed {loop_now['cases_closed']}) · "
                    f"outbox {loop_now['outbox_pending']}",
                )
                caught_up = (
                    player.done()
                    and towers.done()
                    and now["readings_stored"] >= truth.readings_sent
                    and now["deadletters"] >= truth.bad_sent
                    and loop_now["cases"] > 0
                    and loop_now["cases"] == loop_now["cases_closed"]
                    and loop_now["outbox_pending"] == 0
                )
                # Caught up, then one quiet second so the last messages land too.
                quiet_since = (quiet_since or time.monotonic()) if caught_up else None
                if quiet_since and time.monotonic() - quiet_since > 1.0:
                    complete = True
                    break
        summary = collect(conn)
        summary["kpis"] = _kpis(conn)
    stop.set()
    await asyncio.gather(*roles, return_exceptions=True)
    await faust_app.stop()
    await asyncio.to_thread(bridge.stop)
    for server in (desk, receiver, callbacks):
        await server.stop()
    acked = await player if player.done() else 0
    summary.update(
        complete=complete,
        scenario_seconds=scenario.duration_s,
        messages_acked_by_broker=acked,
        readings_sent=truth.readings_sent,
        bad_messages_sent=truth.bad_sent,
        tower_detections_sent=fire.detections_sent,
        fire={"lon": round(fire.fire.lon, 6), "lat": round(fire.fire.lat, 6)},
        dispatch_messages_received=len(desk.received),
        broadcast_messages_received=len(receiver.received),
        broadcasts_played=len(receiver.played),
        lost_readings=max(truth.readings_sent - summary["readings_stored"], 0),
        wall_seconds=round(time.monotonic() - started, 1),
    )
    return summary


DEMO_TIME_FACTOR = 60  # the demo plays an hour of alert timers in a minute
DEMO_OPERATOR = "值班员（演示：自动批准）"


async def _approve_broadcasts(site: Site, database_url: str, stop: asyncio.Event) -> None:
    """The demo's operator approves every red broadcast waiting for approval, on record."""
    from alerts.closed_loop import ClosedLoop

    loop = ClosedLoop(site)

    def approve_waiting() -> None:
        with psycopg.connect(database_url) as conn:
            waiting = conn.execute(
                "SELECT case_id FROM cases WHERE broadcast = 'pending_approval'"
            ).fetchall()
            for (case_id,) in waiting:
                with conn.transaction():
                    loop.approve_broadcast(conn, case_id, DEMO_OPERATOR)
                console.print(f"[bold]✔ broadcast approved[/bold] for {case_id}: {DEMO_OPERATOR}")

    while not stop.is_set():
        await asyncio.to_thread(approve_waiting)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)


def _kpis(conn: psycopg.Connection) -> dict[str, float | int | None]:
    from alerts.closed_loop import load_audit
    from alerts.kpi import compute

    return compute(load_audit(conn), datetime.now(UTC)).as_dict()


async def _assigned(faust_app: Any) -> None:
    while not faust_app.consumer.assignment():
        await asyncio.sleep(0.1)


def _print_summary(summary: dict[str, Any]) -> None:
    table = Table(title="gridwatch demo summary", show_header=False)
    by_level = summary["alerts_by_level"]
    kpis = summary["kpis"]
    rows = [
        ("readings sent / stored", f"{summary['readings_sent']} / {summary['readings_stored']}"),
        ("lost readings", str(summary["lost_readings"])),
        ("tower detections sent", str(summary["tower_detections_sent"])),
        ("detections", str(summary["detections"])),
        ("incidents", str(summary["incidents"])),
        (
            "alerts (yellow / orange / red)",
            f"{by_level.get('yellow', 0)} / {by_level.get('orange', 0)} / {by_level.get('red', 0)}",
        ),
        ("alerts resolved", str(summary["alerts_resolved"])),
        ("cases by state", _mapping(summary["cases_by_state"])),
        ("broadcasts by state", _mapping(summary["broadcasts"])),
        (
            "结案率 / 按期结案率 / 返工率 %",
            f"{kpis['closure_rate']} / {kpis['on_time_rate']} / {kpis['rework_rate']}",
        ),
        ("closed within the community %", str(kpis["community_share"])),
        ("mean time to accept / close s", f"{kpis['mean_accept_s']} / {kpis['mean_close_s']}"),
        (
            "messages at dispatch desk / broadcast receiver",
            f"{summary['dispatch_messages_received']} / {summary['broadcast_messages_received']}",
        ),
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
    for incident in summary["incident_list"]:
        error = incident["location_error_m"]
        console.print(
            f"  incident {incident['kind']} {incident['level']} at {incident['lon']:.5f},"
            f"{incident['lat']:.5f}"
            + (f" ±{error:.0f} m (triangulated)" if error else "")
            + f", grid {incident['grid_code']}, {incident['sources']} sources"
        )
    if not summary["complete"]:
        console.print("[red]the pipeline did not catch up before the timeout[/red]")


def _mapping(values: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(values.items())) or "none"


def _pair(p: dict[str, float | None]) -> str:
    return f"{p['p50']} / {p['p99']}"


# --- dashboards and the report ------------------------------------------------------------


@dashboards_app.command("build")
def dashboards_build(
    check: Annotated[
        bool, typer.Option(help="only check that the committed files are what the code makes")
    ] = False,
) -> None:
    """Write the provisioning JSON (dashboards/json/) and the grid GeoJSON (dashboards/geo/)."""
    from dashboards import build

    site = _site(Settings())
    if check:
        stale = [
            str(path)
            for path, text in build.files(site).items()
            if not path.is_file() or path.read_text(encoding="utf-8") != text
        ]
        if stale:
            raise _fail(f"out of date (run `gridwatch dashboards build`): {', '.join(stale)}")
        console.print("[green]dashboards are up to date[/green]")
        return
    for path in build.write(site):
        console.print(f"wrote {path}")


@dashboards_app.command("push")
def dashboards_push(
    url: Annotated[str, typer.Option(envvar="GRIDWATCH_GRAFANA_URL")] = "http://localhost:3000",
    user: Annotated[str, typer.Option(envvar="GRAFANA_ADMIN_USER")] = "admin",
    password: Annotated[
        str | None, typer.Option(envvar="GRAFANA_ADMIN_PASSWORD", help="or use --token")
    ] = None,
    token: Annotated[str | None, typer.Option(envvar="GRIDWATCH_GRAFANA_TOKEN")] = None,
    datasource_host: Annotated[
        str | None,
        typer.Option(help="host:port of the database as Grafana reaches it (default: from URL)"),
    ] = None,
    timescaledb: Annotated[bool, typer.Option(help="the datasource's TimescaleDB switch")] = True,
) -> None:
    """Upload the dashboards, their folder and the datasource (GRIDWATCH_DATABASE_URL)."""
    from dashboards import build, push

    settings = Settings()
    if token is None and password is None:
        raise _fail("set GRAFANA_ADMIN_PASSWORD (or --password) or GRIDWATCH_GRAFANA_TOKEN")
    credential: tuple[str, str] | str = token if token is not None else (user, password or "")
    source = None
    if settings.database_url is not None:
        source = push.datasource(
            settings.database_url.get_secret_value(),
            host=datasource_host,
            timescaledb=timescaledb,
        )
    try:
        pushed = push.push(url, credential, build.dashboards(_site(settings)), source)
    except GridwatchError as err:
        raise _fail(str(err)) from err
    for item in pushed:
        console.print(f"{item.uid}: version {item.version} {item.url}")


@app.command()
def report(
    run_dir: Annotated[
        Path, typer.Argument(help="where to write the snapshot (a demo's run directory)")
    ] = Path("."),
    database_url: Annotated[
        str | None, typer.Option(help="default: GRIDWATCH_DATABASE_URL", show_default=False)
    ] = None,
) -> None:
    """Render the command-center view (incident map, KPIs, alerts) as a PNG."""
    settings = Settings()
    url = database_url or (settings.database_url and settings.database_url.get_secret_value())
    if not url:
        raise _fail("set GRIDWATCH_DATABASE_URL or --database-url")
    _report_into(run_dir, url, _site(settings))


def _report_into(directory: Path, database_url: str, site: Site) -> None:
    from dashboards.report import REPORT_FILE, write_report

    path = write_report(database_url, site, directory / REPORT_FILE)
    console.print(f"command-center snapshot: {path}")


# --- cameras --------------------------------------------------------------------------------


@ingest_app.command("camera")
def ingest_camera(
    device: Annotated[str, typer.Argument(help="camera or watchtower id from the site file")],
    thermal: Annotated[bool, typer.Option(help="a watchtower's thermal stream")] = False,
) -> None:
    """Analyse one camera's or watchtower's stream and publish detections."""
    from gridwatch import kafka
    from ingest.camera_evidence import EvidenceStore
    from ingest.camera_source import VideoSource
    from ingest.camera_worker import CameraWorker, kafka_publish

    settings = Settings()
    site = _site(settings)
    if settings.kafka_bootstrap is None:
        raise _fail("set GRIDWATCH_KAFKA_BOOTSTRAP")
    create_topics(settings.kafka_bootstrap, _topics(), settings.topic_partitions)
    publish = kafka_publish(kafka.producer(settings.kafka_bootstrap))
    evidence = EvidenceStore(settings.evidence_dir)
    cameras = {c.id: c for c in site.cameras}
    towers = {t.id: t for t in site.watchtowers}
    if device in cameras:
        worker = CameraWorker.for_camera(cameras[device], publish, evidence)
        url = cameras[device].url
    elif device in towers:
        tower = towers[device]
        worker = CameraWorker.for_watchtower(tower, publish, evidence, thermal=thermal)
        url = (tower.thermal_url if thermal else None) or tower.visible_url
    else:
        raise _fail(f"no camera or watchtower {device!r} in {settings.site}")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.suppress(KeyboardInterrupt):
        worker.run(VideoSource(url), stop)


@cameras_app.command("ack-baseline")
def cameras_ack_baseline(
    device: Annotated[str, typer.Argument(help="watchtower (or camera) id from the site file")],
    preset: Annotated[
        int | None, typer.Argument(help="watchtower preset; omit for a fixed camera")
    ] = None,
    by: Annotated[str | None, typer.Option(help="operator acknowledging")] = None,
) -> None:
    """Accept a view's latest daily frame as its construction baseline."""
    from ingest.camera_evidence import BaselineStore

    settings = Settings()
    site = _site(settings)
    towers = {t.id: t for t in site.watchtowers}
    if device in towers:
        if preset not in {p.id for p in towers[device].presets}:
            raise _fail(f"watchtower {device!r} has no preset {preset}")
    elif device not in {c.id for c in site.cameras} or preset is not None:
        raise _fail(f"no watchtower {device!r}, nor a fixed camera without preset, in the site")
    try:
        record = BaselineStore(settings.evidence_dir).acknowledge(device, preset, by)
    except FileNotFoundError as err:
        raise _fail(str(err)) from err
    console.print(
        f"baseline of {device} preset {preset} is now version {record.version} "
        f"(frame of {record.day.isoformat()})"
    )


@eval_app.command("detectors")
def eval_detectors(
    json_path: Annotated[Path | None, typer.Option("--json", help="write the report here")] = None,
    media: Annotated[
        Path | None, typer.Option(help="real media: DIR/<fire|smoke|fire_and_smoke|none>/…")
    ] = None,
    fps: Annotated[float, typer.Option(help="frame rate of frame-sequence folders")] = 5.0,
    per_kind: Annotated[int, typer.Option(help="simulated variants of each scenario")] = 6,
) -> None:
    """Run labelled scenarios (or real media) through the camera worker and score them."""
    from benchmarks.eval_detectors import evaluate

    report = evaluate(per_kind, media, fps)
    text = json.dumps(report, indent=2, ensure_ascii=False)
    console.print_json(text)
    if json_path is not None:
        json_path.write_text(text + "\n")


@bench_app.command("cameras")
def bench_cameras(
    json_path: Annotated[Path | None, typer.Option("--json", help="write the figures here")] = None,
    frames: Annotated[int, typer.Option(help="720p frames to analyse")] = 300,
) -> None:
    """Analysed 720p frames per second per core, decode apart, and cameras per core."""
    from benchmarks.cameras import bench

    text = json.dumps(bench(frames), indent=2)
    console.print_json(text)
    if json_path is not None:
        json_path.write_text(text + "\n")


@bench_app.command("sensors")
def bench_sensors(
    devices: Annotated[int, typer.Option(help="simulated devices, two metrics each")] = 1000,
    duration: Annotated[float, typer.Option(help="seconds of publishing")] = 30.0,
    json_path: Annotated[Path | None, typer.Option("--json", help="write the figures here")] = None,
) -> None:
    """The sensor path end to end on embedded services, with the raw COPY and MQTT ceilings."""
    from benchmarks.sensors import report, run

    console.print(report(run(_site(Settings()), devices, duration), json_path))
