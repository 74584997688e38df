"""What the page's live views show, read once for every open page, and pushed to
the browsers by server-sent events.

`LiveFeed` reads the store only while a page is open: new events every
`poll_interval` (as the tracker does for the chats; the worker is another
process, so the database is where its events arrive), and the queue, the
workers and the pause flag when something happened or a second passed, in one
thread hop. Each change makes a new `Snapshot` and wakes the open pages; each
page (bot/web/stream.py) renders its regions from it and sends only those that
changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bot.progress import JobProgress
from storage.records import Job, ModelActivity, QueuePosition, WorkerRecord, WorkerRestart
from storage.store import JobStore, StoreCore

log = logging.getLogger("framepack_bot.web")

POLL_INTERVAL = 0.25  # seconds between two reads of new events while a page is open
REFRESH_INTERVAL = 1.0  # the queue and the workers at least this often (heartbeats, ages)
WORKERS_WINDOW = 3600.0  # workers heard of in the last hour are shown


@dataclass(frozen=True)
class Snapshot:
    """The queue, the workers and the jobs the open pages follow, at one moment."""

    version: int = 0
    taken_at: float = 0.0
    running: tuple[Job, ...] = ()
    waiting: tuple[Job, ...] = ()
    positions: Mapping[int, QueuePosition] = field(default_factory=dict)
    progress: Mapping[int, JobProgress] = field(default_factory=dict)
    followed: Mapping[int, Job] = field(default_factory=dict)
    paused: bool = False
    workers: tuple[WorkerRecord, ...] = ()
    restart: WorkerRestart | None = None
    model: ModelActivity | None = None
    counts: Mapping[str, int] = field(default_factory=dict)
    generation: int = 0  # how many changes this process made (an action, a delivery)

    def job(self, job_id: int) -> Job | None:
        for job in (*self.running, *self.waiting):
            if job.id == job_id:
                return job
        return self.followed.get(job_id)


def _read_state(core: StoreCore, followed: set[int], since: float) -> dict[str, Any]:
    """Everything a snapshot needs of the store, in one call on the store's thread."""
    return {
        "running": tuple(core.running()),
        "waiting": tuple(core.waiting()),
        "positions": core.positions(),
        "followed": core.find_many(followed),
        "paused": core.paused(),
        "workers": tuple(core.workers(since)),
        "restart": core.last_restart(),
        "model": core.model_activity(),
        "counts": core.counts(),
    }


class LiveFeed:
    def __init__(
        self,
        store: JobStore,
        *,
        poll_interval: float = POLL_INTERVAL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.poll_interval = poll_interval
        self.clock = clock
        self.snapshot = Snapshot()
        self._subscribers = 0
        self._has_subscribers = asyncio.Event()
        self._changed = asyncio.Event()  # replaced by a new one at each change
        self._wake = asyncio.Event()
        self._followed: dict[int, int] = {}  # job id -> pages following it
        self._progress: dict[int, JobProgress] = {}
        self._last_event: int | None = None  # None: not read yet (start from the newest)
        self._generation = 0
        self._lock = asyncio.Lock()
        self._refreshed_at = float("-inf")
        self.stopped = False

    def wake(self) -> None:
        """Something changed here (an action of the page, a chat command): look now."""
        self._generation += 1
        self._wake.set()

    @contextlib.asynccontextmanager
    async def subscribe(self, follow: int | None = None) -> AsyncIterator[LiveFeed]:
        """While the block runs the feed reads the store (and follows job `follow`)."""
        self._subscribers += 1
        self._has_subscribers.set()
        if follow is not None:
            self._followed[follow] = self._followed.get(follow, 0) + 1
            self._wake.set()
        try:
            yield self
        finally:
            self._subscribers -= 1
            if not self._subscribers:
                self._has_subscribers.clear()
            if follow is not None:
                self._followed[follow] -= 1
                if not self._followed[follow]:
                    del self._followed[follow]

    async def changed(self, version: int, timeout: float) -> bool:
        """Wait until the snapshot is newer than `version`; False on timeout or at stop."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self.snapshot.version <= version and not self.stopped:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return self.snapshot.version > version and not self.stopped

    async def run(self, stop: asyncio.Event) -> None:
        stopping = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                if not self._subscribers:
                    waiting = asyncio.create_task(self._has_subscribers.wait())
                    await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
                    waiting.cancel()
                    continue
                try:
                    await self.refresh()
                except Exception:  # a busy database: the next look may pass
                    log.exception("web: reading the queue failed; trying again")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_interval)
        finally:
            stopping.cancel()
            self.stopped = True
            self._publish(self.snapshot)

    async def current(self, max_age: float = 0.5) -> Snapshot:
        """A snapshot at most `max_age` seconds old (read now when the feed idles)."""
        if self.snapshot.version == 0 or self.clock() - self.snapshot.taken_at > max_age:
            await self.refresh(force=True)
        return self.snapshot

    async def refresh(self, *, force: bool = False) -> None:
        """Read what changed; publish a new snapshot when anything did, or a second passed."""
        async with self._lock:  # a page's first load and the loop may ask at once
            await self._refresh(force)

    async def _refresh(self, force: bool) -> None:
        woken = self._wake.is_set()
        self._wake.clear()
        events = await self._read_events()
        now = self.clock()
        if not (force or events or woken or now - self._refreshed_at >= REFRESH_INTERVAL):
            return
        self._refreshed_at = now
        followed = set(self._followed)
        state = await self.store.run(_read_state, self.store.core, followed, now - WORKERS_WINDOW)
        tracked = {j.id for j in state["running"]} | {j.id for j in state["waiting"]} | followed
        for job_id in tracked - set(self._progress):
            progress = self._progress[job_id] = JobProgress()
            for event in await self.store.events_since(0, job_id=job_id, limit=100_000):
                progress.apply(event)
        for job_id in set(self._progress) - tracked:
            del self._progress[job_id]
        progress = {k: dataclasses.replace(v) for k, v in self._progress.items()}
        # Published at every look, a second apart at least: ages and estimates move
        # with the clock, and each page sends only the regions whose HTML changed.
        self._publish(
            Snapshot(
                version=self.snapshot.version + 1,
                taken_at=now,
                progress=progress,
                generation=self._generation,
                **state,
            )
        )

    async def _read_events(self) -> int:
        """Apply the events written since the last look; how many there were."""
        if self._last_event is None:  # the jobs that matter are replayed when first seen
            self._last_event = await self.store.last_event_id()
            return 0
        count = 0
        while True:
            events = await self.store.events_since(self._last_event, limit=500)
            if not events:
                return count
            for event in events:
                self._last_event = event.id
                progress = self._progress.get(event.job_id)
                if progress is not None:
                    progress.apply(event)
            count += len(events)

    def _publish(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
