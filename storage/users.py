"""Users as the queue knows them: bans and per-user limits set by admins."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from storage.lifecycle import Lifecycle
from storage.records import EventKind, JobStatus, UserRecord

# The limits an admin may set for one user (the [queue] keys of the same names).
OVERRIDABLE = ("max_waiting_per_user", "max_video_seconds_per_day")


class Users(Lifecycle):
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
        """A user's own limits (keys of `OVERRIDABLE`); an empty mapping restores the defaults."""
        unknown = set(overrides) - set(OVERRIDABLE)
        if unknown:
            raise ValueError(f"not a per-user limit: {', '.join(sorted(unknown))}")
        self.db.execute(
            "INSERT INTO users (platform, user_id, overrides) VALUES (?, ?, ?) "
            "ON CONFLICT (platform, user_id) DO UPDATE SET overrides = excluded.overrides",
            (platform, user_id, json.dumps(dict(overrides))),
        )
