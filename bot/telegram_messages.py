"""Each job's one message on Telegram: posted as a reply to the user, then edited
into the latest view the tracker wants, and finished once with the video.

The message starts as a photo (the input picture, the status in its caption),
because Telegram only lets a message that already holds media be edited into a
picture or a video. Then it is edited in place: the caption for text changes,
the media for the preview picture, the partial video and the finished video.
What it shows is kept in its chat message state, so an unchanged edit is never
sent, and a restarted bot edits the same message and delivers from the stored
reference alone.

Every send and edit goes through one pacer: about one a second per chat and
twenty a minute per group; a 429 holds the chat back for its retry_after, then
the same call is tried again, so a final delivery is never dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import logging
import os
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from telegram import (
    Bot,
    InputFile,
    InputMediaPhoto,
    InputMediaVideo,
)
from telegram.constants import ChatAction
from telegram.error import BadRequest, NetworkError, RetryAfter, TelegramError

from bot.progress import JobView, Media, render
from bot.telegram_render import Shown, megabytes, photo_bytes
from bot.throttle import RateLimiter
from storage.config import TelegramSettings
from storage.records import ChatMessageRef, Job
from storage.store import JobStore

log = logging.getLogger("framepack_bot.telegram")

PLATFORM = "telegram"
UPLOAD_LIMIT_MB = 50  # what a bot may send through api.telegram.org
LOCAL_UPLOAD_LIMIT_MB = 2000  # through a local Bot API server
CHAT_PACE = [(1, 1.1)]  # about one message or edit a second in a chat (a little under)
GROUP_PACE = [(20, 61.0)]  # and twenty a minute in a group
BOT = "bot"  # the key of the pace that holds every chat
BOT_PACE = [(25, 1.0)]  # a little under Telegram's ~30 messages a second for a bot
BOT_PACE_FOR = 60.0  # seconds the bot-wide pace holds after the last bot-wide 429
ACTION_REFRESH = 4.0  # a chat action shows for 5 s; renewed while a video uploads

T = TypeVar("T")


def upload_limit(settings: TelegramSettings) -> int:
    """Bytes a video may have to be sent: 50 MB, or 2000 MB through a local Bot API server."""
    mb = settings.upload_limit_mb or (
        LOCAL_UPLOAD_LIMIT_MB if settings.base_url else UPLOAD_LIMIT_MB
    )
    return mb * 1_000_000


class _MessageGone(Exception):
    """The job's message was deleted; it cannot be edited any more."""


class _UploadRefused(Exception):
    """Telegram refused a video as too large: the upload limit is lower than configured."""


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


@contextlib.contextmanager
def _video_upload(path: str, *, attach: bool = False) -> Iterator[InputFile]:
    """A video read from disk while it is sent: up to 2000 MB through a local Bot API
    server never sits in the bot's memory. Open it per attempt: a retry after a 429
    must send it from its start."""
    with open(path, "rb") as handle:
        yield InputFile(handle, filename=Path(path).name, attach=attach, read_file_handle=False)


# A message's buttons and reply target as the Bot API's JSON, for raw calls
# (`JobMessages.api`): PTB's objects were built only to be serialized again, a
# tenth of a new job's reply.
def _keyboard_json(shown: Shown) -> str | None:
    if not shown.buttons:
        return None
    row = [{"text": label, "callback_data": data} for label, data in shown.buttons]
    return json.dumps({"inline_keyboard": [row]})


def reply_to(message_id: int | None) -> str | None:
    """A reply to `message_id` that still goes out if that message was deleted."""
    if message_id is None:
        return None
    return json.dumps({"message_id": message_id, "allow_sending_without_reply": True})


