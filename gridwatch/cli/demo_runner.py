"""The demo's runner: every role in one process on a run's services, a scenario played through
them, and the run's typed summary scored against the scenario's ground truth."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import psycopg

from gridwatch.cli.demo_cameras import (
    LiveCameras,
    clocked_scenes,
    compressed_days,
    demo_cues,
    watched_site,
    worker_name,
)
from gridwatch.cli.demo_summary import DemoSummary
from gridwatch.cli.recordings import demo_recorder, demo_replay
from gridwatch.scenario import Scenario as ScenarioFile
from gridwatch.scenario import place_point
from gridwatch.scenario_score import run_incidents, score
from gridwatch.services import ServiceUrls
from gridwatch.settings import ConsumerGroups
from gridwatch.site import Site
from gridwatch.store.summary import NewAlert, closed_loop_counts, collect, counts, new_alerts


class Approval(StrEnum):
    AUTO = "auto"
    MANUAL = "manual"


@dataclass(frozen=True)
class Feeds:
    record: Path | None = None  # record the run's MQTT traffic and frames into this file
    replay: Path | None = None  # play this recording instead of the scenario's sensors and cameras


class View(Protocol):
    """What the runner tells as it goes (``gridwatch.cli.demo_display.LiveView`` on a terminal)."""

    def starting(self, what: str) -> contextlib.AbstractContextManager[None]: ...
    def note(self, text: str) -> None: ...
    def alert(self, alert: NewAlert) -> None: ...
    def progress(self, stored: int, total: int | None, status: str) -> None: ...


@dataclass(frozen=True)
class DemoPlan:
    """One run's inputs: the site and services, the scenario, and where its files go."""

    site: Site
    urls: ServiceUrls
    run_dir: Path
    spec: ScenarioFile
    timeout: float
    feeds: Feeds
    backend: str
    approve: Approval = Approval.AUTO
    groups: ConsumerGroups = field(default_factory=ConsumerGroups)  # the roles' group timeouts


