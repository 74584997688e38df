"""The bot process's view of the queue: reads the events the worker writes and
keeps every job's chat message up to date, then delivers the outcome once.

The worker is another process, so events arrive through the database: one timed
wait between reads (woken early when this process itself changed a job), never
a busy loop.

Each job's message has a sender of its own (`_Sender`), the one place where
"the latest view wins": the tracker only tells it the view it wants now; the
sender edits the message at most once per the platform's interval, skips the
views that a newer one replaced while it waited, and never sends a view again
that the message already shows. A final view (done, failed, cancelled) goes out
at once, after which the sender stops; its delivery is retried until the
platform takes it. The senders run side by side, so a slow chat (a group at its
20-a-minute pace, a platform that is down) holds up no other job's message.

After a restart the tracker rebuilds each unfinished job's progress from its
events and delivers what finished while it was down.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Callable, Mapping

from bot.adapters import JobNotifier
from bot.progress import JobProgress, JobView, render
from bot.throttle import waiting_turn
from storage.records import Job, JobStatus, ModelActivity, QueuePosition
from storage.store import JobStore

log = logging.getLogger("framepack_bot.bot")

POLL_INTERVAL = 0.5  # seconds between two reads of new events
POSITIONS_INTERVAL = 5.0  # seconds between two refreshes of the queued jobs' positions
# A burst of changes (a hundred users who send /animate at once) recomputes the
# queue's order at most this often, not once per new job.
POSITIONS_MIN_INTERVAL = 1.0
RETRY_DELIVERY = 15.0  # seconds before a failed delivery is tried again
RETRY_EDIT = 5.0  # seconds before a failed progress edit is tried again (if nothing newer came)


class _Sender:
    """Brings one job's message to the latest view it is given, at the platform's pace."""

    def __init__(
        self,
        tracker: JobTracker,
        notifier: JobNotifier,
        job_id: int,
        clock: Callable[[], float],
    ) -> None:
        self.tracker = tracker
        self.notifier = notifier
        self.job_id = job_id
        self.clock = clock
        self.progress = JobProgress()
        self._wanted: tuple[Job, JobView] | None = None
        self._shown: tuple | None = None  # signature of the view the message shows
        self._shown_at = float("-inf")
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.finished = False
        self.idle = asyncio.Event()  # nothing to send now (tests wait for it)

    def want(self, job: Job, view: JobView) -> None:
        """Show `view` next (it replaces any view still waiting)."""
        if self.finished:
            return
        self._wanted = (job, view)
        self._changed.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"job-{self.job_id}-message")

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        try:
            while True:
                if not self._changed.is_set():
                    self.idle.set()
                await self._changed.wait()
                self.idle.clear()
                self._changed.clear()
                assert self._wanted is not None
                job, view = self._wanted
                if view.final:
                    await self._deliver(job, view)
                    return
                if view.signature() == self._shown:
                    continue
                wait = self._shown_at + self.notifier.edit_interval - self.clock()
                if wait > 0:
                    # a newer view (a final one above all) may come meanwhile
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wait_for_final(), wait)
                    self._changed.set()  # look at the latest view again
                    continue
                if not await self._show(job, view):
                    # not shown: tried again, without waiting for the job to change
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wait_for_final(), RETRY_EDIT)
                    self._changed.set()
        finally:
            if self.finished:
                self.tracker.forget(self.job_id)

    async def _wait_for_final(self) -> None:
        while self._wanted is None or not self._wanted[1].final:
            self._changed.clear()
            await self._changed.wait()

    async def _show(self, job: Job, view: JobView) -> bool:
        """Whether the message shows `view` now. An edit still waiting for its turn in
        the chat's pace (`bot.throttle.waiting_turn`) is dropped when the job finishes
        meanwhile: its video goes in the order the jobs finished, not behind this job's
        last progress edit. An edit already sent is let finish."""
        self._shown_at = self.clock()
        context = contextvars.copy_context()  # the show's own, to read its waiting_turn
        show = asyncio.create_task(self.notifier.show(job, view), context=context)
        final = asyncio.ensure_future(self._wait_for_final())
        try:
            await asyncio.wait((show, final), return_when=asyncio.FIRST_COMPLETED)
        finally:
            final_came = final.done()  # else the show ended, or we are being cancelled
            final.cancel()
            if not show.done():
                if not final_came or context.get(waiting_turn, False):
                    show.cancel()
                await asyncio.wait((show,))  # its own end (a cancel of ours still ends us)
            # `_wait_for_final` consumed the change signals: look at the latest view again
            self._changed.set()
        if show.cancelled():
            return False
        if (exc := show.exception()) is not None:
            log.warning("job %d: could not update its message: %s", job.id, exc)
            return False
        self._shown = view.signature()
        return True

    async def _deliver(self, job: Job, view: JobView) -> None:
        """The final view, until the platform takes it; then recorded as delivered."""
        self.finished = True
        while True:
            try:
                await self.notifier.deliver(job, view)
                break
            except Exception as exc:
                log.warning(
                    "job %d: delivery failed (%s); trying again in %.0f s",
                    job.id,
                    exc,
                    RETRY_DELIVERY,
                )
            await asyncio.sleep(RETRY_DELIVERY)
        if await self.tracker.store.mark_delivered(job.id):
            log.info("job %d delivered (%s)", job.id, job.status.value)


class JobTracker:
    def __init__(
        self,
        store: JobStore,
        notifiers: Mapping[str, JobNotifier],
        *,
        tiny: bool = False,
        has_room: Callable[[], bool] = lambda: True,
        poll_interval: float = POLL_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.notifiers = dict(notifiers)
        self.tiny = tiny
        self.has_room = has_room  # whether the data dir's disk has room for jobs
        self.disk_full = False
        self.poll_interval = poll_interval
        self.clock = clock
        self._senders: dict[int, _Sender] = {}
        self._wake = asyncio.Event()
        self._last_event = 0
        self._positions_at = float("-inf")
        self._positions: dict[int, QueuePosition] = {}
        self._positions_due = False
        self._model: ModelActivity | None = None  # the workers downloading or loading
        self.recovered = asyncio.Event()  # set once the start-up pass has run

    def wake(self) -> None:
        """Something changed here (a job queued or cancelled, the queue paused): look now,
        and re-render the queued jobs even if no event came (a pause writes none)."""
        self._positions_due = True
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        self._last_event = await self.store.last_event_id()
        try:
            await self.recover()
            self.recovered.set()
            log.info("tracker: the start-up pass is done (%d open jobs)", len(self._senders))
            while not stop.is_set():
                try:
                    await self.poll_once()
                except Exception:  # never let one bad update stop every message
                    log.exception("tracker: poll failed; trying again")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_interval)
                self._wake.clear()
        finally:
            for sender in self._senders.values():
                sender.cancel()

    async def recover(self) -> None:
        """After a (re)start: bring every open job's message up to date, and deliver what
        finished while the bot was down (in the order the jobs finished)."""
        open_jobs = [
            job
            for job in await self.store.running() + await self.store.waiting()
            if job.platform in self.notifiers
        ]
        for job in open_jobs:
            await self._replay(self._sender(job))
        await self._refresh({job.id for job in open_jobs}, force_positions=True)
        for job in await self.store.undelivered():
            if job.platform in self.notifiers:
                sender = self._sender(job)
                await self._replay(sender)
                sender.want(job, render(job, sender.progress, tiny=self.tiny))

    async def _model_changed(self) -> bool:
        """Whether the workers started or stopped downloading or loading the model (or
        the download moved on a percent): every queued job's message says so."""
        if not self._positions and self._model is None:
            return False  # nobody waits: nothing to tell
        model = await self.store.model_activity()
        changed, self._model = model != self._model, model
        return changed

    async def _replay(self, sender: _Sender) -> None:
        if not sender.progress.last_event_id:
            for event in await self.store.events_since(0, job_id=sender.job_id, limit=100_000):
                sender.progress.apply(event)

    async def poll_once(self) -> None:
        changed: set[int] = set()
        if await self._disk_changed():
            changed |= set(self._senders)  # every open job's message says so, or not any more
        while True:
            events = await self.store.events_since(self._last_event, limit=500)
            if not events:
                break
            for event in events:
                self._last_event = event.id
                sender = self._senders.get(event.job_id)
                if sender is not None:
                    sender.progress.apply(event)
                changed.add(event.job_id)
        await self._refresh(changed)

    async def _disk_changed(self) -> bool:
        """Look at the disk's free space; on a change, tell the host and the admins."""
        full = not await asyncio.to_thread(self.has_room)
        if full == self.disk_full:
            return False
        self.disk_full = full
        if full:
            text = (
                "⚠ framepack-bot: the disk of the data dir is full (less than [storage] "
                "min_free_mb free). Jobs wait and resume once there is room: remove old "
                "videos or make room on the disk."
            )
            log.error("the disk of the data dir is full: jobs wait until there is room")
        else:
            text = "✅ framepack-bot: there is room on the disk again; jobs go on."
            log.info("there is room on the disk again")
        for name, notifier in self.notifiers.items():
            try:
                await notifier.notify_admins(text)
            except Exception as exc:  # a platform that is down: the log line stays
                log.warning("%s: could not tell the admins: %s", name, exc)
        return True

    def _sender(self, job: Job) -> _Sender:
        sender = self._senders.get(job.id)
        if sender is None:
            notifier = self.notifiers[job.platform]
            sender = self._senders[job.id] = _Sender(self, notifier, job.id, self.clock)
        return sender

    def forget(self, job_id: int) -> None:
        self._senders.pop(job_id, None)

    async def settled(self) -> None:
        """Once the start-up pass has run and no message has anything left to send (for
        tests that assert what was not sent)."""
        await self.recovered.wait()
        while True:
            senders = list(self._senders.values())
            busy = [s for s in senders if not s.idle.is_set()]
            if not busy:
                return
            waits = [asyncio.create_task(s.idle.wait()) for s in busy]
            await asyncio.wait(waits, timeout=0.5)  # a sender may be done and gone meanwhile
            for wait in waits:
                wait.cancel()

    async def _refresh(self, changed: set[int], *, force_positions: bool = False) -> None:
        now = self.clock()
        if await self._model_changed():
            changed = changed | set(self._positions)
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
        # finished jobs first, in the order they finished: their videos go out first
        order = sorted(
            jobs.values(), key=lambda j: (not j.status.finished, j.finished_at or 0.0, j.id)
        )
        for job in order:
            if job.platform not in self.notifiers:
                continue
            if job.status.finished and job.delivered_at is not None:
                continue
            position = self._positions.get(job.id)
            if job.status is JobStatus.QUEUED and position is None:
                continue  # shown with its position at the next pass (a second at most)
            new = job.id not in self._senders
            sender = self._sender(job)
            if new:
                await self._replay(sender)
            view = render(
                job,
                sender.progress,
                position,
                tiny=self.tiny,
                paused=paused,
                disk_full=self.disk_full,
                model=self._model,
            )
            sender.want(job, view)
