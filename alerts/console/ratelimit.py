"""Failed-login throttling: a sliding window of failures per key (an operator name, a client
address), so guessing a password is slow whichever of the two an attacker varies."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class FailureLimit:
    max_failures: int = 5
    window_s: float = 300.0
    clock: Callable[[], float] = time.monotonic
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    def retry_after(self, *keys: str) -> float:
        """Seconds until another attempt is allowed for every key; 0 when it is now."""
        now = self.clock()
        wait = 0.0
        for key in keys:
            recent = self._recent(key, now)
            if len(recent) >= self.max_failures:
                wait = max(wait, recent[0] + self.window_s - now)
        return wait

    def failed(self, *keys: str) -> None:
        now = self.clock()
        for key in keys:
            self._recent(key, now).append(now)

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)

    def _recent(self, key: str, now: float) -> deque[float]:
        recent = self._failures.setdefault(key, deque())
        while recent and recent[0] <= now - self.window_s:
            recent.popleft()
        return recent
