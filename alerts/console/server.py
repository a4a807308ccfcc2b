"""Running the console: an aiohttp site on a host and port, until told to stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from aiohttp import web

from alerts.console.web import Console, build_app

log = logging.getLogger(__name__)
BEAT_S = 1.0


async def start(console: Console, host: str, port: int = 0) -> tuple[web.AppRunner, str]:
    """Start serving; returns the runner (``cleanup()`` stops it) and the base URL."""
    # Live-alert streams end when the app shuts down, so a stop never waits long for them.
    runner = web.AppRunner(build_app(console), shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    url = f"http://{host}:{bound}"
    log.info("console listening on %s", url)
    return runner, url


async def serve(
    console: Console,
    host: str,
    port: int,
    stop: asyncio.Event,
    beat: Callable[[], None] | None = None,
) -> None:
    runner, _url = await start(console, host, port)
    try:
        while not stop.is_set():
            if beat is not None:
                beat()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), BEAT_S)
    finally:
        await runner.cleanup()
