"""Dashboards, the report, detector evaluation and benchmarks."""

from __future__ import annotations

import json
import logging
import shlex
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import psycopg
import pydantic
import typer

from gridwatch.cli.common import (
    app,
    bench_app,
    console,
    dashboards_app,
    eval_app,
    fail,
    site_or_fail,
    steady_memory,
    store_app,
    train_app,
)
from gridwatch.errors import ConfigError, GridwatchError
from gridwatch.liveness import DEFAULT_MAX_AGE_S, age_s
from gridwatch.settings import Settings, TableStore
from gridwatch.site import Site
from gridwatch.store.reader import DEFAULT_READER

if TYPE_CHECKING:
    from benchmarks.image_set import LabelledImage

MIN_READER_PASSWORD = 12


@dashboards_app.command("build")
def dashboards_build(
    check: Annotated[
        bool, typer.Option(help="only check that the committed files are what the code makes")
    ] = False,
) -> None:
    """Write the provisioning JSON (dashboards/json/) and the grid GeoJSON (dashboards/geo/)."""
    from dashboards import build

    site = site_or_fail(Settings())
    if check:
        stale = [
            str(path)
            for path, text in build.files(site).items()
            if not path.is_file() or path.read_text(encoding="utf-8") != text
        ]
        if stale:
            raise fail(f"out of date (run `gridwatch dashboards build`): {', '.join(stale)}")
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
    reader: Annotated[str, typer.Option(help="the read-only role the datasource logs in as")] = (
        DEFAULT_READER
    ),
    timescaledb: Annotated[bool, typer.Option(help="the datasource's TimescaleDB switch")] = True,
) -> None:
    """Upload the dashboards, their folder and the datasource: the database of
    GRIDWATCH_DATABASE_URL, read as the role of `gridwatch store grant-reader`."""
    from dashboards import build, push

    settings = Settings()
    if token is None and password is None:
        raise fail("set GRAFANA_ADMIN_PASSWORD (or --password) or GRIDWATCH_GRAFANA_TOKEN")
    credential: tuple[str, str] | str = token if token is not None else (user, password or "")
    try:
        source = None
        if settings.database_url is not None:
            source = push.datasource(
                settings.database_url.get_secret_value(),
                push.Login(reader, reader_password(settings)),
                host=datasource_host,
                timescaledb=timescaledb,
            )
        pushed = push.push(
            url, credential, build.dashboards(site_or_fail(settings), settings.console_url), source
        )
    except GridwatchError as err:
        raise fail(str(err)) from err
    for item in pushed:
        console.print(f"{item.uid}: version {item.version} {item.url}")


@store_app.command("grant-reader")
def store_grant_reader(
    user: Annotated[str, typer.Option(help="the role Grafana logs in as")] = DEFAULT_READER,
) -> None:
    """Create (or reset) the read-only database role for Grafana, with the password of
    GRIDWATCH_READER_PASSWORD: SELECT on what the dashboards read, nothing else."""
    from gridwatch.store.reader import grant_reader
    from gridwatch.store.schema import ensure_schema

    settings = Settings()
    if settings.database_url is None:
        raise fail("set GRIDWATCH_DATABASE_URL (a role that may create roles)")
    try:
        secret = reader_password(settings)
        with psycopg.connect(settings.database_url.get_secret_value()) as conn:
            ensure_schema(conn)
            grant_reader(conn, user, secret)
    except (GridwatchError, psycopg.Error) as err:
        raise fail(f"cannot grant {user}: {err}") from err
    console.print(f"{user} may read what the dashboards show, and nothing else")


def reader_password(settings: Settings) -> str:
    """GRIDWATCH_READER_PASSWORD, refused when unset, short or a placeholder."""
    secret = settings.reader_password.get_secret_value() if settings.reader_password else ""
    if len(secret) < MIN_READER_PASSWORD or secret.startswith("change-me"):
        raise ConfigError(
            f"set GRIDWATCH_READER_PASSWORD to a password of {MIN_READER_PASSWORD} characters or"
            " more that is not a change-me placeholder (the read-only role's)"
        )
    return secret


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
        raise fail("set GRIDWATCH_DATABASE_URL or --database-url")
    report_into(run_dir, url, site_or_fail(settings))


def report_into(directory: Path, database_url: str, site: Site) -> None:
    from dashboards.report import REPORT_FILE, write_report

    path = write_report(database_url, site, directory / REPORT_FILE)
    console.print(f"command-center snapshot: {path}")