async def run_demo(plan: DemoPlan, view: View) -> DemoSummary:
    """Every role on the run's services, the scenario played, then the run's summary, scored."""
    from alerts.callbacks import ROUTES, CallbackServer
    from alerts.roles import run_closed_loop, run_engine, run_relay
    from alerts.sinks import BROADCAST, DISPATCH
    from gridwatch import kafka
    from gridwatch.xml_signature import load_signer, make_throwaway
    from ingest.camera_worker import kafka_publish
    from ingest.mqtt_bridge import MqttBridge
    from ingest.recorder import site_streams
    from simulators.broadcast_receiver import BroadcastReceiver
    from simulators.dispatch_desk import DeskPolicy, DispatchDesk
    from simulators.fire_scenario import sensor_messages
    from simulators.sensors import MqttPublisher, Truth, sensor_scenario
    from streams.app import build_app
    from streams.persist import run_persist

    site, urls, run_dir, spec, timeout, feeds = (
        plan.site, plan.urls, plan.run_dir, plan.spec, plan.timeout, plan.feeds
    )  # fmt: skip
    stop = asyncio.Event()
    producer = kafka.producer(urls.kafka_bootstrap)
    # Throwaway doors: a key per sink, and a CAP signing key with its self-signed certificate.
    keys = {DISPATCH: secrets.token_bytes(32), BROADCAST: secrets.token_bytes(32)}
    cap_signer = load_signer(*make_throwaway(run_dir / "cap-signing", "gridwatch demo CAP"))
    received = run_dir / "received"
    callbacks = CallbackServer(keys, producer)
    callback_url = await callbacks.start("127.0.0.1")
    approve = plan.approve
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
    faust_app = build_app(site, urls.kafka_bootstrap, run_dir / "faust", groups=plan.groups)
    db = urls.database_url
    cues, scenes = demo_cues(site, spec), clocked_scenes(spec)
    watched = watched_site(site, cues, spec)
    for tower, day_s in compressed_days(watched).items():
        view.note(
            f"[bold]compressed time[/bold] {tower}'s construction watch: a day is {day_s:g} s"
        )
    cameras = None
    if feeds.replay is None:
        cameras = LiveCameras(watched, cues, scenes, run_dir, kafka_publish(producer))
        with view.starting(f"simulated cameras and {len(cues)} camera events"):
            await asyncio.to_thread(cameras.start)
        view.note(
            f"[bold]camera workers[/bold] {', '.join(worker_name(w) for w in cameras.workers)}"
        )
    # Recording from the moment the streams are served: a road camera learns its empty road
    # before the car stops, and so must the replay's.
    streams = [] if cameras is None else site_streams(cameras.served)
    recorder = demo_recorder(site, urls, feeds.record, streams)
    with view.starting("roles (MQTT bridge, streams, alerts, closed loop, writer)"):
        await asyncio.to_thread(bridge.start)
        await faust_app.start()
        ready = [asyncio.Event(), asyncio.Event(), asyncio.Event()]
        roles = [
            asyncio.create_task(
                run_engine(
                    site,
                    urls.kafka_bootstrap,
                    producer,
                    stop,
                    database_url=db,
                    ready=ready[0],
                    groups=plan.groups,
                )  # fmt: skip
            ),
            asyncio.create_task(
                run_persist(db, urls.kafka_bootstrap, stop, ready=ready[1], groups=plan.groups)
            ),
            asyncio.create_task(
                run_closed_loop(
                    site,
                    db,
                    urls.kafka_bootstrap,
                    producer,
                    stop,
                    ready=ready[2],
                    groups=plan.groups,
                )  # fmt: skip
            ),
            asyncio.create_task(run_relay(site, db, producer, keys, stop, cap_signer=cap_signer)),
        ]
        if approve is Approval.AUTO:
            roles.append(asyncio.create_task(_approve_broadcasts(site, db, stop, view)))
        console_runner, console_url = await _start_console(site, db, run_dir, view)
        # Play only once every consumer group has its partitions, so latency is the pipeline's.
        await asyncio.wait_for(
            asyncio.gather(*(e.wait() for e in ready), _assigned(faust_app)), timeout=60
        )
    if approve is Approval.MANUAL:
        view.note(
            f"[bold red]red broadcasts wait for your approval:[/bold red] {console_url}/broadcasts"
        )
    assert spec.fire is not None  # noqa: S101 - checked by the command
    scenario = sensor_scenario(spec)
    truth, fire = Truth(), place_point(site, spec.fire.place)
    messages = sensor_messages(site, scenario, truth, spec.fire)
    started, started_at = time.monotonic(), datetime.now(UTC)
    player: asyncio.Task[Any]
    if cameras is not None:
        publisher = MqttPublisher(urls.mqtt_host, urls.mqtt_port)
        player = asyncio.create_task(asyncio.to_thread(publisher.play, messages))
        cameras.play()
    else:
        assert feeds.replay is not None  # noqa: S101
        collections.deque(messages, maxlen=0)  # the scenario's truth, without its messages
        # The towers' workers see what the live run's saw: the presets of the scenario's fire.
        player = asyncio.create_task(demo_replay(watched, urls, producer, run_dir, feeds.replay))
    complete = False
    with psycopg.connect(db, autocommit=True) as conn:
        seen = datetime.fromtimestamp(0, UTC)
        quiet_since = None
        while time.monotonic() - started < timeout:
            await asyncio.sleep(0.5)
            now = counts(conn)
            loop_now = closed_loop_counts(conn)
            for alert in new_alerts(conn, seen):
                seen = alert.stored_at
                view.alert(alert)
            view.progress(
                now["readings_stored"],
                truth.readings_sent if player.done() else None,
                f"incidents {now['incidents']} · alerts {now['alerts_firing']} · "
                f"cases {loop_now['cases']} (closed {loop_now['cases_closed']}) · "
                f"outbox {loop_now['outbox_pending']}",
            )
            caught_up = (
                player.done()
                and (cameras is None or cameras.reported())
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
        figures = collect(conn)
        figures["kpis"] = _kpis(conn)
    stop.set()
    if recorder is not None:
        manifest = recorder.stop()
        figures["recording"] = {
            "file": str(feeds.record),
            "messages": recorder.writer.messages,
            "frames": recorder.writer.frames,
            "notes": list(manifest.notes),
        }
    if cameras is not None:
        await asyncio.to_thread(cameras.stop)
    await console_runner.cleanup()
    await asyncio.gather(*roles, return_exceptions=True)
    await faust_app.stop()
    await asyncio.to_thread(bridge.stop)
    for server in (desk, receiver, callbacks):
        await server.stop()
    played = await player if player.done() else None
    # Live, the player is the MQTT publisher (its acknowledged messages); a replay, the
    # recording's player (``ingest.replay.Replayed``), which ran the camera workers itself.
    if cameras is not None:
        acked, workers, dead = played or 0, cameras.workers, [repr(e) for e in cameras.failures]
    else:
        acked = played.acked if played else 0
        workers, dead = list(played.workers) if played else [], []
    figures.update(
        backend=plan.backend,
        complete=complete,
        scenario=spec.name,
        started_at=started_at.isoformat(),
        replayed=str(feeds.replay) if feeds.replay else None,
        scenario_seconds=scenario.duration_s,
        messages_acked_by_broker=acked,
        readings_sent=truth.readings_sent,
        bad_messages_sent=truth.bad_sent,
        camera_frames_analysed=sum(w.stats.frames_analysed for w in workers),
        camera_workers={worker_name(w): w.stats.frames_analysed for w in workers},
        camera_workers_died=dead,
        compressed_days_s=compressed_days(watched),
        fire={"lon": round(fire.lon, 6), "lat": round(fire.lat, 6)},
        dispatch_messages_received=len(desk.received),
        broadcast_messages_received=len(receiver.received),
        broadcasts_played=len(receiver.played),
        lost_readings=max(truth.readings_sent - figures["readings_stored"], 0),
        wall_seconds=round(time.monotonic() - started, 1),
        score=score(spec, site, run_incidents(figures["incident_list"])),
    )
    return DemoSummary.model_validate(figures)


DEMO_TIME_FACTOR = 60  # the demo plays an hour of alert timers in a minute
DEMO_OPERATOR = "值班员（演示：自动批准）"
DEMO_SENDER = "gridwatch-demo@example.gov.cn"  # the demo street's CAP sender: an example
CONSOLE_OPERATOR = "duty-demo"


async def _start_console(
    site: Site, database_url: str, run_dir: Path, view: View
) -> tuple[Any, str]:
    """The console on a free port, with a duty officer whose random password is printed once
    here and kept nowhere but as its hash."""
    from alerts.console.accounts import Role, add_operator
    from alerts.console.server import start
    from alerts.console.web import Console

    password = secrets.token_urlsafe(12)
    with psycopg.connect(database_url) as conn:
        add_operator(conn, CONSOLE_OPERATOR, Role.DUTY_OFFICER, password)
    runner, url = await start(Console(site, database_url, run_dir / "evidence"), "127.0.0.1")
    view.note(f"[bold]duty officer's console[/bold] {url}")
    view.note(
        f"  login [bold]{CONSOLE_OPERATOR}[/bold] / [bold]{password}[/bold]"
        " (throwaway, this run only)"
    )
    return runner, url


async def _approve_broadcasts(
    site: Site, database_url: str, stop: asyncio.Event, view: View
) -> None:
    """The demo's operator approves every red broadcast waiting for approval, on record."""
    from alerts.closed_loop import ClosedLoop

    loop = ClosedLoop(site)

    def approve_waiting() -> None:
        with psycopg.connect(database_url) as conn:
            for case_id in loop.pending_approvals(conn):
                with conn.transaction():
                    loop.approve_broadcast(conn, case_id, DEMO_OPERATOR)
                view.note(f"[bold]✔ broadcast approved[/bold] for {case_id}: {DEMO_OPERATOR}")

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
