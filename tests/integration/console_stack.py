"""The console on a real server in a thread of its own, against a real database: what the
console's integration and browser tests share."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psycopg

from alerts.console.accounts import Role, add_operator
from alerts.console.server import start
from alerts.console.web import Console
from gridwatch.site import Site

T = TypeVar("T")
OFFICER, OFFICER_PASSWORD = "值班员张伟", "correct horse battery staple"
VIEWER, VIEWER_PASSWORD = "viewer-li", "viewer password 2026"


class LoopThread:
    """An event loop running in a daemon thread; ``run`` waits for a coroutine's result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@dataclass(frozen=True)
class RunningConsole:
    url: str
    database_url: str
    console: Console
    loop: LoopThread


def add_operators(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        add_operator(conn, OFFICER, Role.DUTY_OFFICER, OFFICER_PASSWORD)
        add_operator(conn, VIEWER, Role.VIEWER, VIEWER_PASSWORD)


@contextmanager
def running_console(
    site: Site,
    database_url: str,
    evidence_dir: Path,
    *,
    loop: LoopThread | None = None,
    public_url: str | None = None,
) -> Iterator[RunningConsole]:
    own = loop is None
    thread = loop or LoopThread()

    async def begin() -> tuple[Any, str, Console]:
        console = Console(site, database_url, evidence_dir, public_url=public_url)
        runner, url = await start(console, "127.0.0.1")
        return runner, url, console

    runner, url, console = thread.run(begin())
    try:
        yield RunningConsole(url, database_url, console, thread)
    finally:
        thread.run(runner.cleanup())
        if own:
            thread.close()
