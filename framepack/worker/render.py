"""Rendering one claimed job: the engine's events pulled on the GPU thread and
written to the store, with the memory-mode fallback after a CUDA out-of-memory
error and the stall watchdog."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import torch
from PIL import UnidentifiedImageError

from framepack.engine.continuation import SourceUnreadable, VideoSource
from framepack.engine.events import Done, EngineEvent
from framepack.models.lora import LoraUnavailable
from framepack.worker.engines import (
    EngineLike,
    EngineSlot,
    generation_params,
    open_picture,
    video_source,
)
from framepack.worker.events import JobEventWriter, JobLog, RenderTimes
from framepack.worker.lease import Lease
from storage.config import Settings
from storage.files import DataDir
from storage.records import Job
from storage.store import JobStore

_T = TypeVar("_T")


class JobFailed(Exception):
    """A job that cannot be rendered; the message is for its owner, `detail` for the host's
    log line of the failure (what went wrong in the file, say)."""

    def __init__(self, message: str, *, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail


class EngineStalled(Exception):
    """No engine event for `[worker] stall_seconds`: its thread cannot be stopped or joined.

    The worker stops heart-beating and the process exits; the store hands the
    job out again once its heartbeat is stale (the attempt counts, so a job that
    hangs the GPU every time ends failed after `max_attempts`).
    """


class Renderer:
    """Renders jobs with the one engine of `engines`, every torch call on the GPU thread
    (CUDA streams and hooks are per thread)."""

    def __init__(self, store: JobStore, settings: Settings, engines: EngineSlot) -> None:
        self.store = store
        self.settings = settings
        self.engines = engines
        self.data = DataDir(settings.storage.data_dir)
        self.gpu = ThreadPoolExecutor(1, thread_name_prefix="gpu")
        self.writer: JobEventWriter | None = None  # of the job rendering now (or the last)

    async def on_gpu(self, fn: Callable[..., _T], *args: Any) -> _T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.gpu, functools.partial(fn, *args))

    async def render(
        self, job: Job, lease: Lease, job_log: JobLog
    ) -> tuple[Done, RenderTimes, EngineLike]:
        """Render `job`; after a CUDA out-of-memory error once more in the next lower mode.

        Raises `Cancelled` (stopped before a step), `JobFailed` (a reason for its
        owner), `EngineStalled`, or what the engine raised."""
        return await self._render_with_fallback(job, lease, job_log)

    async def _render_with_fallback(
        self, job: Job, lease: Lease, job_log: JobLog
    ) -> tuple[Done, RenderTimes, EngineLike]:
        """Render; after a CUDA out-of-memory error once more in the next lower mode."""
        for retry in (True, False):
            try:
                return await self._render(job, lease, job_log)
            except torch.OutOfMemoryError:
                pass  # handled below: the traceback holds the failed step's tensors
            mode = self.engines.mode
            lower = await self.on_gpu(self.engines.lower_memory) if retry else None
            if lower is None:
                job_log("!", f"out of GPU memory in memory mode {mode}", logging.WARNING)
                break
            job_log("!", f"out of GPU memory; retrying in memory mode {lower}", logging.WARNING)
        raise JobFailed(_OOM_MESSAGE)

    async def _render(
        self, job: Job, lease: Lease, job_log: JobLog
    ) -> tuple[Done, RenderTimes, EngineLike]:
        try:
            params = generation_params(job, self.settings)
            preset = self.engines.preset_for(job.params.model)
        except ValueError as exc:
            raise JobFailed(f"These settings cannot be rendered: {exc}") from None
        source = self._source(job)
        engine = await self.on_gpu(self.engines.get, preset)
        try:
            image = None if source else await self.on_gpu(open_picture, job.input_path)
            end_image = await self.on_gpu(open_picture, job.end_image_path)
        except (OSError, UnidentifiedImageError) as exc:
            raise JobFailed(
                "The picture could not be read. Please send it again.", detail=str(exc)
            ) from None
        try:
            events = engine.generate(
                params,
                image,
                workdir=self.data.work_dir(job.id),
                end_image=end_image,
                source=source,
                should_cancel=lease.should_cancel,
            )
        except LoraUnavailable as exc:
            raise JobFailed(_LORA_MESSAGE.format(name=exc.name), detail=str(exc)) from None
        except ValueError as exc:  # the engine checks every setting before it starts
            raise JobFailed(f"These settings cannot be rendered: {exc}") from None
        writer = JobEventWriter(
            self.store,
            job,
            self.data,
            job_log,
            step_interval=self.settings.worker.step_event_interval,
        )
        self.writer = writer
        try:
            done = await self._drive(events, writer, lease)
        except SourceUnreadable as exc:  # read as the job starts, before its first step
            raise JobFailed(
                "The video to continue could not be read. Please send it again.", detail=str(exc)
            ) from None
        return done, writer.times, engine

    def _source(self, job: Job) -> VideoSource | None:
        """The video `job` continues, if any: the finished job it extends, or the video
        it was sent with. Raises `JobFailed` when its files are gone."""
        source = video_source(job, self.data)
        if source is None:
            return None
        if not source.video.exists() or not (source.checkpoint or source.video).exists():
            if job.params.extend_of is None:
                raise JobFailed("The video to continue is gone. Please send it again.")
            raise JobFailed(_GONE_MESSAGE.format(job=job.params.extend_of))
        return source

    async def _drive(
        self, events: Iterator[EngineEvent], writer: JobEventWriter, lease: Lease
    ) -> Done:
        """Pull the engine's events on the GPU thread and write them.

        The GPU computes the next event while the last one is written; only the
        cancel check (one indexed read) runs between two steps, so a cancel
        stops the job within one step.
        """
        loop = asyncio.get_running_loop()

        def pull() -> asyncio.Future[EngineEvent | None]:
            return loop.run_in_executor(self.gpu, next, events, None)

        pending = pull()
        try:
            while True:
                event = await _within_stall_limit(pending, self.settings.worker.stall_seconds)
                if event is None:
                    raise RuntimeError("the engine stopped before the video was finished")
                if isinstance(event, Done):
                    break
                await lease.check_cancel()
                pending = pull()
                await writer.write(event)
        except EngineStalled:
            raise  # the GPU thread hangs: any clean-up would wait for it too
        except BaseException:
            if not pending.done():  # writing failed while the engine ran on: stop it
                lease.aborted.set()
                with contextlib.suppress(BaseException):
                    await pending
            await self._close(events)
            raise
        await self._close(events)
        return event

    async def _close(self, events: Iterator[EngineEvent]) -> None:
        close = getattr(events, "close", None)
        if close is not None:
            await self.on_gpu(close)


async def _within_stall_limit(pending: asyncio.Future[_T], seconds: float) -> _T:
    try:
        return await asyncio.wait_for(asyncio.shield(pending), seconds)
    except TimeoutError:
        raise EngineStalled(f"no event from the engine for {seconds:.0f} s") from None


_GONE_MESSAGE = (
    "The video of job #{job} is gone (old files are removed), so it cannot be extended. "
    "Send it as a video with /animate to continue it."
)
_LORA_MESSAGE = (
    "The style (LoRA) {name} could not be loaded on the GPU worker (its file is missing, "
    "damaged or made for another model), so this video was not made. The host can see why "
    "with `framepack-bot doctor`. Try again without it, or pick another from /loras."
)
_OOM_MESSAGE = (
    "The GPU ran out of memory while rendering this video, even after a retry with less "
    "memory. Try a shorter video, or try again later."
)
