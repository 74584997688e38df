"""The job store: enqueue with limits, the fair claim, heartbeats, cancel,
positions and estimates, events, delivery, users and chat message references.

Semantics are at-least-once: a job may run twice (a worker that stops
heart-beating loses its job, which resumes from its last section checkpoint
on the next worker). Claims are atomic across processes: one `UPDATE …
RETURNING` inside a `BEGIN IMMEDIATE` transaction, its row count checked.

Fairness: a user's n-th waiting job never runs before every other user's
earlier-ranked waiting jobs. The rank of each waiting job among its owner's
waiting jobs is kept in `fair_rank` (recomputed for one user whenever that
user's waiting set changes), so the claim and the positions are one indexed
ordering: (fair_rank, queued_at, id).
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from storage.db import connect, transaction
from storage.records import (
    TRANSITIONS,
    ChatMessageRef,
    EventKind,
    Job,
    JobEvent,
    JobParams,
    JobStatus,
    QueuePosition,
    Timing,
    UserRecord,
)

DAY = 24 * 3600.0
# Until real timings exist, a step is assumed to take this long (a 4090-class GPU
# at 640 takes 1.5-2.5 s per step); estimates improve after the first job.
DEFAULT_STEP_SECONDS = 2.0
FAIR_ORDER = "fair_rank, queued_at, id"


class QueueRefused(Exception):
    """A job the queue will not take; `message` is written for the user."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # banned | user_limit | queue_full | daily_limit | cooldown
        self.message = message


class IllegalTransition(Exception):
    """A status change that the job's life does not allow (a bug, or a lost race)."""


class JobNotFound(LookupError):
    pass


class JobLost(Exception):
    """The worker no longer owns this job (it went stale and was handed out again)."""


@dataclass(frozen=True)
class QueueLimits:
    max_waiting_per_user: int = 3
    max_waiting: int = 100
    max_video_seconds_per_day: float = 600.0  # 0: no limit
    cooldown_seconds: float = 0.0
    max_attempts: int = 3
    heartbeat_timeout: float = 60.0

    @classmethod
    def from_settings(cls, queue: Any) -> QueueLimits:
        """From `storage.config.QueueSettings` (same field names)."""
        return cls(**{name: getattr(queue, name) for name in cls.__dataclass_fields__})


def sections_for(seconds: float, latent_window: int = 9, fps: int = 30) -> int:
    """Sections FramePack renders for `seconds` of video (as the original computes it)."""
    return max(round((seconds * fps) / (latent_window * 4)), 1)


def format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s" if sec else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _job(row: Mapping[str, Any]) -> Job:
    return Job(
        id=row["id"],
        platform=row["platform"],
        user_id=row["user_id"],
        user_name=row["user_name"],
        chat_id=row["chat_id"],
        params=JobParams.from_json(row["params"]),
        input_path=row["input_path"],
        end_image_path=row["end_image_path"],
        status=JobStatus(row["status"]),
        attempts=row["attempts"],
        worker_id=row["worker_id"],
        queued_at=row["queued_at"],
        started_at=row["started_at"],
        heartbeat_at=row["heartbeat_at"],
        finished_at=row["finished_at"],
        cancel_requested=bool(row["cancel_requested"]),
        upload_limit=row["upload_limit"],
        result_path=row["result_path"],
        delivery_path=row["delivery_path"],
        error=row["error"],
        delivered_at=row["delivered_at"],
        origin=json.loads(row["origin"] or "{}"),
    )


def _event(row: Mapping[str, Any]) -> JobEvent:
    return JobEvent(
        id=row["id"],
        job_id=row["job_id"],
        kind=EventKind(row["kind"]),
        data=json.loads(row["data"]),
        created_at=row["created_at"],
    )


