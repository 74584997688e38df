"""Each job's one message on Discord: a channel message with an embed, posted where
the job was asked for and edited with the bot token (an interaction's token dies
after 15 minutes, a job may wait longer), its file replaced only when it changed.

The database is the source of truth: the message of a job and what it shows (a
digest) are stored beside the job, so an unchanged view is never sent again,
not even after a restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import discord

from bot.adapters import PostingGuard
from bot.discord.client import FramepackClient, JobButton
from bot.discord.render import DiscordMessage, discord_message
from bot.images import thumbnail
from bot.progress import JobView, input_picture, render
from bot.requests import UserError
from storage.files import DataDir, write_atomic
from storage.records import ChatMessageRef, Job
from storage.store import JobStore

log = logging.getLogger("framepack_bot.discord")

PLATFORM = "discord"
THREAD_NAME_LIMIT = 100
THUMBNAIL_SIDE = 1024  # the picture a queued job shows; the full input may be 20 MB
# Discord errors after which a message cannot be shown at all (no retry helps):
# Unknown Channel, Missing Access, Missing Permissions, Cannot send messages to this user
GONE_CODES = frozenset({10003, 50001, 50013, 50007})
UNKNOWN_MESSAGE = 10008
FILE_TOO_LARGE = 40005


def jump_url(guild_id: int | None, channel_id: int, message_id: int) -> str:
    return f"https://discord.com/channels/{guild_id or '@me'}/{channel_id}/{message_id}"


class DiscordJobMessages:
    """The messages of the jobs of one bot: what `DiscordAdapter` does for the tracker."""

    def __init__(
        self,
        client: FramepackClient,
        store: JobStore,
        data: DataDir,
        guard: PostingGuard,
        *,
        tiny: bool,
        threads: bool,
    ) -> None:
        self.client = client
        self.store = store
        self.data = data
        self.guard = guard
        self.tiny = tiny
        self.threads = threads
        # A press of Delete and the tracker's edit of the same message take turns.
        self.editing: defaultdict[int, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def _message(self, job: Job, view: JobView) -> DiscordMessage:
        small = None
        if view.media is not None and view.media.path == input_picture(job):
            path = self.data.previews_dir(job.id) / "discord-input.jpg"
            # off the loop: a 40-megapixel input takes a while to decode
            small = path if path.exists() else await asyncio.to_thread(self._thumbnail, job, path)
        return discord_message(job, view, thumbnail=small)

    @staticmethod
    def _thumbnail(job: Job, path: Path) -> Path | None:
        """A JPEG of the input small enough to show on every edit (made once per job)."""
        try:
            return write_atomic(path, thumbnail(input_picture(job), THUMBNAIL_SIDE, quality=85))
        except OSError:
            return None  # the input is gone (retention): show no picture

    @staticmethod
    def _buttons(message: DiscordMessage) -> discord.ui.View | None:
        if not message.buttons:
            return None
        view = discord.ui.View(timeout=None)
        for label, action in message.buttons:
            view.add_item(JobButton(action, message.job_id, label))
        return view

    async def _view_now(self, job: Job) -> JobView:
        position = await self.store.position(job.id)
        paused = await self.store.paused()
        return render(job, None, position, tiny=self.tiny, paused=paused)

    async def post_new(self, job: Job, interaction: discord.Interaction) -> str:
        """Post a new job's message where it was asked for (in a thread of its own if the
        config says so); return a link to it. A job whose message cannot be posted is
        withdrawn: nobody would see it render."""
        message = await self._message(job, await self._view_now(job))
        channel = interaction.channel
        target: discord.abc.Messageable = (
            channel
            if isinstance(channel, discord.abc.Messageable)
            else self.client.get_partial_messageable(int(job.chat_id))
        )
        try:
            sent = await self._send(target, message)
        except discord.HTTPException as exc:
            log.warning(
                "job %d: cannot post in channel %s (%s); cancelled", job.id, job.chat_id, exc
            )
            await self.store.cancel(job.id)
            await self.store.mark_delivered(job.id)
            raise UserError(
                "I could not post in this channel, so nothing was queued. Check my permissions "
                "here, or use another channel."
            ) from None
        where = sent.channel.id
        if self.threads and isinstance(channel, discord.TextChannel):
            name = f"#{job.id} {job.params.prompt}"[:THREAD_NAME_LIMIT]
            try:
                await sent.create_thread(name=name, auto_archive_duration=1440)
            except discord.HTTPException as exc:  # no permission: the job goes on without one
                log.warning("job %d: could not start a thread: %s", job.id, exc)
        await self.store.set_message(job.id, PLATFORM, str(where), str(sent.id), message.state())
        return jump_url(interaction.guild_id, where, sent.id)

    async def _send(
        self, target: discord.abc.Messageable, message: DiscordMessage
    ) -> discord.Message:
        files = [message.file.upload()] if message.file else []
        view = self._buttons(message)
        extra: dict[str, Any] = {"view": view} if view is not None else {}
        return await target.send(
            embed=message.discord_embed(),
            files=files,
            allowed_mentions=discord.AllowedMentions.none(),
            **extra,
        )

    async def _ref(self, job: Job) -> ChatMessageRef | None:
        ref = await self.store.message(job.id, PLATFORM)
        if ref is None:
            await self.guard.wait(job)  # its command may be posting it right now
            ref = await self.store.message(job.id, PLATFORM)
        return ref

    async def _settled(self, job: Job) -> bool:
        """Whether the job is over and its outcome recorded (e.g. withdrawn at its post)."""
        fresh = await self.store.find(job.id)
        return fresh is None or fresh.delivered_at is not None

    async def show(self, job: Job, view: JobView) -> None:
        """Bring the job's message to `view`; nothing is sent when it already shows it."""
        async with self.editing[job.id]:
            await self._update(job, view)

    async def deliver(self, job: Job, view: JobView) -> None:
        """The final view: the finished video (or why there is none) and its buttons."""
        async with self.editing[job.id]:
            await self._update(job, view)
        self.editing.pop(job.id, None)

    async def _update(self, job: Job, view: JobView) -> None:
        ref = await self._ref(job)
        if ref is not None and ref.state.get("final"):
            return  # delivered (or deleted) already: a late progress edit must not undo it
        message = await self._message(job, view)
        if ref is None:
            if not await self._settled(job):
                await self._repost(job, message, view.final)
            return
        if ref.state.get("digest") == message.digest():
            if view.final:
                await self.store.update_message_state(
                    job.id, PLATFORM, {**message.state(), "final": True}
                )
            return
        try:
            await self._edit(ref, message)
        except discord.HTTPException as exc:
            if exc.code == UNKNOWN_MESSAGE:  # somebody deleted it: show the job anew
                log.info("job %d: its message was deleted; posting a new one", job.id)
                await self._repost(job, message, view.final)
                return
            if exc.status == 413 or exc.code == FILE_TOO_LARGE:
                # the server's limit went down since the job was queued: text only
                message = discord_message(
                    job, view.with_details("The video is too large for this server to show.")
                )
                message = DiscordMessage(message.job_id, message.embed, None, message.buttons)
                await self._edit(ref, message)
            elif exc.code in GONE_CODES:
                log.warning("job %d: its message cannot be shown any more: %s", job.id, exc)
                return
            else:
                raise
        state = {**message.state(), "final": view.final}
        await self.store.update_message_state(job.id, PLATFORM, state)

    async def _edit(self, ref: ChatMessageRef, message: DiscordMessage) -> None:
        """Edit with the bot token (no 15-minute limit); re-upload only a changed file."""
        kwargs: dict[str, Any] = {
            "embed": message.discord_embed(),
            "view": self._buttons(message),
        }
        if ref.state.get("file") != (message.file.key if message.file else None):
            kwargs["attachments"] = [message.file.upload()] if message.file else []
        channel = self.client.get_partial_messageable(int(ref.chat_id))
        await channel.get_partial_message(int(ref.message_id)).edit(**kwargs)

    async def _repost(self, job: Job, message: DiscordMessage, final: bool) -> None:
        """A job without a (live) message: post one in the channel it was asked in."""
        channel = self.client.get_partial_messageable(int(job.chat_id))
        try:
            sent = await self._send(channel, message)
        except discord.HTTPException as exc:
            if exc.code in GONE_CODES or exc.status == 404:
                log.warning("job %d: cannot post in channel %s: %s", job.id, job.chat_id, exc)
                return
            raise
        state = {**message.state(), "final": final}
        await self.store.set_message(job.id, PLATFORM, job.chat_id, str(sent.id), state)

    async def delete(self, job: Job, message: discord.Message | None) -> None:
        """Delete the job's message (its Delete button); it is never edited again."""
        async with self.editing[job.id]:
            ref = await self.store.message(job.id, PLATFORM)
            if message is not None:
                await message.delete()
            if ref is not None:
                await self.store.update_message_state(
                    job.id, PLATFORM, {**ref.state, "deleted": True, "final": True}
                )
