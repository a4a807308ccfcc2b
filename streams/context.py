"""What every agent module needs: the Faust app, the site, raw topics and the dead-letter path."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import faust
from mode import CrashingSupervisor

from gridwatch import topics
from gridwatch.events import DeadLetter
from gridwatch.site import Site

log = logging.getLogger(__name__)

# Each agent's guard dead-letters whatever goes wrong with a message, so an agent that raises
# has met an outage: stop the worker, and its supervisor restarts it from the uncommitted
# offset. Faust's default restarts the agent in place instead, past the message it failed on.
AGENT_SUPERVISOR = CrashingSupervisor


@dataclass
class StreamContext:
    app: faust.App
    site: Site
    _topics: dict[str, Any] = field(default_factory=dict)

    def topic(self, name: str, *, internal: bool = False) -> Any:
        """A bytes-in, bytes-out topic: agents decode with the pydantic models themselves, so a
        bad message becomes a dead letter instead of a serializer crash."""
        if name not in self._topics:
            self._topics[name] = self.app.topic(
                name, key_serializer="raw", value_serializer="raw", internal=internal
            )
        return self._topics[name]

    async def dead(self, source: str, payload: bytes, reason: str) -> None:
        log.warning("dead-lettering %s message: %s", source, reason)
        letter = DeadLetter.of(f"kafka:{source}", payload, reason)
        await self.topic(topics.DEADLETTER).send(key=source.encode(), value=letter.to_bytes())

    async def send_acknowledged(self, topic: Any, messages: Iterable[tuple[bytes, bytes]]) -> None:
        """Send (key, value) ``messages`` now and wait for Kafka's acknowledgement. A send in an
        agent otherwise waits for the commit of its input's offsets, while a table write (its
        changelog) goes out at once: an agent that writes its state only after this leaves,
        when killed in between, the old state, and its successor derives the same messages
        again (with the same ids, which the consumers take once) instead of none."""
        sent = [await topic.send(key=key, value=value, force=True) for key, value in messages]
        await asyncio.gather(*sent)
