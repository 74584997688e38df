"""The Discord adapter: slash commands and buttons in, job messages out.

A discord.py client on the bot's asyncio loop. It only translates: commands and
button presses become calls of the platform-neutral `BotService`, and each
job's `JobView` (from `bot.progress`) becomes one channel message with an embed
(bot/discord/messages.py, laid out by bot/discord/render.py).

An interaction must be answered within 3 s and its token dies after 15 minutes.
So `/animate` defers at once (ephemerally), downloads the attachment right away
(its CDN link expires), and the job's message is a normal channel message sent
and edited with the bot token: its edits keep working however long the job
waits or renders. The interaction token only carries the ephemeral answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import discord
import yarl
from discord import app_commands
from discord.gateway import DiscordWebSocket
from discord.http import Route

from bot.adapters import AdapterStartFailed, PostingGuard, token_source
from bot.discord.client import MESSAGE_LIMIT, FramepackClient, answer
from bot.discord.commands import build_commands
from bot.discord.messages import PLATFORM, DiscordJobMessages
from bot.discord.modals import Submit, extend_form, number, remix_form
from bot.discord.render import MIN_UPLOAD_LIMIT
from bot.formatting import format_bytes
from bot.progress import Action, JobView
from bot.requests import AnimateOptions, UserError
from bot.service import ADMIN_HELP, BotService, Requester, help_text, loras_text
from storage.records import Job

log = logging.getLogger("framepack_bot.discord")


def _gateway_ended(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("discord: the gateway connection ended for good", exc_info=task.exception())


class RateLimitCounter(logging.Filter):
    """Counts the 429s Discord answered: discord.py waits each out inside its HTTP
    client and only logs it (at WARNING), so a filter on its logger counts those
    lines for the web page's /metrics. It lets every record through."""

    TEMPLATES = ("responded with 429", "received a 429", "Global rate limit has been hit")

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and any(t in record.msg for t in self.TEMPLATES):
            self.count += 1
        return True


