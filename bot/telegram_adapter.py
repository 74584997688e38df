"""The Telegram side of the bot: python-telegram-bot's `Application`, long polling
on the bot process's loop, translating updates into `BotService` calls and
keeping each job's message up to date for the tracker (`JobNotifier`).

A job's message is a reply to the user's message. It starts as a photo (the
input picture, the status in its caption) because Telegram only lets a message
that already holds media be edited into a picture or a video; then it is edited
in place: the caption for text changes, the media for the preview picture, the
partial video and the finished video. What a message shows is kept in its
chat message state, so an unchanged edit is never sent, and a restarted bot
edits the same message (buttons hold the job id, so they keep working too).

Every send and edit goes through one pacer: about one a second per chat and
twenty a minute per group, and a 429 holds the chat back for its retry_after
before the same call is tried again, so a final delivery is never dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

from telegram import (
    BotCommand,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputMediaPhoto,
    InputMediaVideo,
    Message,
    ReplyParameters,
    Update,
)
from telegram.constants import ChatAction
from telegram.error import BadRequest, NetworkError, RetryAfter, TelegramError
from telegram.ext import (
    Application,
    ApplicationHandlerStop,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    TypeHandler,
    filters,
)

from bot.progress import JobView, Media, render
from bot.requests import UserError, build_params, parse_animate_text, split_command
from bot.service import ADMIN_HELP, BotService, Requester, help_text
from bot.telegram_render import Shown, fit_text, megabytes, parse_callback, photo_bytes
from bot.throttle import RateLimiter
from storage.config import TelegramSettings
from storage.records import ChatMessageRef, Job

log = logging.getLogger("framepack_bot.telegram")

PLATFORM = "telegram"
MiB = 1 << 20
DOWNLOAD_LIMIT = 20 * MiB  # getFile refuses larger files (a local Bot API server does not)
UPLOAD_LIMIT_MB = 50  # what a bot may send through api.telegram.org
LOCAL_UPLOAD_LIMIT_MB = 2000  # through a local Bot API server
CHAT_PACE = [(1, 1.1)]  # about one message or edit a second in a chat (a little under)
GROUP_PACE = [(20, 61.0)]  # and twenty a minute in a group
ACTION_REFRESH = 4.0  # a chat action shows for 5 s; renewed while a video uploads
MEDIA_WRITE_TIMEOUT = 600.0  # seconds to upload one video (up to 2000 MB to a local server)
# Updates handled at once: enough that one slow download holds up nobody else, few
# enough that httpx's connection pool (it scans every connection per request) stays
# cheap; 100 users at once are served faster with 16 than with PTB's 256.
CONCURRENT_UPDATES = 16
CONNECTIONS = 32
COMMANDS = [
    BotCommand("animate", "animate a picture: send it with /animate <prompt> as its caption"),
    BotCommand("queue", "what is waiting"),
    BotCommand("status", "your jobs"),
    BotCommand("cancel", "stop your job (or /cancel <job>)"),
    BotCommand("help", "how to use the bot"),
]
ANIMATE_CAPTION = r"^/animate(@\w+)?(\s|$)"
PICTURES = filters.PHOTO | filters.Document.ALL | filters.ANIMATION | filters.VIDEO
NO_PICTURE = (
    "I need a picture: send it with the caption /animate <prompt>, or reply "
    "/animate <prompt> to a message that has one."
)

T = TypeVar("T")


class _MessageGone(Exception):
    """The job's message was deleted; it cannot be edited any more."""


class _UploadRefused(Exception):
    """Telegram refused a video as too large: the upload limit is lower than configured."""


def upload_limit(settings: TelegramSettings) -> int:
    """Bytes a video may have to be sent: 50 MB, or 2000 MB through a local Bot API server."""
    mb = settings.upload_limit_mb or (
        LOCAL_UPLOAD_LIMIT_MB if settings.base_url else UPLOAD_LIMIT_MB
    )
    return mb * 1_000_000


