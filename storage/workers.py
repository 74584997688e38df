"""The workers as the host's page and the chats see them, and the restarts of
workers that died.

A worker writes its row at each change of state (loading, downloading, ready,
rendering, stopped, failed) and with its heartbeat (`[worker]
heartbeat_seconds`), so a row that `[queue] heartbeat_timeout` left alone belongs
to a worker that is gone (killed, crashed, its machine off). The supervisor of
`framepack-bot run` records each restart of a worker that died.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from storage.base import StoreBase
from storage.records import ModelActivity, WorkerRecord, WorkerRestart, WorkerState

# A worker in one of these can take a job: the queue's estimates hold.
SERVING = frozenset({WorkerState.READY, WorkerState.RENDERING})
GONE = frozenset({WorkerState.STOPPED, WorkerState.FAILED})


def _worker(row: Mapping[str, Any]) -> WorkerRecord:
    return WorkerRecord(
        worker_id=row["worker_id"],
        state=WorkerState(row["state"]),
        detail=json.loads(row["detail"]),
        started_at=row["started_at"],
        updated_at=row["updated_at"],
    )


class Workers(StoreBase):
    def set_worker(
        self, worker_id: str, state: WorkerState, detail: Mapping[str, Any] | None = None
    ) -> None:
        """Record a worker's state (its first call also records when it started)."""
        now = self.clock()
        self.db.execute(
            "INSERT INTO workers (worker_id, state, detail, started_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (worker_id) DO UPDATE SET "
            "state = excluded.state, detail = excluded.detail, updated_at = excluded.updated_at",
            (worker_id, WorkerState(state).value, json.dumps(dict(detail or {})), now, now),
        )

    def workers(self, since: float | None = None) -> list[WorkerRecord]:
        """Workers heard of since `since` (default: ever), the latest first."""
        rows = self._all(
            "SELECT * FROM workers WHERE updated_at >= ? ORDER BY updated_at DESC, started_at DESC",
            (float("-inf") if since is None else since,),
        )
        return [_worker(r) for r in rows]

    def live_workers(self) -> list[WorkerRecord]:
        """Workers that heart-beat within `heartbeat_timeout` and have not exited."""
        since = self.clock() - self.limits.heartbeat_timeout
        return [w for w in self.workers(since) if w.state not in GONE]

    def model_activity(self) -> ModelActivity | None:
        """What holds every live worker back from a job (downloading or loading the
        model), or None when one can take a job or none is running at all."""
        live = self.live_workers()
        if not live or any(w.state in SERVING for w in live):
            return None
        downloading = [w for w in live if w.state is WorkerState.DOWNLOADING]
        if downloading:
            percents = [p for p in map(download_percent, downloading) if p is not None]
            return ModelActivity(WorkerState.DOWNLOADING, max(percents) if percents else None)
        return ModelActivity(WorkerState.LOADING)

    def forget_workers(self, older_than: float) -> int:
        """Drop the rows of workers not heard of for `older_than` seconds."""
        cur = self.db.execute(
            "DELETE FROM workers WHERE updated_at < ?", (self.clock() - older_than,)
        )
        return cur.rowcount

    def record_restart(self, exit_code: int | None, uptime: float, delay: float) -> None:
        self.db.execute(
            "INSERT INTO worker_restarts (exit_code, uptime, delay, at) VALUES (?, ?, ?, ?)",
            (exit_code, uptime, delay, self.clock()),
        )

    def last_restart(self) -> WorkerRestart | None:
        row = self._one("SELECT * FROM worker_restarts ORDER BY id DESC LIMIT 1")
        if row is None:
            return None
        return WorkerRestart(row["exit_code"], row["uptime"], row["delay"], row["at"])

    def restart_count(self) -> int:
        row = self._one("SELECT COUNT(*) AS n FROM worker_restarts")
        return int(row["n"]) if row is not None else 0


def download_percent(worker: WorkerRecord) -> int | None:
    """How much of the model a downloading worker has, in whole percent (None: unknown)."""
    done, total = worker.detail.get("download_done"), worker.detail.get("download_total")
    if not isinstance(done, int | float) or not isinstance(total, int | float) or total <= 0:
        return None
    return max(0, min(100, int(100 * done / total)))
