"""Shared fixtures. The real services start once per session, on first use.

``GRIDWATCH_*`` URLs in the environment (or ``.env``) point the tests at running services instead;
whatever is left unset is started locally by ``EmbeddedServices``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from gridwatch.errors import ServiceError
from gridwatch.services import EmbeddedServices, ServiceUrls
from gridwatch.settings import ConsumerGroups, Settings
from gridwatch.site import Site, load_site


@contextmanager
def _run_dir() -> Iterator[Path]:
    """A run directory outside pytest's temp root, kept when the body fails (logs to read).

    As root, PostgreSQL runs as another account that must traverse the run directory's parents,
    and every pytest session that starts meanwhile resets pytest's temp root to mode 0700.
    """
    path = Path(tempfile.mkdtemp(prefix="gridwatch-services-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """A fresh run directory for a test that starts its own EmbeddedServices."""
    with _run_dir() as path:
        yield path


# Tansu answers a new group's first JoinGroup only after half the session timeout, and every
# test joins groups of its own: on the embedded broker the tests' consumers use a short one (a
# member lost is out within three seconds, as the failover tests want anyway). A Kafka of your
# own keeps the defaults, which its minimum session timeout allows.
GROUPS = (
    ConsumerGroups(session_timeout_s=3.0, heartbeat_interval_s=0.5)
    if Settings().kafka_bootstrap is None
    else ConsumerGroups()
)


@pytest.fixture(scope="session", autouse=True)
def consumer_groups() -> Iterator[ConsumerGroups]:
    """``GROUPS``, also for the roles the tests start as processes (they read the settings)."""
    with pytest.MonkeyPatch.context() as env:
        for name, value in GROUPS.model_dump().items():
            env.setenv(f"GRIDWATCH_CONSUMER_GROUPS__{name.upper()}", str(value))
        yield GROUPS


@pytest.fixture(scope="session")
def services() -> Iterator[ServiceUrls]:
    with _run_dir() as path, ExitStack() as stack:
        try:
            urls = stack.enter_context(EmbeddedServices(Settings(), path))
        except ServiceError as err:
            failure = str(err)  # the message is the diagnosis; a traceback adds nothing
        else:
            failure = ""
        if failure:
            pytest.fail(failure, pytrace=False)
        yield urls


@pytest.fixture(scope="session")
def database_url(services: ServiceUrls) -> str:
    return services.database_url


@pytest.fixture(scope="session")
def kafka_bootstrap(services: ServiceUrls) -> str:
    return services.kafka_bootstrap


@pytest.fixture(scope="session")
def mqtt_address(services: ServiceUrls) -> tuple[str, int]:
    return services.mqtt_host, services.mqtt_port


@pytest.fixture
def fresh_database_url(database_url: str) -> Iterator[str]:
    """A database of the test's own on the session's server, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield make_conninfo(database_url, dbname=name)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def tiny_site() -> Site:
    """Two micro-grids in one grid, a gauge in each, a school over the eastern one."""
    return load_site(Path(__file__).parent / "fixtures" / "tiny_site.yaml")


@dataclass(frozen=True)
class DemoRun:
    database_url: str
    summary: dict[str, Any]
    stdout: str
    run_dir: Path

    @property
    def recording(self) -> Path:
        """What ``--record`` wrote, beside the run directory."""
        return self.run_dir.parent / RECORDING_FILE


RECORDING_FILE = "recording.gwrec"


@pytest.fixture(scope="session")
def demo_run(database_url: str) -> Iterator[DemoRun]:
    """`gridwatch demo` run once, as a user runs it, into a database of its own, recording its
    MQTT traffic (``DemoRun.recording``) for the replay test.

    The demo starts its own Kafka-API and MQTT brokers, as on a fresh machine; the database it
    fills is what the end-to-end and dashboard tests read.
    """
    name = f"demo_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(database_url, dbname=name)
    with _run_dir() as path:
        yield run_demo(url, path, "--record", str(path / RECORDING_FILE))


DEMO_ARGS = ("--duration", "12", "--rate", "4")


def run_demo(database_url: str, path: Path, *extra: str) -> DemoRun:
    """`gridwatch demo` with ``DEMO_ARGS`` and ``extra``, its run directory under ``path``."""
    # No service URL of the suite's: the demo starts its own. The real media stay where they are,
    # and the suite's group timeouts hold for the demo's roles too.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("GRIDWATCH_")
        or k == "GRIDWATCH_SHARED_DATA"
        or k.startswith("GRIDWATCH_CONSUMER_GROUPS__")
    }
    env["GRIDWATCH_DATABASE_URL"] = database_url
    summary_file = path / "summary.json"
    run_dir = path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "gridwatch", "demo", "--summary-json", str(summary_file),
         "--run-dir", str(run_dir), *DEMO_ARGS, *extra],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        pytest.fail(
            f"gridwatch demo exited {proc.returncode}:\n{proc.stdout[-4000:]}"
            f"\n{proc.stderr[-4000:]}",
            pytrace=False,
        )
    return DemoRun(database_url, json.loads(summary_file.read_text()), proc.stdout, run_dir)
