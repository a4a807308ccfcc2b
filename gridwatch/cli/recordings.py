"""``gridwatch record`` and ``gridwatch replay``: a site's live feeds into one file and back."""

from __future__ import annotations

import asyncio
import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from gridwatch.cli.common import app, console, fail, mqtt_access, setup_logging, site_or_fail
from gridwatch.errors import GridwatchError
from gridwatch.mqtt_access import parse_mqtt_url
from gridwatch.services import ServiceUrls
from gridwatch.settings import Settings
from gridwatch.site import Site


def _broker(settings: Settings) -> tuple[str, int]:
    if settings.mqtt_url is None:
        raise fail("set GRIDWATCH_MQTT_URL")
    try:
        broker = parse_mqtt_url(settings.mqtt_url)
    except GridwatchError as err:
        raise fail(str(err)) from err
    return broker.host, broker.port


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


@app.command()
def record(
    out: Annotated[Path, typer.Argument(help="the recording file to create (SQLite)")],
    duration: Annotated[
        float | None, typer.Option(help="stop after this many seconds (default: at Ctrl-C)")
    ] = None,
    camera: Annotated[
        list[str] | None, typer.Option(help="record only this camera or watchtower (repeatable)")
    ] = None,
    cameras: Annotated[bool, typer.Option(help="sample the camera and tower streams")] = True,
) -> None:
    """Record live MQTT traffic and sampled camera frames into one file."""
    from ingest.recorder import Recorder, site_streams

    settings = Settings()
    setup_logging(settings)
    site = site_or_fail(settings)
    host, port = _broker(settings)
    streams = site_streams(site, set(camera) if camera else None) if cameras else []
    try:
        recorder = Recorder(
            site, settings.site, out, host, port, streams=streams, access=mqtt_access(settings)
        )
        stop = _stop_on_signals()
        recorder.start()
    except GridwatchError as err:
        raise fail(str(err)) from err
    console.print(f"recording {', '.join(recorder.filters)} and {len(streams)} streams to {out}")
    try:
        recorder.wait(stop, duration)
    except GridwatchError as err:
        recorder.stop()
        raise fail(str(err)) from err
    manifest = recorder.stop()
    console.print(
        f"recorded {recorder.writer.messages} messages and {recorder.writer.frames} frames"
    )
    for note in manifest.notes:
        console.print(f"[yellow]note:[/yellow] {note}")


@app.command()
def replay(
    recording_file: Annotated[Path, typer.Argument(help="a file made by `gridwatch record`")],
    speed: Annotated[float, typer.Option(help="play this many times faster than recorded")] = 1.0,
    rebase_time: Annotated[
        bool,
        typer.Option(
            help="shift payload and frame times by one offset, as if recorded now (needed for"
            " a recording older than telemetry.max_age_s)"
        ),
    ] = False,
    cameras: Annotated[
        bool, typer.Option(help="run camera workers on the recorded frames (GRIDWATCH_KAFKA_…)")
    ] = True,
) -> None:
    """Play a recording back into a pipeline: MQTT to the broker, frames to camera workers."""
    from gridwatch import kafka
    from ingest.camera_evidence import EvidenceStore
    from ingest.camera_worker import kafka_publish
    from ingest.recording import Recording
    from ingest.replay import replay as play

    settings = Settings()
    setup_logging(settings)
    site = site_or_fail(settings)
    host, port = _broker(settings)
    try:
        recording = Recording(recording_file)
    except GridwatchError as err:
        raise fail(str(err)) from err
    producer = None
    if cameras and recording.streams():
        if settings.kafka_bootstrap is None:
            raise fail("set GRIDWATCH_KAFKA_BOOTSTRAP for the camera workers (or --no-cameras)")
        producer = kafka.producer(settings.kafka_bootstrap)
    messages, frames = recording.counts()
    console.print(f"replaying {messages} messages and {frames} frames at ×{speed:g}")
    try:
        acked = play(
            recording,
            site,
            host,
            port,
            speed=speed,
            rebase=rebase_time,
            publish=None if producer is None else kafka_publish(producer),
            evidence=EvidenceStore(settings.evidence_dir),
            access=mqtt_access(settings),
            stop=_stop_on_signals(),
        ).acked
    except GridwatchError as err:
        raise fail(str(err)) from err
    finally:
        if producer is not None:
            producer.flush(timeout=30)
            producer.close(timeout=10)
        recording.close()
    console.print(f"replayed {acked} messages (acknowledged by the broker)")


def demo_recorder(site: Site, urls: ServiceUrls, out: Path | None, streams: list[Any]) -> Any:
    """``gridwatch record`` inside the demo, on its broker and the simulated cameras' streams
    (``ingest.recorder.Stream``), from before the scenario plays."""
    if out is None:
        return None
    from ingest.recorder import Recorder

    recorder = Recorder(site, Settings().site, out, urls.mqtt_host, urls.mqtt_port, streams=streams)
    recorder.start()
    return recorder


async def demo_replay(
    site: Site, urls: ServiceUrls, producer: Any, run_dir: Path, path: Path
) -> Any:
    """``gridwatch replay`` inside the demo: the recording at its own pace, frames included,
    its times rebased: a device whose newest reading is older than its heartbeat would be
    offline, and the run that made the recording ended a while ago. Returns what
    ``ingest.replay.replay`` does: the acknowledged messages and the camera workers."""
    from ingest.camera_evidence import EvidenceStore
    from ingest.camera_worker import kafka_publish
    from ingest.recording import Recording
    from ingest.replay import replay

    recording = Recording(path)
    try:
        return await asyncio.to_thread(
            replay,
            recording,
            site,
            urls.mqtt_host,
            urls.mqtt_port,
            speed=1.0,
            rebase=True,
            publish=kafka_publish(producer),
            evidence=EvidenceStore(run_dir / "evidence"),
        )
    finally:
        recording.close()
