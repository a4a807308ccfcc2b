"""What the simulated downstream systems share: an HTTP server on a free local port that
records every message it accepts, one file per message, and answers by a fault policy.

A message is recorded once per idempotency key: a retried delivery is answered as the first
one was and written nowhere, which is what "exactly once at the receiver" means and what the
fault tests count. Requests are verified as gridwatch verifies its callbacks (signature over
method, path, timestamp, nonce, idempotency key and body; replays refused), and a ``check``
may refuse a body (the broadcast receiver's CAP signature) before anything is recorded.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from gridwatch.signing import IDEMPOTENCY_HEADER, Verifier

log = logging.getLogger(__name__)


@dataclass
class Faults:
    """How the endpoint misbehaves: down (refusing connections) for the first ``down_s``,
    answering 500 to the first ``fail_first`` requests, and taking ``delay_s`` over each of the
    first ``slow_first`` requests (longer than the client waits, it makes the client retry)."""

    down_s: float = 0.0
    fail_first: int = 0
    slow_first: int = 0
    delay_s: float = 0.0


Handler = Callable[[str, bytes, str], Awaitable[dict[str, object]]]
Check = Callable[[bytes, str], str | None]  # body, content type → why it is refused, or None


class RecordingServer:
    def __init__(
        self,
        name: str,
        secret: bytes,
        record_dir: Path | None,
        faults: Faults | None = None,
        check: Check | None = None,
    ) -> None:
        self.name = name
        self.verifier = Verifier(secret)
        self.check = check
        self.record_dir = record_dir
        self.faults = faults or Faults()
        self.received: dict[str, bytes] = {}  # idempotency key → body, first delivery only
        self.refused: list[str] = []  # why each refused request was refused
        self.requests = 0
        self._answers: dict[str, dict[str, object]] = {}
        self._count = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self.url = ""
        self.port = 0

    async def start(self, path: str, handler: Handler, port: int = 0) -> str:
        app = web.Application()
        app.router.add_post(path, self._make_route(handler))
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, "127.0.0.1", port)
        await self._site.start()
        self.port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{self.port}{path}"
        if self.faults.down_s:
            await self._site.stop()  # refuse connections until the outage ends
            asyncio.get_running_loop().call_later(self.faults.down_s, self._come_back)
        return self.url

    async def outage(self, seconds: float) -> None:
        """Refuse connections for ``seconds``, then listen on the same port again."""
        assert self._site is not None  # noqa: S101 - started
        await self._site.stop()
        await asyncio.sleep(seconds)
        self._come_back()

    def _come_back(self) -> None:
        assert self._runner is not None  # noqa: S101 - started
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        asyncio.ensure_future(self._site.start())

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _make_route(self, handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def route(request: web.Request) -> web.Response:
            self.requests += 1
            body = await request.read()
            refusal = self.verifier.verify(request.method, request.raw_path, request.headers, body)
            if refusal is not None:
                return self._refuse(refusal.status, refusal.reason)
            key = request.headers.get(IDEMPOTENCY_HEADER, "")
            if not key:
                return self._refuse(400, "Idempotency-Key is required")
            content_type = request.headers.get("Content-Type", "application/json")
            problem = None if self.check is None else self.check(body, content_type)
            if problem is not None:
                return self._refuse(422, f"{key}: {problem}")
            if self.requests <= self.faults.fail_first:
                return web.json_response({"error": "simulated failure"}, status=500)
            if self.requests <= self.faults.fail_first + self.faults.slow_first:
                await asyncio.sleep(self.faults.delay_s)
            if key in self.received:  # a retry: answered as before, recorded nowhere
                return web.json_response(self._answers.get(key, {"received": key}))
            self.received[key] = body
            self._record(key, body, content_type)
            answer = await handler(key, body, content_type)
            self._answers[key] = answer
            return web.json_response(answer)

        return route

    def _refuse(self, status: int, reason: str) -> web.Response:
        log.warning("%s refused a request (%d): %s", self.name, status, reason)
        self.refused.append(reason)
        return web.json_response({"error": reason}, status=status)

    def _record(self, key: str, body: bytes, content_type: str) -> None:
        if self.record_dir is None:
            return
        self.record_dir.mkdir(parents=True, exist_ok=True)
        ext = ".xml" if "xml" in content_type else ".json"
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in key)
        path = self.record_dir / f"{next(self._count):04d}-{safe}{ext}"
        if ext == ".json":
            body = json.dumps(json.loads(body), ensure_ascii=False, indent=2).encode()
        path.write_bytes(body)
