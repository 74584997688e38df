"""A claimed job's lease: its heartbeat, and the flags the engine reads before each step."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading

from storage.store import JobLost, JobStore

log = logging.getLogger("framepack.worker")


class Lease:
    """A claimed job's heartbeat, and the flags the engine reads before each step."""

    def __init__(
        self,
        store: JobStore,
        job_id: int,
        worker_id: str,
        *,
        interval: float,
        stopping: threading.Event,
    ) -> None:
        self.store = store
        self.job_id = job_id
        self.worker_id = worker_id
        self.interval = interval
        self.stopping = stopping  # the worker's: SIGTERM or SIGINT
        self.cancelled = threading.Event()  # its owner or an admin asked
        self.lost = threading.Event()  # another worker has it now
        self.aborted = threading.Event()  # the worker gave up on it (an error outside the engine)
        self._task: asyncio.Task[None] | None = None

    def should_cancel(self) -> bool:
        """Called on the GPU thread before every step."""
        flags = (self.cancelled, self.lost, self.aborted, self.stopping)
        return any(flag.is_set() for flag in flags)

    def start(self) -> None:
        self._task = asyncio.create_task(self._beat(), name=f"heartbeat-{self.job_id}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def check_cancel(self) -> None:
        """Read the cancel flag now (between two steps: a cancel stops within one step)."""
        if await self.store.cancel_requested(self.job_id):
            self.cancelled.set()

    async def _beat(self) -> None:
        failing = False  # one log line per run of failed beats, not one per beat
        while True:
            await asyncio.sleep(self.interval)
            try:
                if await self.store.heartbeat(self.job_id, self.worker_id):
                    self.cancelled.set()
            except JobLost:
                self.lost.set()
                return
            except Exception as exc:  # a busy or full database: a later beat may pass
                if not failing:
                    log.warning("job %d: heartbeat failed (%s)", self.job_id, exc)
                failing = True
                continue
            if failing:
                log.info("job %d: heartbeat works again", self.job_id)
            failing = False
