"""The pipeline's roles as processes on embedded services, as in production: what the sensor,
fuzz and fault benchmarks share.

``embedded_pipeline`` starts fresh services with the schema. ``Roles`` starts each role by its
compose service name (``ingest-mqtt`` runs ``gridwatch ingest mqtt``, …) as its own process,
with its output in ``<work>/<role>.log``, and supervises them as compose's
``restart: unless-stopped`` does: a dead role is recorded with its cause and started again after
a delay, at most ``max_restarts`` times, every restart counted.

A role has died when its process exited, or when an uncaught exception ended one of its threads
while the process lives on (the bridge's MQTT network thread, say): a role that no longer does
its work is a dead role, whether or not its PID remains.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from gridwatch import topics
from gridwatch.processes import ServiceProcess, accepts_connections
from gridwatch.services import EmbeddedServices, ServiceUrls, create_topics
from gridwatch.settings import Settings
from gridwatch.site import Site
from gridwatch.store.schema import ensure_schema

log = logging.getLogger(__name__)

# Each role by its compose service name (also its heartbeat's name), and its command.
COMMANDS: dict[str, tuple[str, ...]] = {
    "ingest-mqtt": ("ingest", "mqtt"),
    "streams-worker": ("streams", "worker"),
    "alerts-engine": ("alerts", "engine"),
    "alerts-relay": ("alerts", "relay"),
    "store-writer": ("store", "writer"),
}
SENSOR_ROLES = ("ingest-mqtt", "streams-worker", "store-writer")
# The roles that consume in a group, and what a consumer logs on each assignment: "Setting newly
# assigned partitions {TopicPartition(topic='gw.readings', partition=1), …} for group …".
CONSUMERS = ("streams-worker", "alerts-engine", "alerts-relay", "store-writer")
ASSIGNMENT = "Setting newly assigned partitions"
RESTART_DELAY_S = 1.0
MAX_RESTARTS = 10
CHECK_S = 0.2  # how often the supervisor looks at the roles
# What Python prints when an exception ends a thread other than the main one; the traceback
# ends with the exception's (dotted) name and its message, where a log line starts otherwise.
THREAD_DIED = "Exception in thread"
TRACEBACK = "Traceback (most recent call last):"
EXCEPTION_LINE = re.compile(r"[A-Za-z_][\w.]*(:|$)")


def role_env(urls: ServiceUrls, site_file: Path, **extra: str) -> dict[str, str]:
    """The environment of a role on ``urls`` with ``site_file``, plus ``extra`` variables."""
    return {
        **os.environ,
        "GRIDWATCH_DATABASE_URL": urls.database_url,
        "GRIDWATCH_KAFKA_BOOTSTRAP": urls.kafka_bootstrap,
        "GRIDWATCH_MQTT_URL": f"mqtt://{urls.mqtt_host}:{urls.mqtt_port}",
        "GRIDWATCH_SITE": str(site_file),
        **extra,
    }


def write_site(site: Site, work: Path) -> Path:
    """``site`` as ``<work>/site.json``, the roles' site file: JSON, since a bench site of many
    thousand devices takes minutes to write or read as YAML."""
    path = work / "site.json"
    path.write_text(json.dumps(site.model_dump(mode="json")), encoding="utf-8")
    return path


def mqtt_broker() -> str:
    """The MQTT broker the embedded services run."""
    return "mosquitto" if shutil.which("mosquitto") else "amqtt"


def mqtt_publisher(urls: ServiceUrls, name: str, inflight: int = 1000) -> mqtt.Client:
    """A connected client, its network loop running, with up to ``inflight`` QoS 1 messages
    unacknowledged at once and any number queued behind them."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{name}-{uuid.uuid4().hex[:8]}")
    client.max_inflight_messages_set(inflight)
    client.max_queued_messages_set(0)  # 0: no limit
    client.connect(urls.mqtt_host, urls.mqtt_port)
    client.loop_start()
    return client


@contextlib.contextmanager
def embedded_pipeline(
    work: Path, settings: Settings | None = None
) -> Iterator[tuple[EmbeddedServices, ServiceUrls]]:
    """Fresh services under ``work`` (those ``settings`` point at are used instead), with every
    topic and the schema created."""
    os.chmod(work, 0o755)  # noqa: S103 - the postgres account must traverse it
    services = EmbeddedServices(settings or Settings(), work / "services")
    with services as urls:
        with psycopg.connect(urls.database_url) as conn:
            ensure_schema(conn)
        yield services, urls


