"""Spacing calls to a platform so that its flood limits are never reached.

A `RateLimiter` holds, per key (a chat, a channel, the whole bot), the times of
the recent calls and lets each caller go once one more call fits in every
window. A call counts from when it is let go until its answer came (then at
that time): the platform counts a message when it receives it, which on a busy
machine is a while after the call was let go, so counting the let-go time
would let two windows' calls arrive within one. Callers of one key go in turn:
urgent ones (a finished video) before the others (a progress edit), each kind
in the order it came. Waiting is a timed sleep or a wake-up when the line
moves, never polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Hashable
from contextvars import ContextVar
from dataclasses import dataclass, field

IDLE_KEYS = 1024  # keys kept after their last call; older idle ones are dropped

# True while the current task waits for its turn (nothing of its call has been sent):
# a caller that runs the call in a task of its own context may drop it then, and only
# then (a call let go runs to its answer, so the platform and the count agree).
waiting_turn: ContextVar[bool] = ContextVar("waiting_turn", default=False)


@dataclass
class _Line:
    calls: deque[float] = field(default_factory=deque)  # answer times, oldest first
    in_flight: int = 0  # calls let go and not answered yet
    waiting: list[tuple[int, float, int]] = field(default_factory=list)  # heap of tickets
    moved: asyncio.Event = field(default_factory=asyncio.Event)
    blocked_until: float = float("-inf")


class RateLimiter:
    def __init__(
        self, limits: list[tuple[int, float]], clock: Callable[[], float] = time.monotonic
    ) -> None:
        """`limits`: (calls, seconds) windows that all must hold, e.g. [(1, 1.0), (20, 60.0)]."""
        self.limits = sorted(limits, key=lambda lim: lim[1])
        self.clock = clock
        self._lines: dict[Hashable, _Line] = {}
        self._tickets = itertools.count()

    def _line(self, key: Hashable) -> _Line:
        line = self._lines.get(key)
        if line is None:
            if len(self._lines) >= IDLE_KEYS:
                self._prune()
            line = self._lines[key] = _Line()
        return line

    def _prune(self) -> None:
        """Forget the keys nobody waits on whose calls are all out of every window."""
        longest = self.limits[-1][1] if self.limits else 0.0
        now = self.clock()
        for key, line in list(self._lines.items()):
            idle = not line.waiting and not line.in_flight and line.blocked_until <= now
            if idle and (not line.calls or now - line.calls[-1] >= longest):
                del self._lines[key]

    def delay(self, key: Hashable) -> float | None:
        """Seconds until a call for `key` fits every window (0: now; None: once a call
        in flight is answered)."""
        now = self.clock()
        line = self._lines.get(key)
        if line is None:
            return 0.0
        calls = line.calls
        longest = self.limits[-1][1] if self.limits else 0.0
        while calls and now - calls[0] >= longest:
            calls.popleft()
        wait: float | None = max(0.0, line.blocked_until - now)
        for count, seconds in self.limits:
            recent = [t for t in calls if now - t < seconds]
            if len(recent) + line.in_flight < count:
                continue
            if line.in_flight >= count:
                return None
            # the oldest answered call that must leave the window for one more to fit
            leaving = recent[len(recent) + line.in_flight - count]
            wait = max(wait, leaving + seconds - now)
        return wait

    @contextlib.asynccontextmanager
    async def call(self, key: Hashable, *, urgent: bool | float = False) -> AsyncIterator[None]:
        """Wait until a call for `key` is allowed and it is this caller's turn; the block
        is the call, counted from now until it ends. `urgent`: True, or the time its job
        finished (the earliest goes first), puts the call ahead of the others."""
        line = self._line(key)
        if isinstance(urgent, bool):
            rank = (0, float("inf")) if urgent else (1, 0.0)
        else:
            rank = (0, float(urgent))
        ticket = (*rank, next(self._tickets))
        heapq.heappush(line.waiting, ticket)
        waiting = waiting_turn.set(True)
        try:
            while True:
                first = line.waiting[0] == ticket
                wait = self.delay(key) if first else None
                if first and wait == 0:
                    break
                line.moved.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(line.moved.wait(), wait)
            line.in_flight += 1
        finally:
            waiting_turn.reset(waiting)
            line.waiting.remove(ticket)
            heapq.heapify(line.waiting)
            line.moved.set()  # the next in line looks again
        try:
            yield
        finally:
            line.in_flight -= 1
            line.calls.append(self.clock())
            line.moved.set()

    def penalize(self, key: Hashable, seconds: float) -> None:
        """The platform said "retry after `seconds`": no call for `key` before then."""
        line = self._line(key)
        line.blocked_until = max(line.blocked_until, self.clock() + seconds)
        line.moved.set()
