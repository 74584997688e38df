"""Each job's one message on Telegram: posted as a reply to the user, then edited
into the latest view the tracker wants, and finished once with the video.

The message starts as a photo (the input picture, the status in its caption),
because Telegram only lets a message that already holds media be edited into a
picture or a video. Then it is edited in place: the caption for text changes,
the media for the preview picture, the partial video and the finished video.
What it shows is kept in its chat message state, so an unchanged edit is never
sent, and a restarted bot edits the same message and delivers from the stored
reference alone. Every send and edit goes through the bot's `Pacer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from telegram import (
    Bot,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputFile,
    InputMediaPhoto,
    InputMediaVideo,
    Message,
    ReplyParameters,
)
from telegram.constants import ChatAction
from telegram.error import BadRequest, NetworkError, TelegramError

from bot.adapters import PostingGuard
from bot.formatting import format_bytes
from bot.images import shown_picture
from bot.progress import JobView, Media, input_picture, render
from bot.telegram.pacing import Pacer
from bot.telegram.render import PHOTO_MAX_BYTES, PHOTO_MAX_SIDE, Shown
from storage.config import TelegramSettings
from storage.records import ChatMessageRef, Job
from storage.store import JobStore

log = logging.getLogger("framepack_bot.telegram")

PLATFORM = "telegram"
UPLOAD_LIMIT_MB = 50  # what a bot may send through api.telegram.org
LOCAL_UPLOAD_LIMIT_MB = 2000  # through a local Bot API server
ACTION_REFRESH = 4.0  # a chat action shows for 5 s; renewed while a video uploads


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


def _is_not_modified(error: BadRequest) -> bool:
    return "message is not modified" in error.message.lower()


def _is_gone(error: BadRequest) -> bool:
    text = error.message.lower()
    return "message to edit not found" in text or "message can't be edited" in text


def reply_to(message_id: int | None) -> ReplyParameters | None:
    """A reply to `message_id` that still goes out if that message was deleted."""
    if message_id is None:
        return None
    return ReplyParameters(message_id, allow_sending_without_reply=True)


def _keyboard(shown: Shown) -> InlineKeyboardMarkup | None:
    """The message's buttons: one row, or rows of two past three (a phone's width)."""
    if not shown.buttons:
        return None
    buttons = [InlineKeyboardButton(label, callback_data=data) for label, data in shown.buttons]
    per_row = 2 if len(buttons) > 3 else len(buttons)
    return InlineKeyboardMarkup([buttons[i : i + per_row] for i in range(0, len(buttons), per_row)])


@contextlib.contextmanager
def _video_upload(path: str, *, attach: bool = False) -> Iterator[InputFile]:
    """A video read from disk while it is sent: up to 2000 MB through a local Bot API
    server never sits in the bot's memory. Open it per attempt: a retry after a 429
    must send it from its start. `attach`: inside an InputMedia (editMessageMedia)."""
    with open(path, "rb") as handle:
        yield InputFile(handle, filename=Path(path).name, attach=attach, read_file_handle=False)


class JobMessages:
    """The messages of the jobs of one bot: what `TelegramAdapter` does for the tracker."""

    def __init__(
        self,
        bot: Bot,
        store: JobStore,
        pacer: Pacer,
        guard: PostingGuard,
        *,
        tiny: bool,
        limit: int,
    ) -> None:
        self.bot = bot
        self.store = store
        self.pacer = pacer
        self.guard = guard
        self.tiny = tiny
        self.configured_limit = limit
        self.upload_limit = limit  # lower once Telegram refused a video as too large

    # ---- for the tracker ------------------------------------------------------

    async def show(self, job: Job, view: JobView) -> None:
        """Bring the job's message to `view` (a progress view)."""
        await self._bring_to(job, view, final=False)

    async def deliver(self, job: Job, view: JobView) -> None:
        """Put the final view in the job's message (the video, or why there is none).

        Works from the stored message alone, so it also delivers after a restart;
        raises when Telegram cannot be reached, and the tracker tries again later."""
        await self._bring_to(job, view, final=True)

    async def post_new(self, job: Job, reply_id: int, photo_id: str | None = None) -> None:
        """The first message of a new job: its picture, queued, with the cancel button.

        A picture the user sent as a photo is shown again by its file_id (Telegram has
        it already: nothing to upload)."""
        core = self.store.core
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
        if ref is None:
            await self.guard.wait(job)  # the command that queued it may be posting it now
            ref = await self.store.message(job.id, PLATFORM)
        reply_id = job.origin.get("reply_to")
        # Final views go ahead of progress edits, in the order their jobs finished.
        urgent: bool | float = (job.finished_at or True) if final else False
        if ref is None:  # lost before it was posted (a restart): post it now
            await self._post(job, view, reply_id, urgent=urgent)
            return
        try:
            await self._edit(job, view, ref, urgent=urgent)
        except _MessageGone:
            if final:  # the outcome must arrive: in a new message
                await self._post(job, view, reply_id, urgent=urgent)
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
        view = dataclasses.replace(view, media=Media("photo", input_picture(job)))
        if not sizes:
            return view
        if limit < self.configured_limit:  # learnt from a refusal
            return view.with_details(
                f"Telegram refused the video ({format_bytes(min(sizes))}) as too large."
            )
        return view.with_details(
            f"The video is {format_bytes(min(sizes))}, more than the {format_bytes(limit)} "
            "Telegram lets a bot send."
        )

    async def _post(
        self,
        job: Job,
        view: JobView,
        reply_id: int | None,
        photo_id: str | None = None,
        *,
        urgent: bool | float = False,
    ) -> None:
        media = view.media or Media("photo", input_picture(job))
        shown = Shown.of(dataclasses.replace(view, media=media), job.id)
        chat_id = int(job.chat_id)
        sent = await self._send_media(chat_id, media, shown, reply_id, photo_id, urgent=urgent)
        await self.store.set_message(
            job.id, PLATFORM, str(chat_id), str(sent.message_id), shown.dump()
        )

    async def _send_media(
        self,
        chat_id: int,
        media: Media,
        shown: Shown,
        reply_id: int | None,
        photo_id: str | None,
        *,
        urgent: bool | float,
    ) -> Message:
        """Send the job's message."""
        common: dict[str, Any] = {
            "chat_id": chat_id,
            "reply_markup": _keyboard(shown),
            "reply_parameters": reply_to(reply_id),
        }
        try:
            if media.kind == "photo":
                photo = photo_id or await asyncio.to_thread(
                    shown_picture, media.path, PHOTO_MAX_SIDE, PHOTO_MAX_BYTES
                )
            else:
                size = os.path.getsize(media.path)
        except OSError:  # the picture is gone (retention): the text alone
            return await self.pacer.call(
                chat_id, lambda: self.bot.send_message(text=shown.caption, **common), urgent=urgent
            )
        if media.kind == "photo":
            return await self.pacer.call(
                chat_id,
                lambda: self.bot.send_photo(photo=photo, caption=shown.caption, **common),
                urgent=urgent,
            )

        async def send_video() -> Message:
            with _video_upload(media.path) as video:
                return await self.bot.send_video(
                    video=video, caption=shown.caption, supports_streaming=True, **common
                )

        async with self._uploading_video(chat_id), self._upload_refusal(size):
            return await self.pacer.call(chat_id, send_video, urgent=urgent)

    async def _edit(
        self, job: Job, view: JobView, ref: ChatMessageRef, *, urgent: bool | float
    ) -> None:
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
        target: dict[str, Any] = {
            "chat_id": chat_id,
            "message_id": message_id,
            "reply_markup": _keyboard(after),
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
                    await self.pacer.call(chat_id, request, urgent=urgent)
            elif before is None or (after.caption, after.buttons) != (
                before.caption,
                before.buttons,
            ):
                await self.pacer.call(
                    chat_id,
                    lambda: self.bot.edit_message_caption(caption=after.caption, **target),
                    urgent=urgent,
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
                data = await asyncio.to_thread(
                    shown_picture, media.path, PHOTO_MAX_SIDE, PHOTO_MAX_BYTES
                )
            else:
                size = os.path.getsize(media.path)
        except OSError:
            return None
        if media.kind == "photo":
            photo = InputMediaPhoto(data, caption=caption)
            return False, 0, lambda: self.bot.edit_message_media(media=photo, **target)

        async def edit_video() -> Any:
            with _video_upload(media.path, attach=True) as upload:
                video = InputMediaVideo(upload, caption=caption, supports_streaming=True)
                return await self.bot.edit_message_media(media=video, **target)

        return True, size, edit_video

    async def delete(self, job: Job) -> None:
        """Delete the job's message (its Delete button)."""
        ref = await self.store.message(job.id, PLATFORM)
        if ref is None:
            return
        with contextlib.suppress(BadRequest):  # already gone
            await self.bot.delete_message(int(ref.chat_id), int(ref.message_id))
        await self.store.update_message_state(job.id, PLATFORM, {**ref.state, "gone": True})

    # ---- uploads ----------------------------------------------------------------------

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
                format_bytes(size),
                format_bytes(size - 1),
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
