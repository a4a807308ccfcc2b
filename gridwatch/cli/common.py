"""Shared by the command modules: the typer apps, settings and site loading, services."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Iterator
from pathlib import Path

import typer
from rich.console import Console

from gridwatch.errors import GridwatchError
from gridwatch.mqtt_access import MqttAccess, parse_mqtt_url
from gridwatch.services import EmbeddedServices, ServiceUrls
from gridwatch.settings import Settings
from gridwatch.site import Site, load_site

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
train_app = typer.Typer(help="Model training (pip install gridwatch[train]).", no_args_is_help=True)
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
    (train_app, "train"),
):
    app.add_typer(sub, name=name)

console = Console()
log = logging.getLogger("gridwatch")
LEVEL_STYLE = {"yellow": "bold yellow", "orange": "bold dark_orange", "red": "bold red"}


def fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code=2)


def site_or_fail(settings: Settings) -> Site:
    try:
        return load_site(settings.site)
    except GridwatchError as err:
        raise fail(str(err)) from err


def setup_logging(settings: Settings, path: Path | None = None) -> None:
    """Log lines from ``settings.log_level`` up to ``path``, or else to stderr: a role's
    output, which its container keeps. Called once, first thing, by each role."""
    handler = logging.FileHandler(path, encoding="utf-8") if path else logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)


@contextlib.contextmanager
def embedded_services(settings: Settings, run_dir: Path) -> Iterator[ServiceUrls]:
    try:
        with EmbeddedServices(settings, run_dir) as urls:
            yield urls
    except GridwatchError as err:
        raise fail(str(err)) from err


def required_services(settings: Settings) -> ServiceUrls:
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
        raise fail(f"set {', '.join(missing)} (or run `gridwatch demo` for embedded services)")
    assert settings.database_url and settings.kafka_bootstrap and settings.mqtt_url  # noqa: S101
    try:
        broker = parse_mqtt_url(settings.mqtt_url)
    except GridwatchError as err:
        raise fail(str(err)) from err
    return ServiceUrls(
        database_url=settings.database_url.get_secret_value(),
        kafka_bootstrap=settings.kafka_bootstrap,
        mqtt_host=broker.host,
        mqtt_port=broker.port,
    )


def mqtt_access(settings: Settings) -> MqttAccess:
    """The MQTT login and TLS of the settings; a contradiction in them stops the command."""
    try:
        return MqttAccess.from_settings(settings)
    except GridwatchError as err:
        raise fail(str(err)) from err


async def stop_on_signal(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


def steady_memory() -> None:
    """Tune the garbage collector for a role that handles every reading, once it has loaded
    its configuration: what exists now (the site, thousands of sensor models) is moved out of
    the collector's sight, and young collections run every 50,000 allocations instead of 700.
    Most of what a role allocates per message is freed by reference counting alone, and with
    the default thresholds the collector took about a sixth of the rule worker's time."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def all_topics() -> tuple[str, ...]:
    from gridwatch import topics

    return topics.ALL
