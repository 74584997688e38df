"""The job store: enqueue with limits, the fair claim, heartbeats, cancel,
positions and estimates, events, delivery, users and chat message references.

Semantics are at-least-once: a job may run twice (a worker that stops
heart-beating loses its job, which resumes from its last section checkpoint
on the next worker). Claims are atomic across processes: one `UPDATE …
RETURNING` statement, which SQLite runs under its write lock.

Fairness: a user's n-th waiting job never runs before every other user's
earlier-ranked waiting jobs. Waiting jobs are ordered by (rank among their
owner's waiting jobs, when their owner was last served, time queued). The
middle key is ours: DESIGN.md breaks ties by time queued alone, but with rank
counted among *waiting* jobs that makes the claim plain FIFO (the oldest job
is always its owner's first), and a user who queued five jobs at once would
keep the GPU until all five ran. Breaking ties by "least recently served
first" keeps the DESIGN rule (nobody's n-th job runs before another's
earlier-ranked one) and gives the round robin users expect. Rank and served
time are kept in columns of the waiting jobs (updated for one user when that
user's waiting set changes, by the triggers of migrations 4 and 5), so the
claim and the positions read one index.
"""

from __future__ import annotations

import contextlib
import json
import math
import sqlite3
import statistics
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import aiosqlite

from storage.db import checkpoint, connect
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
STALE_CHECK_INTERVAL = 1.0  # seconds between two looks for stale running jobs
# Until real timings exist, a step is assumed to take this long (a 4090-class GPU
# at 640 takes 1.5-2.5 s per step); estimates improve after the first job.
DEFAULT_STEP_SECONDS = 2.0
# Every waiting job with its rank among its owner's waiting jobs and the time its
# owner was last served, in the order they will run. The served time is the one
# the owner's head carries (migration 5); the head is the owner's first waiting
# job, so rank and served time come from one window.
FAIR_ORDER_SQL = """
SELECT {columns}, ROW_NUMBER() OVER owner_line AS owner_rank,
       FIRST_VALUE(j.owner_served_at) OVER owner_line AS served
FROM jobs AS j
WHERE j.status = 'queued'
WINDOW owner_line AS (PARTITION BY j.platform, j.user_id ORDER BY j.queued_at, j.id)
ORDER BY owner_rank, served, j.queued_at, j.id
"""

# Only what an estimate needs of a waiting job, read out of its parameters by
# SQLite (building the Job in Python would cost ten times the query), once per
# job: `StoreCore._work_of` keeps it.
ESTIMATE_COLUMNS = ", ".join(
    ["j.id"]
    + [
        f"COALESCE(json_extract(j.params, '$.{name}'), {getattr(JobParams, name)!r})"
        for name in ("model", "seconds", "steps")
    ]
)


# A job's columns in the order of its record's fields. Every read of a job
# selects exactly these and `_job` decodes them by position: by-name lookups
# and the frozen dataclass's __init__ (an object.__setattr__ per field) were a
# third of a claim's time.
JOB_COLUMNS: tuple[str, ...] = tuple(Job.__dataclass_fields__)
JOB_SELECT = ", ".join(JOB_COLUMNS)
_new_job = object.__new__
_STATUS = {status.value: status for status in JobStatus}

# One statement picks the fair next job and takes it (see `StoreCore.claim`).
_CLAIM_SQL = (
    "UPDATE jobs SET status = 'running', worker_id = ?, heartbeat_at = ?, "
    "started_at = COALESCE(started_at, ?), attempts = attempts + 1, queue_head = 0 "
    "WHERE id = (SELECT id FROM jobs WHERE status = 'queued' AND queue_head = 1 "
    "ORDER BY owner_served_at, queued_at, id LIMIT 1) AND status = 'queued' "
    "AND NOT EXISTS (SELECT 1 FROM flags WHERE name = 'paused' AND value = '1') "
    f"RETURNING {JOB_SELECT}"
)


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


