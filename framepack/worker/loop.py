"""The GPU worker: claim the fair next job, render it, finish its files, repeat.

One process per GPU. The model is loaded once, at start, and kept. A job goes
through three steps, each its own method:

- claim: `JobStore.claim` hands out the fair next job and marks it running;
- execute: the engine renders it on the GPU thread while the asyncio loop
  writes its events, heart-beats and watches for a cancel;
- finish: its files go to videos/<job>/ (with a copy that fits the job's
  upload limit) and the job is marked done. This runs in the background, so the
  GPU starts the next job meanwhile; the job is done only once its files exist.

Semantics are at-least-once: a job may run twice. A worker that stops
heart-beating (killed, crashed, machine off) loses its job to the next claim,
which resumes from the checkpoint of its last finished section in work/<job>/
and ends with the same frames. SIGTERM or SIGINT stops at the next step
boundary, keeps that checkpoint and puts the job back (`JobStore.release`).

Failures: a CUDA out-of-memory error is retried once in the next lower memory
mode (the job resumes from its checkpoint); a full disk fails nothing (the job
goes back to the queue once there is room, and no job is claimed meanwhile);
any other error fails the job with a short reason for its owner, and the
traceback goes to the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from framepack.engine.events import Cancelled, Done
from framepack.worker.delivery import deliver
from framepack.worker.engines import (
    EngineLike,
    EngineSlot,
    describe_model,
)
from framepack.worker.events import JobLog, RenderTimes
from framepack.worker.lease import Lease
from framepack.worker.render import EngineStalled, JobFailed, Renderer
from framepack.worker.status import WorkerStatus, gpu_gauges
from storage.config import Settings
from storage.files import DataDir, DiskFull, is_disk_full
from storage.positions import lora_factor
from storage.records import Job, JobStatus, Timing, WorkerState
from storage.store import JobLost, JobStore, QueueLimits

log = logging.getLogger("framepack.worker")

IDLE_POLL = 1.0  # seconds between two claims while the queue is empty
ROOM_POLL = 2.0  # seconds between two looks at the free space of a full disk
# Seconds without an event from the engine after which the GPU is taken to hang
# (a driver fault). The slowest legitimate gap is a long video's final encode
# or a section's decode in the low memory mode: minutes, not a quarter hour.
EXIT_STALLED = 3


class ModelUnavailable(Exception):
    """The model cannot be loaded (files missing, no GPU...): the worker cannot start."""


def default_worker_id() -> str:
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:4]}"


class Worker:
    """Claims and renders jobs until stopped (or, in burst mode, until the queue is empty)."""

    def __init__(
        self,
        store: JobStore,
        settings: Settings,
        engines: EngineSlot,
        *,
        worker_id: str | None = None,
        burst: bool = False,
        status: WorkerStatus | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.engines = engines
        self.data = DataDir(settings.storage.data_dir)
        self.worker_id = worker_id or default_worker_id()
        self.burst = burst
        self.stopping = threading.Event()
        self._wake = asyncio.Event()
        self.renderer = Renderer(store, settings, engines)
        self._finishing: set[asyncio.Task[None]] = set()
        self.status = status or WorkerStatus(
            store, self.worker_id, interval=settings.worker.heartbeat_seconds
        )
        self.status.gauges = self._gauges

    def stop(self) -> None:
        """Stop at the next step boundary; the job in hand goes back to the queue."""
        self.stopping.set()
        self._wake.set()

    async def run(self) -> None:
        idle = stalled = False
        ended = WorkerState.STOPPED
        self.status.start()
        try:
            await self._load()
            while not self.stopping.is_set():
                await self._wait_for_room()
                job = await self.store.claim(self.worker_id)
                if job is not None:
                    idle = False
                    await self.status.set(WorkerState.RENDERING, job_id=job.id)
                    await self.execute(job)
                    await self.status.set(WorkerState.READY)
                    continue
                if self.burst:
                    break
                if not idle:  # the queue just ran dry: fold the WAL now, not during a job
                    idle = True
                    await self.store.checkpoint()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), IDLE_POLL)
        except EngineStalled:
            stalled = True
            ended = WorkerState.FAILED
            raise
        except ModelUnavailable:
            ended = WorkerState.FAILED
            raise
        finally:
            if self._finishing:
                await asyncio.gather(*self._finishing, return_exceptions=True)
            with contextlib.suppress(Exception):  # the end is logged whatever the store says
                await self.status.stop(ended)
            await self.store.checkpoint()
            self.renderer.gpu.shutdown(wait=not stalled)
            log.info("worker %s: stopped", self.worker_id)

    async def _load(self) -> None:
        log.info("worker %s: loading the %s model", self.worker_id, self.engines.preset)
        started = time.monotonic()
        await self.status.set(
            WorkerState.LOADING,
            preset=self.engines.preset,
            host=socket.gethostname(),
            pid=os.getpid(),
        )
        try:
            engine = await self.renderer.on_gpu(self.engines.get)
        except Exception as exc:
            log.debug("loading the model failed", exc_info=exc)
            await self.status.set(WorkerState.FAILED, error=f"cannot load the model: {exc}")
            raise ModelUnavailable(
                f"cannot load the {self.engines.preset} model: {exc} "
                "(`framepack-bot doctor` says what is missing)"
            ) from exc
        await self.status.set(
            WorkerState.READY, device=str(_device_of(engine)), memory_mode=self.engines.mode
        )
        log.info("worker %s: ready in %.1f s", self.worker_id, time.monotonic() - started)

    def _gauges(self) -> dict[str, Any]:
        """What each heartbeat reports besides the state: VRAM, seconds per step."""
        out: dict[str, Any] = {}
        engine = self.engines.engine
        if engine is not None:
            out.update(gpu_gauges(_device_of(engine)))
            out["memory_mode"] = self.engines.mode
        writer = self.renderer.writer
        if writer is not None and writer.times.step_seconds is not None:
            out["step_seconds"] = round(writer.times.step_seconds, 4)
        return out

    # ---- execute -----------------------------------------------------------

    async def execute(self, job: Job) -> None:
        """Render a claimed job; on success its files are finished in the background."""
        job_log = JobLog(job.id)
        job_log("→", f"claimed ({job.platform}, attempt {job.attempts})")
        lease = Lease(
            self.store,
            job.id,
            self.worker_id,
            interval=self.settings.worker.heartbeat_seconds,
            stopping=self.stopping,
        )
        lease.start()
        try:
            done, times, engine = await self.renderer.render(job, lease, job_log)
        except Cancelled as exc:
            await lease.stop()
            await self._stopped(job, lease, job_log, exc.sections_done)
            return
        except EngineStalled:
            await lease.stop()  # left running: it goes back to the queue once stale
            stall = self.settings.worker.stall_seconds
            job_log("!", f"the engine made no progress for {stall:.0f} s", logging.ERROR)
            raise
        except Exception as exc:
            if is_disk_full(exc):
                await self._out_of_room(job, lease, job_log)
                return
            await lease.stop()
            await self._fail(job, job_log, exc)
            return
        except BaseException:
            await lease.stop()
            raise
        task = asyncio.create_task(self.finish(job, lease, job_log, done, times, engine))
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    # ---- finish ------------------------------------------------------------

    async def finish(
        self,
        job: Job,
        lease: Lease,
        job_log: JobLog,
        done: Done,
        times: RenderTimes,
        engine: EngineLike,
    ) -> None:
        """Place the files and mark the job done (runs beside the next job)."""
        render_seconds = time.monotonic() - (times.started_at or job_log.claimed_at)
        try:
            files = await asyncio.to_thread(
                deliver, done.video, self.data.videos_dir(job.id), job.upload_limit
            )
        except Exception as exc:
            if is_disk_full(exc):  # it resumes after its last section: the files again
                await self._out_of_room(job, lease, job_log)
                return
            await lease.stop()
            await self._fail(job, job_log, exc)
            return
        metadata: dict[str, Any] = {
            "frames": done.frames,
            "seconds": done.seconds,
            "width": done.width,
            "height": done.height,
            "render_seconds": round(render_seconds, 3),
            "model": job.params.model,
            "seed": job.params.seed,
            "steps": job.params.steps,
            "sections": times.sections,
            "attempts": job.attempts,
            "cache": done.metadata.get("cache", "off"),  # and its threshold: "magcache 0.1"
            **describe_model(engine),
        }
        if files.too_large:
            metadata["upload_error"] = "The video is too large to upload here."
            job_log("!", f"no copy fits the upload limit: {files.too_large}", logging.WARNING)
        await lease.stop()
        try:
            ended = await self.store.complete(
                job.id,
                self.worker_id,
                result_path=str(files.final),
                delivery_path=None if files.upload is None else str(files.upload),
                metadata=metadata,
            )
            if times.steps_run:
                await self.store.record_timing(
                    Timing(
                        job_id=job.id,
                        model=job.params.model,
                        video_seconds=job.params.seconds,
                        steps=job.params.steps,
                        sections=times.sections,
                        render_seconds=render_seconds,
                        # per step with its share of decoding and encoding, so
                        # that sections x steps x this estimates a whole job (of
                        # the base model: a LoRA job's time divided by its factor)
                        step_seconds=render_seconds
                        / times.steps_run
                        / lora_factor(len(job.params.loras)),
                        finished_at=time.time(),
                        cache=done.metadata.get("cache", "off").split()[0],
                    )
                )
        except JobLost:
            job_log("!", "lost: another worker has it now", logging.WARNING)
            return
        except Exception:
            # Left running without a heartbeat: the store hands it out again and
            # the next worker finishes it from its checkpoint.
            log.exception("job %d: could not record it as done", job.id)
            return
        if ended.status is JobStatus.CANCELLED:
            job_log("⊘", "cancelled: its cancel came while it was finishing")
            return
        job_log("✓", f"done in {render_seconds:.1f} s: {done.frames} frames, "
                f"{done.width}x{done.height}")  # fmt: skip

    # ---- a full disk -------------------------------------------------------------

    def _has_room(self) -> bool:
        return self.data.free_bytes() >= self.settings.storage.min_free_mb * 1_000_000

    async def _wait_for_room(self) -> None:
        """Claim nothing while the data dir's disk is too full: the job would fail."""
        if self._has_room():
            return
        log.error(
            "worker %s: the disk of %s has less than [storage] min_free_mb free; jobs wait "
            "until there is room",
            self.worker_id,
            self.data.root,
        )
        await self.status.set(self.status.state, disk_full=True)  # for the host's page
        while not self.stopping.is_set() and not self._has_room():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), ROOM_POLL)
        await self.status.set(self.status.state, disk_full=False)
        if not self.stopping.is_set():
            log.info("worker %s: there is room on the disk again", self.worker_id)

    async def _out_of_room(self, job: Job, lease: Lease, job_log: JobLog) -> None:
        """The disk filled up under a job: it goes back to the queue once there is room
        (the attempt does not count) and resumes from its last finished section."""
        job_log("!", "the disk is full; it resumes when there is room", logging.ERROR)
        await self.status.set(self.status.state, disk_full=True)
        try:
            while not self._has_room() and not self.stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), ROOM_POLL)
            await self.status.set(self.status.state, disk_full=False)
            while True:
                try:
                    await self.store.release(job.id, self.worker_id, "the disk was full")
                    break
                except DiskFull:  # the database cannot grow yet either
                    if self.stopping.is_set():
                        return  # its heartbeat stops: it goes back to the queue when stale
                    await asyncio.sleep(ROOM_POLL)
            job_log("↩", "released: there is room again")
        except JobLost:
            job_log("!", "lost: another worker has it now", logging.WARNING)
        finally:
            await lease.stop()

    # ---- the other ends --------------------------------------------------------

    async def _stopped(self, job: Job, lease: Lease, job_log: JobLog, sections_done: int) -> None:
        """The engine stopped before a step: cancelled, lost, or the worker is stopping."""
        where = f"after section {sections_done}" if sections_done else "before its first section"
        try:
            if lease.lost.is_set():
                job_log("!", "lost: another worker has it now", logging.WARNING)
            elif lease.cancelled.is_set():
                await self.store.confirm_cancelled(job.id, self.worker_id)
                job_log("⊘", f"cancelled {where}")
            else:
                await self.store.release(job.id, self.worker_id, "worker shut down")
                job_log("↩", f"released: the worker is stopping; it resumes {where}")
        except JobLost:
            job_log("!", "lost: another worker has it now", logging.WARNING)

    async def _fail(self, job: Job, job_log: JobLog, exc: Exception) -> None:
        detail = ""
        if isinstance(exc, JobFailed):
            reason = str(exc)
            detail = f" ({exc.detail})" if exc.detail else ""
        else:
            log.error("job %d: %s", job.id, exc, exc_info=exc)
            reason = (
                f"The renderer failed ({type(exc).__name__}). "
                "The host can find the details in the worker's log."
            )
        try:
            await self.store.fail(job.id, reason, worker_id=self.worker_id)
        except JobLost:
            job_log("!", "lost: another worker has it now", logging.WARNING)
            return
        job_log("×", f"failed: {reason}{detail}")