@eval_app.command("detectors")
def eval_detectors(
    json_path: Annotated[Path | None, typer.Option("--json", help="write the report here")] = None,
    media: Annotated[
        Path | None, typer.Option(help="real media: DIR/<fire|smoke|fire_and_smoke|none>/…")
    ] = None,
    fps: Annotated[float, typer.Option(help="frame rate of frame-sequence folders")] = 5.0,
    per_kind: Annotated[int, typer.Option(help="simulated variants of each scenario")] = 6,
    fire_smoke: Annotated[
        str, typer.Option(help="fire/smoke detectors: model, rules (colour and plume) or both")
    ] = "model",
    grids: Annotated[
        str | None, typer.Option(help="the model's tile grids, e.g. 2,3; 'none': whole view")
    ] = None,
    footage: Annotated[
        bool,
        typer.Option(help="generated scenes with real fire and smoke from the training images"),
    ] = False,
    traffic: Annotated[
        bool,
        typer.Option(
            help="the traffic detector alone: generated road scenes, or with --media the real"
            " negatives of the fire-smoke set (its folder, with SOURCES.tsv)"
        ),
    ] = False,
) -> None:
    """Run labelled scenarios (or real media) through the camera worker and score them."""
    from benchmarks.eval_detectors import detector_set, evaluate
    from benchmarks.eval_traffic import evaluate as evaluate_traffic

    if footage and (media is not None or traffic):
        raise fail("--footage composites generated scenes: not with --media or --traffic")
    if traffic:
        report = evaluate_traffic(per_kind, media)
    else:
        tiles = None
        if grids is not None:
            tiles = () if grids == "none" else tuple(int(g) for g in grids.split(","))
        try:
            detectors = detector_set(fire_smoke, tiles)
        except (ValueError, pydantic.ValidationError) as err:
            raise fail(str(err)) from err
        report = evaluate(per_kind, media, fps, detectors, footage)
    text = json.dumps(report, indent=2, ensure_ascii=False)
    console.print_json(text)
    if json_path is not None:
        json_path.write_text(text + "\n")


@eval_app.command("images")
def eval_images(
    directory: Annotated[Path, typer.Argument(help="DIR/{fire,smoke,none}/ of real images")],
    json_path: Annotated[Path | None, typer.Option("--json", help="write the report here")] = None,
    model: Annotated[
        Path | None, typer.Option(help="ONNX model (default: the packaged one)")
    ] = None,
    fpr: Annotated[
        float, typer.Option(help="false-positive rate the operating point allows")
    ] = 0.05,
    sheet: Annotated[
        Path | None, typer.Option(help="contact sheet PNG of the worst false positives and misses")
    ] = None,
    tiles: Annotated[
        bool, typer.Option(help="also: what the default tiles add (recall, worst-case FPR)")
    ] = False,
) -> None:
    """ROC AUC, recall at FPR 0.01/0.05/0.10, operating point and cost of the fire/smoke model."""
    from benchmarks.eval_images import evaluate
    from benchmarks.eval_tiles import tile_report
    from benchmarks.image_set import scan
    from detectors.fire_model import DEFAULT_MODEL, FireSmokeModel
    from gridwatch.site_detectors import FireSmokeModelSettings

    path = model or DEFAULT_MODEL
    try:
        report = evaluate(directory, path, fpr, sheet=sheet)
        if tiles:
            onnx = FireSmokeModel(path, threads=1)
            report["tiles"] = tile_report(onnx, FireSmokeModelSettings(), scan(directory))
    except GridwatchError as err:
        raise fail(str(err)) from err
    text = json.dumps(report, indent=2, ensure_ascii=False)
    console.print_json(text)
    if json_path is not None:
        json_path.write_text(text + "\n")


