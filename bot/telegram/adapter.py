"""The Telegram side of the bot: python-telegram-bot's `Application`, long-polling
on the bot process's loop, translating updates into `BotService` calls.

Commands come as text (`/queue`, `/animate@bot` in groups) or as the caption of
a picture (`/animate <prompt>` on a photo or an image file); buttons carry
`fpb:<action>:<job>`, so they keep working after a restart. Each job's message
is kept by `JobMessages` (bot/telegram/messages.py), which does the tracker's
`show` and `deliver` for this adapter.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

from telegram import BotCommand, ForceReply, Message, Update
from telegram.error import InvalidToken, NetworkError, TelegramError
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

from bot.adapters import AdapterStartFailed, PostingGuard, token_source
from bot.progress import JobView
from bot.requests import (
    AnimateOptions,
    UserError,
    build_params,
    parse_animate_text,
    parse_job_id,
    parse_limit_args,
    split_command,
)
from bot.service import ADMIN_HELP, BotService, Requester, help_text, loras_text
from bot.telegram.albums import Albums
from bot.telegram.messages import PLATFORM, JobMessages, reply_to, upload_limit
from bot.telegram.network import TELEGRAM_API, bot_api_requests
from bot.telegram.pacing import Pacer, is_outage, through_outage
from bot.telegram.pictures import (
    DOWNLOAD_LIMIT,
    END_USAGE,
    PictureFile,
    download,
    find_picture,
    picture_file,
)
from bot.telegram.remix import EXTEND_USAGE, remix_job_of, remix_question
from bot.telegram.render import fit_text, parse_callback
from storage.records import Job

log = logging.getLogger("framepack_bot.telegram")

# Updates handled at once: enough that one slow download holds up nobody else, few
# enough that a burst does not open a connection per update.
CONCURRENT_UPDATES = 16
COMMANDS = [
    BotCommand("animate", "animate a picture: send it with /animate <prompt> as its caption"),
    BotCommand("extend", "continue a video: reply /extend [prompt] [--seconds S] to it"),
    BotCommand("queue", "what is waiting"),
    BotCommand("loras", "the styles (LoRAs) to add with --lora name[:scale]"),
    BotCommand("status", "your jobs"),
    BotCommand("cancel", "stop your job (or /cancel <job>)"),
    BotCommand("help", "how to use the bot"),
]
ANIMATE_CAPTION = r"^/animate(@\w+)?(\s|$)"
PICTURES = filters.PHOTO | filters.Document.ALL | filters.ANIMATION | filters.VIDEO


def create_telegram_adapter(service: BotService, on_change: Callable[[], None]) -> TelegramAdapter:
    """The adapter `bot.app.run_bots` starts when [telegram] is enabled."""
    return TelegramAdapter(service, on_change)


class TelegramAdapter:
    """The bot on Telegram; also the tracker's `JobNotifier` for the platform."""

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
        self.pacer = Pacer()
        self.guard = PostingGuard()
        self.albums = Albums()
        self.app = self._build_application()
        self.messages = JobMessages(
            self.app.bot,
            self.store,
            self.pacer,
            self.guard,
            tiny=service.tiny,
            limit=self.upload_limit,
        )

    @property
    def rate_limited(self) -> int:
        """429s Telegram answered since the start (the web page's /metrics reads it)."""
        return self.pacer.retry_afters

    async def show(self, job: Job, view: JobView) -> None:
        """Bring the job's message to `view`."""
        await self.messages.show(job, view)

    async def deliver(self, job: Job, view: JobView) -> None:
        """Put the final view in the job's message; raises so the tracker retries."""
        await self.messages.deliver(job, view)

    async def notify_admins(self, text: str) -> None:
        """A private message to each configured admin (one who never started the bot
        cannot be written to: Telegram refuses, and the log line stands)."""
        for admin in sorted(self.admins):
            try:
                await self.pacer.call(admin, lambda a=admin: self.app.bot.send_message(a, text))
            except TelegramError as exc:
                log.warning("telegram: could not tell admin %s: %s", admin, exc)

    def _build_application(self) -> Application:
        calls, polling = bot_api_requests(self.telegram.base_url)
        builder = (
            Application.builder()
            .token(self.telegram.token.reveal())
            .concurrent_updates(CONCURRENT_UPDATES)
            .request(calls)
            .get_updates_request(polling)
        )
        if self.telegram.base_url:
            builder = builder.base_url(self.telegram.base_url)
        if self.telegram.base_file_url:
            builder = builder.base_file_url(self.telegram.base_file_url)
        app = builder.build()
        app.add_handler(TypeHandler(Update, self.check_chat), group=-2)
        app.add_handler(MessageHandler(PICTURES, self.on_album_part), group=-1)
        app.add_handler(CommandHandler(["start", "help"], self.on_help))
        app.add_handler(CommandHandler("animate", self.on_animate))
        app.add_handler(
            MessageHandler(PICTURES & filters.CaptionRegex(ANIMATE_CAPTION), self.on_animate)
        )
        app.add_handler(CommandHandler("queue", self.on_queue))
        app.add_handler(CommandHandler("loras", self.on_loras))
        app.add_handler(CommandHandler("status", self.on_status))
        app.add_handler(CommandHandler("cancel", self.on_cancel))
        app.add_handler(CommandHandler("pause", self.on_pause))
        app.add_handler(CommandHandler("resume", self.on_resume))
        app.add_handler(CommandHandler("ban", self.on_ban))
        app.add_handler(CommandHandler("unban", self.on_unban))
        app.add_handler(CommandHandler("limit", self.on_limit))
        app.add_handler(CommandHandler("extend", self.on_extend))
        app.add_handler(
            MessageHandler(filters.TEXT & filters.REPLY & ~filters.COMMAND, self.on_reply)
        )
        app.add_handler(CallbackQueryHandler(self.on_button))
        app.add_handler(MessageHandler(filters.COMMAND, self.on_unknown_command))
        app.add_handler(MessageHandler(filters.ChatType.PRIVATE & PICTURES, self.on_bare_picture))
        app.add_error_handler(self.on_error)
        return app

    # ---- life cycle (the loop is shared with the tracker, so no run_polling) ----------

    async def start(self) -> None:
        """Connect (getMe), register the command menu and start long polling."""
        try:
            await self.app.initialize()
        except InvalidToken:
            raise AdapterStartFailed(
                f"telegram: Telegram refused the bot token ({token_source(self.telegram)}). "
                "Copy it again from @BotFather (/mybots, API Token)."
            ) from None
        except NetworkError as exc:  # TimedOut too
            api = self.telegram.base_url or TELEGRAM_API
            raise AdapterStartFailed(
                f"telegram: cannot reach the Bot API at {api}: {exc}. Check the network, "
                "HTTPS_PROXY, or [telegram] base_url."
            ) from None
        try:
            await self.app.bot.set_my_commands(COMMANDS)
        except TelegramError as exc:
            log.warning("telegram: could not set the command menu: %s", exc)
        await self.app.start()
        assert self.app.updater is not None
        await self.app.updater.start_polling(allowed_updates=["message", "callback_query"])
        log.info("telegram: polling as @%s", self.app.bot.username)

    async def stop(self) -> None:
        """Stop polling and disconnect."""
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
        """/animate <prompt> [options] with a picture (or a video to continue, or two pictures
        sent together: the start and the end): queue a job and reply with its message."""
        message = update.effective_message
        assert message is not None
        parsed = split_command(message.text or message.caption or "")
        if parsed is None or not self._for_me(parsed[1]):
            return  # a caption addressed to another bot
        options = parse_animate_text(parsed[2])
        picture, end = await self._pictures_of(message, options)
        # refuse bad options before downloading
        build_params(
            options,
            self.settings.generation,
            has_end_image=end is not None,
            catalogue=self.settings.model,
        )
        data = await self._download(picture)
        end_image = await self._download(end) if end is not None else None
        async with self.guard.posting() as token:
            job = await self.service.animate(
                self._who(update),
                data,
                options,
                end_image=end_image,
                upload_limit=self.upload_limit,
                origin={"reply_to": message.message_id, "token": token},
            )
            photo_id = picture.file_id if picture.is_photo else None
            await self._post_new(job, message.message_id, photo_id)
        self.on_change()

    async def _pictures_of(
        self, message: Message, options: AnimateOptions
    ) -> tuple[PictureFile, PictureFile | None]:
        """The start picture (or video) and the end picture, if any: two pictures sent
        together, or `--end` on the end picture sent as a reply to the start one (which
        works in groups, where a bot in privacy mode sees the album's captioned picture
        alone)."""
        if options.end:
            own = picture_file(message)
            replied = message.reply_to_message
            start = picture_file(replied) if replied is not None else None
            if own is None or start is None or own.is_video or start.is_video:
                raise UserError(END_USAGE)
            return start, own
        if message.media_group_id is not None:
            end = await self.albums.other_picture(message)
            return find_picture(message), end
        return find_picture(message), None

    async def _download(self, picture: PictureFile) -> bytes:
        """A picture's (or a video's) bytes; a download is only a read, tried again
        through an outage of the Bot API, so an /animate sent meanwhile is served once it
        answers again."""
        gen = self.settings.generation
        limit = gen.max_video_bytes if picture.is_video else gen.max_image_bytes
        if not picture.is_photo and not picture.is_video:  # a file: either
            limit = max(gen.max_image_bytes, gen.max_video_bytes)
        if not self.telegram.base_url:
            limit = min(limit, DOWNLOAD_LIMIT)
        try:
            return await through_outage(
                lambda: download(self.app.bot, picture, limit), what="a picture's download"
            )
        except NetworkError as error:
            if not is_outage(error):
                raise
            raise UserError(
                "Telegram did not hand me your picture (it did not answer for a few minutes). "
                "Please send it again."
            ) from None

    async def on_album_part(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Every picture of an album is seen here first (the /animate on one of them waits
        for the others)."""
        message = update.effective_message
        if message is not None and message.media_group_id is not None:
            self.albums.add(message)

    async def on_extend(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/extend [prompt] [--seconds S] as a reply to a finished video of the bot."""
        message = update.effective_message
        assert message is not None
        job_id = await self._replied_job(message)
        parsed = split_command(message.text or "")
        options = parse_animate_text(parsed[2] if parsed else "")
        # an extension continues its video as it was rendered: only its prompt and length
        # may change (an option it would ignore is refused rather than dropped unsaid)
        if options != AnimateOptions(options.prompt, seconds=options.seconds):
            raise UserError(EXTEND_USAGE)
        async with self.guard.posting() as token:
            job = await self.service.extend(
                self._who(update),
                job_id,
                prompt=options.prompt or None,
                seconds=options.seconds,
                upload_limit=self.upload_limit,
                origin={"reply_to": message.message_id, "token": token},
            )
            await self._post_new(job, message.message_id)
        self.on_change()

    async def _replied_job(self, message: Message) -> int:
        replied = message.reply_to_message
        if replied is None or replied.from_user is None or replied.from_user.id != self.app.bot.id:
            raise UserError(EXTEND_USAGE)
        job_id = await self.store.job_of_message(
            PLATFORM, str(replied.chat_id), str(replied.message_id)
        )
        if job_id is None:
            raise UserError(EXTEND_USAGE)
        return job_id

    async def on_reply(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A reply to the bot's "Remix of job #N" question: the new prompt."""
        message = update.effective_message
        replied = message.reply_to_message if message else None
        if message is None or replied is None or replied.from_user is None:
            return
        if replied.from_user.id != self.app.bot.id:
            return
        job_id = remix_job_of(replied.text or "")
        if job_id is None:
            return  # a reply to another message of the bot: nothing to do
        options = parse_animate_text(message.text or "")
        async with self.guard.posting() as token:
            job = await self.service.remix(
                self._who(update),
                job_id,
                options,
                upload_limit=self.upload_limit,
                origin={"reply_to": message.message_id, "token": token},
            )
            await self._post_new(job, message.message_id)
        self.on_change()

    async def _post_new(self, job: Job, reply_id: int, photo_id: str | None = None) -> None:
        """Post a new job's message; in an outage the tracker posts it once Telegram
        answers (the job is queued either way)."""
        try:
            await self.messages.post_new(job, reply_id, photo_id)
        except NetworkError as error:
            if not is_outage(error):
                raise
            log.warning("job %d: its message waits for the Bot API (%s)", job.id, error)

    async def on_queue(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/queue: what is rendering and waiting."""
        await self._reply(update, await self.service.queue_text(self._who(update)))

    async def on_loras(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/loras: the styles of the catalogue, with their descriptions."""
        await self._reply(update, loras_text(self.settings, PLATFORM))

    async def on_status(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/status: the requester's latest jobs."""
        await self._reply(update, await self.service.status_text(self._who(update)))

    async def on_cancel(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/cancel [job]: stop the requester's latest job, or the one named."""
        job_id = None
        if context.args:
            job_id = parse_job_id(context.args[0])
            if job_id is None:
                raise UserError("Usage: /cancel [job number], e.g. /cancel 12")
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
        user_id, rest = self._target_user(update, context.args or [])
        await self._reply(
            update, await self.service.ban(self._who(update), user_id, " ".join(rest))
        )
        self.on_change()

    async def on_unban(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/unban <user id> (admins), or /unban as a reply to the user."""
        user_id, _ = self._target_user(update, context.args or [])
        await self._reply(update, await self.service.unban(self._who(update), user_id))

    async def on_limit(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/limit <user id> <jobs waiting> <seconds a day> | default (admins)."""
        user_id, rest = self._target_user(update, context.args or [])
        waiting, seconds = parse_limit_args(rest)
        await self._reply(
            update, await self.service.set_limits(self._who(update), user_id, waiting, seconds)
        )

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
        if message is not None and message.media_group_id is not None:
            return  # a picture of an album whose /animate is on another one
        prompt = (message.caption or "").strip() if message else ""
        example = f"/animate {prompt}" if prompt else "/animate <what should happen>"
        await self._reply(
            update,
            f"To animate this picture, send it with the caption {example}, or reply to it "
            f"with {example}. /help has the options.",
        )

    async def on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A press on a job's button: cancel, re-roll or delete, for its owner or an admin.
        Every press is answered (else the button spins until Telegram gives up)."""
        query = update.callback_query
        assert query is not None
        parsed = parse_callback(query.data or "")
        if parsed is None:
            await query.answer("This button does not work any more.")
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
                await self.messages.delete(job)
            elif action == "remix":
                await self._ask_remix(update, job)
            elif action == "extend":
                await self._extend_button(update, job)
            else:
                await self._reroll(update, job)
        except UserError as refused:
            await query.answer(refused.message, show_alert=True)

    async def _reroll(self, update: Update, old: Job) -> None:
        query = update.callback_query
        assert query is not None and query.message is not None
        reply_id = query.message.message_id
        async with self.guard.posting() as token:
            job = await self.service.reroll(
                self._who(update),
                old.id,
                upload_limit=self.upload_limit,
                origin={"reply_to": reply_id, "token": token},
            )
            await query.answer(f"🎲 Queued again as job #{job.id} with seed {job.params.seed}.")
            await self._post_new(job, reply_id)
        self.on_change()

    async def _extend_button(self, update: Update, old: Job) -> None:
        """Extend: the configured seconds more, with the same prompt."""
        query = update.callback_query
        assert query is not None and query.message is not None
        reply_id = query.message.message_id
        async with self.guard.posting() as token:
            job = await self.service.extend(
                self._who(update),
                old.id,
                upload_limit=self.upload_limit,
                origin={"reply_to": reply_id, "token": token},
            )
            await query.answer(f"⏩ Queued as job #{job.id}: {job.params.seconds:g} s more.")
            await self._post_new(job, reply_id)
        self.on_change()

    async def _ask_remix(self, update: Update, old: Job) -> None:
        """Remix: ask for the new prompt as a reply (Telegram shows the reply box)."""
        query = update.callback_query
        assert query is not None and query.message is not None
        await query.answer("✏️ Reply with the new prompt.")
        chat_id = query.message.chat.id
        text = remix_question(old.id, old.params.prompt)
        await self.pacer.call(
            chat_id,
            lambda: self.app.bot.send_message(
                chat_id,
                fit_text(text),
                reply_parameters=reply_to(query.message.message_id),
                reply_markup=ForceReply(selective=True, input_field_placeholder="a new prompt"),
            ),
        )

    async def on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Log what failed, then tell the user (bad input gets its explanation)."""
        error = context.error
        if isinstance(error, UserError):
            if isinstance(update, Update):
                await self._reply(update, error.message)
            return
        log.error("telegram: an update failed", exc_info=error)
        sorry = "⚠️ Something went wrong on my side. Please try again in a minute."
        if not isinstance(update, Update):
            return
        with contextlib.suppress(TelegramError):
            if update.callback_query is not None:  # else its button spins until it times out
                await update.callback_query.answer(sorry, show_alert=True)
            elif update.effective_message is not None:
                await self._reply(update, sorry)

    # ---- helpers of the handlers -------------------------------------------------------

    def _who(self, update: Update) -> Requester:
        user, chat = update.effective_user, update.effective_chat
        assert user is not None and chat is not None
        is_admin = user.id in self.admins
        return Requester(PLATFORM, str(user.id), user.full_name, str(chat.id), is_admin)

    def _for_me(self, addressee: str | None) -> bool:
        return addressee is None or addressee.lower() == (self.app.bot.username or "").lower()

    @staticmethod
    def _target_user(update: Update, args: list[str]) -> tuple[str, list[str]]:
        """The user an admin command names (its first argument, or the replied-to
        sender) and the arguments after it."""
        message = update.effective_message
        replied = message.reply_to_message if message else None
        if args and args[0].lstrip("-").isascii() and args[0].lstrip("-").isdigit():
            return args[0], args[1:]
        if replied is not None and replied.from_user is not None:
            return str(replied.from_user.id), args
        return "", args

    async def _reply(self, update: Update, text: str) -> None:
        """A text reply; through an outage too (a second copy would be harmless, a lost
        answer to an /animate is not)."""
        message = update.effective_message
        if message is None:
            return

        async def send() -> object:
            return await self.pacer.call(
                message.chat_id,
                lambda: self.app.bot.send_message(
                    message.chat_id, fit_text(text), reply_parameters=reply_to(message.message_id)
                ),
            )

        await through_outage(send, what="a reply")