class DiscordAdapter:
    """The `ChatAdapter` of Discord (see `bot.app`): commands in, job messages out."""

    platform = PLATFORM

    def __init__(
        self,
        service: BotService,
        on_change: Callable[[], None],
        *,
        guild_ready_timeout: float = 2.0,
    ) -> None:
        self.service = service
        self.store = service.store
        self.settings = service.settings.discord
        self.edit_interval = self.settings.edit_interval
        self.on_change = on_change
        self.client = FramepackClient(self, guild_ready_timeout=guild_ready_timeout)
        self.guard = PostingGuard()
        self.messages = DiscordJobMessages(
            self.client,
            self.store,
            service.data,
            self.guard,
            tiny=service.tiny,
            threads=self.settings.threads,
        )
        self._task: asyncio.Task[None] | None = None
        self._limits = RateLimitCounter()

    @property
    def rate_limited(self) -> int:
        """429s Discord answered since the start (the web page's /metrics reads it)."""
        return self._limits.count

    # ---- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        """Log in and sync the commands (a wrong token fails here), then connect the gateway
        in the background: job messages can be edited before it is up, and a Discord
        outage at start does not hold up the other platform and the tracker."""
        self._use_endpoints()
        logging.getLogger("discord.http").addFilter(self._limits)
        try:
            await self.client.login(self.settings.token.reveal())  # runs setup_hook
        except discord.LoginFailure:
            raise AdapterStartFailed(
                f"discord: Discord refused the bot token ({token_source(self.settings)}). Copy "
                "it again from the Developer Portal (your application, Bot, Reset Token)."
            ) from None
        except (aiohttp.ClientError, OSError) as exc:  # TimeoutError is an OSError
            raise AdapterStartFailed(
                f"discord: cannot reach Discord: {exc}. Check the network."
            ) from None
        self._task = asyncio.create_task(self.client.connect(), name="discord gateway")
        self._task.add_done_callback(_gateway_ended)

    def _use_endpoints(self) -> None:
        """Point discord.py at the configured API and gateway (a test double); discord.py
        keeps both in class attributes, so this is for the whole bot process."""
        if self.settings.api_base:
            Route.BASE = self.settings.api_base.rstrip("/")
        if self.settings.gateway_url:
            DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.settings.gateway_url)

    async def stop(self) -> None:
        logging.getLogger("discord.http").removeFilter(self._limits)
        await self.client.close()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, discord.DiscordException):
                await asyncio.wait_for(self._task, 10)
            self._task = None

    # ---- commands ------------------------------------------------------------

    async def sync_commands(self) -> None:
        """Per allowed guild (they appear at once), else globally (Discord takes its time)."""
        tree = self.client.tree
        guilds = [discord.Object(g) for g in self.settings.allowed_guilds]
        if guilds:
            for command in build_commands(self):
                tree.add_command(command, guilds=guilds)
            if self.settings.allow_dms:
                for command in build_commands(self):
                    command.allowed_contexts = app_commands.AppCommandContext(dm_channel=True)
                    tree.add_command(command)
            for guild in guilds:
                await tree.sync(guild=guild)
        else:
            for command in build_commands(self):
                command.allowed_contexts = app_commands.AppCommandContext(
                    guild=True, dm_channel=self.settings.allow_dms
                )
                tree.add_command(command)
        await tree.sync()  # also clears global commands a former config left behind
        log.info("discord: commands synced to %s", self.settings.allowed_guilds or "every guild")

    def refusal(self, interaction: discord.Interaction) -> str | None:
        """Why this bot does not serve the place of `interaction` (None: it does)."""
        if interaction.guild_id is None:
            if not self.settings.allow_dms:
                return "I only work in servers, not in direct messages."
            return None
        allowed = self.settings.allowed_guilds
        if allowed and interaction.guild_id not in allowed:
            return "This bot is not enabled in this server."
        return None

    def is_admin(self, interaction: discord.Interaction) -> bool:
        if interaction.user.id in self.settings.admins:
            return True
        return interaction.guild_id is not None and interaction.permissions.manage_guild

    def requester(self, interaction: discord.Interaction) -> Requester:
        return Requester(
            platform=PLATFORM,
            user_id=str(interaction.user.id),
            name=interaction.user.display_name,
            chat_id=str(interaction.channel_id),
            is_admin=self.is_admin(interaction),
        )

    @staticmethod
    def upload_limit(interaction: discord.Interaction) -> int:
        """The largest file this server takes (Discord reports it; 10 MiB everywhere)."""
        return int(getattr(interaction, "filesize_limit", 0) or MIN_UPLOAD_LIMIT)

    async def animate(
        self,
        interaction: discord.Interaction,
        image: discord.Attachment,
        options: AnimateOptions,
        end_image: discord.Attachment | None,
    ) -> None:
        """`/animate`: acknowledge, fetch the pictures, validate, queue, post the job's message."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        who = self.requester(interaction)
        try:
            self._check_can_post(interaction)
            picture = await self._download(image, "picture")
            end = await self._download(end_image, "end image") if end_image else None
            async with self.guard.posting() as token:
                job = await self.service.animate(
                    who,
                    picture,
                    options,
                    end_image=end,
                    upload_limit=self.upload_limit(interaction),
                    origin=self._origin(interaction, token),
                )
                url = await self.messages.post_new(job, interaction)
        except UserError as refused:
            await answer(interaction, refused.message)
            return
        self.on_change()
        await answer(interaction, f"✅ Queued as job #{job.id}. Follow it here: {url}")

    @staticmethod
    def _check_can_post(interaction: discord.Interaction) -> None:
        """Refuse before queueing when the job's message could not be posted here."""
        if interaction.guild_id is None:
            return
        send = (
            "send_messages_in_threads"
            if isinstance(interaction.channel, discord.Thread)
            else "send_messages"
        )
        needed = {
            send: "Send Messages",
            "embed_links": "Embed Links",
            "attach_files": "Attach Files",
        }
        missing = [
            label
            for name, label in needed.items()
            if not getattr(interaction.app_permissions, name)
        ]
        if missing:
            raise UserError(
                f"I cannot post videos in this channel: I need the permission "
                f"{' and '.join(missing)} here. Ask a server admin, or use another channel."
            )

    async def _download(self, attachment: discord.Attachment, what: str) -> bytes:
        """The attachment's bytes, now: its CDN link expires."""
        gen = self.service.settings.generation
        video = (attachment.content_type or "").startswith("video/")
        limit = gen.max_video_bytes if video else gen.max_image_bytes
        if attachment.size > limit:
            raise UserError(
                f"The {'video' if video else what} is {format_bytes(attachment.size)}; the most "
                f"is {format_bytes(limit)}. Send a smaller one."
            )
        try:
            return await attachment.read()
        except discord.HTTPException:
            raise UserError(
                f"I could not fetch the {what} from Discord (its link may have expired). "
                "Please send it again."
            ) from None

    @staticmethod
    def _origin(interaction: discord.Interaction, token: str) -> dict[str, Any]:
        return {
            "interaction_id": str(interaction.id),
            "guild_id": str(interaction.guild_id) if interaction.guild_id else None,
            "token": token,
        }

    async def queue(self, interaction: discord.Interaction) -> None:
        await answer(interaction, await self.service.queue_text(self.requester(interaction)))

    async def status(self, interaction: discord.Interaction) -> None:
        await answer(interaction, await self.service.status_text(self.requester(interaction)))

    async def loras(self, interaction: discord.Interaction) -> None:
        await answer(interaction, loras_text(self.service.settings, PLATFORM))

    async def help(self, interaction: discord.Interaction) -> None:
        text = help_text(self.service.settings, PLATFORM)
        if self.is_admin(interaction):
            text += "\n\n" + ADMIN_HELP
        await answer(interaction, text)

    async def cancel(self, interaction: discord.Interaction, job_id: int | None) -> None:
        try:
            text = await self.service.cancel(self.requester(interaction), job_id)
        except UserError as refused:
            text = refused.message
        self.on_change()
        await answer(interaction, text)

    async def admin(self, interaction: discord.Interaction, action: str, *args: object) -> None:
        """pause, resume, ban, unban, set_limits: the service refuses who is no admin."""
        who = self.requester(interaction)
        try:
            text = await getattr(self.service, action)(who, *args)
        except UserError as refused:
            text = refused.message
        self.on_change()
        await answer(interaction, text)

    # ---- buttons -------------------------------------------------------------

    async def on_button(
        self, interaction: discord.Interaction, action: Action, job_id: int
    ) -> None:
        refusal = self.refusal(interaction)
        if refusal is not None:
            await answer(interaction, refusal)
            return
        try:
            await self._on_button(interaction, action, job_id)
        except UserError as refused:
            await answer(interaction, refused.message)
        except Exception:  # one failing press must not go unanswered
            log.exception("discord: button %s of job %d failed", action, job_id)
            await answer(interaction, "Something went wrong on my side. Please try again later.")

    async def _on_button(
        self, interaction: discord.Interaction, action: Action, job_id: int
    ) -> None:
        who = self.requester(interaction)
        job = await self.service.owned_job(who, job_id)  # refuses everybody else
        if action == "cancel":
            text = await self.service.cancel(who, job.id)
            self.on_change()
            await answer(interaction, text)
        elif action == "reroll":
            await interaction.response.defer(ephemeral=True, thinking=True)

            async def reroll(origin: dict[str, Any]) -> Job:
                return await self.service.reroll(
                    who, job.id, origin=origin, upload_limit=self.upload_limit(interaction)
                )

            new, url = await self._queue(interaction, reroll)
            await answer(
                interaction, f"🎲 Re-rolled as job #{new.id} (seed {new.params.seed}): {url}"
            )
        elif action == "extend":
            seconds = self.service.settings.generation.seconds
            await interaction.response.send_modal(
                extend_form(job.id, job.params.prompt, seconds, self._extend(job.id))
            )
        elif action == "remix":
            await interaction.response.send_modal(
                remix_form(job.id, job.params.prompt, job.params.seconds, self._remix(job.id))
            )
        elif action == "delete":
            if not job.status.finished:
                raise UserError("That job is still going; cancel it first.")
            await interaction.response.defer()  # no answer: the message just goes
            await self.messages.delete(job, interaction.message)
            log.info("job %d: message deleted by %s", job.id, who.user_id)

    def _extend(self, job_id: int) -> Submit:
        async def submitted(interaction: discord.Interaction, values: dict[str, str]) -> None:
            await interaction.response.defer(ephemeral=True, thinking=True)
            try:
                seconds = number(values.get("seconds", ""), float, "seconds")

                async def extend(origin: dict[str, Any]) -> Job:
                    return await self.service.extend(
                        self.requester(interaction),
                        job_id,
                        prompt=values.get("prompt") or None,
                        seconds=seconds,
                        origin=origin,
                        upload_limit=self.upload_limit(interaction),
                    )

                new, url = await self._queue(interaction, extend)
            except UserError as refused:
                await answer(interaction, refused.message)
                return
            await answer(interaction, f"⏩ Extending as job #{new.id}: {url}")

        return submitted

    def _remix(self, job_id: int) -> Submit:
        async def submitted(interaction: discord.Interaction, values: dict[str, str]) -> None:
            await interaction.response.defer(ephemeral=True, thinking=True)
            try:
                options = AnimateOptions(
                    prompt=values.get("prompt", ""),
                    seconds=number(values.get("seconds", ""), float, "seconds"),
                    seed=number(values.get("seed", ""), int, "seed"),
                )

                async def remix(origin: dict[str, Any]) -> Job:
                    return await self.service.remix(
                        self.requester(interaction),
                        job_id,
                        options,
                        origin=origin,
                        upload_limit=self.upload_limit(interaction),
                    )

                new, url = await self._queue(interaction, remix)
            except UserError as refused:
                await answer(interaction, refused.message)
                return
            await answer(interaction, f"🎨 Remixed as job #{new.id}: {url}")

        return submitted

    async def _queue(
        self,
        interaction: discord.Interaction,
        start: Callable[[dict[str, Any]], Awaitable[Job]],
    ) -> tuple[Job, str]:
        """Queue a job from an interaction already acknowledged, and post its message."""
        self._check_can_post(interaction)
        async with self.guard.posting() as token:
            job = await start(self._origin(interaction, token))
            url = await self.messages.post_new(job, interaction)
        self.on_change()
        return job, url

    # ---- for the tracker -------------------------------------------------------

    async def show(self, job: Job, view: JobView) -> None:
        """Bring the job's message to `view`; nothing is sent when it already shows it."""
        await self.messages.show(job, view)

    async def deliver(self, job: Job, view: JobView) -> None:
        """The final view: the finished video (or why there is none) and its buttons."""
        await self.messages.deliver(job, view)

    async def notify_admins(self, text: str) -> None:
        """A direct message to each admin named in the config (members with Manage
        Server are admins too, but the bot cannot know them all)."""
        for admin in self.settings.admins:
            try:
                user = await self.client.fetch_user(admin)
                await user.send(text[:MESSAGE_LIMIT])
            except discord.HTTPException as exc:
                log.warning("discord: could not tell admin %s: %s", admin, exc)


def create_discord_adapter(service: BotService, on_change: Callable[[], None]) -> DiscordAdapter:
    """The factory `bot.app.run_bots` calls when `[discord] enabled = true`."""
    return DiscordAdapter(service, on_change)
