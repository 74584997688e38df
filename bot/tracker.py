"""The bot process's view of the queue: reads the events the worker writes and
keeps every job's chat message up to date, then delivers the outcome once.

The worker is another process, so events arrive through the database: one
timed wait between reads (woken early when this process itself changed a job),
never a busy loop. Edits of one message are throttled to the platform's
interval, and the latest view always wins: an edit skipped for the throttle is
sent when the interval ends, and a final view (done, failed, cancelled) is
never skipped. After a restart the tracker rebuilds each unfinished job's
progress from its events and delivers what finished while it was down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from bot.progress import JobProgress, JobView, render
from storage.records import Job, JobStatus, QueuePosition
from storage.store import JobStore

log = logging.getLogger("framepack_bot.bot")

POLL_INTERVAL = 0.5  # seconds between two reads of new events
POSITIONS_INTERVAL = 5.0  # seconds between two refreshes of the queued jobs' positions
# A burst of changes (a hundred users who send /animate at once) recomputes the
# queue's order at most this often, not once per new job: each pass reads every
# waiting job, and the bot's one database thread also serves the new requests.
POSITIONS_MIN_INTERVAL = 1.0
RETRY_DELIVERY = 15.0  # seconds before a failed delivery is tried again


class JobNotifier(Protocol):
    """What an adapter does for the tracker (one per platform)."""

    platform: str
    edit_interval: float  # least seconds between two edits of one message

    async def show(self, job: Job, view: JobView) -> None:
        """Bring the job's message to `view` (the adapter skips what it already shows)."""

    async def deliver(self, job: Job, view: JobView) -> None:
        """Show the final view: the video, or why there is none. Raise to retry later."""


@dataclass
class _Tracked:
    progress: JobProgress = field(default_factory=JobProgress)
    shown: tuple | None = None
    shown_at: float = float("-inf")
    pending: JobView | None = None
    flush: asyncio.Task | None = None


