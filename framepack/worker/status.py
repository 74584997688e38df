"""What a worker tells the store about itself, for the host's page, /metrics and
the chats: its state (loading, downloading the model with its progress, ready,
rendering, stopped, failed), its device, memory mode, VRAM in use and seconds
per step, written at each change and with its heartbeat.

The heartbeat runs on the worker's event loop, which stays free while the GPU
thread works, so a worker that downloads or loads for an hour still shows it is
alive; one that stops beating is gone (`storage.workers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from storage.records import WorkerState
from storage.store import JobStore

log = logging.getLogger("framepack.worker")

# Download progress changes many times a second; the store hears of it at most
# this often (each write is also an edit of every queued job's chat message).
PROGRESS_WRITE_INTERVAL = 1.0

Gauges = Callable[[], dict[str, Any]]


def gpu_gauges(device: Any) -> dict[str, Any]:
    """VRAM in use on `device` (all processes) and held by this one; {} off CUDA."""
    import torch

    if device is None or getattr(device, "type", str(device).split(":")[0]) != "cuda":
        return {}
    if not torch.cuda.is_available():
        return {}
    free, total = torch.cuda.mem_get_info(device)
    return {
        "vram_used": int(total - free),
        "vram_total": int(total),
        "vram_reserved": int(torch.cuda.memory_reserved(device)),
    }


class WorkerStatus:
    """One worker's row in the store: `set` at each change, a beat every `interval`."""

    def __init__(
        self,
        store: JobStore,
        worker_id: str,
        *,
        interval: float,
        gauges: Gauges | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.worker_id = worker_id
        self.interval = interval
        self.gauges = gauges or dict
        self.clock = clock
        self.state = WorkerState.LOADING
        self.detail: dict[str, Any] = {}
        self._lock = threading.Lock()  # `downloading` comes from the loading thread
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dirty: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._failing = False  # the last write failed (logged once until one passes)

    def start(self) -> None:
        """Beat on this loop until `stop`."""
        self._loop = asyncio.get_running_loop()
        self._dirty = asyncio.Event()
        self._task = asyncio.create_task(self._beat(), name="worker-status")

    async def set(self, state: WorkerState, **detail: Any) -> None:
        """Change state now: `detail` replaces the facts of the state left (a job, a
        download, an error); in the same state it adds to them."""
        with self._lock:
            kept = (
                self.detail
                if state == self.state
                else {k: v for k, v in self.detail.items() if k in _LASTING}
            )
            self.state = state
            self.detail = {**kept, **detail}
        await self._write()

    def downloading(self, done: int, total: int) -> None:
        """The loader's `DownloadReport`: bytes fetched so far of `total` (any thread).

        The whole download in place, the worker goes on loading the model."""
        with self._lock:
            finished = total > 0 and done >= total
            self.state = WorkerState.LOADING if finished else WorkerState.DOWNLOADING
            self.detail = {**self.detail, "download_done": int(done), "download_total": int(total)}
            if finished:
                self.detail.pop("download_done")
                self.detail.pop("download_total")
        if self._loop is not None and self._dirty is not None:
            self._loop.call_soon_threadsafe(self._dirty.set)

    def measure(self, **detail: Any) -> None:
        """Facts that change without a change of state (seconds per step)."""
        with self._lock:
            self.detail.update(detail)

    async def stop(self, state: WorkerState = WorkerState.STOPPED, **detail: Any) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.set(state, **detail)

    async def _beat(self) -> None:
        assert self._dirty is not None
        last_write = float("-inf")
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), self.interval)
            if self._dirty.is_set():  # progress: written at most once a second
                wait = last_write + PROGRESS_WRITE_INTERVAL - self.clock()
                if wait > 0:
                    await asyncio.sleep(wait)
                self._dirty.clear()
            last_write = self.clock()
            await self._write()

    async def _write(self) -> None:
        """Write the row; a failure (a busy database, a full disk) is logged once per
        streak and never reaches the worker: its state is for the page, not the queue."""
        try:
            gauges = self.gauges()
        except Exception as exc:  # a device that went away must not stop the heartbeat
            log.debug("reading the GPU's memory failed: %s", exc)
            gauges = {}
        with self._lock:
            state, detail = self.state, {**self.detail, **gauges}
        try:
            await self.store.set_worker(self.worker_id, state, detail)
        except Exception as exc:
            if not self._failing:
                log.warning("worker %s: could not record its state (%s)", self.worker_id, exc)
            self._failing = True
            return
        self._failing = False


# Facts of the worker, not of one state: they stay when the state changes.
_LASTING = frozenset({"device", "memory_mode", "preset", "host", "pid", "step_seconds"})