WORK_CACHE_SIZE = 20_000  # jobs whose estimate inputs StoreCore keeps (~2 MB)


def render_seconds(seconds: float, steps: int, per_step: float) -> float:
    """Seconds a job of `seconds` of video and `steps` steps renders at `per_step`."""
    return sections_for(seconds) * steps * per_step


def format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s" if sec else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _job(row: Sequence[Any]) -> Job:
    """A Job from a row that starts with `JOB_SELECT`'s columns (a tuple or a sqlite3.Row)."""
    job = _new_job(Job)
    values = job.__dict__  # every field set here, of its type: what __init__ would set
    values.update(zip(JOB_COLUMNS, row))  # noqa: B905 - rows may carry more columns after
    values["params"] = JobParams.from_json(values["params"])
    values["status"] = _STATUS[values["status"]]
    values["cancel_requested"] = bool(values["cancel_requested"])
    origin = values["origin"]
    values["origin"] = json.loads(origin) if origin and origin != "{}" else {}
    return job


def _event(row: Mapping[str, Any]) -> JobEvent:
    return JobEvent(
        id=row["id"],
        job_id=row["job_id"],
        kind=EventKind(row["kind"]),
        data=json.loads(row["data"]),
        created_at=row["created_at"],
    )


class StoreCore:
    """Every read and write of the queue on one blocking sqlite3 connection.

    `JobStore` runs each of these calls in the thread of its aiosqlite
    connection, so one call is one thread hop however many statements it runs.
    """

    def __init__(
        self,
        db: sqlite3.Connection,
        limits: QueueLimits | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        db.row_factory = sqlite3.Row
        self.db = db
        self.limits = limits or QueueLimits()
        self.clock = clock
        self._stale_checked_at = float("-inf")
        self._tuples: sqlite3.Cursor | None = None
        # job id -> (model, sections x steps): what its estimate needs, kept because
        # a job's parameters never change and a new job's position would otherwise
        # read them out of every job ahead of it (O(queue) JSON per new job)
        self._work: dict[int, tuple[str, int]] = {}

    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        """`BEGIN IMMEDIATE` … `COMMIT`; nested uses join the outer transaction."""
        if self.db.in_transaction:
            yield
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _one(self, sql: str, args: Iterable[Any] = ()) -> sqlite3.Row | None:
        return self.db.execute(sql, tuple(args)).fetchone()

    def _all(self, sql: str, args: Iterable[Any] = ()) -> list[sqlite3.Row]:
        return self.db.execute(sql, tuple(args)).fetchall()

    def checkpoint(self) -> None:
        """Fold the WAL into the database; call it when idle, not in a claim."""
        checkpoint(self.db)

    def get(self, job_id: int) -> Job:
        row = self._one(f"SELECT {JOB_SELECT} FROM jobs WHERE id = ?", (job_id,))
        if row is None:
            raise JobNotFound(f"no job #{job_id}")
        return _job(row)

    def find(self, job_id: int) -> Job | None:
        row = self._one(f"SELECT {JOB_SELECT} FROM jobs WHERE id = ?", (job_id,))
        return None if row is None else _job(row)

    def find_many(self, job_ids: Iterable[int]) -> dict[int, Job]:
        """The jobs of these ids that exist, in one read (the tracker's refresh)."""
        ids = list(job_ids)
        found: dict[int, Job] = {}
        for start in range(0, len(ids), 500):  # well under SQLite's bound on parameters
            chunk = ids[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            for row in self._all(f"SELECT {JOB_SELECT} FROM jobs WHERE id IN ({marks})", chunk):
                found[row["id"]] = _job(row)
        return found

    def waiting(self) -> list[Job]:
        """Every queued job, in the order they will run."""
        rows = self._all(FAIR_ORDER_SQL.format(columns=", ".join(f"j.{c}" for c in JOB_COLUMNS)))
        return [_job(r) for r in rows]

    def running(self) -> list[Job]:
        rows = self._all(
            f"SELECT {JOB_SELECT} FROM jobs WHERE status = 'running' ORDER BY started_at, id"
        )
        return [_job(r) for r in rows]

    def jobs_of(
        self,
        platform: str,
        user_id: str,
        statuses: Iterable[JobStatus] | None = None,
        limit: int = 50,
    ) -> list[Job]:
        sql = f"SELECT {JOB_SELECT} FROM jobs WHERE platform = ? AND user_id = ?"
        args: list[Any] = [platform, user_id]
        if statuses is not None:
            wanted = [s.value for s in statuses]
            sql += f" AND status IN ({','.join('?' * len(wanted))})"
            args += wanted
        # newest first, read backwards along jobs_of_user (user_id, queued_at)
        rows = self._all(sql + " ORDER BY queued_at DESC, id DESC LIMIT ?", [*args, limit])
        return [_job(r) for r in rows]

    def undelivered(self) -> list[Job]:
        """Finished jobs whose owner has not been told yet (done, failed or cancelled)."""
        rows = self._all(
            f"SELECT {JOB_SELECT} FROM jobs WHERE status IN ('done', 'failed', 'cancelled') "
            "AND delivered_at IS NULL ORDER BY finished_at, id"
        )
        return [_job(r) for r in rows]

    def counts(self) -> dict[str, int]:
        rows = self._all("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status")
        out = {s.value: 0 for s in JobStatus}
        out.update({r["status"]: r["n"] for r in rows})
        return out

    # ---- enqueue -------------------------------------------------------

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
        """Queue a job, or raise `QueueRefused` with a reason the user understands.

        `exempt` (admins) skips the per-user limits, never a ban or a full queue.
        """
        now = self.clock()
        with self._tx():
            self._check_limits(platform, user_id, params, now, exempt=exempt)
            row = self._one(
                "INSERT INTO jobs (platform, user_id, user_name, chat_id, params, input_path, "
                "end_image_path, status, queued_at, upload_limit, origin) "
                f"VALUES (?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?) RETURNING {JOB_SELECT}",
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
            job = _job(row)  # a trigger makes it its owner's head if it is their first
            self._remember_work(job.id, params.model, params.seconds, params.steps)
            self._add_event(job.id, EventKind.QUEUED, {}, now)
        return job

    def _check_limits(
        self, platform: str, user_id: str, params: JobParams, now: float, *, exempt: bool
    ) -> None:
        user = self.user(platform, user_id)
        if user.banned:
            why = f" ({user.ban_reason})" if user.ban_reason else ""
            raise QueueRefused("banned", f"You are not allowed to queue jobs here{why}.")
        limits = self.limits
        row = self._one("SELECT COUNT(*) AS n FROM jobs WHERE status = 'queued'")
        if row is not None and row["n"] >= limits.max_waiting:
            raise QueueRefused(
                "queue_full",
                f"The queue is full ({row['n']} jobs waiting). Please try again later.",
            )
        if exempt:
            return
        over = user.overrides
        per_user = int(over.get("max_waiting_per_user", limits.max_waiting_per_user))
        row = self._one(
            # two partial indexes (waiting, running): no walk through the user's history
            "SELECT (SELECT COUNT(*) FROM jobs WHERE platform = ?1 AND user_id = ?2 "
            "AND status = 'queued') + (SELECT COUNT(*) FROM jobs INDEXED BY jobs_running "
            "WHERE platform = ?1 AND user_id = ?2 AND status = 'running') AS n",
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
            row = self._one(
                "SELECT queued_at AS last FROM jobs WHERE user_id = ? AND platform = ? "
                "ORDER BY queued_at DESC LIMIT 1",
                (user_id, platform),
            )
            if row is not None and row["last"] is not None and now - row["last"] < cooldown:
                wait = math.ceil(cooldown - (now - row["last"]))
                raise QueueRefused(
                    "cooldown", f"Please wait {format_duration(wait)} before your next job."
                )
        budget = float(over.get("max_video_seconds_per_day", limits.max_video_seconds_per_day))
        if budget > 0:
            # Failed jobs and jobs cancelled before they started cost nothing.
            row = self._one(
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

    # ---- the one door for status changes ---------------------------------

    def _transition(
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
        row = self._one(f"SELECT {JOB_SELECT} FROM jobs WHERE id = ?", (job_id,))
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
        if to is JobStatus.RUNNING:
            values.setdefault("heartbeat_at", now)  # its owner's served time (migration 4)
        if current is JobStatus.QUEUED:
            values["queue_head"] = 0  # triggers promote the owner's next job (migration 4)
        sets = ", ".join(f"{k} = ?" for k in ["status", *values])
        cur = self.db.execute(
            f"UPDATE jobs SET {sets} WHERE id = ? AND status = ?",
            (to.value, *values.values(), job_id, current.value),
        )
        if cur.rowcount != 1:
            raise IllegalTransition(f"job #{job_id} changed while it was updated")
        if event is not None:
            self._add_event(job_id, event[0], event[1], now)
        return self.get(job_id)

    # ---- the worker's side ---------------------------------------------

    def claim(self, worker_id: str) -> Job | None:
        """Hand the fair next job to `worker_id`, or None (queue empty or paused).

        Stale running jobs are put back first, so a dead worker's job is
        offered again in its fair place.
        """
        now = self.clock()
        # A dead worker is noticed within a second; looking on every claim
        # would cost a query per claim for an event that takes a minute.
        if now - self._stale_checked_at >= STALE_CHECK_INTERVAL:
            self._stale_checked_at = now
            self.requeue_stale()
        # One statement picks and takes the job (unless an admin paused the
        # queue). SQLite runs it under its write lock, so no other process can
        # take it too; the triggers of migration 4 record that its owner was
        # served and make their next waiting job their head, in the same
        # statement.
        # fetchall steps the statement to its end: that is when an autocommit
        # statement commits and lets go of the write lock.
        # plain tuples: decoded by position (see `_job`)
        rows = self._plain().execute(_CLAIM_SQL, (worker_id, now, now)).fetchall()
        return _job(rows[0]) if rows else None

    def heartbeat(self, job_id: int, worker_id: str) -> bool:
        """Record that `worker_id` still works on the job; True when a cancel is asked.

        Raises `JobLost` when the job was handed to another worker meanwhile.
        """
        row = self._one(
            "UPDATE jobs SET heartbeat_at = ? WHERE id = ? AND status = 'running' "
            "AND worker_id = ? RETURNING cancel_requested",
            (self.clock(), job_id, worker_id),
        )
        if row is None:
            raise JobLost(f"job #{job_id} is not running on {worker_id} any more")
        return bool(row["cancel_requested"])

    def requeue_stale(self, timeout: float | None = None) -> list[Job]:
        """Running jobs silent for `timeout` go back to the queue, or fail past max attempts."""
        timeout = self.limits.heartbeat_timeout if timeout is None else timeout
        cutoff = self.clock() - timeout
        rows = self._all(
            "SELECT id, attempts FROM jobs WHERE status = 'running' AND heartbeat_at < ?",
            (cutoff,),
        )
        out = []
        for row in rows:
            with self._tx():
                try:
                    if row["attempts"] >= self.limits.max_attempts:
                        reason = (
                            f"The renderer stopped {row['attempts']} times while working on "
                            "this job, so it was given up."
                        )
                        job = self._transition(
                            row["id"],
                            JobStatus.FAILED,
                            expect=[JobStatus.RUNNING],
                            error=reason,
                            event=(EventKind.FAILED, {"reason": reason}),
                        )
                    else:
                        job = self._requeue(row["id"], "worker stopped")
                except IllegalTransition:
                    continue  # another process handled it first
            out.append(job)
        return out

    def _requeue(self, job_id: int, why: str) -> Job:
        return self._transition(
            job_id,
            JobStatus.QUEUED,
            expect=[JobStatus.RUNNING],
            event=(EventKind.REQUEUED, {"why": why}),
            heartbeat_at=None,
            worker_id=None,
        )

    def release(self, job_id: int, worker_id: str, why: str = "worker shut down") -> Job:
        """A worker that stops cleanly puts its job back; the attempt does not count."""
        with self._tx():
            job = self._get_owned(job_id, worker_id)
            self.db.execute(
                "UPDATE jobs SET attempts = MAX(attempts - 1, 0) WHERE id = ?", (job.id,)
            )
            return self._requeue(job_id, why)

    def _get_owned(self, job_id: int, worker_id: str) -> Job:
        job = self.get(job_id)
        if job.status is not JobStatus.RUNNING or job.worker_id != worker_id:
            raise JobLost(f"job #{job_id} is not running on {worker_id} any more")
        return job

    def complete(
        self,
        job_id: int,
        worker_id: str,
        *,
        result_path: str,
        delivery_path: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Job:
        with self._tx():
            self._get_owned(job_id, worker_id)
            return self._transition(
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

    def fail(self, job_id: int, reason: str, *, worker_id: str | None = None) -> Job:
        with self._tx():
            if worker_id is not None:
                self._get_owned(job_id, worker_id)
            return self._transition(
                job_id,
                JobStatus.FAILED,
                event=(EventKind.FAILED, {"reason": reason}),
                error=reason,
            )

    def confirm_cancelled(self, job_id: int, worker_id: str) -> Job:
        """The worker stopped a running job whose cancel was asked."""
        with self._tx():
            self._get_owned(job_id, worker_id)
            return self._transition(
                job_id,
                JobStatus.CANCELLED,
                expect=[JobStatus.RUNNING],
                event=(EventKind.CANCELLED, {}),
            )

    def cancel_requested(self, job_id: int) -> bool:
        row = self._one("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,))
        return bool(row and row["cancel_requested"])

    # ---- the user's side -----------------------------------------------

    def cancel(self, job_id: int) -> Job:
        """A waiting job ends at once; a running one gets a flag its worker reads.

        Raises `IllegalTransition` for a job that has already finished.
        """
        with self._tx():
            job = self.get(job_id)
            if job.status is JobStatus.QUEUED:
                return self._transition(
                    job_id, JobStatus.CANCELLED, event=(EventKind.CANCELLED, {})
                )
            if job.status is JobStatus.RUNNING:
                self.db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
                return self.get(job_id)
            raise IllegalTransition(f"job #{job_id} has already {job.status.value}")

    def mark_delivered(self, job_id: int) -> bool:
        """Record that the owner has the outcome; True only for the call that recorded it."""
        cur = self.db.execute(
            "UPDATE jobs SET delivered_at = ? WHERE id = ? AND delivered_at IS NULL "
            "AND status IN ('done', 'failed', 'cancelled')",
            (self.clock(), job_id),
        )
        return cur.rowcount == 1

    def set_origin(self, job_id: int, **values: Any) -> Job:
        """Merge platform data into the job's origin (e.g. the id of its status message)."""
        job = self.get(job_id)
        merged = {**job.origin, **values}
        self.db.execute("UPDATE jobs SET origin = ? WHERE id = ?", (json.dumps(merged), job_id))
        return self.get(job_id)

    # ---- positions and estimates -----------------------------------------

    def step_seconds(self, model: str) -> float:
        """Median seconds per step of the model's recent jobs (any model's, else a default)."""
        rows = self._all(
            "SELECT step_seconds FROM timings WHERE model = ? ORDER BY finished_at DESC LIMIT 20",
            (model,),
        )
        if not rows:
            rows = self._all("SELECT step_seconds FROM timings ORDER BY finished_at DESC LIMIT 20")
        return statistics.median(r["step_seconds"] for r in rows) if rows else DEFAULT_STEP_SECONDS

    def estimate_duration(self, params: JobParams, per_step: float | None = None) -> float:
        """Seconds of rendering this job will likely take, from recent timings."""
        if per_step is None:
            per_step = self.step_seconds(params.model)
        return render_seconds(params.seconds, params.steps, per_step)

    def positions(self, until: int | None = None) -> dict[int, QueuePosition]:
        """The position and estimated start of every waiting job (one pass).

        With `until`, that job's alone (the jobs before it are all its estimate needs).
        """
        rows = self._plain().execute(FAIR_ORDER_SQL.format(columns="j.id")).fetchall()
        return self._estimates([row[0] for row in rows], until)

    def position(self, job_id: int) -> QueuePosition | None:
        """Where a waiting job stands; None when it is not waiting."""
        row = self._one(
            "SELECT queue_head, owner_served_at, queued_at FROM jobs "
            "WHERE id = ? AND status = 'queued'",
            (job_id,),
        )
        if row is None:
            return None
        if not row["queue_head"]:
            return self.positions(until=job_id).get(job_id)
        # Its owner's first waiting job (a new job's usual case): the jobs ahead of it
        # are the heads before it in the claim's own index, without ranking every
        # waiting job (a quarter of the cost with a hundred waiting).
        rows = (
            self._plain()
            .execute(
                "SELECT id FROM jobs WHERE status = 'queued' "
                "AND queue_head = 1 AND (owner_served_at, queued_at, id) <= (?, ?, ?) "
                "ORDER BY owner_served_at, queued_at, id",
                (row["owner_served_at"], row["queued_at"], job_id),
            )
            .fetchall()
        )
        return self._estimates([r[0] for r in rows], job_id).get(job_id)

    def _plain(self) -> sqlite3.Cursor:
        """A cursor whose rows are plain tuples, for reads decoded by position."""
        if self._tuples is None:  # made here: a cursor belongs to the thread that runs us
            self._tuples = self.db.cursor()
            self._tuples.row_factory = None
        return self._tuples

    def _remember_work(
        self, job_id: int, model: str, seconds: float, steps: int
    ) -> tuple[str, int]:
        if len(self._work) >= WORK_CACHE_SIZE:
            self._work.clear()  # refilled as positions are asked for
        work = self._work[job_id] = (model, sections_for(seconds) * steps)
        return work

    def _work_of(self, ids: list[int]) -> list[tuple[str, int]]:
        """(model, sections x steps) of each job, from memory or read once."""
        known = [self._work.get(job_id) for job_id in ids]
        missing = [job_id for job_id, work in zip(ids, known, strict=True) if work is None]
        if not missing:
            return known  # type: ignore[return-value]
        found: dict[int, tuple[str, int]] = {}
        rows = self._plain().execute(
            f"SELECT {ESTIMATE_COLUMNS} FROM jobs AS j "
            "WHERE j.id IN (SELECT value FROM json_each(?))",
            (json.dumps(missing),),
        )
        for job_id, model, seconds, steps in rows.fetchall():
            found[job_id] = self._remember_work(job_id, model, seconds, steps)
        return [
            work if work is not None else found[job_id]
            for job_id, work in zip(ids, known, strict=True)
        ]

    def _estimates(self, ids: list[int], until: int | None) -> dict[int, QueuePosition]:
        """Positions and starts of the waiting jobs `ids`, given in their order, up to
        `until`."""
        if until is not None and until in ids:
            ids = ids[: ids.index(until) + 1]  # the jobs after it change nothing for it
        running = self.running()
        now = self.clock()
        # one worker may hold two running jobs for a moment (one finishing its
        # upload copy off the GPU): count workers, not jobs
        busy: dict[str | None, float] = {}
        for job in running:
            left = max(0.0, self.estimate_duration(job.params) - (now - (job.started_at or now)))
            busy[job.worker_id] = max(busy.get(job.worker_id, 0.0), left)
        out: dict[int, QueuePosition] = {}
        per_step: dict[str, float] = {}  # one timings query per model, not per job
        # Waiting jobs run in order on the first worker to free up.
        free_at = sorted(busy.values()) or [0.0]
        for index, (job_id, (model, work)) in enumerate(zip(ids, self._work_of(ids), strict=True)):
            if model not in per_step:
                per_step[model] = self.step_seconds(model)
            duration = work * per_step[model]  # = render_seconds(...), as it computes it
            start = min(free_at)
            free_at[free_at.index(start)] = start + duration
            # a new job asks for its own position behind every other: records for the
            # jobs ahead of it would be thrown away
            if until is None or job_id == until:
                out[job_id] = QueuePosition(
                    job_id=job_id,
                    position=index + 1,
                    ahead=index,
                    running=len(running),
                    estimated_start=start,
                    estimated_duration=duration,
                )
            if job_id == until:
                break
        return out

    def record_timing(self, timing: Timing) -> None:
        self.db.execute(
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

    def timing(self, job_id: int) -> Timing | None:
        row = self._one("SELECT * FROM timings WHERE job_id = ?", (job_id,))
        return None if row is None else Timing(**dict(row))

    # ---- events ----------------------------------------------------------

    def _add_event(
        self, job_id: int, kind: EventKind, data: Mapping[str, Any], now: float
    ) -> JobEvent:
        row = self._one(
            "INSERT INTO events (job_id, kind, data, created_at) VALUES (?, ?, ?, ?) RETURNING *",
            (job_id, kind.value, json.dumps(dict(data)), now),
        )
        assert row is not None
        return _event(row)

    def add_event(
        self, job_id: int, kind: EventKind, data: Mapping[str, Any] | None = None
    ) -> JobEvent:
        return self._add_event(job_id, kind, data or {}, self.clock())

    def events_since(
        self, after_id: int = 0, *, job_id: int | None = None, limit: int = 1000
    ) -> list[JobEvent]:
        if job_id is None:
            rows = self._all(
                "SELECT * FROM events WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)
            )
        else:
            rows = self._all(
                "SELECT * FROM events WHERE job_id = ? AND id > ? ORDER BY id LIMIT ?",
                (job_id, after_id, limit),
            )
        return [_event(r) for r in rows]

    def last_event_id(self) -> int:
        row = self._one("SELECT COALESCE(MAX(id), 0) AS id FROM events")
        return int(row["id"]) if row is not None else 0

    # ---- users -----------------------------------------------------------

    def user(self, platform: str, user_id: str) -> UserRecord:
        row = self._one(
            "SELECT * FROM users WHERE platform = ? AND user_id = ?", (platform, user_id)
        )
        if row is None:
            return UserRecord(platform, user_id, False, "", {})
        return UserRecord(
            platform, user_id, bool(row["banned"]), row["ban_reason"], json.loads(row["overrides"])
        )

    def set_banned(self, platform: str, user_id: str, banned: bool, reason: str = "") -> None:
        """Ban or unban; a ban also cancels the user's waiting jobs."""
        with self._tx():
            self.db.execute(
                "INSERT INTO users (platform, user_id, banned, ban_reason) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (platform, user_id) DO UPDATE SET banned = excluded.banned, "
                "ban_reason = excluded.ban_reason",
                (platform, user_id, int(banned), reason),
            )
            if banned:
                rows = self._all(
                    "SELECT id FROM jobs WHERE platform = ? AND user_id = ? AND status = 'queued'",
                    (platform, user_id),
                )
                for row in rows:
                    self._transition(
                        row["id"], JobStatus.CANCELLED, event=(EventKind.CANCELLED, {"by": "ban"})
                    )

    def set_overrides(self, platform: str, user_id: str, overrides: Mapping[str, Any]) -> None:
        self.db.execute(
            "INSERT INTO users (platform, user_id, overrides) VALUES (?, ?, ?) "
            "ON CONFLICT (platform, user_id) DO UPDATE SET overrides = excluded.overrides",
            (platform, user_id, json.dumps(dict(overrides))),
        )

    # ---- pause -----------------------------------------------------------

    def paused(self) -> bool:
        row = self._one("SELECT value FROM flags WHERE name = 'paused'")
        return bool(row and row["value"] == "1")

    def set_paused(self, paused: bool) -> None:
        self.db.execute(
            "INSERT INTO flags (name, value) VALUES ('paused', ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            ("1" if paused else "0",),
        )

    # ---- chat messages ---------------------------------------------------

    def set_message(
        self,
        job_id: int,
        platform: str,
        chat_id: str,
        message_id: str,
        state: Mapping[str, Any] | None = None,
    ) -> None:
        self.db.execute(
            "INSERT INTO chat_messages (job_id, platform, chat_id, message_id, state, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (job_id, platform) DO UPDATE SET "
            "chat_id = excluded.chat_id, message_id = excluded.message_id, "
            "state = excluded.state, updated_at = excluded.updated_at",
            (job_id, platform, chat_id, message_id, json.dumps(dict(state or {})), self.clock()),
        )

    def message(self, job_id: int, platform: str) -> ChatMessageRef | None:
        row = self._one(
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

    def update_message_state(self, job_id: int, platform: str, state: Mapping[str, Any]) -> None:
        self.db.execute(
            "UPDATE chat_messages SET state = ?, updated_at = ? WHERE job_id = ? AND platform = ?",
            (json.dumps(dict(state)), self.clock(), job_id, platform),
        )

    # ---- retention -------------------------------------------------------

    def expired_jobs(self, older_than: float) -> list[Job]:
        """Finished jobs whose files may go: never a done job not yet delivered."""
        rows = self._all(
            f"SELECT {JOB_SELECT} FROM jobs WHERE files_removed = 0 AND finished_at < ? AND "
            "(status IN ('failed', 'cancelled') OR (status = 'done' AND delivered_at IS NOT NULL))",
            (self.clock() - older_than,),
        )
        return [_job(r) for r in rows]

    def mark_files_removed(self, job_id: int) -> None:
        self.db.execute("UPDATE jobs SET files_removed = 1 WHERE id = ?", (job_id,))

    def referenced_inputs(self) -> set[str]:
        rows = self._all(
            "SELECT input_path AS p FROM jobs WHERE files_removed = 0 "
            "UNION SELECT end_image_path FROM jobs WHERE files_removed = 0 "
            "AND end_image_path IS NOT NULL"
        )
        return {r["p"] for r in rows}


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

    The bot process and the worker both use this; `core` is there for code that
    already runs in that thread (a transaction spanning several calls).
    """

    def __init__(self, conn: aiosqlite.Connection, core: StoreCore) -> None:
        self.conn = conn
        self.core = core

    @classmethod
    async def open(
        cls,
        path: Path | str,
        limits: QueueLimits | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> JobStore:
        conn = await connect(path)
        return cls(conn, StoreCore(conn._conn, limits, clock=clock))

    @property
    def limits(self) -> QueueLimits:
        return self.core.limits

    @property
    def clock(self) -> Callable[[], float]:
        return self.core.clock

    async def close(self) -> None:
        await self.conn.close()

    async def __aenter__(self) -> JobStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def run(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Run `fn` in the connection's thread (fn may use `self.core`)."""
        return await self.conn._execute(fn, *args, **kwargs)

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
    set_origin = _in_thread(StoreCore.set_origin)
    estimate_duration = _in_thread(StoreCore.estimate_duration)
    positions = _in_thread(StoreCore.positions)
    position = _in_thread(StoreCore.position)
    record_timing = _in_thread(StoreCore.record_timing)
    timing = _in_thread(StoreCore.timing)
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
    expired_jobs = _in_thread(StoreCore.expired_jobs)
    mark_files_removed = _in_thread(StoreCore.mark_files_removed)
    referenced_inputs = _in_thread(StoreCore.referenced_inputs)
