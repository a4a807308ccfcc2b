"""HMAC request signing shared by gridwatch and the systems it talks to over HTTP.

The signature covers a timestamp and the exact body bytes (``v1=hex(HMAC-SHA256(key,
"<ts>.<body>"))``), so a captured request cannot be replayed outside the tolerance window nor
altered. Both sides of the dispatch API and the status callbacks use these two functions.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

TIMESTAMP_HEADER = "X-Gridwatch-Timestamp"
SIGNATURE_HEADER = "X-Gridwatch-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
TOLERANCE_S = 300


def _digest(secret: bytes, timestamp: str, body: bytes) -> str:
    return hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def sign(secret: bytes, body: bytes, now: float | None = None) -> dict[str, str]:
    """The headers that authenticate ``body``."""
    timestamp = str(int(time.time() if now is None else now))
    return {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: "v1=" + _digest(secret, timestamp, body)}


def verify(
    secret: bytes, headers: Mapping[str, str], body: bytes, now: float | None = None
) -> str | None:
    """None if the request is authentic, else why not (for the 401 answer and the log)."""
    timestamp = headers.get(TIMESTAMP_HEADER, "")
    signature = headers.get(SIGNATURE_HEADER, "")
    if not timestamp.isdigit() or not signature.startswith("v1="):
        return "missing or malformed signature headers"
    if abs((time.time() if now is None else now) - int(timestamp)) > TOLERANCE_S:
        return "timestamp outside the tolerance window"
    if not hmac.compare_digest(signature[3:], _digest(secret, timestamp, body)):
        return "signature does not match"
    return None
