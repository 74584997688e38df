"""The picture (or the video to continue) of an /animate on Telegram: found in the
message or the one it replies to, refused before download when Telegram would not
hand it out, and fetched through the Bot API (or read from disk, from a local Bot
API server)."""

from __future__ import annotations

from dataclasses import dataclass

from telegram import Bot, Message
from telegram.error import BadRequest

from bot.formatting import format_bytes
from bot.requests import UserError

MiB = 1 << 20
DOWNLOAD_LIMIT = 20 * MiB  # getFile refuses larger files (a local Bot API server does not)
NO_PICTURE = (
    "I need a picture: send it with the caption /animate <prompt>, or reply "
    "/animate <prompt> to a message that has one (a video is continued)."
)


END_USAGE = (
    "To end on a picture: send the two pictures together with the caption /animate "
    "<prompt> on the first, or send the end picture as a reply to the start picture with "
    "the caption /animate <prompt> --end."
)


@dataclass(frozen=True)
class PictureFile:
    file_id: str
    size: int | None
    is_photo: bool  # a photo can be shown again by its file_id
    is_video: bool = False  # a video (or a GIF, which Telegram makes an MP4) to continue


def picture_file(message: Message) -> PictureFile | None:
    """The picture (or video) a message holds; refuses what can be neither."""
    if message.photo:
        largest = message.photo[-1]
        return PictureFile(largest.file_id, largest.file_size, True)
    moving = message.video or message.animation or message.video_note
    if moving is not None:
        return PictureFile(moving.file_id, moving.file_size, False, True)
    if message.sticker is not None:
        raise UserError("Stickers cannot be animated. Send a picture (PNG, JPEG or WebP).")
    if message.document is not None:
        return PictureFile(message.document.file_id, message.document.file_size, False)
    return None


def find_picture(message: Message) -> PictureFile:
    """The picture of the message, or of the one it replies to."""
    found = picture_file(message)
    if found is None and message.reply_to_message is not None:
        found = picture_file(message.reply_to_message)
    if found is None:
        raise UserError(NO_PICTURE)
    return found


async def download(bot: Bot, picture: PictureFile, limit: int) -> bytes:
    """The picture's bytes, at most `limit` of them (refused before download when its
    size says so)."""
    too_big = UserError(
        f"The picture is {format_bytes(picture.size or limit + 1)}; I can take at most "
        f"{format_bytes(limit)}. Send it as a photo (Telegram makes it smaller) or send a "
        "smaller file."
    )
    if picture.size is not None and picture.size > limit:
        raise too_big
    try:
        file = await bot.get_file(picture.file_id)
    except BadRequest as error:
        if "too big" in error.message.lower():
            raise too_big from None
        raise
    if file.file_size is not None and file.file_size > limit:
        raise too_big
    return bytes(await file.download_as_bytearray())
