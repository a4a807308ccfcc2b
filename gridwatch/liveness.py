"""Liveness: a role's own loop touches a heartbeat file; ``gridwatch health ROLE`` reads its age.

The file is touched by the loop that does the work, never by a thread of its own, which would
go on beating while that loop is stuck. A role that runs several loops (the relay: cases and
the outbox) names them, and its file is touched only once every one of them has beaten since
the last touch, so one stuck loop makes the role stale. A container healthcheck runs
``gridwatch health ROLE --max-age S``: exit 0 while the file is younger than ``S`` seconds.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from gridwatch.errors import ConfigError

# Role names become file names: a plain name, never a path.
ROLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
MAIN_LOOP = "main"
DEFAULT_MAX_AGE_S = 30.0


def heartbeat_path(directory: Path, role: str) -> Path:
    if not ROLE_NAME.fullmatch(role):
        raise ConfigError(f"role name {role!r} does not match {ROLE_NAME.pattern}")
    return directory / f"{role}.alive"


def age_s(directory: Path, role: str) -> float | None:
    """Seconds since the role's last heartbeat, or None when it never beat."""
    try:
        return max(time.time() - heartbeat_path(directory, role).stat().st_mtime, 0.0)
    except FileNotFoundError:
        return None


class Heartbeat:
    """Touches ``<directory>/<role>.alive`` at most every ``every_s`` seconds, once each of
    ``loops`` has called ``beat`` since the last touch."""

    def __init__(
        self,
        directory: Path,
        role: str,
        loops: Iterable[str] = (MAIN_LOOP,),
        every_s: float = 1.0,
    ) -> None:
        self.path = heartbeat_path(directory, role)
        self.loops = frozenset(loops)
        self.every_s = every_s
        self._waiting = set(self.loops)
        self._last = float("-inf")
        self._lock = threading.Lock()  # a loop may beat from a worker thread it waits on
        directory.mkdir(parents=True, exist_ok=True)

    def beat(self, loop: str = MAIN_LOOP) -> None:
        with self._lock:
            self._waiting.discard(loop)
            now = time.monotonic()
            if self._waiting or now - self._last < self.every_s:
                return
            self._waiting = set(self.loops)
            self._last = now
        self.path.touch()
