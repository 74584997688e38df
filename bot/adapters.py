"""What the bot process's parts agree on: the adapter of a chat platform (its
`ChatAdapter` and the `JobNotifier` the tracker drives), the error a platform
gives at start, and the guard that lets a command post its own job's message.

Both platform packages (bot/telegram/, bot/discord/) and bot/app.py import this
module; none of them imports another.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import uuid
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Protocol

from storage.config import DiscordSettings, TelegramSettings
from storage.records import Job

if TYPE_CHECKING:
    from bot.progress import JobView
    from bot.service import BotService


class AdapterStartFailed(RuntimeError):
    """A platform turned the bot away at start (a wrong token, no way to reach it).
    The message says what to fix; the host reads it without a traceback."""


def token_source(section: TelegramSettings | DiscordSettings) -> str:
    """Where a platform's token was read from, for a message that must not show it."""
    if section.token_env and os.environ.get(section.token_env):
        return f"from the environment variable {section.token_env}"
    return f"from {section.token_file}" if section.token_file else "from the config"


class JobNotifier(Protocol):
    """What an adapter does for the tracker (one per platform)."""

    platform: str
    edit_interval: float  # least seconds between two edits of one message

    async def show(self, job: Job, view: JobView) -> None:
        """Bring the job's message to `view` (the adapter skips what it already shows)."""

    async def deliver(self, job: Job, view: JobView) -> None:
        """Show the final view: the video, or why there is none. Raise to retry later."""

    async def notify_admins(self, text: str) -> None:
        """Tell the platform's configured admins something the host must act on."""


class ChatAdapter(JobNotifier, Protocol):
    async def start(self) -> None:
        """Connect and serve commands (returns once serving)."""

    async def stop(self) -> None:
        """Disconnect; pending edits may be dropped, deliveries are retried on restart."""


AdapterFactory = Callable[["BotService", Callable[[], None]], ChatAdapter]


class PostingGuard:
    """Jobs whose first message the command that queued them is posting right now.

    A command queues a job and then posts its message; the tracker may see the job
    in between. The command takes a token (`posting`), stores it in the job's
    origin, and holds it until the message is posted; the tracker waits for a
    token it finds (`wait`) and then edits the posted message instead of posting
    a second one. Tokens are unique across runs: a token from an earlier run is
    never held.
    """

    def __init__(self) -> None:
        self._run = uuid.uuid4().hex[:12]
        self._count = itertools.count(1)
        self._held: dict[str, asyncio.Event] = {}

    @contextlib.asynccontextmanager
    async def posting(self) -> AsyncIterator[str]:
        token = f"{self._run}-{next(self._count)}"
        done = self._held[token] = asyncio.Event()
        try:
            yield token
        finally:
            del self._held[token]
            done.set()

    async def wait(self, job: Job) -> None:
        """Return once no command of this run is posting `job`'s first message."""
        done = self._held.get(str(job.origin.get("token", "")))
        if done is not None:
            await done.wait()
