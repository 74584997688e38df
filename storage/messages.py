"""Which chat message shows which job, and what it last showed, so that a
restarted bot edits the same message and never sends an unchanged edit."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from storage.base import StoreBase
from storage.records import ChatMessageRef


class Messages(StoreBase):
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

    def job_of_message(self, platform: str, chat_id: str, message_id: str) -> int | None:
        """The job a chat message shows (a reply to it names the job: /extend)."""
        row = self._one(
            "SELECT job_id FROM chat_messages WHERE platform = ? AND chat_id = ? "
            "AND message_id = ? ORDER BY updated_at DESC LIMIT 1",
            (platform, chat_id, message_id),
        )
        return None if row is None else int(row["job_id"])