class JobTracker:
    def __init__(
        self,
        store: JobStore,
        notifiers: Mapping[str, JobNotifier],
        *,
        tiny: bool = False,
        poll_interval: float = POLL_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.notifiers = dict(notifiers)
        self.tiny = tiny
        self.poll_interval = poll_interval
        self.clock = clock
        self._jobs: dict[int, _Tracked] = {}
        self._wake = asyncio.Event()
        self._last_event = 0
        self._positions_at = float("-inf")
        self._positions: dict[int, QueuePosition] = {}
        self._positions_due = False
        self._retry_at: dict[int, float] = {}

    def wake(self) -> None:
        """Something changed here (a job queued or cancelled, the queue paused): look now,
        and re-render the queued jobs even if no event came (a pause writes none)."""
        self._positions_due = True
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        self._last_event = await self.store.last_event_id()
        await self.recover()
        try:
            while not stop.is_set():
                try:
                    await self.poll_once()
                except Exception:  # never let one bad update stop every message
                    log.exception("tracker: poll failed; trying again")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_interval)
                self._wake.clear()
        finally:
            for tracked in self._jobs.values():
                if tracked.flush is not None:
                    tracked.flush.cancel()

    async def recover(self) -> None:
        """After a (re)start: bring every open job's message up to date."""
        open_jobs = await self.store.running() + await self.store.waiting()
        for job in open_jobs:
            if job.platform in self.notifiers:
                tracked = self._jobs.setdefault(job.id, _Tracked())
                for event in await self.store.events_since(0, job_id=job.id):
                    tracked.progress.apply(event)
        await self._refresh(
            {job.id for job in open_jobs if job.platform in self.notifiers}, force_positions=True
        )
        for job in await self.store.undelivered():
            if job.platform in self.notifiers:
                await self._deliver(job)

    async def poll_once(self) -> None:
        changed: set[int] = set()
        while True:
            events = await self.store.events_since(self._last_event, limit=500)
            if not events:
                break
            for event in events:
                self._last_event = event.id
                self._jobs.setdefault(event.job_id, _Tracked()).progress.apply(event)
                changed.add(event.job_id)
        await self._refresh(changed)
        now = self.clock()
        for job_id, at in list(self._retry_at.items()):
            if now >= at:
                del self._retry_at[job_id]
                job = await self.store.find(job_id)
                if job is not None and job.delivered_at is None:
                    await self._deliver(job)

    async def _refresh(self, changed: set[int], *, force_positions: bool = False) -> None:
        now = self.clock()
        # every queued job's position may move when anything changes
        self._positions_due |= bool(changed)
        since = now - self._positions_at
        if (
            force_positions
            or since >= POSITIONS_INTERVAL
            or (self._positions_due and since >= POSITIONS_MIN_INTERVAL)
        ):
            self._positions = await self.store.positions()
            self._positions_at = now
            self._positions_due = False
            changed = changed | set(self._positions)
        if not changed:
            return
        paused = await self.store.paused()
        jobs = await self.store.find_many(changed)  # one read, however many jobs wait
        for job_id in sorted(changed):
            job = jobs.get(job_id)
            if job is None or job.platform not in self.notifiers:
                self._jobs.pop(job_id, None)
                continue
            position = self._positions.get(job_id)
            if job.status is JobStatus.QUEUED and position is None:
                continue  # shown with its position at the next pass (a second at most)
            tracked = self._jobs.setdefault(job_id, _Tracked())
            view = render(job, tracked.progress, position, tiny=self.tiny, paused=paused)
            if job.status.finished:
                if job.delivered_at is None:
                    await self._deliver(job, view)
                self._forget(job_id)
            else:
                await self._show(job, view, tracked)

    async def _show(self, job: Job, view: JobView, tracked: _Tracked) -> None:
        if view.signature() == tracked.shown:
            tracked.pending = None
            return
        interval = self.notifiers[job.platform].edit_interval
        wait = tracked.shown_at + interval - self.clock()
        if wait <= 0:
            await self._send(job, view, tracked)
            return
        tracked.pending = view
        if tracked.flush is None or tracked.flush.done():
            tracked.flush = asyncio.create_task(self._flush_later(job, tracked, wait))

    async def _flush_later(self, job: Job, tracked: _Tracked, wait: float) -> None:
        await asyncio.sleep(wait)
        if tracked.pending is None or self._jobs.get(job.id) is not tracked:
            return
        fresh = await self.store.find(job.id)
        # Taken after the read: a newer view may have been sent meanwhile, and this one
        # must not go out after it (the progress bar would step back).
        view, tracked.pending = tracked.pending, None
        if view is None or fresh is None or fresh.status.finished:
            return  # the final view goes through delivery
        await self._send(fresh, view, tracked)

    async def _send(self, job: Job, view: JobView, tracked: _Tracked) -> None:
        tracked.shown_at = self.clock()
        try:
            await self.notifiers[job.platform].show(job, view)
        except Exception as exc:  # a failed edit is retried by the next change
            log.warning("job %d: could not update its message: %s", job.id, exc)
            return
        tracked.shown = view.signature()

    async def _deliver(self, job: Job, view: JobView | None = None) -> None:
        if view is None:
            tracked = self._jobs.setdefault(job.id, _Tracked())
            if not tracked.progress.last_event_id:
                for event in await self.store.events_since(0, job_id=job.id):
                    tracked.progress.apply(event)
            view = render(job, tracked.progress, tiny=self.tiny)
        try:
            await self.notifiers[job.platform].deliver(job, view)
        except Exception as exc:
            log.warning(
                "job %d: delivery failed (%s); trying again in %.0f s", job.id, exc, RETRY_DELIVERY
            )
            self._retry_at[job.id] = self.clock() + RETRY_DELIVERY
            return
        if await self.store.mark_delivered(job.id):
            log.info("job %d delivered (%s)", job.id, job.status.value)

    def _forget(self, job_id: int) -> None:
        tracked = self._jobs.pop(job_id, None)
        if tracked is not None and tracked.flush is not None:
            tracked.flush.cancel()