@train_app.command("detector")
def train_detector(
    out: Annotated[
        Path | None, typer.Option(help="default: the detectors package's models/")
    ] = None,
    epochs: Annotated[int, typer.Option(min=1)] = 6,
    seed: Annotated[int, typer.Option()] = 0,
    views: Annotated[int, typer.Option(min=1, help="camera-like views cached per image")] = 4,
    data: Annotated[Path | None, typer.Option(help="default: ../shared/data/fire-smoke")] = None,
    work: Annotated[
        Path | None,
        typer.Option(help="scratch space for the cached feature maps (~1 GB; default: temp dir)"),
    ] = None,
    include_feedback: Annotated[
        bool,
        typer.Option(help="add operators' false alarms (GRIDWATCH_DATABASE_URL) as hard negatives"),
    ] = False,
) -> None:
    """Fine-tune the fire/smoke model on DATA/train, export ONNX, write its model card."""
    from benchmarks.eval_images import evaluate
    from benchmarks.image_set import SHARED_SET, scan
    from benchmarks.train_detector import Recipe, model_card, train
    from detectors.fire_model import MODEL_DIR

    # progress (caching, epochs) on stderr: a run takes most of an hour
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    root = data or SHARED_SET
    work = work or Path(tempfile.gettempdir()) / "gridwatch-train"
    out = out or MODEL_DIR
    recipe = Recipe(epochs=epochs, seed=seed, views=views)
    extra: tuple[LabelledImage, ...] = ()
    if include_feedback:
        extra = feedback_negatives(Settings(), root / "train", work / "feedback")
    try:
        trained = train(root / "train", out, recipe, work, extra)
        report = None
        if (root / "val").is_dir():
            sheet = work / "fire_smoke.val.png"
            report = evaluate(root / "val", trained.model, sheet=sheet)
            (out / "fire_smoke.val.json").write_text(json.dumps(report, indent=2) + "\n")
    except GridwatchError as err:
        raise fail(str(err)) from err
    counts = Counter(item.label for item in (*scan(root / "train"), *extra))
    command = shlex.join(["gridwatch", *sys.argv[1:]])
    source = f"{root.name}/train" + (f" and {len(extra)} operators' false alarms" if extra else "")
    card = model_card(trained, recipe, source, dict(counts), report, command)
    (out / "fire_smoke.md").write_text(card)
    console.print(card)


@train_app.command("footage")
def train_footage(
    data: Annotated[Path | None, typer.Option(help="default: ../shared/data/fire-smoke")] = None,
    fires: Annotated[int, typer.Option(min=1, help="fires (and plumes) kept")] = 8,
    frames: Annotated[int, typer.Option(min=1, help="frames of each fire's video kept")] = 4,
) -> None:
    """Rank the training crops by the model's score pasted into a generated scene and keep the
    best in simulators/footage_picks.tsv, the real fire and smoke the simulated cameras show."""
    from benchmarks.footage_picks import rank
    from benchmarks.image_set import SHARED_SET
    from detectors.fire_model import DEFAULT_MODEL, FireSmokeModel
    from simulators.camera_footage import PICKS, write_picks

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    train = (data or SHARED_SET) / "train"
    if not (train / "labels").is_dir():
        raise fail(f"no labelled training images in {train}")
    picks = rank(train, FireSmokeModel(DEFAULT_MODEL), fires, frames)
    write_picks(picks, PICKS)
    console.print(f"{len(picks)} crops of {train} kept in {PICKS}")


def feedback_negatives(settings: Settings, train: Path, folder: Path) -> tuple[LabelledImage, ...]:
    """The operators' false alarms exported under ``folder`` as negatives, with a report line."""
    from benchmarks.hard_negatives import export_hard_negatives
    from benchmarks.image_set import scan

    if settings.database_url is None:
        raise fail("--include-feedback reads the false alarms from GRIDWATCH_DATABASE_URL")
    try:
        with psycopg.connect(settings.database_url.get_secret_value()) as conn:
            export = export_hard_negatives(conn, folder, (i.path for i in scan(train)))
    except (GridwatchError, psycopg.Error) as err:
        raise fail(f"cannot export the false alarms: {err}") from err
    console.print(
        f"{export.added} hard negatives added from operators' false alarms"
        f" ({export.duplicates} duplicates, {export.without_snapshot} without snapshot,"
        f" {export.other_kinds} of other kinds, {export.unreadable} unreadable)"
        f" into {folder / 'none'}"
    )
    return export.images


@bench_app.command("cameras")
def bench_cameras(
    json_path: Annotated[Path | None, typer.Option("--json", help="write the figures here")] = None,
    frames: Annotated[int, typer.Option(help="720p frames to analyse")] = 300,
    fire_smoke: Annotated[
        str, typer.Option(help="fire/smoke detectors: model, rules (colour and plume) or both")
    ] = "model",
    rtsp: Annotated[
        bool, typer.Option(help="a worker on a real RTSP/H.264 25 fps stream, CPU per camera")
    ] = False,
    seconds: Annotated[float, typer.Option(help="--rtsp: seconds of stream per run")] = 20.0,
    gop: Annotated[float, typer.Option(help="--rtsp: seconds between key frames")] = 1.0,
) -> None:
    """Analysed 720p frames per second per core, decode apart, and cameras per core."""
    if rtsp:
        from benchmarks.camera_rtsp import bench_rtsp

    try:
        if rtsp:
            from benchmarks.camera_rtsp import bench_rtsp

            figures = bench_rtsp(seconds, gop_s=gop, fire_smoke=fire_smoke)
        else:
            from benchmarks.cameras import bench

            figures = bench(frames, fire_smoke=fire_smoke)
    except ValueError as err:
        raise fail(str(err)) from err
    text = json.dumps(figures, indent=2)
    console.print_json(text)
    if json_path is not None:
        json_path.write_text(text + "\n")


