"""role_context: what each role's command builds from its settings before touching a service."""

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer

from gridwatch.cli.context import role_context
from gridwatch.settings import SAMPLE_SITE, Settings


@pytest.fixture(autouse=True)
def _root_logging() -> Iterator[None]:
    """role_context sets the root logger up as a role's; the other tests keep pytest's."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


def _settings(tmp_path: Path, **values: object) -> Settings:
    base: dict[str, object] = {
        "database_url": "postgresql://gw@db.example:5432/gridwatch",
        "kafka_bootstrap": "kafka.example:9092",
        "mqtt_url": "mqtt://broker.example:1884",
        "liveness_dir": tmp_path / "liveness",
        "site": SAMPLE_SITE,
    }
    return Settings.model_validate(base | values)


def test_a_role_gets_its_services_site_and_heartbeat(tmp_path: Path) -> None:
    ctx = role_context("alerts-relay", loops=("loop", "relay"), settings=_settings(tmp_path))
    assert ctx.urls.database_url == "postgresql://gw@db.example:5432/gridwatch"
    assert ctx.kafka_bootstrap == ctx.urls.kafka_bootstrap == "kafka.example:9092"
    assert (ctx.urls.mqtt_host, ctx.urls.mqtt_port) == ("broker.example", 1884)
    assert ctx.site.street.code and ctx.site is ctx.site  # loaded once
    # The heartbeat file is the role's, touched only once every loop has beaten.
    assert ctx.heartbeat.path == tmp_path / "liveness" / "alerts-relay.alive"
    ctx.heartbeat.beat("loop")
    assert not ctx.heartbeat.path.exists()
    ctx.heartbeat.beat("relay")
    assert ctx.heartbeat.path.exists()


def test_the_site_is_read_only_when_a_role_uses_it(tmp_path: Path) -> None:
    ctx = role_context("store-writer", settings=_settings(tmp_path, site=tmp_path / "none.yaml"))
    assert ctx.urls.database_url  # the services, without the site
    with pytest.raises(typer.Exit) as err:
        _ = ctx.site
    assert err.value.exit_code == 2


def test_a_missing_service_url_stops_the_role_when_it_asks_with_what_to_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ctx = role_context("ingest-mqtt", settings=_settings(tmp_path, mqtt_url=None))
    assert ctx.settings.mqtt_url is None  # nothing checked yet: a role may refuse a key first
    with pytest.raises(typer.Exit) as err:
        _ = ctx.urls
    assert err.value.exit_code == 2
    assert "GRIDWATCH_MQTT_URL" in capsys.readouterr().out
    # Tables wanted: the database URL is checked before any topic is created.
    with pytest.raises(typer.Exit):
        role_context("store-writer", settings=_settings(tmp_path, mqtt_url=None)).prepare(
            schema=True
        )


def test_a_camera_worker_needs_kafka_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    only_kafka = _settings(tmp_path, database_url=None, mqtt_url=None)
    assert role_context("camera-CAM-001", settings=only_kafka).kafka_bootstrap == (
        "kafka.example:9092"
    )
    no_kafka = role_context("camera-CAM-001", settings=_settings(tmp_path, kafka_bootstrap=None))
    with pytest.raises(typer.Exit):
        _ = no_kafka.kafka_bootstrap
    assert "GRIDWATCH_KAFKA_BOOTSTRAP" in capsys.readouterr().out
