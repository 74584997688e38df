"""A job's events: what the worker reports (started, steps, sections, the end),
read by the bot in order of their global id."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from storage.base import StoreBase, decode_event
from storage.records import EventKind, JobEvent


class EventLog(StoreBase):
    def _add_event(
        self, job_id: int, kind: EventKind, data: Mapping[str, Any], now: float
    ) -> JobEvent:
        row = self._one(
            "INSERT INTO events (job_id, kind, data, created_at) VALUES (?, ?, ?, ?) RETURNING *",
            (job_id, kind.value, json.dumps(dict(data)), now),
        )
        assert row is not None
        return decode_event(row)

    def add_event(
        self, job_id: int, kind: EventKind, data: Mapping[str, Any] | None = None
    ) -> JobEvent:
        return self._add_event(job_id, kind, data or {}, self.clock())

    def events_since(
        self, after_id: int = 0, *, job_id: int | None = None, limit: int = 1000
    ) -> list[JobEvent]:
        """Events with an id above `after_id` (of one job, or of all), oldest first."""
        if job_id is None:
            rows = self._all(
                "SELECT * FROM events WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)
            )
        else:
            rows = self._all(
                "SELECT * FROM events WHERE job_id = ? AND id > ? ORDER BY id LIMIT ?",
                (job_id, after_id, limit),
            )
        return [decode_event(r) for r in rows]

    def last_event_id(self) -> int:
        row = self._one("SELECT COALESCE(MAX(id), 0) AS id FROM events")
        return int(row["id"]) if row is not None else 0