@bench_app.command("sensors")
def bench_sensors(
    devices: Annotated[int, typer.Option(help="simulated devices, one report a second")] = 1000,
    duration: Annotated[float, typer.Option(help="seconds of publishing")] = 30.0,
    metrics: Annotated[int, typer.Option(min=1, max=4, help="metrics per report")] = 2,
    partitions: Annotated[int, typer.Option(min=1, help="partitions of every topic")] = 1,
    workers: Annotated[int, typer.Option(min=1, help="rules workers sharing them")] = 1,
    writers: Annotated[int, typer.Option(min=1, help="store writers sharing them")] = 1,
    json_path: Annotated[Path | None, typer.Option("--json", help="write the figures here")] = None,
) -> None:
    """The sensor path end to end on embedded services, with the raw COPY and MQTT ceilings."""
    from benchmarks.sensors import report, run

    result = run(site_or_fail(Settings()), devices, duration, metrics, partitions=partitions,
                 workers=workers, writers=writers)  # fmt: skip
    console.print(report(result, json_path))


@bench_app.command("sensor-cpu")
def bench_sensor_cpu(
    devices: Annotated[int, typer.Option(min=1, help="bench devices")] = 5000,
    steps: Annotated[int, typer.Option(min=1, help="reports per device")] = 10,
    metrics: Annotated[int, typer.Option(min=1, max=4, help="metrics per report")] = 4,
    json_path: Annotated[Path | None, typer.Option("--json", help="write the figures here")] = None,
) -> None:
    """CPU microseconds per data point of the bridge's, rules' and writer's own code, in process."""
    from benchmarks.sensor_cpu import report, run

    site = site_or_fail(Settings())
    steady_memory()
    result = run(site, devices, steps, metrics)
    console.print(report(result, json_path))


@bench_app.command("failover")
def bench_failover(
    devices: Annotated[int, typer.Option(help="simulated devices, one report a second")] = 1000,
    duration: Annotated[float, typer.Option(help="seconds of publishing")] = 60.0,
    partitions: Annotated[int, typer.Option(min=2, help="partitions of every topic")] = 4,
    workers: Annotated[int, typer.Option(min=2, help="rules workers sharing them")] = 2,
    writers: Annotated[int, typer.Option(min=1, help="store writers sharing them")] = 2,
    kill_at: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="when the kills strike, in publishing time")
    ] = 0.4,
    json_path: Annotated[Path | None, typer.Option("--json", help="write the figures here")] = None,
) -> None:
    """A one-worker run, then the same input with the second rules worker (and writer) killed
    mid-stream: readings lost or doubled, detections missed or doubled, the takeover's time;
    exits 1 if the others did not take over without loss."""
    from benchmarks.failover import Shape, report, run

    shape = Shape(partitions=partitions, workers=workers, writers=writers)
    outcomes = run(site_or_fail(Settings()), devices, duration, shape, kill_at)
    console.print(report(outcomes, json_path), markup=False, highlight=False, soft_wrap=True)
    if not all(o.ok for o in outcomes):
        raise typer.Exit(code=1)


@bench_app.command("restart")
def bench_restart(
    devices: Annotated[
        list[int] | None, typer.Option(help="devices' state the worker holds, repeatable")
    ] = None,
    store: Annotated[
        list[str] | None, typer.Option(help="table store, repeatable: memory, rocksdb")
    ] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="write the figures here")] = None,
) -> None:
    """Time from a rules worker's restart to its first judged reading, by table store and by
    devices' state (default: 10,000 and 100,000 devices, both stores)."""
    from benchmarks.restart import report, run

    stores = store or ["memory", "rocksdb"]
    unknown = sorted(set(stores) - {"memory", "rocksdb"})
    if unknown:
        raise fail(f"no table store {', '.join(unknown)}; there are memory and rocksdb")
    chosen = cast("list[TableStore]", stores)
    results = run(site_or_fail(Settings()), devices or [10_000, 100_000], chosen)
    console.print(report(results, json_path), markup=False, highlight=False, soft_wrap=True)


