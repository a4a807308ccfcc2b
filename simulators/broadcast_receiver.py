"""A simulated emergency broadcast platform (应急广播平台): takes CAP 1.2 and EBM messages,
records each one (CAP as ``.xml``), "plays" it and reports the broadcast state (EBM BrdState:
2 playing, 3 played) back to gridwatch, signed, retrying until it is taken. A CAP message whose
enveloped XML signature is missing or does not verify against the configured certificate is
refused (422, reason logged) and recorded nowhere.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from cryptography import x509

from gridwatch.events import new_id
from gridwatch.signing import sign
from gridwatch.xml_signature import SignatureError, verify
from simulators.recorder import Faults, RecordingServer

log = logging.getLogger(__name__)
PLAYED = 3


@dataclass
class BroadcastReceiver:
    secret: bytes
    callback_url: str | None
    certificate: x509.Certificate  # the CAP sender's: every CAP message must be signed by it
    record_dir: Path | None = None
    play_s: float = 0.3
    faults: Faults = field(default_factory=Faults)
    played: list[str] = field(default_factory=list)
    _server: RecordingServer = field(init=False)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self, port: int = 0) -> str:
        self._server = RecordingServer(
            "broadcast", self.secret, self.record_dir, self.faults, check=self._check_signature
        )
        return await self._server.start("/v1/broadcasts", self._on_message, port)

    @property
    def refused(self) -> list[str]:
        return self._server.refused

    def _check_signature(self, body: bytes, content_type: str) -> str | None:
        if "xml" not in content_type:
            return None  # EBM JSON is authenticated by the request signature alone
        try:
            verify(body, self.certificate)
        except SignatureError as err:
            return str(err)
        return None

    @property
    def received(self) -> dict[str, bytes]:
        return self._server.received

    async def outage(self, seconds: float) -> None:
        await self._server.outage(seconds)

    async def stop(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.stop()

    async def _on_message(self, key: str, body: bytes, content_type: str) -> dict[str, object]:
        if "json" not in content_type:
            return {"received": key, "BrdState": 1}  # CAP: taken; the EBM twin drives playout
        ebm = json.loads(body)
        case_id = key.split(".", 1)[0]
        task = asyncio.create_task(self._play(ebm["EBMID"], case_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return {"received": key, "EBMID": ebm["EBMID"], "BrdState": 2}

    async def _play(self, ebm_id: str, case_id: str) -> None:
        await asyncio.sleep(self.play_s)
        self.played.append(ebm_id)
        if self.callback_url is None:
            return
        body = json.dumps(
            {
                "event_id": str(new_id()),
                "case_id": case_id,
                "EBMID": ebm_id,
                "BrdState": PLAYED,
                "actor": "broadcast-platform",
                "ts": datetime.now(UTC).isoformat(),
            }
        ).encode()
        delay = 0.2
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            for _ in range(20):
                try:
                    headers = {
                        "Content-Type": "application/json",
                        **sign(self.secret, "POST", self.callback_url, body),
                    }
                    async with session.post(self.callback_url, data=body, headers=headers) as r:
                        if r.status < 300:
                            return
                except (TimeoutError, aiohttp.ClientError) as err:
                    log.warning("broadcast feedback for %s failed: %r", ebm_id, err)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