class Role:
    """One role's process; each ``start`` appends to the same log, and what ended the process is
    read from what it wrote since."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path) -> None:
        self.name, self.argv, self.log = name, list(argv), log_path
        self.process: ServiceProcess | None = None
        self.restarts = 0
        self._read = 0  # the log's bytes read so far
        self._last = ""  # the last non-blank line since the start
        self._thread_died = False
        self._traceback = False  # its traceback has begun: the exception line comes after it
        self._thread_error = ""  # the exception that ended the thread, once it is written

    def start(self, env: Mapping[str, str], cwd: Path) -> None:
        self._read = self.log.stat().st_size if self.log.exists() else 0
        self._last, self._thread_error = "", ""
        self._thread_died = self._traceback = False
        self.process = ServiceProcess(self.name, self.argv, self.log, cwd=cwd, env=env)

    def died(self) -> str | None:
        """Why the running process is dead (its exit code with the last line of its log, or
        the exception that ended one of its threads), or None."""
        assert self.process is not None  # noqa: S101 - only a started role can die
        code = self.process.popen.poll()
        self._scan(whole=code is not None)  # an exited process wrote its last line whole
        if code is not None:
            return f"exited with code {code}" + (f": {self._last[:160]}" if self._last else "")
        if self._thread_error:
            return f"a thread died of an uncaught exception: {self._thread_error[:160]}"
        return None

    def _scan(self, whole: bool) -> None:
        """Read the log's new lines (only up to the last line break unless ``whole``)."""
        try:
            with self.log.open("rb") as f:
                f.seek(self._read)
                data = f.read()
        except OSError:
            return
        if not whole:
            data = data[: data.rfind(b"\n") + 1]
        self._read += len(data)
        for line in data.decode(errors="replace").splitlines():
            if line.strip():
                self._last = line.strip()
            # other threads' lines may interleave with the dying thread's: only the first
            # unindented line after its traceback began is the exception
            if line.startswith(THREAD_DIED):
                self._thread_died = True
            elif self._thread_died and line.startswith(TRACEBACK):
                self._traceback = True
            elif self._traceback and not self._thread_error and EXCEPTION_LINE.match(line):
                self._thread_error = line.strip()

    def stop(self, grace: float) -> None:
        if self.process is not None:
            self.process.stop(grace)
            self.process = None


def replica_names(name: str, replicas: int) -> list[str]:
    """The processes of a role run ``replicas`` times, as ``docker compose --scale`` names
    them apart: the role's name, then ``<name>-2``, ``<name>-3``, …"""
    return [name] + [f"{name}-{i}" for i in range(2, replicas + 1)]


