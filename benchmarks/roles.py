"""The sensor path's roles on embedded services, each its own process as in production, for the
benchmarks: the services with their topics and schema, then the MQTT bridge, the rules worker
(Faust) and the store writer, watched and restarted when one dies — every restart counted.

A role has died when its process exited, or when an uncaught exception ended one of its threads
while the process lives on (the bridge's MQTT network thread, say): a role that no longer does
its work is a dead role, whether or not its PID remains.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import yaml

from gridwatch import topics
from gridwatch.processes import ServiceProcess
from gridwatch.services import EmbeddedServices, ServiceUrls, create_topics
from gridwatch.settings import Settings
from gridwatch.site import Site
from gridwatch.store.schema import ensure_schema

log = logging.getLogger(__name__)

# Role name → the ``gridwatch`` command that runs it; its log is ``<first word>.log``.
COMMANDS = {"bridge": ("ingest", "mqtt"), "rules": ("streams", "worker"),
            "writer": ("store", "writer")}  # fmt: skip
# What Python prints when an exception ends a thread other than the main one.
THREAD_DIED = "Exception in thread"


@contextlib.contextmanager
def embedded_pipeline(work: Path) -> Iterator[ServiceUrls]:
    """Fresh embedded services under ``work``, with every topic and the schema created."""
    os.chmod(work, 0o755)  # noqa: S103 - the postgres account must traverse it
    with EmbeddedServices(Settings(), work / "services") as urls:
        create_topics(urls.kafka_bootstrap, topics.ALL, 1)
        with psycopg.connect(urls.database_url) as conn:
            ensure_schema(conn)
        yield urls


class Role:
    """One role's process; ``restart`` starts it again, appending to the same log."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], work: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.work = work
        self.log_path = work / f"{COMMANDS[name][0]}.log"
        self.restarts = 0
        self._log_offset = 0
        self.process = self._start()

    def _start(self) -> ServiceProcess:
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        return ServiceProcess(self.name, self.argv, self.log_path, cwd=self.work, env=self.env)

    def died(self) -> str | None:
        """Why the role is dead (its exit code, or the exception that ended one of its threads,
        with the last line of its log), or None."""
        try:
            with self.log_path.open("rb") as f:
                f.seek(self._log_offset)
                lines = f.read().decode(errors="replace").splitlines()
        except OSError:
            lines = []
        code = self.process.popen.poll()
        if code is not None:
            last = next((line.strip() for line in reversed(lines) if line.strip()), "")
            return f"exited with code {code}" + (f": {last[:160]}" if last else "")
        if any(line.startswith(THREAD_DIED) for line in lines):
            # The traceback's own last line: the exception that ended the thread.
            start = next(i for i, line in enumerate(lines) if line.startswith(THREAD_DIED))
            error = next((line for line in lines[start + 1 :] if line and not line[0].isspace()
                          and not line.startswith("Traceback")), "")  # fmt: skip
            return f"a thread died of an uncaught exception: {error[:160]}"
        return None

    def restart(self) -> None:
        self.process.stop(grace=2.0)
        self.restarts += 1
        self.process = self._start()

    def stop(self) -> None:
        self.process.stop(grace=5.0)


class Roles:
    """The roles of the sensor path against ``urls``, with ``site`` as their site file.

    ``watch()`` checks them every ``interval`` seconds in a thread of its own and restarts a
    dead one (at most ``max_restarts`` times each, so a role that dies on every start does not
    take the run with it); ``restarts`` says how often each was restarted.
    """

    def __init__(
        self,
        urls: ServiceUrls,
        site: Site,
        work: Path,
        names: tuple[str, ...] = tuple(COMMANDS),
        max_restarts: int = 10,
    ) -> None:
        site_file = work / "site.yaml"
        site_file.write_text(yaml.safe_dump(site.model_dump(mode="json")), encoding="utf-8")
        env = {**os.environ, "GRIDWATCH_DATABASE_URL": urls.database_url,
               "GRIDWATCH_KAFKA_BOOTSTRAP": urls.kafka_bootstrap,
               "GRIDWATCH_MQTT_URL": f"mqtt://{urls.mqtt_host}:{urls.mqtt_port}",
               "GRIDWATCH_SITE": str(site_file)}  # fmt: skip
        extra = {"rules": ["--datadir", str(work / "faust")]}
        self.max_restarts = max_restarts
        self.deaths: list[str] = []  # "role: why", in order
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self.roles = [
            Role(name, [sys.executable, "-m", "gridwatch", *COMMANDS[name], *extra.get(name, [])],
                 env, work)
            for name in names
        ]  # fmt: skip

    @property
    def restarts(self) -> dict[str, int]:
        return {role.name: role.restarts for role in self.roles}

    def log(self, name: str) -> Path:
        return next(role.log_path for role in self.roles if role.name == name)

    def check(self) -> None:
        """Restart each dead role that has restarts left."""
        with self._lock:
            for role in self.roles:
                why = role.died()
                if why is None or role.restarts >= self.max_restarts:
                    continue
                log.warning("%s %s; restarting it", role.name, why)
                self.deaths.append(f"{role.name}: {why}")
                role.restart()

    def down(self) -> list[str]:
        """The roles dead now (those out of restarts stay dead)."""
        with self._lock:
            return [role.name for role in self.roles if role.died() is not None]

    def watch(self, interval: float = 0.5) -> None:
        def loop() -> None:
            while not self._stop.wait(interval):
                self.check()

        self._watcher = threading.Thread(target=loop, name="role-watch", daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(10)
        with self._lock:
            for role in self.roles:
                role.stop()


def wait_logged(log_file: Path, marker: str, timeout: float) -> bool:
    """Until a role has logged ``marker``; on a busy machine a fixed wait is not always enough."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log_file.exists() and marker in log_file.read_text(encoding="utf-8", errors="replace"):
            return True
        time.sleep(0.5)
    return False
