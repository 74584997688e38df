"""Fixtures shared by every test: a real SQLite job store in a temp dir, a clock
the test moves by hand."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage.records import JobParams
from storage.store import JobStore, QueueLimits


class ManualClock:
    """time.time() stand-in that only moves when the test says so."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def store(tmp_path: Path, clock: ManualClock) -> AsyncIterator[JobStore]:
    limits = QueueLimits(
        max_waiting_per_user=1000, max_waiting=100_000, max_video_seconds_per_day=0
    )
    s = await JobStore.open(tmp_path / "db.sqlite3", limits, clock=clock)
    yield s
    await s.close()


async def add_job(
    store: JobStore,
    user: str = "u1",
    *,
    platform: str = "telegram",
    seconds: float = 5.0,
    tick: float = 1.0,
    **kw,
) -> int:
    """Queue one job for `user` (the clock moves by `tick` first, so order is clear)."""
    clock = store.clock
    if isinstance(clock, ManualClock):
        clock.advance(tick)
    job = await store.enqueue(
        platform=platform,
        user_id=user,
        chat_id=f"chat-{user}",
        params=JobParams(prompt="a cat", seconds=seconds),
        input_path=f"/in/{user}.png",
        **kw,
    )
    return job.id