class Roles:
    """The roles ``names`` on ``env``, each its own process in ``work`` (``options``: more
    arguments by role; ``replicas``: how many processes of a role share its work, each named
    by ``replica_names`` with a Faust directory of its own), supervised until ``stop``: each
    death is recorded in ``deaths`` ("role: why") and the role started again after
    ``restart_delay_s``, at most ``max_restarts`` times (a role that dies on every start does
    not take the run with it; None: without a limit, as compose's ``restart:
    unless-stopped``); ``restarts`` counts them.
    """

    def __init__(
        self,
        names: Sequence[str],
        env: Mapping[str, str],
        work: Path,
        *,
        options: Mapping[str, Sequence[str]] | None = None,
        replicas: Mapping[str, int] | None = None,
        max_restarts: int | None = MAX_RESTARTS,
        restart_delay_s: float = RESTART_DELAY_S,
    ) -> None:
        self.env, self.work = dict(env), work
        self.max_restarts, self.restart_delay_s = max_restarts, restart_delay_s
        options = options or {}
        self.roles: dict[str, Role] = {}
        for base in names:
            for name in replica_names(base, (replicas or {}).get(base, 1)):
                argv = [sys.executable, "-m", "gridwatch", *COMMANDS[base], *options.get(base, ())]
                if base == "streams-worker":
                    argv += ["--datadir", str(work / name.replace(base, "faust"))]
                self.roles[name] = Role(name, argv, work / f"{name}.log")
        self.deaths: list[str] = []  # "role: why", in order
        self._due: dict[str, float] = {}  # a dead role → when it starts again
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        for role in self.roles.values():
            role.start(self.env, work)
        # Restarts come from this thread, which lives until ``stop``: a role's process is
        # killed when the thread that started it ends.
        self._supervisor = threading.Thread(target=self._supervise, name="roles", daemon=True)
        self._supervisor.start()

    @property
    def restarts(self) -> dict[str, int]:
        return {name: role.restarts for name, role in self.roles.items()}

    def _supervise(self) -> None:
        try:
            while not self._stopping.wait(CHECK_S):
                with self._lock:
                    self._check()
        finally:
            with self._lock:
                for role in self.roles.values():  # all asked at once, then each waited for
                    if role.process is not None:
                        role.process.signal_group(signal.SIGTERM)
                for role in self.roles.values():
                    role.stop(grace=5.0)

    def _check(self) -> None:
        now = time.monotonic()
        for role in self.roles.values():
            if role.process is None:
                if now >= self._due.get(role.name, float("inf")):
                    del self._due[role.name]
                    role.restarts += 1
                    role.start(self.env, self.work)
                continue
            why = role.died()
            if why is None:
                continue
            log.warning("%s %s", role.name, why)
            self.deaths.append(f"{role.name}: {why}")
            role.stop(grace=2.0)  # a process whose thread died lives on: end it, group and all
            if self.max_restarts is None or role.restarts < self.max_restarts:
                self._due[role.name] = now + self.restart_delay_s

    def down(self) -> list[str]:
        """The roles not running now: dead, or waiting to start again (those out of restarts
        stay down)."""
        with self._lock:
            return [
                name
                for name, role in self.roles.items()
                if role.process is None or role.died() is not None
            ]

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal the role's process group (SIGKILL: no flush, no goodbye to any broker)."""
        with self._lock:
            process = self.roles[name].process
            if process is not None:
                process.signal_group(sig)

    def wait_restarted(self, name: str, restarts: int, timeout: float) -> bool:
        """Until the role was started again ``restarts`` times in all, and runs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                role = self.roles[name]
                if role.restarts >= restarts and role.process is not None:
                    return True
            time.sleep(0.05)
        return False

    def wait_logged(self, name: str, marker: str, timeout: float) -> bool:
        """Until the role has logged ``marker``; on a busy machine a fixed wait is not always
        enough."""
        path = self.roles[name].log
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.exists() and marker in path.read_text(encoding="utf-8", errors="replace"):
                return True
            time.sleep(0.5)
        return False

    def stop(self) -> None:
        """Stop supervising, and every role."""
        self._stopping.set()
        self._supervisor.join(60)


def sensor_roles(
    urls: ServiceUrls,
    site: Site,
    work: Path,
    max_restarts: int = MAX_RESTARTS,
    *,
    partitions: int = 1,
    workers: int = 1,
    writers: int = 1,
    **extra: str,
) -> Roles:
    """The sensor path's roles (bridge, ``workers`` rules workers, ``writers`` store writers)
    on ``urls`` with ``site`` and ``partitions`` per topic (``extra``: more variables)."""
    env = role_env(urls, write_site(site, work), GRIDWATCH_TOPIC_PARTITIONS=str(partitions),
                   **extra)  # fmt: skip
    replicas = {"streams-worker": workers, "store-writer": writers}
    return Roles(SENSOR_ROLES, env, work, replicas=replicas, max_restarts=max_restarts)


class BackgroundLoop:
    """An asyncio loop in a thread, for servers and roles that run while the caller drives them."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def restart_postgres(
    pgdata: Path, database_url: str, while_down: Callable[[], None]
) -> subprocess.Popen[bytes]:
    """Stop the server (fast shutdown: clients are cut off mid-transaction), call ``while_down``,
    then start the same server again, with the same command line and account. The caller stops
    the returned process."""
    pid = int((pgdata / "postmaster.pid").read_text().split()[0])
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    os.kill(pid, signal.SIGINT)
    while Path(f"/proc/{pid}").exists() and b"zombie" not in _state(pid):
        time.sleep(0.05)
    while_down()
    time.sleep(1.0)
    owner = pgdata.stat()
    server = subprocess.Popen(  # noqa: S603 - the server's own command line
        argv, cwd=pgdata, user=owner.st_uid, group=owner.st_gid, start_new_session=True
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(database_url, connect_timeout=2):
                return server
        except psycopg.OperationalError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("PostgreSQL did not come back")


def restart_kafka(services: EmbeddedServices, bootstrap: str, down_s: float) -> ServiceProcess:
    """Stop the embedded broker, wait ``down_s``, start it again on the same port and create
    the topics, as the compose file's kafka-init does for a new broker. The caller stops the
    returned process."""
    old = services.processes["kafka"]
    argv = [str(arg) for arg in old.popen.args]  # type: ignore[union-attr]
    old.stop()
    time.sleep(down_s)
    broker = ServiceProcess(old.name, argv, old.log_path)
    port = int(bootstrap.rpartition(":")[2])
    broker.wait_until(lambda: accepts_connections(port), 30, "accept connections")
    create_topics(bootstrap, topics.ALL, 1)
    return broker


def _state(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/status").read_bytes()
    except FileNotFoundError:
        return b"zombie"
