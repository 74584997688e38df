"""A job's view as a Discord message: one embed, at most one file, the buttons.

The view comes from `bot.progress.render` (the same for every platform); this
module only lays it out within Discord's limits and says which file the
message holds, so the adapter can tell an edit that changes nothing (skipped)
from one that only changes text (sent without re-uploading the file).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import discord

from bot.formatting import format_bytes
from bot.progress import ACTIONS, Action, JobView, input_picture
from storage.records import Job, JobStatus

MIN_UPLOAD_LIMIT = 10 * 1024 * 1024  # every Discord server takes files this large
TITLE_LIMIT = 256
DESCRIPTION_LIMIT = 4096
PROMPT_PREFIX = "🎬 "
CUSTOM_ID = "fpb:{action}:{job}"
# Any job text matches, so a forged one (a 30-digit number) is answered, not ignored.
CUSTOM_ID_TEMPLATE = rf"fpb:(?P<action>{'|'.join(ACTIONS)}):(?P<job>[^:]+)"

COLOURS = {
    JobStatus.QUEUED: 0x95A5A6,
    JobStatus.RUNNING: 0x5865F2,
    JobStatus.DONE: 0x57F287,
    JobStatus.FAILED: 0xED4245,
    JobStatus.CANCELLED: 0x4F545C,
}
BUTTON_STYLES: dict[Action, discord.ButtonStyle] = {
    "cancel": discord.ButtonStyle.danger,
    "reroll": discord.ButtonStyle.primary,
    "extend": discord.ButtonStyle.primary,
    "remix": discord.ButtonStyle.secondary,
    "delete": discord.ButtonStyle.secondary,
}


@dataclass(frozen=True)
class MessageFile:
    """A file of the data dir shown in the message, under the name Discord shows."""

    path: str
    name: str
    size: int
    mtime_ns: int

    @property
    def key(self) -> str:
        """Changes whenever the bytes may have changed (a partial video is rewritten in place)."""
        return f"{self.path}:{self.size}:{self.mtime_ns}"

    def upload(self) -> discord.File:
        return discord.File(self.path, filename=self.name)


@dataclass(frozen=True)
class DiscordMessage:
    job_id: int
    embed: dict[str, Any]
    file: MessageFile | None
    buttons: tuple[tuple[str, Action], ...]  # (label, action)

    def digest(self) -> str:
        """Equal for two messages a user could not tell apart."""
        shown = [self.embed, self.file.key if self.file else None, self.buttons]
        return hashlib.sha256(json.dumps(shown, sort_keys=True).encode()).hexdigest()[:32]

    def state(self) -> dict[str, Any]:
        """What is stored beside the message id: enough to skip unchanged edits after a restart."""
        return {"digest": self.digest(), "file": self.file.key if self.file else None}

    def discord_embed(self) -> discord.Embed:
        return discord.Embed.from_dict(self.embed)


def upload_limit_of(job: Job) -> int:
    """The most bytes a file of this job's message may have: what the interaction that
    queued it reported (Discord says at least 10 MiB; tests lower it), else 10 MiB."""
    return job.upload_limit or MIN_UPLOAD_LIMIT


def _file_name(job: Job, kind: str, path: Path, *, is_input: bool) -> str:
    if kind == "video":
        partial = "" if job.status.finished else "-partial"
        return f"framepack-{job.id}{partial}.mp4"
    what = "picture" if is_input else "preview"
    return f"{what}-{job.id}{path.suffix.lower() or '.png'}"


def _cut_prompt(prompt: str, room: int) -> str:
    """The prompt, markdown escaped, in at most `room` characters (cut with an ellipsis)."""
    escaped = discord.utils.escape_markdown(prompt)
    if len(escaped) <= room:
        return escaped
    cut = prompt[: max(0, room - 1)]
    while cut and len(discord.utils.escape_markdown(cut.rstrip())) + 1 > room:
        over = len(discord.utils.escape_markdown(cut.rstrip())) + 1 - room
        cut = cut[: -max(1, over)]
    return discord.utils.escape_markdown(cut.rstrip()) + "…" if cut else ""


def _description(prompt: str, details: tuple[str, ...]) -> str:
    """Prompt then facts within Discord's limit: the prompt is cut, never the facts."""
    facts = "\n".join(details)[: DESCRIPTION_LIMIT - len(PROMPT_PREFIX) - 3]
    room = DESCRIPTION_LIMIT - len(facts) - len(PROMPT_PREFIX) - 2
    shown = _cut_prompt(prompt, room)
    parts = [PROMPT_PREFIX + shown] if shown else []
    if facts:
        parts.append(facts)
    return "\n\n".join(parts)


def discord_message(job: Job, view: JobView, *, thumbnail: Path | None = None) -> DiscordMessage:
    """Lay `view` out as an embed; its file only if it exists and fits the upload limit.

    `thumbnail`: a small copy of the job's input picture, shown in its place.
    """
    details = view.details
    file = None
    if view.media is not None:
        is_input = view.media.kind == "photo" and view.media.path == input_picture(job)
        path = thumbnail if is_input and thumbnail is not None else Path(view.media.path)
        try:
            stat = path.stat()
        except OSError:
            stat = None  # removed by retention, or not written yet: show the text alone
        if stat is not None:
            limit = upload_limit_of(job)
            if stat.st_size <= limit:
                name = _file_name(job, view.media.kind, path, is_input=is_input)
                file = MessageFile(str(path), name, stat.st_size, stat.st_mtime_ns)
            else:
                what = "video" if view.final else "partial video"
                details = (
                    *details,
                    f"The {what} is {format_bytes(stat.st_size)}, more than this server takes "
                    f"({format_bytes(limit)}), so it cannot be attached.",
                )
    embed = discord.Embed(
        title=view.headline[:TITLE_LIMIT],
        description=_description(view.prompt, details),
        colour=COLOURS[view.status],
    )
    footer = f"Job #{job.id} · {job.user_name}" if job.user_name else f"Job #{job.id}"
    embed.set_footer(text=footer[:2048])
    if file is not None and view.media is not None and view.media.kind == "photo":
        embed.set_image(url=f"attachment://{file.name}")
    buttons = tuple((b.label, b.action) for b in view.buttons)
    return DiscordMessage(job.id, embed.to_dict(), file, buttons)


def custom_id(action: Action, job_id: int) -> str:
    return CUSTOM_ID.format(action=action, job=job_id)