class JobMessages:
    """The messages of the jobs of one bot: what `TelegramAdapter` does for the tracker."""

    def __init__(self, bot: Bot, store: JobStore, *, tiny: bool, limit: int) -> None:
        self.bot = bot
        self.store = store
        self.tiny = tiny
        self.configured_limit = limit
        self.upload_limit = limit  # lower once Telegram refused a video as too large
        self.retry_afters = 0  # 429s answered to us (tests and the benchmark read it)
        self._chat_pace = RateLimiter(CHAT_PACE)
        self._group_pace = RateLimiter(GROUP_PACE)
        # After Telegram's limit for the whole bot answered a 429, every call waits out
        # its retry_after and then goes at BOT_PACE for a while; before, no bot-wide
        # pace holds back a burst of replies that Telegram would take.
        self._bot_pace = RateLimiter(BOT_PACE)
        self._bot_paced_until = float("-inf")
        self._locks: dict[int, asyncio.Lock] = {}
        self._wanted: dict[int, tuple[Job, JobView]] = {}
        self._showing: dict[int, asyncio.Task[None]] = {}
        self._posting: set[str] = set()  # origin tokens of jobs whose handler posts them now
        # Tokens are unique across runs (they are stored in the job): this run's random
        # id, then a count (a uuid4 per job cost a random read on the event loop).
        self._run = uuid.uuid4().hex[:12]
        self._tokens = itertools.count(1)

    def close(self) -> None:
        """Drop the pending progress edits (the next start brings the messages up to date)."""
        for task in self._showing.values():
            task.cancel()

    @contextlib.contextmanager
    def posting(self) -> Iterator[str]:
        """A token for the origin of a job a handler queues and then posts itself: until
        then the tracker leaves the job's message to it."""
        token = f"{self._run}-{next(self._tokens)}"
        self._posting.add(token)
        try:
            yield token
        finally:
            self._posting.discard(token)

    # ---- for the tracker ------------------------------------------------------

    def show(self, job: Job, view: JobView) -> None:
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

    async def post_new(self, job: Job, reply_id: int, photo_id: str | None = None) -> None:
        """The first message of a new job: its picture, queued, with the cancel button.

        A picture the user sent as a photo is shown again by its file_id (Telegram has
        it already: nothing to upload)."""
        core = self.store.core
        async with self._lock(job.id):
            # one trip to the database's thread for the three reads
            ref, position, paused = await self.store.run(
                lambda: (core.message(job.id, PLATFORM), core.position(job.id), core.paused())
            )
            if ref is not None:
                return
            view = render(job, None, position, tiny=self.tiny, paused=paused)
            await self._post(job, self._sendable(job, view), reply_id, photo_id)

    async def _bring_to(self, job: Job, view: JobView, *, final: bool) -> None:
        try:
            await self._bring_to_once(job, self._sendable(job, view), final=final)
        except _UploadRefused:  # the limit is lower now: the fitted copy, or the picture
            await self._bring_to_once(job, self._sendable(job, view), final=final)

    async def _bring_to_once(self, job: Job, view: JobView, *, final: bool) -> None:
        ref = await self.store.message(job.id, PLATFORM)
        reply_id = job.origin.get("reply_to")
        if ref is None:
            if job.origin.get("token") in self._posting:
                return  # the handler that queued it is posting it now
            await self._post(job, view, reply_id)  # lost before it was posted: post it now
            return
        try:
            await self._edit(job, view, ref)
        except _MessageGone:
            if final:  # the outcome must arrive: in a new message
                await self._post(job, view, reply_id)
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
        if limit < self.configured_limit:  # learnt from a refusal
            return view.with_details(
                f"Telegram refused the video ({megabytes(min(sizes))}) as too large."
            )
        return view.with_details(
            f"The video is {megabytes(min(sizes))}, more than the {megabytes(limit)} "
            "Telegram lets a bot send."
        )

    async def _post(
        self, job: Job, view: JobView, reply_id: int | None, photo_id: str | None = None
    ) -> None:
        media = view.media or Media("photo", job.input_path)
        shown = Shown.of(dataclasses.replace(view, media=media), job.id)
        chat_id = int(job.chat_id)
        message_id = await self._send_media(chat_id, media, shown, reply_id, photo_id)
        await self.store.set_message(job.id, PLATFORM, str(chat_id), str(message_id), shown.dump())

    async def _send_media(
        self,
        chat_id: int,
        media: Media,
        shown: Shown,
        reply_id: int | None,
        photo_id: str | None = None,
    ) -> int:
        """Send the job's message; its id."""
        common = {
            "chat_id": chat_id,
            "caption": shown.caption,
            "reply_markup": _keyboard_json(shown),
            "reply_parameters": reply_to(reply_id),
        }
        try:
            if media.kind == "photo":
                photo = photo_id or InputFile(await asyncio.to_thread(photo_bytes, media.path))
            else:
                size = os.path.getsize(media.path)
        except OSError:  # the picture is gone (retention): the text alone
            text = {**common, "text": common.pop("caption")}
            answer = await self.call(chat_id, lambda: self.api("sendmessage", **text))
        else:
            if media.kind == "photo":
                answer = await self.call(
                    chat_id, lambda: self.api("sendphoto", photo=photo, **common)
                )
            else:

                async def send_video() -> dict[str, Any]:
                    with _video_upload(media.path) as video:
                        return await self.api(
                            "sendvideo", video=video, supports_streaming=True, **common
                        )

                async with self._uploading_video(chat_id), self._upload_refusal(size):
                    answer = await self.call(chat_id, send_video)
        return int(answer["message_id"])

    async def api(self, method: str, **params: Any) -> dict[str, Any]:
        """A Bot API call whose answer stays plain JSON.

        PTB's typed methods build a `Message` (or a `File`) of every answer, the
        replied-to message inside it included. For a new job's first reply that cost
        as much CPU as the HTTP call itself (benchmarks/telegram.py: a fifth of the
        bot's time in a burst of /animate), and only the message's id is kept. The
        method is spelt in lower case: the Bot API's methods are case-insensitive,
        and PTB warns when do_api_request is given one it has a typed version of.
        """
        kwargs = {name: value for name, value in params.items() if value is not None}
        return await self.bot.do_api_request(method, api_kwargs=kwargs)

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
        chat_id, message_id = int(ref.chat_id), int(ref.message_id)
        target = {
            "chat_id": chat_id,
            "message_id": message_id,
            "reply_markup": _keyboard_json(after),
        }
        edit_media = None
        if view.media is not None and (before is None or after.media != before.media):
            edit_media = await self._media_edit(view.media, after.caption, target)
            if edit_media is None and before is not None:
                after = dataclasses.replace(after, media=before.media)
        try:
            if edit_media is not None:
                video, size, request = edit_media
                upload = self._uploading_video(chat_id) if video else contextlib.nullcontext()
                async with upload, self._upload_refusal(size):
                    await self.call(chat_id, request)
            elif before is None or (after.caption, after.buttons) != (
                before.caption,
                before.buttons,
            ):
                await self.call(
                    chat_id,
                    lambda: self.api("editmessagecaption", caption=after.caption, **target),
                )
        except BadRequest as error:
            if _is_gone(error):
                raise _MessageGone from None
            if not _is_not_modified(error):  # "not modified": it already shows this
                raise
        await self.store.update_message_state(job.id, PLATFORM, after.dump())

    async def _media_edit(
        self, media: Media, caption: str, target: dict[str, Any]
    ) -> tuple[bool, int, Callable[[], Awaitable[Any]]] | None:
        """(is a video, bytes to upload, the editMessageMedia call) bringing the message
        to `media`; None when its file is gone meanwhile (keep what it shows)."""
        try:
            if media.kind == "photo":
                data = await asyncio.to_thread(photo_bytes, media.path)
            else:
                size = os.path.getsize(media.path)
        except OSError:
            return None
        if media.kind == "photo":
            photo = InputMediaPhoto(data, caption=caption)
            return False, 0, lambda: self.api("editmessagemedia", media=photo, **target)

        async def edit_video() -> Any:
            with _video_upload(media.path, attach=True) as upload:
                video = InputMediaVideo(upload, caption=caption, supports_streaming=True)
                return await self.api("editmessagemedia", media=video, **target)

        return True, size, edit_video

    async def delete(self, job: Job) -> None:
        """Delete the job's message (its Delete button)."""
        ref = await self.store.message(job.id, PLATFORM)
        if ref is None:
            return
        with contextlib.suppress(BadRequest):  # already gone
            await self.bot.delete_message(int(ref.chat_id), int(ref.message_id))
        await self.store.update_message_state(job.id, PLATFORM, {**ref.state, "gone": True})

    # ---- pacing and uploads -----------------------------------------------------------

    async def call(self, chat_id: int, request: Callable[[], Awaitable[T]]) -> T:
        """Send or edit within the chat's pace; on 429 wait retry_after and try again."""
        while True:
            if self._bot_pace.clock() < self._bot_paced_until:
                await self._bot_pace.acquire(BOT)
            await self._chat_pace.acquire(chat_id)
            if chat_id < 0:
                await self._group_pace.acquire(chat_id)
            try:
                return await request()
            except RetryAfter as error:
                wait = retry_seconds(error)
                self.retry_afters += 1
                self._chat_pace.penalize(chat_id, wait)
                if chat_id > 0:
                    # Our pace keeps each private chat under its limit, so a 429 there is
                    # Telegram's limit for the whole bot (about 30 messages a second):
                    # every chat waits, instead of each finding out with its own 429. A
                    # group's 429 is that group's own limit and pauses it alone.
                    self._bot_pace.penalize(BOT, wait)
                    self._bot_paced_until = self._bot_pace.clock() + wait + BOT_PACE_FOR
                log.warning(
                    "telegram: flood control %s; retrying in %.0f s",
                    "for the whole bot" if chat_id > 0 else f"in chat {chat_id}",
                    wait,
                )

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
                    await self.bot.send_chat_action(chat_id, ChatAction.UPLOAD_VIDEO)

        with contextlib.suppress(TelegramError):
            await self.bot.send_chat_action(chat_id, ChatAction.UPLOAD_VIDEO)
        task = asyncio.create_task(keep_showing())
        try:
            yield
        finally:
            task.cancel()
