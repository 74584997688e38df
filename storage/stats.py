"""Reads for the host's page and for /metrics: the gallery of finished videos,
what each user asked of the GPU, and the wait and render times as histograms.

Reads only: every change the page makes goes through `bot.service.BotService`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from storage.base import JOB_COLUMNS, StoreBase, decode_job
from storage.records import UserUsage, VideoRecord

DAY = 24 * 3600.0
WEEK = 7 * DAY

# A job's GPU time: what the worker measured for a finished video, else (a failed or
# cancelled job that ran) the time from its start to its end.
_GPU_SECONDS = (
    "COALESCE(t.render_seconds, CASE WHEN j.started_at IS NOT NULL AND j.finished_at IS NOT "
    "NULL AND j.status IN ('failed', 'cancelled') THEN j.finished_at - j.started_at END, 0)"
)
_USAGE_SQL = f"""
WITH recent AS (
    SELECT j.platform, j.user_id, j.status,
           COALESCE(j.finished_at, j.started_at, j.queued_at) AS at,
           CASE WHEN j.status = 'done' THEN json_extract(j.params, '$.seconds') ELSE 0 END
               AS video,
           {_GPU_SECONDS} AS gpu
    FROM jobs AS j LEFT JOIN timings AS t ON t.job_id = j.id
    WHERE COALESCE(j.finished_at, j.started_at, j.queued_at) > :week
       OR j.status IN ('queued', 'running')
), totals AS (
    SELECT platform, user_id,
           SUM(at > :day) AS jobs_day, SUM(at > :week) AS jobs_week,
           SUM(CASE WHEN at > :day THEN video ELSE 0 END) AS video_day,
           SUM(CASE WHEN at > :week THEN video ELSE 0 END) AS video_week,
           SUM(CASE WHEN at > :day THEN gpu ELSE 0 END) AS gpu_day,
           SUM(CASE WHEN at > :week THEN gpu ELSE 0 END) AS gpu_week,
           SUM(status IN ('queued', 'running')) AS waiting
    FROM recent GROUP BY platform, user_id
)
SELECT u.platform, u.user_id, u.banned, u.ban_reason, u.overrides,
       COALESCE((SELECT user_name FROM jobs WHERE user_id = u.user_id
                 AND platform = u.platform ORDER BY queued_at DESC LIMIT 1), '') AS name,
       COALESCE(jobs_day, 0) AS jobs_day, COALESCE(jobs_week, 0) AS jobs_week,
       COALESCE(video_day, 0) AS video_day, COALESCE(video_week, 0) AS video_week,
       COALESCE(gpu_day, 0) AS gpu_day, COALESCE(gpu_week, 0) AS gpu_week,
       COALESCE(waiting, 0) AS waiting
FROM users AS u LEFT JOIN totals USING (platform, user_id)
WHERE u.banned = 1 OR u.overrides != '{{}}' OR totals.user_id IS NOT NULL
ORDER BY jobs_week DESC, gpu_week DESC, u.platform, u.user_id
LIMIT :limit
"""


@dataclass(frozen=True)
class Histogram:
    """Cumulative counts of observations at or below each bound, as Prometheus has them."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]  # one per bound
    count: int
    total: float


class Stats(StoreBase):
    def gallery(self, limit: int = 60, offset: int = 0) -> list[VideoRecord]:
        """Finished videos whose files are kept, the latest first."""
        columns = ", ".join(f"j.{c}" for c in JOB_COLUMNS)
        rows = self._all(
            f"SELECT {columns}, t.render_seconds AS render_seconds FROM jobs AS j "
            "LEFT JOIN timings AS t ON t.job_id = j.id "
            "WHERE j.status = 'done' AND j.files_removed = 0 AND j.result_path IS NOT NULL "
            "ORDER BY j.finished_at DESC, j.id DESC LIMIT ? OFFSET ?",
            (limit, offset),
        )
        return [VideoRecord(decode_job(r), r["render_seconds"]) for r in rows]

    def usage(self, limit: int = 500) -> list[UserUsage]:
        """Every user with jobs in the last week, a ban or limits of their own."""
        now = self.clock()
        args = {"day": now - DAY, "week": now - WEEK, "limit": limit}
        rows = self.db.execute(_USAGE_SQL, args).fetchall()
        return [
            UserUsage(
                platform=r["platform"],
                user_id=r["user_id"],
                name=r["name"],
                banned=bool(r["banned"]),
                ban_reason=r["ban_reason"],
                overrides=json.loads(r["overrides"]),
                jobs_day=int(r["jobs_day"]),
                jobs_week=int(r["jobs_week"]),
                video_seconds_day=float(r["video_day"]),
                video_seconds_week=float(r["video_week"]),
                gpu_seconds_day=float(r["gpu_day"]),
                gpu_seconds_week=float(r["gpu_week"]),
                waiting=int(r["waiting"]),
            )
            for r in rows
        ]

    def wait_histogram(self, bounds: Sequence[float]) -> Histogram:
        """Seconds from queued to the first start, of every job that started."""
        return self._histogram(
            "SELECT started_at - queued_at AS v FROM jobs WHERE started_at IS NOT NULL", bounds
        )

    def render_histogram(self, bounds: Sequence[float]) -> Histogram:
        """Seconds of rendering (first step to done) of every finished video."""
        return self._histogram("SELECT render_seconds AS v FROM timings", bounds)

    def _histogram(self, values_sql: str, bounds: Sequence[float]) -> Histogram:
        # one pass over the rows, counted by SQLite: no value crosses into Python
        sums = ", ".join(f"SUM(v <= {float(b)!r})" for b in bounds)
        row = self._one(f"SELECT COUNT(v), COALESCE(SUM(v), 0){', ' if sums else ''}{sums} "
                        f"FROM ({values_sql})")  # fmt: skip
        assert row is not None
        count, total, *counts = tuple(row)
        return Histogram(
            tuple(float(b) for b in bounds),
            tuple(int(c or 0) for c in counts),
            int(count),
            float(total),
        )
