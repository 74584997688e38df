"""What the queue refuses when a job is queued: banned users, a full queue, a
user's waiting jobs, their cooldown and their seconds of video per day.

A refusal is data (`QueueRefused`): the bot words it for the user.
"""

from __future__ import annotations

from dataclasses import dataclass

from storage.records import JobParams
from storage.users import Users

DAY = 24 * 3600.0


@dataclass
class QueueRefused(Exception):
    """A job the queue will not take, and the numbers that say why."""

    reason: str  # banned | user_limit | queue_full | daily_limit | cooldown
    ban_reason: str = ""  # banned: what the admin said
    count: int = 0  # queue_full: jobs waiting; user_limit: the user's jobs
    limit: float = 0.0  # the limit in force (jobs, or seconds of video a day)
    wait_seconds: float = 0.0  # cooldown, daily_limit: until a job would be taken
    left_seconds: float = 0.0  # daily_limit: seconds of video left to the user
    asked_seconds: float = 0.0  # daily_limit: seconds the job asks for

    def __str__(self) -> str:
        return f"queue refused: {self.reason}"


class Limits(Users):
    def check_limits(
        self, platform: str, user_id: str, params: JobParams, now: float, *, exempt: bool
    ) -> None:
        """Raise `QueueRefused` when this job may not be queued now.

        `exempt` (admins) skips the per-user limits, never a ban or a full queue.
        """
        user = self.user(platform, user_id)
        if user.banned:
            raise QueueRefused("banned", ban_reason=user.ban_reason)
        limits = self.limits
        row = self._one("SELECT COUNT(*) AS n FROM jobs WHERE status = 'queued'")
        if row is not None and row["n"] >= limits.max_waiting:
            raise QueueRefused("queue_full", count=row["n"], limit=limits.max_waiting)
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
            raise QueueRefused("user_limit", count=row["n"], limit=per_user)
        cooldown = float(over.get("cooldown_seconds", limits.cooldown_seconds))
        if cooldown > 0:
            row = self._one(
                "SELECT queued_at AS last FROM jobs WHERE user_id = ? AND platform = ? "
                "ORDER BY queued_at DESC LIMIT 1",
                (user_id, platform),
            )
            if row is not None and row["last"] is not None and now - row["last"] < cooldown:
                raise QueueRefused(
                    "cooldown", limit=cooldown, wait_seconds=cooldown - (now - row["last"])
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
                oldest = row["oldest"] if row is not None and row["oldest"] else now
                raise QueueRefused(
                    "daily_limit",
                    limit=budget,
                    left_seconds=max(0.0, budget - used),
                    asked_seconds=params.seconds,
                    wait_seconds=oldest + DAY - now,
                )
