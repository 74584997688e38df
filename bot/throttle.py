"""Spacing calls to a platform so that its flood limits are never reached.

A `RateLimiter` holds, per key (a chat, a channel), the times of the recent
calls and makes the next caller wait until one more fits in each window.
Waiting is one timed sleep, not polling.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict, deque
from collections.abc import Callable, Hashable


class RateLimiter:
    def __init__(
        self, limits: list[tuple[int, float]], clock: Callable[[], float] = time.monotonic
    ) -> None:
        """`limits`: (calls, seconds) windows that all must hold, e.g. [(1, 1.0), (20, 60.0)]."""
        self.limits = sorted(limits, key=lambda lim: lim[1])
        self.clock = clock
        self._calls: dict[Hashable, deque[float]] = defaultdict(deque)
        self._locks: dict[Hashable, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._blocked_until: dict[Hashable, float] = {}

    def delay(self, key: Hashable) -> float:
        """Seconds until a call for `key` fits every window (0: now)."""
        now = self.clock()
        calls = self._calls[key]
        longest = self.limits[-1][1] if self.limits else 0.0
        while calls and now - calls[0] >= longest:
            calls.popleft()
        wait = max(0.0, self._blocked_until.get(key, now) - now)
        for count, seconds in self.limits:
            recent = [t for t in calls if now - t < seconds]
            if len(recent) >= count:
                wait = max(wait, recent[-count] + seconds - now)
        return wait

    async def acquire(self, key: Hashable) -> None:
        """Wait until a call for `key` is allowed, and count it."""
        async with self._locks[key]:
            while (wait := self.delay(key)) > 0:
                await asyncio.sleep(wait)
            self._calls[key].append(self.clock())

    def penalize(self, key: Hashable, seconds: float) -> None:
        """The platform said "retry after `seconds`": no call for `key` before then."""
        until = self.clock() + seconds
        self._blocked_until[key] = max(self._blocked_until.get(key, until), until)
