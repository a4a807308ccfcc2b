"""Service processes: free-port claims, readiness probes, and a child process that runs in its
own session, dies with us, and is stopped group-wide."""

from __future__ import annotations

import ctypes
import logging
import os
import pwd
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from gridwatch.errors import ServiceError

log = logging.getLogger(__name__)

HOST = "127.0.0.1"


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


def accepts_connections(port: int, host: str = HOST) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def any_reachable(bootstrap: str, timeout: float) -> bool:
    """Whether one of ``host:port[,host:port]`` accepts TCP within ``timeout`` seconds."""
    addresses = [entry.strip().rpartition(":") for entry in bootstrap.split(",")]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for host, _, port in addresses:
            if port.isdigit() and accepts_connections(int(port), host.strip("[]")):
                return True
        time.sleep(0.2)
    return False


# MQTT 3.1.1 CONNECT (clean session, empty client id) and DISCONNECT: a handshake proves the
# broker serves MQTT, where a bare TCP connect only proves a listener (and logs an error in amqtt).
_MQTT_CONNECT = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x0a\x00\x00"
_MQTT_CONNACK = b"\x20\x02"  # then session-present flag, return code
_MQTT_DISCONNECT = b"\xe0\x00"


def answers_mqtt(port: int) -> bool:
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


class ServiceProcess:
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
        env: Mapping[str, str] | None = None,
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
                    env=env,
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

    def signal_group(self, signum: int) -> None:
        """Signal the process and every process of its session's group."""
        try:
            os.killpg(self.popen.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass  # the group is gone already

    def stop(self, grace: float = 10.0) -> None:
        """Ask politely, then kill the whole group — also when interrupted while waiting."""
        try:
            if self.popen.poll() is None:
                self.signal_group(self.stop_signal)
                self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0fs; killing it", self.name, grace)
        finally:
            self.signal_group(signal.SIGKILL)  # children that outlived their leader, too
            self.popen.wait()
