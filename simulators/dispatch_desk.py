"""A simulated grid dispatch desk (网格化服务管理平台) behind the dispatch API.

The API is documented in docs/dispatch-api.yaml. The desk accepts signed case messages and then,
as the departments would, works each dispatched case through the loop by a policy: accept,
handle, report, verify, close, with delays, a rework for some kinds, no acceptance at all
for others (the escalation path) and, for some departments, 回退 (the case is returned and
goes to the next department). Each step is called back, signed, and retried until taken.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from gridwatch.events import new_id
from gridwatch.signing import sign
from simulators.recorder import Faults, RecordingServer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeskPolicy:
    step_delay_s: float = 0.3  # between two steps of one case
    rework_kinds: tuple[str, ...] = ()  # cases of these kinds fail verification once
    ignore_kinds: tuple[str, ...] = ()  # never accepted: the escalation path
    return_departments: tuple[str, ...] = ()  # these departments return every case (回退)


@dataclass
class DispatchDesk:
    secret: bytes
    callback_url: str
    record_dir: Path | None = None
    policy: DeskPolicy = DeskPolicy()
    faults: Faults = field(default_factory=Faults)
    closed: set[str] = field(default_factory=set)
    _server: RecordingServer = field(init=False)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _seq: dict[str, int] = field(default_factory=dict)
    _session: aiohttp.ClientSession | None = None

    async def start(self, port: int = 0) -> str:
        self._server = RecordingServer("dispatch", self.secret, self.record_dir, self.faults)
        return await self._server.start("/v1/cases", self._on_case, port)

    @property
    def received(self) -> dict[str, bytes]:
        return self._server.received

    async def outage(self, seconds: float) -> None:
        await self._server.outage(seconds)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.stop()
        if self._session is not None:
            await self._session.close()

    async def _on_case(self, key: str, body: bytes, _content_type: str) -> dict[str, object]:
        message = json.loads(body)
        case_id, action, kind = message["case_id"], message["action"], message["kind"]
        if action == "dispatch" and message.get("department") in self.policy.return_departments:
            task = asyncio.create_task(self._return(case_id, message["department"]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif action == "dispatch" and kind not in self.policy.ignore_kinds:
            task = asyncio.create_task(self._work(case_id, kind, message["tier"]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return {"case_id": case_id, "received": key}

    async def _work(self, case_id: str, kind: str, tier: str) -> None:
        steps = [("accept", "accepted", f"{tier} 签收"), ("handle", "handling", "到场处置")]
        steps += [("report", "reported", "处置完毕，反馈")]
        if kind in self.policy.rework_kinds:
            steps += [
                ("rework", "handling", "核查未通过，返工"),
                ("report", "reported", "返工完毕"),
            ]
        steps += [("verify", "verified", "网格员核查通过"), ("close", "closed", "结案")]
        for action, state, note in steps:
            await asyncio.sleep(self.policy.step_delay_s)
            await self._callback(case_id, action, state, note)
        self.closed.add(case_id)

    async def _return(self, case_id: str, department: str) -> None:
        await asyncio.sleep(self.policy.step_delay_s)
        await self._callback(case_id, "return", "registered", f"{department} 回退：不属本部门职责")

    async def _callback(self, case_id: str, action: str, state: str, note: str) -> None:
        seq = self._seq[case_id] = self._seq.get(case_id, 0) + 1
        body = json.dumps(
            {
                "event_id": str(new_id()),
                "case_id": case_id,
                "seq": seq,
                "action": action,
                "state": state,
                "actor": "dispatch-desk",
                "ts": datetime.now(UTC).isoformat(),
                "note": note,
            },
            ensure_ascii=False,
        ).encode()
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        delay = 0.2
        while True:  # a callback is retried until gridwatch has taken it
            try:
                headers = {
                    "Content-Type": "application/json",
                    **sign(self.secret, "POST", self.callback_url, body),
                }
                async with self._session.post(self.callback_url, data=body, headers=headers) as r:
                    if r.status < 300:
                        return
                    log.warning("callback for %s answered %s", case_id, r.status)
            except (TimeoutError, aiohttp.ClientError) as err:
                log.warning("callback for %s failed: %r", case_id, err)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
