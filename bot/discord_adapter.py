"""The Discord adapter: slash commands and buttons in, job messages out.

A discord.py client on the bot's asyncio loop. It only translates: commands
and button presses become calls of the platform-neutral `BotService`, and each
job's `JobView` (from `bot.progress`) becomes one channel message with an
embed, laid out by `bot.discord_render`.

Discord's rules shape three choices here:

- An interaction must be answered within 3 s and its token dies after 15
  minutes. So `/animate` defers at once (ephemerally), downloads the
  attachment right away (its CDN link expires), and the job's message is a
  normal channel message sent and edited with the bot token: its edits keep
  working however long the job waits or renders. The interaction token only
  carries the ephemeral answers.
- Buttons are `DynamicItem`s whose custom_id names the action and the job
  (``fpb:reroll:42``), registered in `setup_hook`: a restarted bot handles the
  buttons of messages it sent before, and the database says whose job it is.
- The database is the source of truth: the message of a job and what it shows
  (a digest) are stored beside the job, so an unchanged view is never sent
  again, not even after a restart.

No `from __future__ import annotations` here: the annotations of the command
callbacks carry the config's bounds (`Range[float, 0.5, max_seconds]`) and
discord.py reads them when the commands are built.
"""

import asyncio
import contextlib
import io
import logging
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, cast

import aiohttp
import discord
import yarl
from discord import app_commands
from discord.gateway import DiscordWebSocket
from discord.http import Route
from PIL import Image, ImageOps

from bot.app import AdapterStartFailed, token_source
from bot.discord_render import (
    BUTTON_STYLES,
    CUSTOM_ID_TEMPLATE,
    MIN_UPLOAD_LIMIT,
    DiscordMessage,
    custom_id,
    discord_message,
)
from bot.progress import Action, JobView, render
from bot.requests import SEED_MAX, AnimateOptions, UserError
from bot.service import ADMIN_HELP, BotService, Requester, help_text
from storage.records import ChatMessageRef, Job

log = logging.getLogger("framepack_bot.discord")

PLATFORM = "discord"
MESSAGE_LIMIT = 2000  # characters of a plain message
THREAD_NAME_LIMIT = 100
THUMBNAIL_SIDE = 1024  # the picture a queued job shows; the full input may be 20 MB
# Discord errors after which a message cannot be shown at all (no retry helps):
# Unknown Channel, Missing Access, Missing Permissions, Cannot send messages to this user
GONE_CODES = frozenset({10003, 50001, 50013, 50007})
UNKNOWN_MESSAGE = 10008
FILE_TOO_LARGE = 40005


class JobButton(discord.ui.DynamicItem[discord.ui.Button], template=CUSTOM_ID_TEMPLATE):
    """One button of a job's message; it works for messages sent before a restart."""

    def __init__(self, action: Action, job_id: int, label: str | None = None) -> None:
        super().__init__(
            discord.ui.Button(
                label=label or action.capitalize(),
                style=BUTTON_STYLES[action],
                custom_id=custom_id(action, job_id),
            )
        )
        self.action: Action = action
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: Any
    ) -> "JobButton":
        return cls(cast(Action, match["action"]), int(match["job"]), item.label)

    async def callback(self, interaction: discord.Interaction) -> None:
        client = cast(FramepackClient, interaction.client)
        await client.adapter.on_button(interaction, self.action, self.job_id)


class FramepackTree(app_commands.CommandTree):
    """Refuses places the config does not serve; answers every failure ephemerally."""

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        adapter = cast(FramepackClient, self.client).adapter
        refusal = adapter.refusal(interaction)
        if refusal is not None:
            await interaction.response.send_message(refusal, ephemeral=True)
            return False
        return True

    async def on_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        cause = error.original if isinstance(error, app_commands.CommandInvokeError) else error
        log.error(
            "discord: /%s failed",
            interaction.command.qualified_name if interaction.command else "?",
            exc_info=cause,
        )
        await _answer(interaction, "Something went wrong on my side. Please try again later.")