class JobStore:
    """Every read and write of the queue, over one aiosqlite connection."""

    def __init__(
        self,
        conn: aiosqlite.Connection,
        limits: QueueLimits | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.conn = conn
        self.limits = limits or QueueLimits()
        self.clock = clock

    @classmethod
    async def open(
        cls,
        path: Path | str,
        limits: QueueLimits | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> JobStore:
        return cls(await connect(path), limits, clock=clock)

    async def close(self) -> None:
        await self.conn.close()

    async def __aenter__(self) -> JobStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- reading -------------------------------------------------------

    async def _one(self, sql: str, args: Iterable[Any] = ()) -> aiosqlite.Row | None:
        async with self.conn.execute(sql, tuple(args)) as cur:
            return await cur.fetchone()

    async def _all(self, sql: str, args: Iterable[Any] = ()) -> list[aiosqlite.Row]:
        async with self.conn.execute(sql, tuple(args)) as cur:
            return list(await cur.fetchall())

    async def get(self, job_id: int) -> Job:
        row = await self._one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        if row is None:
            raise JobNotFound(f"no job #{job_id}")
        return _job(row)

    async def find(self, job_id: int) -> Job | None:
        row = await self._one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return None if row is None else _job(row)

    async def waiting(self) -> list[Job]:
        """Every queued job, in the order they will run."""
        rows = await self._all(f"SELECT * FROM jobs WHERE status = 'queued' ORDER BY {FAIR_ORDER}")
        return [_job(r) for r in rows]

    async def running(self) -> list[Job]:
        rows = await self._all(
            "SELECT * FROM jobs WHERE status = 'running' ORDER BY started_at, id"
        )
        return [_job(r) for r in rows]

    async def jobs_of(
        self,
        platform: str,
        user_id: str,
        statuses: Iterable[JobStatus] | None = None,
        limit: int = 50,
    ) -> list[Job]:
        sql = "SELECT * FROM jobs WHERE platform = ? AND user_id = ?"
        args: list[Any] = [platform, user_id]
        if statuses is not None:
            wanted = [s.value for s in statuses]
            sql += f" AND status IN ({','.join('?' * len(wanted))})"
            args += wanted
        rows = await self._all(sql + " ORDER BY id DESC LIMIT ?", [*args, limit])
        return [_job(r) for r in rows]

    async def undelivered(self) -> list[Job]:
        """Finished jobs whose owner has not been told yet (done, failed or cancelled)."""
        rows = await self._all(
            "SELECT * FROM jobs WHERE status IN ('done', 'failed', 'cancelled') "
            "AND delivered_at IS NULL ORDER BY finished_at, id"
        )
        return [_job(r) for r in rows]

    async def counts(self) -> dict[str, int]:
        rows = await self._all("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status")
        out = {s.value: 0 for s in JobStatus}
        out.update({r["status"]: r["n"] for r in rows})
        return out

    # ---- enqueue -------------------------------------------------------

    async def enqueue(
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
        """Queue a job, or raise `QueueRefused` with a reason the user understands.

        `exempt` (admins) skips the per-user limits, never a ban or a full queue.
        """
        now = self.clock()
        async with transaction(self.conn):
            await self._check_limits(platform, user_id, params, now, exempt=exempt)
            row = await self._one(
                "INSERT INTO jobs (platform, user_id, user_name, chat_id, params, input_path, "
                "end_image_path, status, queued_at, upload_limit, origin) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?) RETURNING id",
                (
                    platform,
                    user_id,
                    user_name,
                    chat_id,
                    params.to_json(),
                    input_path,
                    end_image_path,
                    now,
                    upload_limit,
                    json.dumps(dict(origin or {})),
                ),
            )
            assert row is not None
            job_id = row["id"]
            await self._rerank(platform, user_id)
            await self._add_event(job_id, EventKind.QUEUED, {}, now)
            job = await self.get(job_id)
        return job

    async def _check_limits(
        self, platform: str, user_id: str, params: JobParams, now: float, *, exempt: bool
    ) -> None:
        user = await self.user(platform, user_id)
        if user.banned:
            why = f" ({user.ban_reason})" if user.ban_reason else ""
            raise QueueRefused("banned", f"You are not allowed to queue jobs here{why}.")
        limits = self.limits
        row = await self._one("SELECT COUNT(*) AS n FROM jobs WHERE status = 'queued'")
        if row is not None and row["n"] >= limits.max_waiting:
            raise QueueRefused(
                "queue_full",
                f"The queue is full ({row['n']} jobs waiting). Please try again later.",
            )
        if exempt:
            return
        over = user.overrides
        per_user = int(over.get("max_waiting_per_user", limits.max_waiting_per_user))
        row = await self._one(
            "SELECT COUNT(*) AS n FROM jobs WHERE platform = ? AND user_id = ? "
            "AND status IN ('queued', 'running')",
            (platform, user_id),
        )
        if row is not None and row["n"] >= per_user:
            raise QueueRefused(
                "user_limit",
                f"You already have {row['n']} jobs waiting or rendering, the most allowed "
                f"({per_user}). Wait for one to finish, or /cancel one.",
            )
        cooldown = float(over.get("cooldown_seconds", limits.cooldown_seconds))
        if cooldown > 0:
            row = await self._one(
                "SELECT MAX(queued_at) AS last FROM jobs WHERE platform = ? AND user_id = ?",
                (platform, user_id),
            )
            if row is not None and row["last"] is not None and now - row["last"] < cooldown:
                wait = math.ceil(cooldown - (now - row["last"]))
                raise QueueRefused(
                    "cooldown", f"Please wait {format_duration(wait)} before your next job."
                )
        budget = float(over.get("max_video_seconds_per_day", limits.max_video_seconds_per_day))
        if budget > 0:
            # Failed jobs and jobs cancelled before they started cost nothing.
            row = await self._one(
                "SELECT COALESCE(SUM(json_extract(params, '$.seconds')), 0) AS used, "
                "MIN(queued_at) AS oldest FROM jobs WHERE platform = ? AND user_id = ? "
                "AND queued_at > ? AND (status IN ('queued', 'running', 'done') "
                "OR (status = 'cancelled' AND started_at IS NOT NULL))",
                (platform, user_id, now - DAY),
            )
            used = float(row["used"]) if row is not None else 0.0
            if used + params.seconds > budget + 1e-9:
                left = max(0.0, budget - used)
                again = format_duration((row["oldest"] or now) + DAY - now) if row else "a day"
                raise QueueRefused(
                    "daily_limit",
                    f"You have {left:g} of your {budget:g} seconds of video left for the last "
                    f"24 hours and this job asks for {params.seconds:g}. Ask for fewer seconds, "
                    f"or try again in {again}.",
                )

    async def _rerank(self, platform: str, user_id: str) -> None:
        """Recompute the fair rank of one user's waiting jobs (1 = their next)."""
        await self.conn.execute(
            "UPDATE jobs SET fair_rank = (SELECT COUNT(*) FROM jobs AS j2 "
            "  WHERE j2.platform = jobs.platform AND j2.user_id = jobs.user_id "
            "  AND j2.status = 'queued' AND (j2.queued_at, j2.id) <= (jobs.queued_at, jobs.id)) "
            "WHERE platform = ? AND user_id = ? AND status = 'queued'",
            (platform, user_id),
        )

    # ---- the one door for status changes ---------------------------------

    async def _transition(
        self,
        job_id: int,
        to: JobStatus,
        *,
        expect: Iterable[JobStatus] | None = None,
        event: tuple[EventKind, dict[str, Any]] | None = None,
        **fields: Any,
    ) -> Job:
        """Change a job's status, refusing any change its life does not allow.

        Must run inside a transaction. `expect` narrows the allowed sources;
        `fields` are columns set with it.
        """
        row = await self._one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        if row is None:
            raise JobNotFound(f"no job #{job_id}")
        current = JobStatus(row["status"])
        allowed = set(TRANSITIONS[current])
        if expect is not None and current not in set(expect):
            allowed = set()
        if to not in allowed:
            raise IllegalTransition(f"job #{job_id}: {current.value} -> {to.value} is not allowed")
        now = self.clock()
        values = dict(fields)
        if to.finished:
            values.setdefault("finished_at", now)
        sets = ", ".join(f"{k} = ?" for k in ["status", *values])
        cur = await self.conn.execute(
            f"UPDATE jobs SET {sets} WHERE id = ? AND status = ?",
            (to.value, *values.values(), job_id, current.value),
        )
        if cur.rowcount != 1:
            raise IllegalTransition(f"job #{job_id} changed while it was updated")
        if JobStatus.QUEUED in (current, to):
            await self._rerank(row["platform"], row["user_id"])
        if event is not None:
            await self._add_event(job_id, event[0], event[1], now)
        return await self.get(job_id)

    # ---- the worker's side ---------------------------------------------

    async def claim(self, worker_id: str) -> Job | None:
        """Hand the fair next job to `worker_id`, or None (queue empty or paused).

        Stale running jobs are put back first, so a dead worker's job is
        offered again in its fair place.
        """
        await self.requeue_stale()
        if await self.paused():
            return None
        now = self.clock()
        async with transaction(self.conn):
            row = await self._one(
                "UPDATE jobs SET status = 'running', worker_id = ?, heartbeat_at = ?, "
                "started_at = COALESCE(started_at, ?), attempts = attempts + 1, fair_rank = NULL "
                f"WHERE id = (SELECT id FROM jobs WHERE status = 'queued' ORDER BY {FAIR_ORDER} "
                "LIMIT 1) AND status = 'queued' RETURNING *",
                (worker_id, now, now),
            )
            if row is None:
                return None
            await self._rerank(row["platform"], row["user_id"])
        return _job(row)

    async def heartbeat(self, job_id: int, worker_id: str) -> bool:
        """Record that `worker_id` still works on the job; True when a cancel is asked.

        Raises `JobLost` when the job was handed to another worker meanwhile.
        """
        row = await self._one(
            "UPDATE jobs SET heartbeat_at = ? WHERE id = ? AND status = 'running' "
            "AND worker_id = ? RETURNING cancel_requested",
            (self.clock(), job_id, worker_id),
        )
        if row is None:
            raise JobLost(f"job #{job_id} is not running on {worker_id} any more")
        return bool(row["cancel_requested"])

    async def requeue_stale(self, timeout: float | None = None) -> list[Job]:
        """Running jobs silent for `timeout` go back to the queue, or fail past max attempts."""
        timeout = self.limits.heartbeat_timeout if timeout is None else timeout
        cutoff = self.clock() - timeout
        rows = await self._all(
            "SELECT id, attempts FROM jobs WHERE status = 'running' AND heartbeat_at < ?",
            (cutoff,),
        )
        out = []
        for row in rows:
            async with transaction(self.conn):
                try:
                    if row["attempts"] >= self.limits.max_attempts:
                        reason = (
                            f"The renderer stopped {row['attempts']} times while working on "
                            "this job, so it was given up."
                        )
                        job = await self._transition(
                            row["id"],
                            JobStatus.FAILED,
                            expect=[JobStatus.RUNNING],
                            error=reason,
                            event=(EventKind.FAILED, {"reason": reason}),
                        )
                    else:
                        job = await self._requeue(row["id"], "worker stopped")
                except IllegalTransition:
                    continue  # another process handled it first
            out.append(job)
        return out

    async def _requeue(self, job_id: int, why: str) -> Job:
        return await self._transition(
            job_id,
            JobStatus.QUEUED,
            expect=[JobStatus.RUNNING],
            event=(EventKind.REQUEUED, {"why": why}),
            heartbeat_at=None,
            worker_id=None,
        )

    async def release(self, job_id: int, worker_id: str, why: str = "worker shut down") -> Job:
        """A worker that stops cleanly puts its job back; the attempt does not count."""
        async with transaction(self.conn):
            job = await self._get_owned(job_id, worker_id)
            await self.conn.execute(
                "UPDATE jobs SET attempts = MAX(attempts - 1, 0) WHERE id = ?", (job.id,)
            )
            return await self._requeue(job_id, why)

    async def _get_owned(self, job_id: int, worker_id: str) -> Job:
        job = await self.get(job_id)
        if job.status is not JobStatus.RUNNING or job.worker_id != worker_id:
            raise JobLost(f"job #{job_id} is not running on {worker_id} any more")
        return job

    async def complete(
        self,
        job_id: int,
        worker_id: str,
        *,
        result_path: str,
        delivery_path: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Job:
        async with transaction(self.conn):
            await self._get_owned(job_id, worker_id)
            return await self._transition(
                job_id,
                JobStatus.DONE,
                expect=[JobStatus.RUNNING],
                event=(
                    EventKind.DONE,
                    {"video": result_path, "delivery": delivery_path, **dict(metadata or {})},
                ),
                result_path=result_path,
                delivery_path=delivery_path,
            )

    async def fail(self, job_id: int, reason: str, *, worker_id: str | None = None) -> Job:
        async with transaction(self.conn):
            if worker_id is not None:
                await self._get_owned(job_id, worker_id)
            return await self._transition(
                job_id,
                JobStatus.FAILED,
                event=(EventKind.FAILED, {"reason": reason}),
                error=reason,
            )

    async def confirm_cancelled(self, job_id: int, worker_id: str) -> Job:
        """The worker stopped a running job whose cancel was asked."""
        async with transaction(self.conn):
            await self._get_owned(job_id, worker_id)
            return await self._transition(
                job_id,
                JobStatus.CANCELLED,
                expect=[JobStatus.RUNNING],
                event=(EventKind.CANCELLED, {}),
            )

    async def cancel_requested(self, job_id: int) -> bool:
        row = await self._one("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,))
        return bool(row and row["cancel_requested"])

    # ---- the user's side -----------------------------------------------

    async def cancel(self, job_id: int) -> Job:
        """A waiting job ends at once; a running one gets a flag its worker reads.

        Raises `IllegalTransition` for a job that has already finished.
        """
        async with transaction(self.conn):
            job = await self.get(job_id)
            if job.status is JobStatus.QUEUED:
                return await self._transition(
                    job_id, JobStatus.CANCELLED, event=(EventKind.CANCELLED, {})
                )
            if job.status is JobStatus.RUNNING:
                await self.conn.execute(
                    "UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,)
                )
                return await self.get(job_id)
            raise IllegalTransition(f"job #{job_id} has already {job.status.value}")

    async def mark_delivered(self, job_id: int) -> bool:
        """Record that the owner has the outcome; True only for the call that recorded it."""
        cur = await self.conn.execute(
            "UPDATE jobs SET delivered_at = ? WHERE id = ? AND delivered_at IS NULL "
            "AND status IN ('done', 'failed', 'cancelled')",
            (self.clock(), job_id),
        )
        return cur.rowcount == 1

    async def set_origin(self, job_id: int, **values: Any) -> Job:
        """Merge platform data into the job's origin (e.g. the id of its status message)."""
        job = await self.get(job_id)
        merged = {**job.origin, **values}
        await self.conn.execute(
            "UPDATE jobs SET origin = ? WHERE id = ?", (json.dumps(merged), job_id)
        )
        return await self.get(job_id)

    # ---- positions and estimates -----------------------------------------

    async def estimate_duration(self, params: JobParams) -> float:
        """Seconds of rendering this job will likely take, from recent timings."""
        rows = await self._all(
            "SELECT step_seconds FROM timings WHERE model = ? ORDER BY finished_at DESC LIMIT 20",
            (params.model,),
        )
        if not rows:
            rows = await self._all(
                "SELECT step_seconds FROM timings ORDER BY finished_at DESC LIMIT 20"
            )
        per_step = (
            statistics.median(r["step_seconds"] for r in rows) if rows else DEFAULT_STEP_SECONDS
        )
        return sections_for(params.seconds) * params.steps * per_step

    async def positions(self) -> dict[int, QueuePosition]:
        """The position and estimated start of every waiting job (one pass)."""
        waiting = await self.waiting()
        running = await self.running()
        now = self.clock()
        workers = max(1, len(running))
        busy = []
        for job in running:
            total = await self.estimate_duration(job.params)
            busy.append(max(0.0, total - (now - (job.started_at or now))))
        out: dict[int, QueuePosition] = {}
        # Waiting jobs run in order on the first worker to free up.
        free_at = sorted(busy) + [0.0] * (workers - len(busy))
        for index, job in enumerate(waiting):
            duration = await self.estimate_duration(job.params)
            start = min(free_at)
            free_at[free_at.index(start)] = start + duration
            out[job.id] = QueuePosition(
                job_id=job.id,
                position=index + 1,
                ahead=index,
                running=len(running),
                estimated_start=start,
                estimated_duration=duration,
            )
        return out

    async def position(self, job_id: int) -> QueuePosition | None:
        """Where a waiting job stands; None when it is not waiting."""
        return (await self.positions()).get(job_id)

    async def record_timing(self, timing: Timing) -> None:
        await self.conn.execute(
            "INSERT OR REPLACE INTO timings (job_id, model, video_seconds, steps, sections, "
            "render_seconds, step_seconds, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                timing.job_id,
                timing.model,
                timing.video_seconds,
                timing.steps,
                timing.sections,
                timing.render_seconds,
                timing.step_seconds,
                timing.finished_at,
            ),
        )

    async def timing(self, job_id: int) -> Timing | None:
        row = await self._one("SELECT * FROM timings WHERE job_id = ?", (job_id,))
        return None if row is None else Timing(**dict(row))

    # ---- events ----------------------------------------------------------

    async def _add_event(
        self, job_id: int, kind: EventKind, data: Mapping[str, Any], now: float
    ) -> JobEvent:
        row = await self._one(
            "INSERT INTO events (job_id, kind, data, created_at) VALUES (?, ?, ?, ?) RETURNING *",
            (job_id, kind.value, json.dumps(dict(data)), now),
        )
        assert row is not None
        return _event(row)

    async def add_event(
        self, job_id: int, kind: EventKind, data: Mapping[str, Any] | None = None
    ) -> JobEvent:
        return await self._add_event(job_id, kind, data or {}, self.clock())

    async def events_since(
        self, after_id: int = 0, *, job_id: int | None = None, limit: int = 1000
    ) -> list[JobEvent]:
        if job_id is None:
            rows = await self._all(
                "SELECT * FROM events WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)
            )
        else:
            rows = await self._all(
                "SELECT * FROM events WHERE job_id = ? AND id > ? ORDER BY id LIMIT ?",
                (job_id, after_id, limit),
            )
        return [_event(r) for r in rows]

    async def last_event_id(self) -> int:
        row = await self._one("SELECT COALESCE(MAX(id), 0) AS id FROM events")
        return int(row["id"]) if row is not None else 0

    # ---- users -----------------------------------------------------------

    async def user(self, platform: str, user_id: str) -> UserRecord:
        row = await self._one(
            "SELECT * FROM users WHERE platform = ? AND user_id = ?", (platform, user_id)
        )
        if row is None:
            return UserRecord(platform, user_id, False, "", {})
        return UserRecord(
            platform, user_id, bool(row["banned"]), row["ban_reason"], json.loads(row["overrides"])
        )

    async def set_banned(self, platform: str, user_id: str, banned: bool, reason: str = "") -> None:
        """Ban or unban; a ban also cancels the user's waiting jobs."""
        async with transaction(self.conn):
            await self.conn.execute(
                "INSERT INTO users (platform, user_id, banned, ban_reason) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (platform, user_id) DO UPDATE SET banned = excluded.banned, "
                "ban_reason = excluded.ban_reason",
                (platform, user_id, int(banned), reason),
            )
            if banned:
                rows = await self._all(
                    "SELECT id FROM jobs WHERE platform = ? AND user_id = ? AND status = 'queued'",
                    (platform, user_id),
                )
                for row in rows:
                    await self._transition(
                        row["id"], JobStatus.CANCELLED, event=(EventKind.CANCELLED, {"by": "ban"})
                    )

    async def set_overrides(
        self, platform: str, user_id: str, overrides: Mapping[str, Any]
    ) -> None:
        await self.conn.execute(
            "INSERT INTO users (platform, user_id, overrides) VALUES (?, ?, ?) "
            "ON CONFLICT (platform, user_id) DO UPDATE SET overrides = excluded.overrides",
            (platform, user_id, json.dumps(dict(overrides))),
        )

    # ---- pause -----------------------------------------------------------

    async def paused(self) -> bool:
        row = await self._one("SELECT value FROM flags WHERE name = 'paused'")
        return bool(row and row["value"] == "1")

    async def set_paused(self, paused: bool) -> None:
        await self.conn.execute(
            "INSERT INTO flags (name, value) VALUES ('paused', ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            ("1" if paused else "0",),
        )

    # ---- chat messages ---------------------------------------------------

    async def set_message(
        self,
        job_id: int,
        platform: str,
        chat_id: str,
        message_id: str,
        state: Mapping[str, Any] | None = None,
    ) -> None:
        await self.conn.execute(
            "INSERT INTO chat_messages (job_id, platform, chat_id, message_id, state, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (job_id, platform) DO UPDATE SET "
            "chat_id = excluded.chat_id, message_id = excluded.message_id, "
            "state = excluded.state, updated_at = excluded.updated_at",
            (job_id, platform, chat_id, message_id, json.dumps(dict(state or {})), self.clock()),
        )

    async def message(self, job_id: int, platform: str) -> ChatMessageRef | None:
        row = await self._one(
            "SELECT * FROM chat_messages WHERE job_id = ? AND platform = ?", (job_id, platform)
        )
        if row is None:
            return None
        return ChatMessageRef(
            row["job_id"],
            row["platform"],
            row["chat_id"],
            row["message_id"],
            json.loads(row["state"]),
            row["updated_at"],
        )

    async def update_message_state(
        self, job_id: int, platform: str, state: Mapping[str, Any]
    ) -> None:
        await self.conn.execute(
            "UPDATE chat_messages SET state = ?, updated_at = ? WHERE job_id = ? AND platform = ?",
            (json.dumps(dict(state)), self.clock(), job_id, platform),
        )

    # ---- retention -------------------------------------------------------

    async def expired_jobs(self, older_than: float) -> list[Job]:
        """Finished jobs whose files may go: never a done job not yet delivered."""
        rows = await self._all(
            "SELECT * FROM jobs WHERE files_removed = 0 AND finished_at < ? AND "
            "(status IN ('failed', 'cancelled') OR (status = 'done' AND delivered_at IS NOT NULL))",
            (self.clock() - older_than,),
        )
        return [_job(r) for r in rows]

    async def mark_files_removed(self, job_id: int) -> None:
        await self.conn.execute("UPDATE jobs SET files_removed = 1 WHERE id = ?", (job_id,))

    async def referenced_inputs(self) -> set[str]:
        rows = await self._all(
            "SELECT input_path AS p FROM jobs WHERE files_removed = 0 "
            "UNION SELECT end_image_path FROM jobs WHERE files_removed = 0 "
            "AND end_image_path IS NOT NULL"
        )
        return {r["p"] for r in rows}
