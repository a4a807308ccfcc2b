"""HTTP sinks of the outbox relay: the grid dispatch API and the emergency broadcast system.

Every request carries the message's idempotency key and an HMAC signature over its method,
path, timestamp, nonce, idempotency key and body (``gridwatch.signing``). A CAP document is
signed (enveloped XML-DSig) as it leaves. 2xx is delivered; 408, 425, 429 and 5xx, time-outs
and refused connections are retried by the relay; any other 4xx is a permanent refusal.
"""

from __future__ import annotations

import aiohttp

from alerts.cap import CAP_CONTENT_TYPE, sign_cap
from alerts.outbox import DeliveryError, Message
from gridwatch.signing import sign
from gridwatch.xml_signature import XmlSigner

RETRYABLE = frozenset({408, 425, 429})

DISPATCH = "dispatch"
BROADCAST = "broadcast"


class HttpSender:
    def __init__(
        self, url: str, secret: bytes, timeout_s: float, *, cap_signer: XmlSigner | None = None
    ) -> None:
        self.url = url
        self.secret = secret
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.cap_signer = cap_signer
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, message: Message) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        body = self._body(message)
        headers = {
            "Content-Type": message.content_type,
            **sign(self.secret, "POST", self.url, body, idempotency_key=message.key),
        }
        try:
            async with self._session.post(self.url, data=body, headers=headers) as resp:
                if resp.status < 300:
                    return
                text = (await resp.text())[:300]
        except (TimeoutError, aiohttp.ClientError) as err:
            raise DeliveryError(f"{self.url}: {err!r}") from err
        permanent = resp.status < 500 and resp.status not in RETRYABLE
        raise DeliveryError(f"{self.url}: HTTP {resp.status} {text}", permanent=permanent)

    def _body(self, message: Message) -> bytes:
        if message.content_type != CAP_CONTENT_TYPE:
            return message.body
        if self.cap_signer is None:
            raise DeliveryError(f"{self.url}: no CAP signing key configured", permanent=True)
        return sign_cap(message.body, self.cap_signer)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
