"""HMAC request signing shared by gridwatch and the systems it talks to over HTTP.

Scheme ``v2`` (docs/dispatch-api.yaml): the signature is ``v2=hex(HMAC-SHA256(key, S))`` where
``S`` is, joined by ``\\n``: ``v2``, the method in capitals, the request path with its query as
sent, the timestamp (Unix seconds), the nonce, the ``Idempotency-Key`` (empty when there is
none), and then the exact body bytes. A request is refused when its timestamp is more than
``TOLERANCE_S`` from the receiver's clock, when its nonce was already seen within that window
(a replay), or when the signature does not match. Both directions (gridwatch's calls to the
dispatch and broadcast systems, and their callbacks to gridwatch) use ``sign`` and ``Verifier``.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from gridwatch.errors import ConfigError

TIMESTAMP_HEADER = "X-Gridwatch-Timestamp"
NONCE_HEADER = "X-Gridwatch-Nonce"
SIGNATURE_HEADER = "X-Gridwatch-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
SCHEME = "v2"
TOLERANCE_S = 300
MIN_KEY_BYTES = 32
NONCE_CAPACITY = 100_000  # accepted requests remembered per receiver within one window
_NONCE = re.compile(r"^[0-9A-Za-z_-]{16,128}$")
_SIGNATURE = re.compile(rf"^{SCHEME}=([0-9a-f]{{64}})$")
# Every placeholder of .env.example starts so; "changeme" spellings are refused alike.
_PLACEHOLDER = re.compile(r"^change[-_ ]?me", re.IGNORECASE)


def signed_string(
    method: str, path: str, timestamp: str, nonce: str, idempotency_key: str, body: bytes
) -> bytes:
    """The exact bytes that are signed."""
    head = "\n".join((SCHEME, method.upper(), path, timestamp, nonce, idempotency_key))
    return head.encode() + b"\n" + body


def _digest(secret: bytes, message: bytes) -> str:
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def request_target(url: str) -> str:
    """The path and query of ``url`` as they go on the request line: the signed path."""
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def sign(
    secret: bytes,
    method: str,
    url: str,
    body: bytes,
    *,
    idempotency_key: str = "",
    now: float | None = None,
) -> dict[str, str]:
    """The headers that authenticate one request to ``url`` (its path is signed); a fresh
    nonce each call, so a retry is a new request and a replay is not."""
    timestamp = str(int(time.time() if now is None else now))
    nonce = secrets.token_hex(16)
    path = request_target(url)
    message = signed_string(method, path, timestamp, nonce, idempotency_key, body)
    headers = {
        TIMESTAMP_HEADER: timestamp,
        NONCE_HEADER: nonce,
        SIGNATURE_HEADER: f"{SCHEME}={_digest(secret, message)}",
    }
    if idempotency_key:
        headers[IDEMPOTENCY_HEADER] = idempotency_key
    return headers


@dataclass(frozen=True)
class Refusal:
    """Why a request is not taken, and the HTTP status that says so."""

    status: int
    reason: str


@dataclass
class Verifier:
    """Checks requests signed with one key and remembers their nonces for the window.

    The nonce cache is bounded: when it holds ``capacity`` unexpired nonces, further requests
    are refused with 503 (retry later) rather than forgetting a nonce that could then be replayed.
    """

    secret: bytes
    tolerance_s: int = TOLERANCE_S
    capacity: int = NONCE_CAPACITY
    clock: Callable[[], float] = time.time
    _seen: dict[str, float] = field(default_factory=dict)
    _expiry: list[tuple[float, str]] = field(default_factory=list)

    def verify(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> Refusal | None:
        """None if the request is authentic and new, else the refusal (for the answer and log)."""
        timestamp = headers.get(TIMESTAMP_HEADER, "")
        nonce = headers.get(NONCE_HEADER, "")
        match = _SIGNATURE.match(headers.get(SIGNATURE_HEADER, ""))
        if not timestamp.isdigit() or not _NONCE.match(nonce) or match is None:
            return Refusal(
                401,
                f"missing or malformed {TIMESTAMP_HEADER}, {NONCE_HEADER} or {SIGNATURE_HEADER}"
                f" (scheme {SCHEME})",
            )
        now = self.clock()
        if abs(now - int(timestamp)) > self.tolerance_s:
            return Refusal(401, f"timestamp outside the {self.tolerance_s} s tolerance window")
        key = headers.get(IDEMPOTENCY_HEADER, "")
        expected = _digest(self.secret, signed_string(method, path, timestamp, nonce, key, body))
        if not hmac.compare_digest(match.group(1), expected):
            return Refusal(401, "signature does not match")
        self._forget_expired(now)
        if nonce in self._seen:
            return Refusal(401, "replayed request: nonce already seen within the window")
        if len(self._seen) >= self.capacity:
            return Refusal(503, "too many requests within the replay window; retry later")
        expires = int(timestamp) + self.tolerance_s
        self._seen[nonce] = expires
        heapq.heappush(self._expiry, (expires, nonce))
        return None

    def _forget_expired(self, now: float) -> None:
        # Past its expiry a nonce's timestamp is outside the window: the replay is refused anyway.
        while self._expiry and self._expiry[0][0] < now:
            _, nonce = heapq.heappop(self._expiry)
            del self._seen[nonce]


def require_key(name: str, value: str | None) -> bytes:
    """The HMAC key in variable ``name``, refused when unset, a placeholder or too short."""
    if not value:
        raise ConfigError(f"{name} is not set: the HMAC key shared with the sink is required")
    if _PLACEHOLDER.match(value.strip()):
        raise ConfigError(f"{name} is a placeholder ({value[:9]}…): set a real key")
    key = value.encode()
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(
            f"{name} is {len(key)} bytes, shorter than {MIN_KEY_BYTES}"
            " (make one with: openssl rand -hex 32)"
        )
    return key
