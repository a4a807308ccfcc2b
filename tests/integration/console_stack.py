"""The console on a real server in a thread of its own, against a real database: what the
console's integration and browser tests share."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from alerts.console.accounts import Role, add_operator
from alerts.console.server import start
from alerts.console.web import Console
from benchmarks.pipeline import BackgroundLoop
from gridwatch.site import Site

OFFICER, OFFICER_PASSWORD = "值班员张伟", "correct horse battery staple"
VIEWER, VIEWER_PASSWORD = "viewer-li", "viewer password 2026"


@dataclass(frozen=True)
class RunningConsole:
    url: str
    database_url: str
    console: Console
    loop: BackgroundLoop


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
    loop: BackgroundLoop | None = None,
    public_url: str | None = None,
) -> Iterator[RunningConsole]:
    own = loop is None
    thread = loop or BackgroundLoop()

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
