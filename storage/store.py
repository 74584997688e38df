"""The job store: one `JobStore` in front of the store's concerns.

| concern | module |
|---|---|
| a job's life, reads of the queue, the pause flag | storage/lifecycle.py |
| the fair order (SQL) | storage/fair_order.py |
| limits checked when a job is queued | storage/limits.py |
| positions and estimated starts | storage/positions.py |
| events | storage/events.py |
| users, bans, per-user limits | storage/users.py |
| chat message references | storage/messages.py |
| retention of old files | storage/retention.py |
| workers' states and restarts | storage/workers.py |
| the gallery, usage per user, histograms (reads for the web page) | storage/stats.py |

`StoreCore` is all of them on one blocking sqlite3 connection. `JobStore` runs
each of its calls on one thread of its own (sqlite3 connections belong to the
thread that uses them), so one call is one thread hop however many statements
it runs, and the event loop never waits for the disk.

Semantics are at-least-once: a job may run twice (a worker that stops
heart-beating loses its job, which resumes from its last section checkpoint on
the next worker). Claims are atomic across processes: one `UPDATE … RETURNING`
statement, which SQLite runs under its write lock.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from storage.base import JobNotFound, QueueLimits
from storage.db import checkpoint, open_database
from storage.files import DiskFull, is_disk_full
from storage.lifecycle import IllegalTransition, JobLost
from storage.limits import Limits, QueueRefused
from storage.messages import Messages
from storage.positions import Positions
from storage.records import Job, JobParams
from storage.retention import Retention
from storage.stats import Stats
from storage.workers import Workers

__all__ = [
    "IllegalTransition",
    "JobLost",
    "JobNotFound",
    "JobStore",
    "QueueLimits",
    "QueueRefused",
    "StoreCore",
]


class StoreCore(Limits, Positions, Messages, Retention, Workers, Stats):
    """Every read and write of the queue on one blocking sqlite3 connection."""

    def checkpoint(self) -> None:
        """Fold the WAL into the database; call it when idle, not in a claim."""
        checkpoint(self.db)

    def enqueue(
        self,
        *,
        platform: str,
        user_id: str,
        chat_id: str,
        params: JobParams,
        input_path: str,
        user_name: str = "",
        end_image_path: str | None = None,
        upload_limit: int | None = None,
        origin: Mapping[str, Any] | None = None,
        exempt: bool = False,
    ) -> Job:
        """Queue a job, or raise `QueueRefused` with the reason and its numbers.

        `exempt` (admins) skips the per-user limits, never a ban or a full queue.
        """
        now = self.clock()
        with self._tx():
            self.check_limits(platform, user_id, params, now, exempt=exempt)
            return self._insert(
                platform=platform,
                user_id=user_id,
                user_name=user_name,
                chat_id=chat_id,
                params=params,
                input_path=input_path,
                end_image_path=end_image_path,
                upload_limit=upload_limit,
                origin=origin,
                now=now,
            )


_T = TypeVar("_T")
_P = ParamSpec("_P")


def _in_thread(
    method: Callable[Concatenate[StoreCore, _P], _T],
) -> Callable[Concatenate[JobStore, _P], Awaitable[_T]]:
    """The async twin of a `StoreCore` method: same arguments, run in the store's thread."""
    name = method.__name__

    async def call(self: JobStore, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        return await self.run(getattr(self.core, name), *args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = method.__doc__
    return call


class JobStore:
    """The async face of `StoreCore`: every method of it, awaited, one thread hop each.

    The bot process and the worker both use this; `run` executes a function of
    several `core` calls in the store's thread (one hop, e.g. one transaction).
    """

    def __init__(self, core: StoreCore, thread: ThreadPoolExecutor) -> None:
        self.core = core
        self._thread = thread

    @classmethod
    async def open(
        cls,
        path: Path | str,
        limits: QueueLimits | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> JobStore:
        """Open (and create or migrate) the database at `path`.

        Raises `storage.db.SchemaTooNew` for a file from a newer framepack-bot.
        """
        thread = ThreadPoolExecutor(1, thread_name_prefix="store")
        loop = asyncio.get_running_loop()
        try:
            db = await loop.run_in_executor(thread, open_database, path)
        except BaseException:
            thread.shutdown(wait=False)
            raise
        return cls(StoreCore(db, limits, clock=clock), thread)

    @property
    def limits(self) -> QueueLimits:
        return self.core.limits

    @property
    def clock(self) -> Callable[[], float]:
        return self.core.clock

    async def close(self) -> None:
        await self.run(self.core.db.close)
        self._thread.shutdown(wait=True)

    async def __aenter__(self) -> JobStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def run(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Run `fn` in the store's thread (fn may use `self.core`).

        Raises `DiskFull` when the database could not grow (SQLite's "database or disk
        is full"): the callers treat a full disk alike wherever they meet it."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._thread, functools.partial(fn, *args, **kwargs))
        except sqlite3.OperationalError as exc:
            if is_disk_full(exc):
                raise DiskFull(f"the database could not grow: {exc}") from exc
            raise

    checkpoint = _in_thread(StoreCore.checkpoint)
    get = _in_thread(StoreCore.get)
    find = _in_thread(StoreCore.find)
    find_many = _in_thread(StoreCore.find_many)
    waiting = _in_thread(StoreCore.waiting)
    running = _in_thread(StoreCore.running)
    jobs_of = _in_thread(StoreCore.jobs_of)
    undelivered = _in_thread(StoreCore.undelivered)
    counts = _in_thread(StoreCore.counts)
    enqueue = _in_thread(StoreCore.enqueue)
    claim = _in_thread(StoreCore.claim)
    heartbeat = _in_thread(StoreCore.heartbeat)
    requeue_stale = _in_thread(StoreCore.requeue_stale)
    release = _in_thread(StoreCore.release)
    complete = _in_thread(StoreCore.complete)
    fail = _in_thread(StoreCore.fail)
    confirm_cancelled = _in_thread(StoreCore.confirm_cancelled)
    cancel_requested = _in_thread(StoreCore.cancel_requested)
    cancel = _in_thread(StoreCore.cancel)
    mark_delivered = _in_thread(StoreCore.mark_delivered)
    step_seconds = _in_thread(StoreCore.step_seconds)
    estimate_duration = _in_thread(StoreCore.estimate_duration)
    positions = _in_thread(StoreCore.positions)
    position = _in_thread(StoreCore.position)
    record_timing = _in_thread(StoreCore.record_timing)
    add_event = _in_thread(StoreCore.add_event)
    events_since = _in_thread(StoreCore.events_since)
    last_event_id = _in_thread(StoreCore.last_event_id)
    user = _in_thread(StoreCore.user)
    set_banned = _in_thread(StoreCore.set_banned)
    set_overrides = _in_thread(StoreCore.set_overrides)
    paused = _in_thread(StoreCore.paused)
    set_paused = _in_thread(StoreCore.set_paused)
    set_message = _in_thread(StoreCore.set_message)
    message = _in_thread(StoreCore.message)
    update_message_state = _in_thread(StoreCore.update_message_state)
    job_of_message = _in_thread(StoreCore.job_of_message)
    expired_jobs = _in_thread(StoreCore.expired_jobs)
    mark_files_removed = _in_thread(StoreCore.mark_files_removed)
    referenced_inputs = _in_thread(StoreCore.referenced_inputs)
    set_worker = _in_thread(StoreCore.set_worker)
    workers = _in_thread(StoreCore.workers)
    live_workers = _in_thread(StoreCore.live_workers)
    model_activity = _in_thread(StoreCore.model_activity)
    forget_workers = _in_thread(StoreCore.forget_workers)
    record_restart = _in_thread(StoreCore.record_restart)
    last_restart = _in_thread(StoreCore.last_restart)
    restart_count = _in_thread(StoreCore.restart_count)
    gallery = _in_thread(StoreCore.gallery)
    usage = _in_thread(StoreCore.usage)
    wait_histogram = _in_thread(StoreCore.wait_histogram)
    render_histogram = _in_thread(StoreCore.render_histogram)