class FramepackClient(discord.Client):
    def __init__(self, adapter: "DiscordAdapter", **options: Any) -> None:
        # The bot never joins voice: no warning that voice libraries are missing.
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False
        # No privileged intents: interactions reach a bot whatever its intents.
        super().__init__(intents=discord.Intents(guilds=True), **options)
        self.adapter = adapter
        self.tree = FramepackTree(self)
        self.ready = asyncio.Event()

    async def setup_hook(self) -> None:
        self.add_dynamic_items(JobButton)
        await self.adapter.sync_commands()

    async def on_ready(self) -> None:
        self.ready.set()


async def _answer(interaction: discord.Interaction, text: str) -> None:
    """An ephemeral answer, whether or not the interaction was acknowledged already."""
    text = text[:MESSAGE_LIMIT]
    try:
        if interaction.response.is_done():
            await interaction.followup.send(text, ephemeral=True)
        else:
            await interaction.response.send_message(text, ephemeral=True)
    except discord.HTTPException as exc:  # the token expired, or Discord is down: log only
        log.warning("discord: could not answer interaction %s: %s", interaction.id, exc)


def _size(n: int) -> str:
    return f"{n / 1_000_000:.0f} MB" if n >= 1_000_000 else f"{n / 1000:.0f} kB"


def _gateway_ended(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("discord: the gateway connection ended for good", exc_info=task.exception())


def _jump_url(guild_id: int | None, channel_id: int, message_id: int) -> str:
    return f"https://discord.com/channels/{guild_id or '@me'}/{channel_id}/{message_id}"


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
        self._task: asyncio.Task[None] | None = None
        # A user's new job is posted while its owner's lock is held, so the tracker
        # (which may see the job first) waits for that message instead of posting another.
        self._posting: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._editing: defaultdict[int, asyncio.Lock] = defaultdict(asyncio.Lock)

    # ---- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        """Log in and sync the commands (a wrong token fails here), then connect the gateway
        in the background: job messages can be edited before it is up, and a Discord
        outage at start does not hold up the other platform and the tracker."""
        self._use_endpoints()
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
            async with self._posting[who.user_id]:
                job = await self.service.animate(
                    who,
                    picture,
                    options,
                    end_image=end,
                    upload_limit=self.upload_limit(interaction),
                    origin=self._origin(interaction),
                )
                url = await self._post_new(job, interaction)
        except UserError as refused:
            await _answer(interaction, refused.message)
            return
        self.on_change()
        await _answer(interaction, f"✅ Queued as job #{job.id}. Follow it here: {url}")

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
        if attachment.size > gen.max_image_bytes:
            raise UserError(
                f"The {what} is {_size(attachment.size)}; the most is "
                f"{_size(gen.max_image_bytes)}. Send a smaller one (a JPEG works)."
            )
        try:
            return await attachment.read()
        except discord.HTTPException:
            raise UserError(
                f"I could not fetch the {what} from Discord (its link may have expired). "
                "Please send it again."
            ) from None

    @staticmethod
    def _origin(interaction: discord.Interaction) -> dict[str, Any]:
        return {
            "interaction_id": str(interaction.id),
            "guild_id": str(interaction.guild_id) if interaction.guild_id else None,
        }

    async def queue(self, interaction: discord.Interaction) -> None:
        await _answer(interaction, await self.service.queue_text(self.requester(interaction)))

    async def status(self, interaction: discord.Interaction) -> None:
        await _answer(interaction, await self.service.status_text(self.requester(interaction)))

    async def help(self, interaction: discord.Interaction) -> None:
        text = help_text(self.service.settings, PLATFORM)
        if self.is_admin(interaction):
            text += "\n\n" + ADMIN_HELP
        await _answer(interaction, text)

    async def cancel(self, interaction: discord.Interaction, job_id: int | None) -> None:
        try:
            text = await self.service.cancel(self.requester(interaction), job_id)
        except UserError as refused:
            text = refused.message
        self.on_change()
        await _answer(interaction, text)

    async def admin(self, interaction: discord.Interaction, action: str, *args: str) -> None:
        """pause, resume, ban, unban: the service refuses who is no admin."""
        who = self.requester(interaction)
        try:
            text = await getattr(self.service, action)(who, *args)
        except UserError as refused:
            text = refused.message
        self.on_change()
        await _answer(interaction, text)

    # ---- buttons -------------------------------------------------------------

    async def on_button(
        self, interaction: discord.Interaction, action: Action, job_id: int
    ) -> None:
        refusal = self.refusal(interaction)
        if refusal is not None:
            await _answer(interaction, refusal)
            return
        try:
            await self._on_button(interaction, action, job_id)
        except UserError as refused:
            await _answer(interaction, refused.message)
        except Exception:  # one failing press must not go unanswered
            log.exception("discord: button %s of job %d failed", action, job_id)
            await _answer(interaction, "Something went wrong on my side. Please try again later.")

    async def _on_button(
        self, interaction: discord.Interaction, action: Action, job_id: int
    ) -> None:
        who = self.requester(interaction)
        job = await self.service.owned_job(who, job_id)  # refuses everybody else
        if action == "cancel":
            text = await self.service.cancel(who, job.id)
            self.on_change()
            await _answer(interaction, text)
        elif action == "reroll":
            await interaction.response.defer(ephemeral=True, thinking=True)
            self._check_can_post(interaction)
            async with self._posting[who.user_id]:
                new = await self.service.reroll(
                    who,
                    job.id,
                    origin=self._origin(interaction),
                    upload_limit=self.upload_limit(interaction),
                )
                url = await self._post_new(new, interaction)
            self.on_change()
            await _answer(
                interaction, f"🎲 Re-rolled as job #{new.id} (seed {new.params.seed}): {url}"
            )
        elif action == "delete":
            if not job.status.finished:
                raise UserError("That job is still going; cancel it first.")
            await interaction.response.defer()  # no answer: the message just goes
            async with self._editing[job.id]:
                ref = await self.store.message(job.id, PLATFORM)
                if interaction.message is not None:
                    await interaction.message.delete()
                if ref is not None:
                    await self.store.update_message_state(
                        job.id, PLATFORM, {**ref.state, "deleted": True, "final": True}
                    )
            log.info("job %d: message deleted by %s", job.id, who.user_id)

    # ---- the job's message ---------------------------------------------------

    async def _message(self, job: Job, view: JobView) -> DiscordMessage:
        thumbnail = None
        if view.media is not None and view.media.path == job.input_path:
            path = self.service.data.previews_dir(job.id) / "discord-input.jpg"
            # off the loop: a 40-megapixel input takes a while to decode
            thumbnail = (
                path if path.exists() else await asyncio.to_thread(self._thumbnail, job, path)
            )
        return discord_message(job, view, thumbnail=thumbnail)

    @staticmethod
    def _thumbnail(job: Job, path: Path) -> Path | None:
        """A JPEG of the input small enough to show on every edit (made once per job)."""
        try:
            with Image.open(job.input_path) as img:
                img = ImageOps.exif_transpose(img).convert("RGB")
                img.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
                out = io.BytesIO()
                img.save(out, format="JPEG", quality=85)
        except OSError:
            return None  # the input is gone (retention): show no picture
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(out.getvalue())
        tmp.replace(path)
        return path

    def _buttons(self, message: DiscordMessage) -> discord.ui.View | None:
        if not message.buttons:
            return None
        view = discord.ui.View(timeout=None)
        for label, action in message.buttons:
            view.add_item(JobButton(action, message.job_id, label))
        return view

    async def _view_now(self, job: Job) -> JobView:
        position = await self.store.position(job.id)
        paused = await self.store.paused()
        return render(job, None, position, tiny=self.service.tiny, paused=paused)

    async def _post_new(self, job: Job, interaction: discord.Interaction) -> str:
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
        if self.settings.threads and isinstance(channel, discord.TextChannel):
            name = f"#{job.id} {job.params.prompt}"[:THREAD_NAME_LIMIT]
            try:
                await sent.create_thread(name=name, auto_archive_duration=1440)
            except discord.HTTPException as exc:  # no permission: the job goes on without one
                log.warning("job %d: could not start a thread: %s", job.id, exc)
        await self.store.set_message(job.id, PLATFORM, str(where), str(sent.id), message.state())
        return _jump_url(interaction.guild_id, where, sent.id)

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
            async with self._posting[job.user_id]:  # its command may be posting it right now
                ref = await self.store.message(job.id, PLATFORM)
        return ref

    async def _settled(self, job: Job) -> bool:
        """Whether the job is over and its outcome recorded (e.g. withdrawn at its post)."""
        fresh = await self.store.find(job.id)
        return fresh is None or fresh.delivered_at is not None

    async def show(self, job: Job, view: JobView) -> None:
        """Bring the job's message to `view`; nothing is sent when it already shows it."""
        async with self._editing[job.id]:
            await self._update(job, view)

    async def deliver(self, job: Job, view: JobView) -> None:
        """The final view: the finished video (or why there is none) and its buttons."""
        async with self._editing[job.id]:
            await self._update(job, view)
        self._editing.pop(job.id, None)

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


def build_commands(adapter: DiscordAdapter) -> list[app_commands.Command]:
    """The slash commands, with the bounds of the config in their schema (the Discord
    client then refuses out-of-range values before they are sent; the service checks
    again, so a value that slips through gets the same answer as on Telegram)."""
    gen = adapter.service.settings.generation
    max_prompt = min(gen.max_prompt_chars, 6000)

    @app_commands.command(name="animate", description="Turn a picture into a video")
    @app_commands.describe(
        image="the picture to animate (PNG, JPEG or WebP)",
        prompt="what should happen, e.g. 'the cat turns its head and blinks'",
        seconds=f"video length in seconds (default {gen.seconds:g})",
        seed="a number, to get the same video again (default: random)",
        steps=f"more is slower and finer (default {gen.steps})",
        guidance=f"how closely to follow the prompt (default {gen.guidance:g})",
        model="framepack (default) or f1",
        end_image="a picture the video should end on (framepack only)",
    )
    async def animate(
        interaction: discord.Interaction,
        image: discord.Attachment,
        prompt: app_commands.Range[str, 1, max_prompt],
        seconds: app_commands.Range[float, 0.5, gen.max_seconds] | None = None,
        seed: app_commands.Range[int, 0, SEED_MAX] | None = None,
        steps: app_commands.Range[int, 1, gen.max_steps] | None = None,
        guidance: app_commands.Range[float, 1.0, 32.0] | None = None,
        model: Literal["framepack", "f1"] | None = None,
        end_image: discord.Attachment | None = None,
    ) -> None:
        options = AnimateOptions(prompt, seconds, seed, steps, guidance, model)
        await adapter.animate(interaction, image, options, end_image)

    @app_commands.command(name="queue", description="What is rendering and waiting")
    async def queue(interaction: discord.Interaction) -> None:
        await adapter.queue(interaction)

    @app_commands.command(name="status", description="Your latest jobs")
    async def status(interaction: discord.Interaction) -> None:
        await adapter.status(interaction)

    @app_commands.command(name="help", description="How to use this bot")
    async def help_(interaction: discord.Interaction) -> None:
        await adapter.help(interaction)

    @app_commands.command(name="cancel", description="Stop a job (default: your latest)")
    @app_commands.describe(job="the job number (admins: any job)")
    async def cancel(
        interaction: discord.Interaction, job: app_commands.Range[int, 1, None] | None = None
    ) -> None:
        await adapter.cancel(interaction, job)

    @app_commands.command(name="pause", description="Admins: start no new job until /resume")
    async def pause(interaction: discord.Interaction) -> None:
        await adapter.admin(interaction, "pause")

    @app_commands.command(name="resume", description="Admins: start jobs again")
    async def resume(interaction: discord.Interaction) -> None:
        await adapter.admin(interaction, "resume")

    @app_commands.command(name="ban", description="Admins: stop a user from queueing jobs")
    @app_commands.describe(user="who", reason="shown to them when they try")
    async def ban(interaction: discord.Interaction, user: discord.User, reason: str = "") -> None:
        await adapter.admin(interaction, "ban", str(user.id), reason)

    @app_commands.command(name="unban", description="Admins: let a user queue jobs again")
    async def unban(interaction: discord.Interaction, user: discord.User) -> None:
        await adapter.admin(interaction, "unban", str(user.id))

    return [animate, queue, status, help_, cancel, pause, resume, ban, unban]


def create_discord_adapter(service: BotService, on_change: Callable[[], None]) -> DiscordAdapter:
    """The factory `bot.app.run_bots` calls when `[discord] enabled = true`."""
    return DiscordAdapter(service, on_change)
