"""HTTP sinks of the outbox relay: the grid dispatch API and the emergency broadcast system.

Every request carries the message's idempotency key and an HMAC signature over its body
(``gridwatch.signing``). 2xx is delivered; 408, 425, 429 and 5xx, time-outs and refused
connections are retried by the relay; any other 4xx is a permanent refusal.
"""

from __future__ import annotations

import aiohttp

from alerts.outbox import DeliveryError, Message
from gridwatch.signing import IDEMPOTENCY_HEADER, sign

RETRYABLE = frozenset({408, 425, 429})

DISPATCH = "dispatch"
BROADCAST = "broadcast"


class HttpSender:
    def __init__(self, url: str, secret: bytes, timeout_s: float) -> None:
        self.url = url
        self.secret = secret
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, message: Message) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        headers = {
            "Content-Type": message.content_type,
            IDEMPOTENCY_HEADER: message.key,
            **sign(self.secret, message.body),
        }
        try:
            async with self._session.post(self.url, data=message.body, headers=headers) as resp:
                if resp.status < 300:
                    return
                text = (await resp.text())[:300]
        except (TimeoutError, aiohttp.ClientError) as err:
            raise DeliveryError(f"{self.url}: {err!r}") from err
        permanent = resp.status < 500 and resp.status not in RETRYABLE
        raise DeliveryError(f"{self.url}: HTTP {resp.status} {text}", permanent=permanent)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