def _device_of(engine: EngineLike) -> Any:
    return getattr(engine, "device", None)


async def run_worker(
    settings: Settings,
    *,
    burst: bool = False,
    engines: EngineSlot | None = None,
    worker_id: str | None = None,
) -> int:
    """`framepack-bot worker`: serve the queue until SIGTERM or SIGINT (or empty, in burst)."""
    import signal

    data = DataDir(settings.storage.data_dir)
    data.ensure()
    store = await JobStore.open(data.database, QueueLimits.from_settings(settings.queue))
    worker_id = worker_id or default_worker_id()
    status = WorkerStatus(store, worker_id, interval=settings.worker.heartbeat_seconds)
    worker = Worker(
        store,
        settings,
        engines or EngineSlot.from_settings(settings, on_download=status.downloading),
        worker_id=worker_id,
        burst=burst,
        status=status,
    )
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, worker.stop)
    try:
        await worker.run()
    except ModelUnavailable as exc:
        log.error("worker %s: %s", worker.worker_id, exc)
        return 1
    except EngineStalled as exc:
        log.error("worker %s: %s; exiting so that it can be restarted", worker.worker_id, exc)
        await store.close()
        # The hung GPU thread can be neither stopped nor joined, and a normal exit
        # would wait for it forever.
        os._exit(EXIT_STALLED)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        await store.close()
    return 0
