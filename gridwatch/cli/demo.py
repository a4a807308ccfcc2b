"""`gridwatch demo`: every role in one process on embedded services, a scenario, a summary."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import secrets
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import psycopg
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from gridwatch.cli.common import (
    LEVEL_STYLE,
    all_topics,
    app,
    console,
    embedded_services,
    fail,
    setup_logging,
    site_or_fail,
)
from gridwatch.cli.recordings import demo_recorder, demo_replay
from gridwatch.cli.scenarios import print_score
from gridwatch.cli.tools import report_into
from gridwatch.errors import GridwatchError
from gridwatch.scenario import DEMO_SCENARIO, load_scenario
from gridwatch.scenario import Scenario as ScenarioFile
from gridwatch.scenario_score import run_incidents, score
from gridwatch.services import ServiceUrls, create_topics
from gridwatch.settings import Settings
from gridwatch.site import Site
from gridwatch.store.schema import ensure_schema
from gridwatch.store.summary import NEW_ALERTS_SQL, closed_loop_counts, collect, counts


class Approval(StrEnum):
    AUTO = "auto"
    MANUAL = "manual"


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
        summary = asyncio.run(
            _run_demo(
                site, urls, directory, spec, timeout, Feeds(record=record, replay=replay), approve
            )
        )
        report_into(directory, urls.database_url, site)
    summary["backend"] = backend.value
    result = score(spec, site, run_incidents(summary["incident_list"]))
    summary["score"] = result.report()
    _print_summary(summary)
    print_score(result)
    if summary_json is not None:
        summary_json.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    if summary["lost_readings"] or not summary["complete"]:
        raise typer.Exit(code=1)


@dataclass(frozen=True)
class Feeds:
    record: Path | None = None  # record the run's MQTT traffic and frames into this file
    replay: Path | None = None  # play this recording instead of the scenario's sensors


async def _run_demo(
    site: Site,
    urls: ServiceUrls,
    run_dir: Path,
    spec: ScenarioFile,
    timeout: float,
    feeds: Feeds,
    approve: Approval,
) -> dict[str, Any]:
    from alerts.callbacks import ROUTES, CallbackServer
    from alerts.roles import run_closed_loop, run_engine, run_relay
    from alerts.sinks import BROADCAST, DISPATCH
    from gridwatch import kafka
    from gridwatch.xml_signature import load_signer, make_throwaway
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
    from simulators.sensors import MqttPublisher, Truth, sensor_scenario
    from streams.app import build_app
    from streams.persist import run_persist

    stop = asyncio.Event()
    producer = kafka.producer(urls.kafka_bootstrap)
    # Throwaway doors: a key per sink, and a CAP signing key with its self-signed certificate.
    keys = {DISPATCH: secrets.token_bytes(32), BROADCAST: secrets.token_bytes(32)}
    cap_signer = load_signer(*make_throwaway(run_dir / "cap-signing", "gridwatch demo CAP"))
    received = run_dir / "received"
    callbacks = CallbackServer(keys, producer)
    callback_url = await callbacks.start("127.0.0.1")
    # The desk takes a second per step, so the flood case is still open when it turns red;
    # ten when an operator approves in the console, so the cases wait for them.
    step_s = 10.0 if approve is Approval.MANUAL else 1.0
    desk = DispatchDesk(
        keys[DISPATCH],
        f"{callback_url}{ROUTES[DISPATCH]}",
        received / "dispatch",
        DeskPolicy(step_delay_s=step_s, rework_kinds=("flood",)),
    )
    receiver = BroadcastReceiver(
        keys[BROADCAST],
        f"{callback_url}{ROUTES[BROADCAST]}",
        certificate=cap_signer.certificate,
        record_dir=received / "broadcast",
    )
    policy = site.policy.compressed(DEMO_TIME_FACTOR)
    policy = policy.model_copy(
        update={
            "dispatch": policy.dispatch.model_copy(update={"url": await desk.start()}),
            "broadcast": policy.broadcast.model_copy(
                update={"url": await receiver.start(), "sender": DEMO_SENDER}
            ),
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
            asyncio.create_task(run_relay(site, db, producer, keys, stop, cap_signer=cap_signer)),
        ]
        if approve is Approval.AUTO:
            roles.append(asyncio.create_task(_approve_broadcasts(site, db, stop)))
        console_runner, console_url = await _start_console(site, db, run_dir)
        # Play only once every consumer group has its partitions, so latency is the pipeline's.
        await asyncio.wait_for(
            asyncio.gather(*(e.wait() for e in ready), _assigned(faust_app)), timeout=60
        )
    if approve is Approval.MANUAL:
        console.print(
            f"[bold red]red broadcasts wait for your approval:[/bold red] {console_url}/broadcasts"
        )
    assert spec.fire is not None  # noqa: S101 - checked by the command
    scenario = sensor_scenario(spec)
    truth, fire = Truth(), FireTruth(fire_point(site, spec.fire))
    messages = sensor_messages(site, scenario, truth, spec.fire)
    recorder = demo_recorder(site, urls, feeds.record)
    started, started_at = time.monotonic(), datetime.now(UTC)
    if feeds.replay is None:
        publisher = MqttPublisher(urls.mqtt_host, urls.mqtt_port)
        player = asyncio.create_task(asyncio.to_thread(publisher.play, messages))
    else:
        collections.deque(messages, maxlen=0)  # the scenario's truth, without its messages
        player = asyncio.create_task(demo_replay(site, urls, producer, run_dir, feeds.replay))
    # The towers' detections stand in for camera workers, straight onto Kafka: no recording
    # holds them, so a replay sends them again as the scenario says.
    detections = tower_detections(site, fire, spec.fire)
    towers = asyncio.create_task(publish_towers(producer, detections, fire))
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
                    and loop_now["broadcasts_waiting"] == 0
                )
                # Caught up, then one quiet second so the last messages land too.
                quiet_since = (quiet_since or time.monotonic()) if caught_up else None
                if quiet_since and time.monotonic() - quiet_since > 1.0:
                    complete = True
                    break
        summary = collect(conn)
        summary["kpis"] = _kpis(conn)
    stop.set()
    if recorder is not None:
        manifest = recorder.stop()
        summary["recording"] = {
            "file": str(feeds.record),
            "messages": recorder.writer.messages,
            "frames": recorder.writer.frames,
            "notes": list(manifest.notes),
        }
    await console_runner.cleanup()
    await asyncio.gather(*roles, return_exceptions=True)
    await faust_app.stop()
    await asyncio.to_thread(bridge.stop)
    for server in (desk, receiver, callbacks):
        await server.stop()
    acked = await player if player.done() else 0
    summary.update(
        complete=complete,
        scenario=spec.name,
        started_at=started_at.isoformat(),
        replayed=str(feeds.replay) if feeds.replay else None,
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
DEMO_SENDER = "gridwatch-demo@example.gov.cn"  # the demo street's CAP sender: an example
CONSOLE_OPERATOR = "duty-demo"


async def _start_console(site: Site, database_url: str, run_dir: Path) -> tuple[Any, str]:
    """The console on a free port, with a duty officer whose random password is printed once
    here and kept nowhere but as its hash."""
    from alerts.console.accounts import Role, add_operator
    from alerts.console.server import start
    from alerts.console.web import Console

    password = secrets.token_urlsafe(12)
    with psycopg.connect(database_url) as conn:
        add_operator(conn, CONSOLE_OPERATOR, Role.DUTY_OFFICER, password)
    runner, url = await start(Console(site, database_url, run_dir / "evidence"), "127.0.0.1")
    console.print(f"[bold]duty officer's console[/bold] {url}", soft_wrap=True)
    console.print(
        f"  login [bold]{CONSOLE_OPERATOR}[/bold] / [bold]{password}[/bold]"
        " (throwaway, this run only)",
        soft_wrap=True,
    )
    return runner, url


async def _approve_broadcasts(site: Site, database_url: str, stop: asyncio.Event) -> None:
    """The demo's operator approves every red broadcast waiting for approval, on record."""
    from alerts.closed_loop import ClosedLoop

    loop = ClosedLoop(site)

    def approve_waiting() -> None:
        with psycopg.connect(database_url) as conn:
            for case_id in loop.pending_approvals(conn):
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
        ("reading corrections (a second value for a stored time)", str(summary["corrections"])),
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