@bench_app.command("store")
def bench_store(
    rows: Annotated[int, typer.Option(min=1, help="readings to store")] = 1_000_000,
    json_path: Annotated[Path | None, typer.Option("--json", help="write the figures here")] = None,
) -> None:
    """The store writer alone from a pre-filled topic, against raw binary COPY of the same rows."""
    from benchmarks.store import report, run

    console.print(report(run(rows), json_path))


@bench_app.command("fuzz")
def bench_fuzz(
    messages: Annotated[int, typer.Option(min=1, help="messages to publish")] = 10_000,
    seed: Annotated[int, typer.Option(help="seed of the message generator")] = 7,
    json_path: Annotated[Path | None, typer.Option("--json", help="write the figures here")] = None,
    drain_timeout: Annotated[
        float, typer.Option(help="longest wait, after publishing, for the pipeline to drain")
    ] = 120.0,
    quiet: Annotated[
        float, typer.Option(help="stop waiting once nothing changed this long")
    ] = 10.0,
) -> None:
    """Bad and good messages through the real pipeline: each stored, duplicate, correction or
    dead-lettered, from what the database shows; exits 1 if one is unaccounted or a role died."""
    from benchmarks.fuzz import report, run

    try:
        result = run(
            site_or_fail(Settings()), messages, seed, drain_timeout=drain_timeout, quiet_s=quiet
        )
    except GridwatchError as err:
        raise fail(str(err)) from err
    console.print(report(result, json_path), markup=False, highlight=False, soft_wrap=True)
    if result.unaccounted or result.role_restarts:
        raise typer.Exit(code=1)


@app.command()
def health(
    role: Annotated[str, typer.Argument(help="the role's name, e.g. store-writer")],
    max_age: Annotated[
        float, typer.Option(help="seconds since the last heartbeat that still count as alive")
    ] = DEFAULT_MAX_AGE_S,
) -> None:
    """Exit 0 if the role's loop beat within --max-age seconds, 1 if not (a healthcheck)."""
    settings = Settings()
    try:
        age = age_s(settings.liveness_dir, role)
    except GridwatchError as err:
        raise fail(str(err)) from err
    if age is None:
        console.print(f"{role}: no heartbeat in {settings.liveness_dir}")
        raise typer.Exit(code=1)
    if age > max_age:
        console.print(f"{role}: last heartbeat {age:.0f} s ago (more than {max_age:g} s)")
        raise typer.Exit(code=1)
    console.print(f"{role}: alive, last heartbeat {age:.1f} s ago")


@bench_app.command("faults")
def bench_faults(
    scenario: Annotated[
        list[str] | None,
        typer.Option(help="a scenario to run, repeatable (default: all of them)"),
    ] = None,
    devices: Annotated[int, typer.Option(help="bench devices, one report a second")] = 200,
    duration: Annotated[float, typer.Option(help="seconds of publishing per scenario")] = 30.0,
    clock_factor: Annotated[
        float, typer.Option(help="alert timers and delivery backoff this many times faster")
    ] = 20.0,
    postgres_down: Annotated[float, typer.Option(help="seconds PostgreSQL is stopped")] = 30.0,
    broker_down: Annotated[float, typer.Option(help="seconds the Kafka broker is stopped")] = 10.0,
    json_path: Annotated[Path | None, typer.Option("--json", help="write the figures here")] = None,
    logs: Annotated[Path | None, typer.Option(help="keep each run's logs under here")] = None,
) -> None:
    """Kill each role, restart the Kafka broker, stop PostgreSQL, take the dispatch and
    broadcast endpoints down for ten minutes (on the compressed clock), each mid-stream, and
    compare with a fault-free run of the same input."""
    from benchmarks.faults import SCENARIOS, Plan, report, run

    names = scenario or list(SCENARIOS)
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        raise fail(f"no scenario {', '.join(unknown)}; there are {', '.join(SCENARIOS)}")
    plan = Plan(devices=devices, duration_s=duration, clock_factor=clock_factor,
                postgres_down_s=postgres_down, broker_down_s=broker_down, logs=logs)  # fmt: skip
    outcomes = run(site_or_fail(Settings()), plan, names)
    console.print(report(outcomes, plan, json_path), highlight=False, soft_wrap=True)
    if not all(o.ok for o in outcomes):
        raise typer.Exit(code=1)
