"""A job's life: `queued → running → done | failed | cancelled`, and the reads of
the queue.

Semantics are at-least-once: a job may run twice. A worker that stops
heart-beating loses its job, which goes back to the queue and resumes from its
last section checkpoint on the next worker. Every change of status goes
through `_transition`, which refuses what the job's life does not allow.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from storage.base import JOB_COLUMNS, JOB_SELECT, decode_job
from storage.events import EventLog
from storage.fair_order import CLAIM_SQL, FAIR_ORDER_SQL
from storage.records import TRANSITIONS, EventKind, Job, JobParams, JobStatus

STALE_CHECK_INTERVAL = 1.0  # seconds between two looks for stale running jobs


class IllegalTransition(Exception):
    """A status change that the job's life does not allow (a bug, or a lost race)."""


class JobLost(Exception):
    """The worker no longer owns this job (it went stale and was handed out again)."""


class Lifecycle(EventLog):
    _stale_checked_at = float("-inf")

    # ---- reads -------------------------------------------------------------

    def find_many(self, job_ids: Iterable[int]) -> dict[int, Job]:
        """The jobs of these ids that exist, in one read per 500."""
        ids = list(job_ids)
        found: dict[int, Job] = {}
        for start in range(0, len(ids), 500):  # well under SQLite's bound on parameters
            chunk = ids[start : start + 500]
            for job in self._jobs(f"WHERE id IN ({', '.join('?' * len(chunk))})", chunk):
                found[job.id] = job
        return found

    def waiting(self) -> list[Job]:
        """Every queued job, in the order they will run."""
        columns = ", ".join(f"j.{c}" for c in JOB_COLUMNS)
        return [decode_job(r) for r in self._all(FAIR_ORDER_SQL.format(columns=columns))]

    def running(self) -> list[Job]:
        return self._jobs("WHERE status = 'running' ORDER BY started_at, id")

    def jobs_of(
        self,
        platform: str,
        user_id: str,
        statuses: Iterable[JobStatus] | None = None,
        limit: int = 50,
    ) -> list[Job]:
        """A user's jobs, newest first."""
        where = "WHERE platform = ? AND user_id = ?"
        args: list[Any] = [platform, user_id]
        if statuses is not None:
            wanted = [s.value for s in statuses]
            where += f" AND status IN ({','.join('?' * len(wanted))})"
            args += wanted
        return self._jobs(where + " ORDER BY queued_at DESC, id DESC LIMIT ?", [*args, limit])

    def undelivered(self) -> list[Job]:
        """Finished jobs whose owner has not been told yet (done, failed or cancelled)."""
        return self._jobs(
            "WHERE status IN ('done', 'failed', 'cancelled') AND delivered_at IS NULL "
            "ORDER BY finished_at, id"
        )

    def counts(self) -> dict[str, int]:
        """How many jobs there are of each status."""
        rows = self._all("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status")
        out = {s.value: 0 for s in JobStatus}
        out.update({r["status"]: r["n"] for r in rows})
        return out

    # ---- the one door for status changes ---------------------------------

    def _insert(
        self,
        *,
        platform: str,
        user_id: str,
        user_name: str,
        chat_id: str,
        params: JobParams,
        input_path: str,
        end_image_path: str | None,
        upload_limit: int | None,
        origin: Mapping[str, Any] | None,
        now: float,
    ) -> Job:
        """A new queued job (a trigger makes it its owner's head if it is their first)."""
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
        self._add_event(row["id"], EventKind.QUEUED, {}, now)
        return decode_job(row)

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
        current = self.get(job_id).status
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
            values["queue_head"] = 0  # the triggers promote the owner's next job
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

        Stale running jobs are put back first, so a dead worker's job is offered
        again in its fair place.
        """
        now = self.clock()
        # A dead worker is noticed within a second; looking on every claim would
        # cost a query per claim for an event that takes a minute.
        if now - self._stale_checked_at >= STALE_CHECK_INTERVAL:
            self._stale_checked_at = now
            self.requeue_stale()
        # fetchall steps the statement to its end: that is when an autocommit
        # statement commits and lets go of the write lock.
        rows = self.db.execute(CLAIM_SQL, (worker_id, now, now)).fetchall()
        return decode_job(rows[0]) if rows else None

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
        rows = self._all(
            "SELECT id, attempts FROM jobs WHERE status = 'running' AND heartbeat_at < ?",
            (self.clock() - timeout,),
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
        """The job is done with these files; or cancelled, when its cancel was asked
        before this (a cancel that was answered "it stops" is never delivered)."""
        with self._tx():
            job = self._get_owned(job_id, worker_id)
            if job.cancel_requested:
                return self._transition(
                    job_id,
                    JobStatus.CANCELLED,
                    expect=[JobStatus.RUNNING],
                    event=(EventKind.CANCELLED, {"after": "rendering"}),
                )
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
