"""Configuration checks, embedded services and the production roles, one process each."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import psycopg
import typer

from gridwatch.cli.common import (
    alerts_app,
    app,
    cameras_app,
    console,
    embedded_services,
    fail,
    ingest_app,
    mqtt_access,
    required_services,
    services_app,
    setup_logging,
    simulate_app,
    site_or_fail,
    steady_memory,
    stop_on_signal,
    store_app,
    streams_app,
)
from gridwatch.cli.context import role_context
from gridwatch.errors import GridwatchError
from gridwatch.settings import Settings
from gridwatch.site import load_site


@app.command("check-config")
def check_config(site_file: Annotated[Path, typer.Argument(help="site YAML file")]) -> None:
    """Validate a site file and print what it describes."""
    try:
        site = load_site(site_file)
    except GridwatchError as err:
        raise fail(str(err)) from err
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
    with embedded_services(settings, directory) as urls:
        console.print(f"GRIDWATCH_DATABASE_URL={urls.database_url}")
        console.print(f"GRIDWATCH_KAFKA_BOOTSTRAP={urls.kafka_bootstrap}")
        console.print(f"GRIDWATCH_MQTT_URL=mqtt://{urls.mqtt_host}:{urls.mqtt_port}")
        console.print("[dim]Ctrl-C stops them.[/dim]")
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


@ingest_app.command("mqtt")
def ingest_mqtt() -> None:
    """Bridge device telemetry from MQTT to Kafka."""
    from gridwatch import kafka
    from ingest.mqtt_bridge import MqttBridge

    ctx = role_context("ingest-mqtt")
    urls = ctx.urls
    ctx.prepare()
    bridge = MqttBridge(
        ctx.site,
        kafka.producer(urls.kafka_bootstrap),
        urls.mqtt_host,
        urls.mqtt_port,
        access=mqtt_access(ctx.settings),
        limits=ctx.settings.mqtt_limits,
    )
    steady_memory()
    bridge.start()
    try:
        bridge.run_until_stopped(ctx.heartbeat.beat)
    except GridwatchError as err:
        raise fail(str(err)) from err
    finally:
        bridge.stop()


@streams_app.command("worker")
def streams_worker(
    datadir: Annotated[Path, typer.Option(help="Faust state directory")] = Path("faust-data"),
) -> None:
    """Run the Faust worker: sensor rules and fusion."""
    from mode import Worker

    from streams.app import build_app

    ctx = role_context("streams-worker").prepare()
    steady_memory()
    # Faust's lines go through the role's logging too, instead of a set-up of the worker's own.
    settings = ctx.settings
    rules = build_app(ctx.site, ctx.kafka_bootstrap, datadir, heartbeat=ctx.heartbeat,
                      partitions=settings.topic_partitions, store=settings.table_store,
                      groups=settings.consumer_groups,
                      one_record_per_batch=settings.streams_one_record_per_batch)  # fmt: skip
    Worker(rules, override_logging=False).execute_from_commandline()


@alerts_app.command("engine")
def alerts_engine() -> None:
    """Grade incidents and emit deduplicated, grouped, inhibited and silenced alerts."""
    from alerts.roles import run_engine
    from gridwatch import kafka

    ctx = role_context("alerts-engine")
    database_url = ctx.urls.database_url
    ctx.prepare()

    async def main() -> None:
        stop = asyncio.Event()
        await stop_on_signal(stop)
        producer = kafka.producer(ctx.kafka_bootstrap)
        await run_engine(ctx.site, ctx.kafka_bootstrap, producer, stop,
                         database_url=database_url, groups=ctx.settings.consumer_groups,
                         heartbeat=ctx.heartbeat)  # fmt: skip

    asyncio.run(main())


@alerts_app.command("relay")
def alerts_relay(
    callback_port: Annotated[int, typer.Option(help="port of the status callback API")] = 8700,
) -> None:
    """The closed loop: cases from alerts and callbacks, timers, the outbox relay to the
    dispatch and broadcast systems, and the HTTP endpoint their callbacks come to."""
    import os

    from alerts.callbacks import CallbackServer, tls_context
    from alerts.roles import RELAY_LOOPS, run_closed_loop, run_relay
    from alerts.sinks import BROADCAST, DISPATCH
    from gridwatch import kafka
    from gridwatch.signing import require_key
    from gridwatch.xml_signature import load_signer

    ctx = role_context("alerts-relay", loops=RELAY_LOOPS)
    settings, site = ctx.settings, ctx.site
    sinks = {DISPATCH: site.policy.dispatch, BROADCAST: site.policy.broadcast}
    # The doors are checked before any service is touched: a placeholder key never goes live.
    if settings.cap_signing_key is None or settings.cap_signing_cert is None:
        raise fail(
            "set GRIDWATCH_CAP_SIGNING_KEY and GRIDWATCH_CAP_SIGNING_CERT"
            " (the PEM key and certificate that sign every CAP message)"
        )
    try:
        keys = {
            name: require_key(s.secret_env, os.environ.get(s.secret_env))
            for name, s in sinks.items()
        }
        cap_signer = load_signer(settings.cap_signing_key, settings.cap_signing_cert)
        tls = tls_context(settings.callback_tls_cert, settings.callback_tls_key)
    except GridwatchError as err:
        raise fail(str(err)) from err
    urls = ctx.prepare(schema=True).urls

    async def main() -> None:
        stop = asyncio.Event()
        await stop_on_signal(stop)
        producer = kafka.producer(urls.kafka_bootstrap)
        callbacks = CallbackServer(keys, producer)
        await callbacks.start(settings.callback_host, callback_port, tls=tls)
        beats = ctx.heartbeat
        try:
            await asyncio.gather(
                run_closed_loop(
                    site, urls.database_url, urls.kafka_bootstrap, producer, stop,
                    groups=settings.consumer_groups, heartbeat=beats,
                ),
                run_relay(
                    site, urls.database_url, producer, keys, stop, cap_signer=cap_signer,
                    heartbeat=beats,
                ),
            )  # fmt: skip
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
    urls, site = required_services(settings), site_or_fail(settings)
    with psycopg.connect(urls.database_url) as conn, conn.transaction():
        try:
            ClosedLoop(site).approve_broadcast(conn, case_id, operator)
        except IllegalTransition as err:
            raise fail(str(err)) from err
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
    urls = required_services(settings)
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

    ctx = role_context("store-writer").prepare(schema=True)
    steady_memory()

    async def main() -> None:
        stop = asyncio.Event()
        await stop_on_signal(stop)
        urls = ctx.urls
        await run_persist(urls.database_url, urls.kafka_bootstrap, stop, heartbeat=ctx.heartbeat,
                          groups=ctx.settings.consumer_groups)  # fmt: skip

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
    urls, site = required_services(settings), site_or_fail(settings)
    truth = Truth()
    publisher = MqttPublisher(urls.mqtt_host, urls.mqtt_port, access=mqtt_access(settings))
    acked = publisher.play(messages(site, Scenario(duration, rate, seed), truth))
    console.print(f"published {acked} messages, {truth.readings_sent} readings")


@simulate_app.command("cameras")
def simulate_cameras(
    scene: Annotated[
        list[str] | None,
        typer.Option(help="CAMERA=ELEMENT or TOWER:PRESET=ELEMENT, e.g. CAM-004=farm_fire"),
    ] = None,
    rtsp_port: Annotated[int, typer.Option(help="RTSP port (the sample site's URLs: 8554)")] = 8554,
    http_port: Annotated[int, typer.Option(help="MJPEG and PTZ API port")] = 8080,
    rtsp: Annotated[bool, typer.Option(help="serve RTSP/H.264 beside MJPEG")] = True,
    fps: Annotated[float, typer.Option(help="frames per second of every stream")] = 5.0,
    seconds: Annotated[float, typer.Option(help="length of each looped clip")] = 10.0,
    width: Annotated[int, typer.Option(help="frame width; height is 9/16 of it")] = 640,
) -> None:
    """Serve the site's cameras and watchtowers as MJPEG, RTSP/H.264 and a PTZ API."""
    from simulators.camera_feeds import CameraSimulator, feeds_for_site, parse_scenes

    settings = Settings()
    setup_logging(settings)
    site = site_or_fail(settings)
    try:
        size = (width, width * 9 // 16)
        feeds = feeds_for_site(site, parse_scenes(scene or []), fps=fps, seconds=seconds, size=size)
    except ValueError as err:
        raise fail(str(err)) from err
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with tempfile.TemporaryDirectory(prefix="gridwatch-cameras-") as work:
        sim = CameraSimulator(
            feeds, Path(work), rtsp=rtsp, rtsp_port=rtsp_port, http_port=http_port
        )
        try:
            sim.start()
        except (RuntimeError, OSError) as err:
            raise fail(f"the camera simulator did not start: {err}") from err
        try:
            for path, urls in sim.urls().items():
                console.print(path, *(f"{k}={v}" for k, v in urls.items()))
            with contextlib.suppress(KeyboardInterrupt):
                stop.wait()
        finally:
            sim.stop()


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

    ctx = role_context(f"camera-{device}")
    settings, site = ctx.settings, ctx.site
    cameras = {c.id: c for c in site.cameras}
    towers = {t.id: t for t in site.watchtowers}
    if device not in cameras and device not in towers:
        raise fail(f"no camera or watchtower {device!r} in {settings.site}")
    ctx.prepare()
    publish = kafka_publish(kafka.producer(ctx.kafka_bootstrap))
    evidence = EvidenceStore(settings.evidence_dir)
    if device in cameras:
        worker = CameraWorker.for_camera(cameras[device], publish, evidence)
        url = cameras[device].url
    else:
        tower = towers[device]
        worker = CameraWorker.for_watchtower(
            tower, publish, evidence, thermal=thermal, zones=site.zones
        )
        url = (tower.thermal_url if thermal else None) or tower.visible_url
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.suppress(KeyboardInterrupt):
        worker.run(VideoSource(url), stop, heartbeat=ctx.heartbeat)


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
    site = site_or_fail(settings)
    towers = {t.id: t for t in site.watchtowers}
    if device in towers:
        if preset not in {p.id for p in towers[device].presets}:
            raise fail(f"watchtower {device!r} has no preset {preset}")
    elif device not in {c.id for c in site.cameras} or preset is not None:
        raise fail(f"no watchtower {device!r}, nor a fixed camera without preset, in the site")
    try:
        record = BaselineStore(settings.evidence_dir).acknowledge(device, preset, by)
    except FileNotFoundError as err:
        raise fail(str(err)) from err
    console.print(
        f"baseline of {device} preset {preset} is now version {record.version} "
        f"(frame of {record.day.isoformat()})"
    )
