"""How a `JobView` looks on Telegram: the caption, the inline keyboard, the media,
and the record of what a message shows (kept in the chat message's state so an
unchanged edit is never sent, even after a restart).

Pure functions; the adapter does the talking.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from bot.progress import ACTIONS, JobView, Media
from bot.requests import parse_job_id

CAPTION_LIMIT = 1024  # characters of a media caption, counted as Telegram does (UTF-16)
TEXT_LIMIT = 4096
CALLBACK_PREFIX = "fpb"
# Telegram takes photos up to 10 MB and shows them at most 1280 px wide anyway.
PHOTO_MAX_SIDE = 1280
PHOTO_MAX_BYTES = 5_000_000


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def fit_text(text: str, limit: int = TEXT_LIMIT) -> str:
    """Cut plain text to `limit` UTF-16 units (Telegram's measure)."""
    if utf16_len(text) <= limit:
        return text
    text = text[: limit - 1]
    while utf16_len(text) > limit - 1:
        text = text[:-1]
    return text + "…"


def caption(view: JobView, job_id: int) -> str:
    """The view as a caption within 1024 units: the prompt is cut, never the facts."""
    view = view.with_details(f"job #{job_id}")
    limit = CAPTION_LIMIT
    text = view.text(limit)
    # `JobView.text` counts code points; emoji take two UTF-16 units in Telegram's count.
    while utf16_len(text) > CAPTION_LIMIT:
        limit -= utf16_len(text) - CAPTION_LIMIT
        text = view.text(limit)
    return text


def callback_data(action: str, job_id: int) -> str:
    return f"{CALLBACK_PREFIX}:{action}:{job_id}"


def parse_callback(data: str) -> tuple[str, int] | None:
    """`fpb:cancel:12` → ("cancel", 12); None for anything else."""
    prefix, _, rest = data.partition(":")
    action, _, job = rest.partition(":")
    if prefix != CALLBACK_PREFIX or action not in ACTIONS:
        return None
    job_id = parse_job_id(job)
    return None if job_id is None else (action, job_id)


def buttons(view: JobView) -> list[list[str]]:
    """[[label, callback_data], …] for one row of inline buttons."""
    return [[b.label, callback_data(b.action, view.job_id)] for b in view.buttons]


def media_key(media: Media | None) -> str | None:
    """Names the media a message holds: a file changed in place is a new picture."""
    if media is None:
        return None
    try:
        stat = os.stat(media.path)
    except OSError:
        return f"{media.kind}:{media.path}:missing"
    return f"{media.kind}:{media.path}:{stat.st_size}:{stat.st_mtime_ns}"


@dataclass(frozen=True)
class Shown:
    """What a job's message shows (stored as its chat message state)."""

    caption: str
    buttons: tuple[tuple[str, str], ...]
    media: str | None  # media_key of the picture or video in it
    final: bool = False
    gone: bool = False  # deleted: never edited again

    @classmethod
    def of(cls, view: JobView, job_id: int) -> Shown:
        return cls(
            caption=caption(view, job_id),
            buttons=tuple((label, data) for label, data in buttons(view)),
            media=media_key(view.media),
            final=view.final,
        )

    @classmethod
    def load(cls, state: dict[str, Any]) -> Shown | None:
        if "caption" not in state:
            return None
        return cls(
            caption=state["caption"],
            buttons=tuple((label, data) for label, data in state.get("buttons", [])),
            media=state.get("media"),
            final=bool(state.get("final")),
            gone=bool(state.get("gone")),
        )

    def dump(self) -> dict[str, Any]:
        return {
            "caption": self.caption,
            "buttons": [list(b) for b in self.buttons],
            "media": self.media,
            "final": self.final,
            "gone": self.gone,
        }