def retry_seconds(error: RetryAfter) -> float:
    with warnings.catch_warnings():  # PTB 22 warns that the int form will become a timedelta
        warnings.simplefilter("ignore")
        value = error.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _is_not_modified(error: BadRequest) -> bool:
    return "message is not modified" in error.message.lower()


def _is_gone(error: BadRequest) -> bool:
    text = error.message.lower()
    return "message to edit not found" in text or "message can't be edited" in text


def _read_bytes(path: str) -> bytes:
    return Path(path).read_bytes()


def _keyboard(shown: Shown) -> InlineKeyboardMarkup | None:
    if not shown.buttons:
        return None
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(label, callback_data=data) for label, data in shown.buttons]]
    )


def _reply_to(message_id: int | None) -> ReplyParameters | None:
    if message_id is None:
        return None
    return ReplyParameters(message_id=message_id, allow_sending_without_reply=True)


def create_telegram_adapter(service: BotService, on_change: Callable[[], None]) -> TelegramAdapter:
    """The adapter `bot.app.run_bots` starts when [telegram] is enabled."""
    return TelegramAdapter(service, on_change)


class TelegramAdapter:
    platform = PLATFORM

    def __init__(
        self,
        service: BotService,
        on_change: Callable[[], None],
        *,
        upload_limit_bytes: int | None = None,
    ) -> None:
        self.service = service
        self.store = service.store
        self.settings = service.settings
        self.telegram = service.settings.telegram
        self.on_change = on_change
        self.edit_interval = self.telegram.edit_interval
        self.upload_limit = upload_limit_bytes or upload_limit(self.telegram)
        self.admins = frozenset(self.telegram.admins)
        self.allowed_chats = frozenset(self.telegram.allowed_chats)
        self.retry_afters = 0  # 429s answered to us (tests and the benchmark read it)
        self._chat_pace = RateLimiter(CHAT_PACE)
        self._group_pace = RateLimiter(GROUP_PACE)
        self._locks: dict[int, asyncio.Lock] = {}
        self._wanted: dict[int, tuple[Job, JobView]] = {}
        self._showing: dict[int, asyncio.Task[None]] = {}
        self._creating: set[str] = set()  # origin tokens of job messages a handler is posting
        self.app = self._build_application()

    def _build_application(self) -> Application:
        builder = (
            Application.builder()
            .token(self.telegram.token.reveal())
            .concurrent_updates(CONCURRENT_UPDATES)
            .connection_pool_size(CONNECTIONS)
            .media_write_timeout(MEDIA_WRITE_TIMEOUT)
        )
        if self.telegram.base_url:
            builder = builder.base_url(self.telegram.base_url)
        if self.telegram.base_file_url:
            builder = builder.base_file_url(self.telegram.base_file_url)
        app = builder.build()
        app.add_handler(TypeHandler(Update, self.check_chat), group=-1)
        app.add_handler(CommandHandler(["start", "help"], self.on_help))
        app.add_handler(CommandHandler("animate", self.on_animate))
        app.add_handler(
            MessageHandler(PICTURES & filters.CaptionRegex(ANIMATE_CAPTION), self.on_animate)
        )
        app.add_handler(CommandHandler("queue", self.on_queue))
        app.add_handler(CommandHandler("status", self.on_status))
        app.add_handler(CommandHandler("cancel", self.on_cancel))
        app.add_handler(CommandHandler("pause", self.on_pause))
        app.add_handler(CommandHandler("resume", self.on_resume))
        app.add_handler(CommandHandler("ban", self.on_ban))
        app.add_handler(CommandHandler("unban", self.on_unban))
        app.add_handler(CallbackQueryHandler(self.on_button, pattern=r"^fpb:"))
        app.add_handler(MessageHandler(filters.COMMAND, self.on_unknown_command))
        app.add_handler(MessageHandler(filters.ChatType.PRIVATE & PICTURES, self.on_bare_picture))
        app.add_error_handler(self.on_error)
        return app

    # ---- life cycle (the loop is shared with the tracker, so no run_polling) ----------

    async def start(self) -> None:
        """Connect (getMe), register the command menu and start long polling."""
        await self.app.initialize()
        try:
            await self.app.bot.set_my_commands(COMMANDS)
        except TelegramError as exc:
            log.warning("telegram: could not set the command menu: %s", exc)
        await self.app.start()
        assert self.app.updater is not None
        await self.app.updater.start_polling(allowed_updates=["message", "callback_query"])
        log.info("telegram: polling as @%s", self.app.bot.username)

    async def stop(self) -> None:
        """Stop polling and disconnect; pending progress edits are dropped."""
        for task in self._showing.values():
            task.cancel()
        if self.app.updater is not None and self.app.updater.running:
            await self.app.updater.stop()
        if self.app.running:
            await self.app.stop()
        await self.app.shutdown()

    # ---- commands ----------------------------------------------------------------------

    async def check_chat(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Serve only the allowed chats (every chat when none are configured)."""
        chat = update.effective_chat
        if self.allowed_chats and (chat is None or chat.id not in self.allowed_chats):
            raise ApplicationHandlerStop

    async def on_help(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/start and /help: how to use the bot (admins also get their commands)."""
        who = self._who(update)
        text = help_text(self.settings, PLATFORM)
        if who.is_admin:
            text += "\n\n" + ADMIN_HELP
        await self._reply(update, text)

    async def on_animate(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/animate <prompt> [options] with a picture: queue a job and reply with its message."""
        message = update.effective_message
        assert message is not None
        parsed = split_command(message.text or message.caption or "")
        if parsed is None or not self._for_me(parsed[1]):
            return  # a caption addressed to another bot
        options = parse_animate_text(parsed[2])
        build_params(options, self.settings.generation)  # refuse bad options before downloading
        picture, photo_id = await self._download_picture(message)
        token = uuid.uuid4().hex
        self._creating.add(token)
        try:
            job = await self.service.animate(
                self._who(update),
                picture,
                options,
                upload_limit=self.upload_limit,
                origin={"reply_to": message.message_id, "token": token},
            )
            await self._post_new_job(job, reply_to=message.message_id, photo_id=photo_id)
        finally:
            self._creating.discard(token)
        self.on_change()

    async def on_queue(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/queue: what is rendering and waiting."""
        await self._reply(update, await self.service.queue_text(self._who(update)))

    async def on_status(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/status: the requester's latest jobs."""
        await self._reply(update, await self.service.status_text(self._who(update)))

    async def on_cancel(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/cancel [job]: stop the requester's latest job, or the one named."""
        job_id = None
        if context.args:
            text = context.args[0].lstrip("#")
            if not text.isdigit():
                raise UserError("Usage: /cancel [job number], e.g. /cancel 12")
            job_id = int(text)
        answer = await self.service.cancel(self._who(update), job_id)
        self.on_change()
        await self._reply(update, answer)

    async def on_pause(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/pause (admins): no new job starts."""
        await self._reply(update, await self.service.pause(self._who(update)))
        self.on_change()

    async def on_resume(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/resume (admins): jobs start again."""
        await self._reply(update, await self.service.resume(self._who(update)))
        self.on_change()

    async def on_ban(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/ban <user id> [reason] (admins), or /ban [reason] as a reply to the user."""
        user_id, reason = self._target_user(update, context.args or [])
        await self._reply(update, await self.service.ban(self._who(update), user_id, reason))
        self.on_change()

    async def on_unban(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/unban <user id> (admins), or /unban as a reply to the user."""
        user_id, _ = self._target_user(update, context.args or [])
        await self._reply(update, await self.service.unban(self._who(update), user_id))

    async def on_unknown_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A command the bot does not know: say so in private, or when addressed to it."""
        message = update.effective_message
        parsed = split_command(message.text or "") if message else None
        if parsed is None or message is None:
            return
        name, addressee, _ = parsed
        if message.chat.type == "private" or (addressee and self._for_me(addressee)):
            await self._reply(update, f"I don't know /{name}. /help lists what I can do.")

    async def on_bare_picture(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A picture in a private chat without /animate: say how to animate it."""
        message = update.effective_message
        prompt = (message.caption or "").strip() if message else ""
        example = f"/animate {prompt}" if prompt else "/animate <what should happen>"
        await self._reply(
            update,
            f"To animate this picture, send it with the caption {example}, or reply to it "
            f"with {example}. /help has the options.",
        )

    async def on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A press on a job's button: cancel, re-roll or delete, for its owner or an admin."""
        query = update.callback_query
        assert query is not None
        parsed = parse_callback(query.data or "")
        if parsed is None:
            await query.answer()
            return
        action, job_id = parsed
        who = self._who(update)
        try:
            job = await self.service.owned_job(who, job_id)
            if action == "cancel":
                await query.answer(await self.service.cancel(who, job_id))
                self.on_change()
            elif action == "delete":
                await query.answer("🗑 Deleted.")
                await self._delete_message(job)
            else:
                await self._reroll(update, job)
        except UserError as refused:
            await query.answer(refused.message, show_alert=True)

    async def _reroll(self, update: Update, old: Job) -> None:
        query = update.callback_query
        assert query is not None and query.message is not None
        reply_to = query.message.message_id
        token = uuid.uuid4().hex
        self._creating.add(token)
        try:
            job = await self.service.reroll(
                self._who(update),
                old.id,
                upload_limit=self.upload_limit,
                origin={"reply_to": reply_to, "token": token},
            )
            await query.answer(f"🎲 Queued again as job #{job.id} with seed {job.params.seed}.")
            await self._post_new_job(job, reply_to=reply_to)
        finally:
            self._creating.discard(token)
        self.on_change()

    async def on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Log what failed, then tell the user (bad input gets its explanation)."""
        error = context.error
        if isinstance(error, UserError):
            if isinstance(update, Update):
                await self._reply(update, error.message)
            return
        log.error("telegram: an update failed", exc_info=error)
        if isinstance(update, Update) and update.effective_message is not None:
            with contextlib.suppress(TelegramError):
                await self._reply(
                    update, "⚠️ Something went wrong on my side. Please try again in a minute."
                )

    # ---- helpers of the handlers -------------------------------------------------------

    def _who(self, update: Update) -> Requester:
        user, chat = update.effective_user, update.effective_chat
        assert user is not None and chat is not None
        is_admin = user.id in self.admins
        return Requester(PLATFORM, str(user.id), user.full_name, str(chat.id), is_admin)

    def _for_me(self, addressee: str | None) -> bool:
        return addressee is None or addressee.lower() == (self.app.bot.username or "").lower()

    @staticmethod
    def _target_user(update: Update, args: list[str]) -> tuple[str, str]:
        """The user an admin command names: its first argument, or the replied-to sender."""
        message = update.effective_message
        replied = message.reply_to_message if message else None
        if args and args[0].lstrip("-").isdigit():
            return args[0], " ".join(args[1:])
        if replied is not None and replied.from_user is not None:
            return str(replied.from_user.id), " ".join(args)
        return "", ""

    async def _reply(self, update: Update, text: str) -> None:
        message = update.effective_message
        if message is None:
            return
        await self._call(
            message.chat_id,
            lambda: message.get_bot().send_message(
                message.chat_id, fit_text(text), reply_parameters=_reply_to(message.message_id)
            ),
        )

    async def _download_picture(self, message: Message) -> tuple[bytes, str | None]:
        """The picture of the message, or of the one it replies to, and its file_id when it
        is a photo; refused before download when Telegram would not hand it out."""
        found = self._picture_file(message)
        if found is None and message.reply_to_message is not None:
            found = self._picture_file(message.reply_to_message)
        if found is None:
            raise UserError(NO_PICTURE)
        file_id, size, is_photo = found
        limit = self.settings.generation.max_image_bytes
        if not self.telegram.base_url:
            limit = min(limit, DOWNLOAD_LIMIT)
        too_big = UserError(
            f"The picture is {megabytes(size or limit + 1)}; I can take at most "
            f"{megabytes(limit)}. Send it as a photo (Telegram makes it smaller) or send a "
            "smaller file."
        )
        if size is not None and size > limit:
            raise too_big
        try:
            file = await message.get_bot().get_file(file_id)
        except BadRequest as error:
            if "too big" in error.message.lower():
                raise too_big from None
            raise
        data = bytes(await file.download_as_bytearray())
        return data, file_id if is_photo else None

    @staticmethod
    def _picture_file(message: Message) -> tuple[str, int | None, bool] | None:
        """(file_id, size, is a photo) of the picture a message holds; refuses what is no
        still picture."""
        if message.photo:
            largest = message.photo[-1]
            return largest.file_id, largest.file_size, True
        if message.animation is not None:
            raise UserError("That picture is animated. Send a still picture (PNG, JPEG or WebP).")
        if message.video is not None or message.video_note is not None:
            raise UserError("That is a video. Send a still picture (PNG, JPEG or WebP).")
        if message.sticker is not None:
            raise UserError("Stickers cannot be animated. Send a picture (PNG, JPEG or WebP).")
        if message.document is not None:
            return message.document.file_id, message.document.file_size, False
        return None

    # ---- the tracker's side: one message per job ---------------------------------------

    async def show(self, job: Job, view: JobView) -> None:
        """Bring the job's message to `view` in the background; the latest view wins."""
        self._wanted[job.id] = (job, view)
        task = self._showing.get(job.id)
        if task is None or task.done():
            self._showing[job.id] = asyncio.create_task(
                self._show_latest(job.id), name=f"telegram-show-{job.id}"
            )

    async def _show_latest(self, job_id: int) -> None:
        while (wanted := self._wanted.pop(job_id, None)) is not None:
            job, view = wanted
            try:
                async with self._lock(job_id):
                    await self._bring_to(job, view, final=False)
            except Exception as exc:  # the next change of the job tries again
                log.warning("job %d: could not update its Telegram message: %s", job_id, exc)

    async def deliver(self, job: Job, view: JobView) -> None:
        """Put the final view in the job's message (the video, or why there is none).

        Works from the stored message alone, so it also delivers after a restart; raises
        when Telegram cannot be reached, and the tracker tries again later."""
        self._wanted.pop(job.id, None)
        pending = self._showing.pop(job.id, None)
        if pending is not None and pending is not asyncio.current_task():
            pending.cancel()
            await asyncio.wait([pending])
        async with self._lock(job.id):
            await self._bring_to(job, view, final=True)
        self._locks.pop(job.id, None)

    def _lock(self, job_id: int) -> asyncio.Lock:
        return self._locks.setdefault(job_id, asyncio.Lock())

    async def _post_new_job(self, job: Job, reply_to: int, photo_id: str | None = None) -> None:
        """The first message of a new job: its picture, queued, with the cancel button.

        A picture the user sent as a photo is shown again by its file_id (Telegram has
        it already: nothing to upload)."""
        async with self._lock(job.id):
            if await self.store.message(job.id, PLATFORM) is not None:
                return
            position = await self.store.position(job.id)
            paused = await self.store.paused()
            view = render(job, None, position, tiny=self.service.tiny, paused=paused)
            await self._post(job, self._sendable(job, view), reply_to, photo_id)

    async def _bring_to(self, job: Job, view: JobView, *, final: bool) -> None:
        try:
            await self._bring_to_once(job, self._sendable(job, view), final=final)
        except _UploadRefused:  # the limit is lower now: the fitted copy, or the picture
            await self._bring_to_once(job, self._sendable(job, view), final=final)

    async def _bring_to_once(self, job: Job, view: JobView, *, final: bool) -> None:
        ref = await self.store.message(job.id, PLATFORM)
        reply_to = job.origin.get("reply_to")
        if ref is None:
            if job.origin.get("token") in self._creating:
                return  # the handler that queued it is posting it now
            await self._post(job, view, reply_to)  # lost before it was posted: post it now
            return
        try:
            await self._edit(job, view, ref)
        except _MessageGone:
            if final:  # the outcome must arrive: in a new message
                await self._post(job, view, reply_to)
            else:
                state = {**ref.state, "gone": True}
                await self.store.update_message_state(job.id, PLATFORM, state)

    def _sendable(self, job: Job, view: JobView) -> JobView:
        """The view with a video that fits the upload limit (else the picture and a note)."""
        media = view.media
        if media is None or media.kind != "video":
            return view
        limit = min(job.upload_limit or self.upload_limit, self.upload_limit)
        paths = [media.path]
        if view.final:
            paths += [p for p in (job.delivery_path, job.result_path) if p]
        sizes = []
        for path in dict.fromkeys(paths):
            with contextlib.suppress(OSError):
                size = Path(path).stat().st_size
                if size <= limit:
                    return dataclasses.replace(view, media=Media("video", path))
                sizes.append(size)
        if not view.final:
            return dataclasses.replace(view, media=None)  # keep showing what it shows
        view = dataclasses.replace(view, media=Media("photo", job.input_path))
        if not sizes:
            return view
        if limit < upload_limit(self.telegram):  # learnt from a refusal
            return view.with_details(
                f"Telegram refused the video ({megabytes(min(sizes))}) as too large."
            )
        return view.with_details(
            f"The video is {megabytes(min(sizes))}, more than the {megabytes(limit)} "
            "Telegram lets a bot send."
        )

    async def _post(
        self, job: Job, view: JobView, reply_to: int | None, photo_id: str | None = None
    ) -> None:
        media = view.media or Media("photo", job.input_path)
        shown = Shown.of(dataclasses.replace(view, media=media), job.id)
        chat_id = int(job.chat_id)
        sent = await self._send_media(chat_id, media, shown, reply_to, photo_id)
        await self.store.set_message(
            job.id, PLATFORM, str(chat_id), str(sent.message_id), shown.dump()
        )

    async def _send_media(
        self,
        chat_id: int,
        media: Media,
        shown: Shown,
        reply_to: int | None,
        photo_id: str | None = None,
    ) -> Message:
        bot = self.app.bot
        markup = _keyboard(shown)
        reply = _reply_to(reply_to)
        try:
            read = photo_bytes if media.kind == "photo" else _read_bytes
            data = photo_id or await asyncio.to_thread(read, media.path)
        except OSError:  # the picture is gone (retention): the text alone
            return await self._call(
                chat_id,
                lambda: bot.send_message(
                    chat_id, shown.caption, reply_markup=markup, reply_parameters=reply
                ),
            )
        if media.kind == "photo":
            return await self._call(
                chat_id,
                lambda: bot.send_photo(
                    chat_id,
                    data,
                    caption=shown.caption,
                    reply_markup=markup,
                    reply_parameters=reply,
                ),
            )
        async with self._uploading_video(chat_id), self._upload_refusal(len(data)):
            return await self._call(
                chat_id,
                lambda: bot.send_video(
                    chat_id,
                    data,
                    caption=shown.caption,
                    reply_markup=markup,
                    reply_parameters=reply,
                    supports_streaming=True,
                    filename=Path(media.path).name,
                ),
            )

    async def _edit(self, job: Job, view: JobView, ref: ChatMessageRef) -> None:
        """Edit the message into `view`: its media when that changed, else its caption."""
        before = Shown.load(ref.state)
        after = Shown.of(view, job.id)
        if view.media is None and before is not None:
            after = dataclasses.replace(after, media=before.media)
        if before is not None and before.gone:
            raise _MessageGone
        if after == before:
            return
        bot = self.app.bot
        chat_id, message_id = int(ref.chat_id), int(ref.message_id)
        markup = _keyboard(after)
        media = None
        if view.media is not None and (before is None or after.media != before.media):
            media = await self._input_media(view.media, after.caption)
            if media is None and before is not None:
                after = dataclasses.replace(after, media=before.media)
        try:
            if media is not None:
                video = isinstance(media, InputMediaVideo)
                size = len(media.media.input_file_content) if video else 0  # type: ignore[union-attr]
                upload = self._uploading_video(chat_id) if video else contextlib.nullcontext()
                async with upload, self._upload_refusal(size):
                    await self._call(
                        chat_id,
                        lambda: bot.edit_message_media(
                            media, chat_id=chat_id, message_id=message_id, reply_markup=markup
                        ),
                    )
            elif before is None or (after.caption, after.buttons) != (
                before.caption,
                before.buttons,
            ):
                await self._call(
                    chat_id,
                    lambda: bot.edit_message_caption(
                        chat_id, message_id, caption=after.caption, reply_markup=markup
                    ),
                )
        except BadRequest as error:
            if _is_gone(error):
                raise _MessageGone from None
            if not _is_not_modified(error):  # "not modified": it already shows this
                raise
        await self.store.update_message_state(job.id, PLATFORM, after.dump())

    async def _input_media(
        self, media: Media, caption: str
    ) -> InputMediaPhoto | InputMediaVideo | None:
        try:
            if media.kind == "photo":
                data = await asyncio.to_thread(photo_bytes, media.path)
                return InputMediaPhoto(data, caption=caption)
            data = await asyncio.to_thread(_read_bytes, media.path)
        except OSError:
            return None  # gone meanwhile: keep what the message shows
        return InputMediaVideo(
            data, caption=caption, supports_streaming=True, filename=Path(media.path).name
        )

    async def _delete_message(self, job: Job) -> None:
        ref = await self.store.message(job.id, PLATFORM)
        if ref is None:
            return
        with contextlib.suppress(BadRequest):  # already gone
            await self.app.bot.delete_message(int(ref.chat_id), int(ref.message_id))
        await self.store.update_message_state(job.id, PLATFORM, {**ref.state, "gone": True})

    # ---- talking to Telegram -----------------------------------------------------------

    async def _call(self, chat_id: int, request: Callable[[], Awaitable[T]]) -> T:
        """Send or edit within the chat's pace; on 429 wait retry_after and try again."""
        while True:
            await self._chat_pace.acquire(chat_id)
            if chat_id < 0:
                await self._group_pace.acquire(chat_id)
            try:
                return await request()
            except RetryAfter as error:
                wait = retry_seconds(error)
                self.retry_afters += 1
                log.warning("telegram: flood control in chat %s; retrying in %.0f s", chat_id, wait)
                self._chat_pace.penalize(chat_id, wait)

    @contextlib.asynccontextmanager
    async def _upload_refusal(self, size: int) -> AsyncIterator[None]:
        """A video Telegram refuses as too large lowers the limit to below its size."""
        try:
            yield
        except NetworkError as error:
            if isinstance(error, BadRequest) or "too large" not in error.message.lower():
                raise
            if not size:
                raise
            log.warning(
                "telegram: a video of %s was refused as too large; sending at most %s from now",
                megabytes(size),
                megabytes(size - 1),
            )
            self.upload_limit = min(self.upload_limit, size - 1)
            raise _UploadRefused from None

    @contextlib.asynccontextmanager
    async def _uploading_video(self, chat_id: int) -> AsyncIterator[None]:
        """Show "sending video…" in the chat while a video uploads."""

        async def keep_showing() -> None:
            while True:
                await asyncio.sleep(ACTION_REFRESH)
                with contextlib.suppress(TelegramError):
                    await self.app.bot.send_chat_action(chat_id, ChatAction.UPLOAD_VIDEO)

        with contextlib.suppress(TelegramError):
            await self.app.bot.send_chat_action(chat_id, ChatAction.UPLOAD_VIDEO)
        task = asyncio.create_task(keep_showing())
        try:
            yield
        finally:
            task.cancel()
