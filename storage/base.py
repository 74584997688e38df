"""What every part of the job store shares: the connection, the clock, the limits,
transactions, and the decoding of rows into frozen records.

Each concern of the store (storage/lifecycle.py, limits.py, positions.py,
events.py, users.py, messages.py, retention.py) is a class over this base;
`storage.store.StoreCore` puts them together.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from storage.records import EventKind, Job, JobEvent, JobParams, JobStatus


class JobNotFound(LookupError):
    pass


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


# A job's columns in the order of its record's fields: every read of a job
# selects exactly these.
JOB_COLUMNS: tuple[str, ...] = tuple(Job.__dataclass_fields__)
JOB_SELECT = ", ".join(JOB_COLUMNS)


def decode_job(row: Sequence[Any]) -> Job:
    """A Job from a row that starts with `JOB_SELECT`'s columns."""
    values = dict(zip(JOB_COLUMNS, row, strict=False))  # rows may carry more columns after
    values["params"] = JobParams.from_json(values["params"])
    values["status"] = JobStatus(values["status"])
    values["cancel_requested"] = bool(values["cancel_requested"])
    values["origin"] = json.loads(values["origin"] or "{}")
    return Job(**values)


def decode_event(row: Mapping[str, Any]) -> JobEvent:
    return JobEvent(
        id=row["id"],
        job_id=row["job_id"],
        kind=EventKind(row["kind"]),
        data=json.loads(row["data"]),
        created_at=row["created_at"],
    )


class StoreBase:
    """One blocking sqlite3 connection, used from one thread (see `storage.store`)."""

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

    def _jobs(self, where: str, args: Iterable[Any] = ()) -> list[Job]:
        """The jobs a `WHERE …` clause (with its ORDER BY) selects."""
        return [decode_job(r) for r in self._all(f"SELECT {JOB_SELECT} FROM jobs {where}", args)]

    def find(self, job_id: int) -> Job | None:
        row = self._one(f"SELECT {JOB_SELECT} FROM jobs WHERE id = ?", (job_id,))
        return None if row is None else decode_job(row)

    def get(self, job_id: int) -> Job:
        job = self.find(job_id)
        if job is None:
            raise JobNotFound(f"no job #{job_id}")
        return job
