"""The pipeline's roles as processes on the embedded services, as in production: what the sensor
benchmark and the fault-injection runs share.

``Roles`` starts each role (``gridwatch ingest mqtt``, …) as its own process, with its output in
``<work>/<role>.log``, and, when asked to supervise, starts again any role that exits, as the
compose file's ``restart: unless-stopped`` does, counting the restarts.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from gridwatch import topics
from gridwatch.processes import ServiceProcess, accepts_connections
from gridwatch.services import EmbeddedServices, ServiceUrls, create_topics

# Each role by its compose service name (also its heartbeat's name), and its command.
COMMANDS: dict[str, tuple[str, ...]] = {
    "ingest-mqtt": ("ingest", "mqtt"),
    "streams-worker": ("streams", "worker"),
    "alerts-engine": ("alerts", "engine"),
    "alerts-relay": ("alerts", "relay"),
    "store-writer": ("store", "writer"),
}
SENSOR_ROLES = ("ingest-mqtt", "streams-worker", "store-writer")
RESTART_DELAY_S = 1.0


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


@dataclass
class Role:
    name: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    exit_codes: list[int] = field(default_factory=list)


class Roles:
    """Role processes in ``work``; ``supervise`` restarts those that exit until ``stop``."""

    def __init__(
        self,
        names: Sequence[str],
        env: Mapping[str, str],
        work: Path,
        *,
        options: Mapping[str, Sequence[str]] | None = None,
        supervise: bool = False,
    ) -> None:
        self.env, self.work = dict(env), work
        options = {"streams-worker": ["--datadir", str(work / "faust")], **(options or {})}
        self.roles = {
            name: Role(
                name,
                [sys.executable, "-m", "gridwatch", *COMMANDS[name], *options.get(name, ())],
                work / f"{name}.log",
            )
            for name in names
        }
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        for role in self.roles.values():
            self._start(role)
        self._supervisor: threading.Thread | None = None
        if supervise:
            self._supervisor = threading.Thread(target=self._supervise, daemon=True)
            self._supervisor.start()

    def _start(self, role: Role) -> None:
        with role.log.open("ab") as log:
            role.popen = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                role.argv,
                env=self.env,
                cwd=self.work,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a kill reaches the role's whole group
            )

    def _supervise(self) -> None:
        while not self._stopping.wait(0.2):
            for role in self.roles.values():
                with self._lock:
                    if role.popen is None or role.popen.poll() is None:
                        continue
                    role.exit_codes.append(role.popen.returncode)
                    role.popen = None
                threading.Timer(RESTART_DELAY_S, self._restart, (role,)).start()

    def _restart(self, role: Role) -> None:
        with self._lock:
            if self._stopping.is_set() or role.popen is not None:
                return
            role.restarts += 1
            self._start(role)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal the role's process group (SIGKILL: no flush, no goodbye to any broker)."""
        with self._lock:
            popen = self.roles[name].popen
            if popen is not None:
                os.killpg(popen.pid, sig)

    def wait_restarted(self, name: str, restarts: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                role = self.roles[name]
                if role.restarts >= restarts and role.popen is not None:
                    return True
            time.sleep(0.05)
        return False

    def wait_logged(self, name: str, marker: str, timeout: float) -> bool:
        return wait_logged(self.roles[name].log, marker, timeout)

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            for role in self.roles.values():
                if role.popen is not None:
                    role.popen.kill()
                    role.popen.wait(30)


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


def wait_logged(log: Path, marker: str, timeout: float) -> bool:
    """Until a role has logged ``marker``; on a busy machine a fixed wait is not always enough."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and marker in log.read_text(encoding="utf-8", errors="replace"):
            return True
        time.sleep(0.5)
    return False


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
