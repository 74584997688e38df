"""The fake Bot API answers python-telegram-bot as Telegram would.

Real ``telegram.Bot`` and a long-polling ``Application`` against ``FakeTelegram`` on
loopback: what the adapter's end-to-end tests will stand on.
"""

from __future__ import annotations

import asyncio
import datetime as dtm
import io
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from PIL import Image
from telegram import (
    Bot,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputMediaPhoto,
    InputMediaVideo,
    Update,
)
from telegram.constants import ParseMode
from telegram.error import (
    BadRequest,
    Conflict,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
)
from telegram.ext import (
    Application,
    BaseHandler,
    CallbackQueryHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from tests.fakes.telegram_api import FakeTelegram, FileLimits, FloodLimits, Limit, MiB

USER = 1001
GROUP = -100500
VIDEO = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8  # bytes are all the fake keeps


def png(width: int = 400, height: int = 300, color: str = "red") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, "PNG")
    return buffer.getvalue()


def seconds(retry_after: int | dtm.timedelta) -> float:
    return retry_after.total_seconds() if isinstance(retry_after, dtm.timedelta) else retry_after


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as tg:
        yield tg


@pytest.fixture
async def bot(fake: FakeTelegram) -> AsyncIterator[Bot]:
    async with Bot(fake.token, base_url=fake.base_url, base_file_url=fake.base_file_url) as b:
        yield b


@asynccontextmanager
async def polling(fake: FakeTelegram, *handlers: BaseHandler) -> AsyncIterator[Application]:
    """An Application long-polling the fake, started and stopped as a bot process does."""
    app = (
        Application.builder()
        .token(fake.token)
        .base_url(fake.base_url)
        .base_file_url(fake.base_file_url)
        .build()
    )
    for handler in handlers:
        app.add_handler(handler)
    async with app:
        await app.start()
        await app.updater.start_polling(poll_interval=0, timeout=dtm.timedelta(seconds=10))
        try:
            yield app
        finally:
            await app.updater.stop()
            await app.stop()


async def test_get_me_names_the_bot(bot: Bot, fake: FakeTelegram) -> None:
    me = await bot.get_me()
    assert (me.username, me.is_bot) == ("framepack_test_bot", True)
    assert fake.calls_to("getMe")[-1].ok


async def test_a_wrong_token_is_refused_as_telegram_refuses_it(fake: FakeTelegram) -> None:
    for token in ("123456:WRONG", "not-a-token"):  # 401 and 404, both InvalidToken in PTB
        bot = Bot(token, base_url=fake.base_url)
        with pytest.raises(InvalidToken):
            await bot.initialize()


async def test_a_photo_with_a_caption_reaches_the_handler_which_downloads_the_largest_size(
    fake: FakeTelegram,
) -> None:
    image = png(800, 600)
    got: asyncio.Future[tuple[str, bytes, list[int]]] = asyncio.get_running_loop().create_future()

    async def on_photo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Download the largest size, as the adapter will."""
        message = update.effective_message
        data = await (await message.photo[-1].get_file()).download_as_bytearray()
        got.set_result((message.caption, bytes(data), [p.width for p in message.photo]))

    async with polling(fake, MessageHandler(filters.PHOTO, on_photo)):
        started = time.perf_counter()
        fake.user_sends_photo(user_id=USER, image=image, caption="/animate a cat waves")
        caption, data, widths = await asyncio.wait_for(got, 5)
        latency = time.perf_counter() - started

    assert caption == "/animate a cat waves"
    assert data == image  # the largest size is the picture the user sent
    assert widths == sorted(widths) and widths[-1] == 800 and len(widths) == 3
    assert latency < 1.0  # the long poll answers when the update arrives, not at its timeout
    assert fake.downloads and fake.calls_to("getFile")[-1].ok
    assert fake.pending_updates == 0 or fake.calls_to("getUpdates")


async def test_the_caption_command_is_marked_as_telegram_marks_it(fake: FakeTelegram) -> None:
    got: asyncio.Future[Update] = asyncio.get_running_loop().create_future()

    async def on_any(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Keep the update."""
        got.set_result(update)

    async with polling(fake, MessageHandler(filters.ALL, on_any)):
        fake.user_sends_photo(user_id=USER, image=png(), caption="/animate@framepack_test_bot 🐈 x")
        update = await asyncio.wait_for(got, 5)
    commands = update.effective_message.parse_caption_entities(["bot_command"])
    assert list(commands.values()) == ["/animate@framepack_test_bot"]


async def test_a_gif_arrives_as_an_animation_and_a_file_as_a_document(
    fake: FakeTelegram, bot: Bot
) -> None:
    fake.user_sends_animation(user_id=USER, data=VIDEO, caption="/animate x")
    fake.user_sends_document(
        user_id=USER, data=b"not a picture", file_name="cat.png", mime_type="image/png"
    )
    animation, document = [u.message for u in await bot.get_updates(timeout=0)]
    assert animation.animation.file_size == len(VIDEO) and animation.document is not None
    assert (document.document.file_name, document.document.mime_type) == ("cat.png", "image/png")
    file = await bot.get_file(document.document.file_id)
    assert await file.download_as_bytearray() == b"not a picture"


async def test_group_privacy_lets_through_commands_and_replies_only(fake: FakeTelegram) -> None:
    seen: list[str] = []

    async def on_any(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Note what the bot got."""
        seen.append(update.effective_message.text or update.effective_message.caption)

    async with polling(fake, MessageHandler(filters.ALL, on_any)):
        group = {"chat_id": GROUP, "chat_type": "group"}
        photo = fake.user_sends_photo(user_id=USER, image=png(), caption="look", **group)
        fake.user_sends_text(user_id=USER, text="/animate@other_bot x", **group)
        fake.user_sends_text(user_id=USER, text="/animate@framepack_test_bot x", **group)
        command = fake.user_sends_text(
            user_id=USER, text="/animate y", reply_to=photo.message_id, **group
        )
        fake.user_sends_text(user_id=2, text="thanks", reply_to=command.message_id, **group)
        await fake.wait_for(lambda: len(seen) == 3)
    assert seen == ["/animate@framepack_test_bot x", "/animate y", "thanks"]
    assert not photo.reached_bot


async def test_a_photo_is_edited_into_a_video_then_its_caption(
    bot: Bot, fake: FakeTelegram
) -> None:
    fake.user_sends_text(user_id=USER, text="/start")
    cancel = InlineKeyboardMarkup([[InlineKeyboardButton("Cancel", callback_data="fpb:cancel:1")]])
    sent = await bot.send_photo(USER, png(), caption="queued", reply_markup=cancel)
    await bot.edit_message_media(
        InputMediaVideo(VIDEO, caption="rendering 1/3", width=64, height=48, duration=2),
        chat_id=USER,
        message_id=sent.message_id,
        reply_markup=cancel,
    )
    edited = await bot.edit_message_caption(USER, sent.message_id, caption="done")

    assert edited.video is not None and edited.video.width == 64 and edited.caption == "done"
    (message,) = fake.messages(USER)
    assert [s.kind for s in message.history] == ["photo", "video", "video"]
    assert [s.text for s in message.history] == ["queued", "rendering 1/3", "done"]
    assert message.media == VIDEO
    assert message.buttons == []  # an edit without reply_markup takes the keyboard away
    assert [b.callback_data for b in message.history[1].keyboard[0]] == ["fpb:cancel:1"]


async def test_media_reused_by_file_id_and_unchanged_edits_are_refused(
    bot: Bot, fake: FakeTelegram
) -> None:
    fake.user_sends_text(user_id=USER, text="/start")
    sent = await bot.send_photo(USER, png(), caption="preview")
    with pytest.raises(BadRequest, match="Message is not modified") as caught:
        await bot.edit_message_caption(USER, sent.message_id, caption="preview")
    assert "exactly the same as a current content" in caught.value.message
    same_photo = InputMediaPhoto(sent.photo[-1].file_id, caption="preview")
    with pytest.raises(BadRequest, match="not modified"):
        await bot.edit_message_media(same_photo, chat_id=USER, message_id=sent.message_id)
    # the same text in bold is a change; the same bold text again is not
    await bot.edit_message_caption(
        USER, sent.message_id, caption="<b>preview</b>", parse_mode=ParseMode.HTML
    )
    with pytest.raises(BadRequest, match="not modified"):
        await bot.edit_message_caption(
            USER, sent.message_id, caption="<b>preview</b>", parse_mode=ParseMode.HTML
        )
    assert fake.messages(USER)[0].edits == 1


async def test_edits_that_do_not_fit_the_message_are_refused(bot: Bot, fake: FakeTelegram) -> None:
    fake.user_sends_text(user_id=USER, text="/start")
    text = await bot.send_message(USER, "queued")
    photo = await bot.send_photo(USER, png(), caption="queued")
    with pytest.raises(BadRequest, match="There is no text in the message to edit"):
        await bot.edit_message_text("rendering", chat_id=USER, message_id=photo.message_id)
    with pytest.raises(BadRequest, match="There is no media in the message to edit"):
        await bot.edit_message_media(
            InputMediaVideo(VIDEO), chat_id=USER, message_id=text.message_id
        )
    with pytest.raises(BadRequest, match="Message to edit not found"):
        await bot.edit_message_caption(USER, 999, caption="x")
    with pytest.raises(BadRequest, match="Chat not found"):
        await bot.send_message(424242, "hello")


async def test_captions_and_texts_are_measured_after_entity_parsing(
    bot: Bot, fake: FakeTelegram
) -> None:
    fake.user_sends_text(user_id=USER, text="/start")
    with pytest.raises(BadRequest, match="Message caption is too long"):
        await bot.send_photo(USER, png(), caption="x" * 1025)
    fits = await bot.send_photo(
        USER, png(), caption="<b>" + "é" * 1024 + "</b>", parse_mode=ParseMode.HTML
    )
    assert len(fits.caption) == 1024
    with pytest.raises(BadRequest, match="Message is too long"):
        await bot.send_message(USER, "y" * 4097)
    with pytest.raises(BadRequest, match="Can't parse entities"):
        await bot.send_message(USER, "a cat <3", parse_mode=ParseMode.HTML)
    await bot.send_message(USER, "a cat &lt;3", parse_mode=ParseMode.HTML)
    assert fake.messages(USER)[-1].text == "a cat <3"


async def test_lengths_are_counted_in_utf16_units_as_telegram_counts_them(
    bot: Bot, fake: FakeTelegram
) -> None:
    """An emoji outside the BMP is two units: 600 of them are 1200, over the 1024."""
    fake.user_sends_text(user_id=USER, text="/start")
    with pytest.raises(BadRequest, match="Message caption is too long"):
        await bot.send_photo(USER, png(), caption="🐈" * 600)
    await bot.send_photo(USER, png(), caption="🐈" * 512)
    with pytest.raises(BadRequest, match="Message is too long"):
        await bot.send_message(USER, "🐈" * 2049)


async def test_photos_over_10_mb_and_videos_that_are_no_mp4_are_refused(
    bot: Bot, fake: FakeTelegram
) -> None:
    fake.user_sends_text(user_id=USER, text="/start")
    with pytest.raises(BadRequest, match="Photo_invalid_dimensions"):
        await bot.send_photo(USER, png() + b"\0" * 10_000_000)
    with pytest.raises(BadRequest, match="Wrong type"):
        await bot.send_video(USER, b"not a video at all, just bytes")
    assert fake.messages(USER) == []


async def test_a_crash_of_the_fake_itself_fails_the_test_that_met_it() -> None:
    fake = FakeTelegram()
    await fake.start()
    fake._methods["getme"] = ("getMe", lambda params, uploads: 1 / 0)  # a bug of the fake
    with pytest.raises(NetworkError, match="Internal Server Error"):
        await Bot(fake.token, base_url=fake.base_url).get_me()
    with pytest.raises(AssertionError, match="crashed in its own handler"):
        await fake.__aexit__(None, None, None)


async def test_a_forced_429_raises_retry_after_then_the_call_goes_through(
    bot: Bot, fake: FakeTelegram
) -> None:
    fake.user_sends_text(user_id=USER, text="/start")
    fake.force_retry_after("sendMessage", 7)
    with pytest.raises(RetryAfter) as caught:
        await bot.send_message(USER, "queued")
    assert seconds(caught.value.retry_after) == 7
    await bot.send_message(USER, "queued")
    assert fake.too_many_requests == 1 and fake.provoked_429s == 0
    assert [m.text for m in fake.messages(USER)] == ["queued"]


async def test_flood_limits_answer_429_per_chat_and_can_be_switched_off(
    bot: Bot, fake: FakeTelegram
) -> None:
    fake.flood = FloodLimits.strict()
    fake.user_sends_text(user_id=USER, text="/start")
    fake.user_sends_text(user_id=USER + 1, text="/start")
    await bot.send_message(USER, "one")
    with pytest.raises(RetryAfter) as caught:
        await bot.send_message(USER, "two")
    assert seconds(caught.value.retry_after) == 1
    await bot.send_message(USER + 1, "another chat is not held back")
    fake.flood = FloodLimits(per_chat=None, per_group=Limit(2, 60.0), overall=None)
    fake.user_sends_text(user_id=USER, text="/start", chat_id=GROUP, chat_type="group")
    await bot.send_message(GROUP, "a")
    await bot.send_message(GROUP, "b")
    with pytest.raises(RetryAfter) as caught:
        await bot.send_message(GROUP, "c")
    assert 59 <= seconds(caught.value.retry_after) <= 60
    fake.flood = None
    for n in range(10):
        await bot.send_message(USER, f"burst {n}")
    assert fake.provoked_429s == 2


async def test_file_size_limits(bot: Bot, fake: FakeTelegram) -> None:
    big = fake.user_sends_document(
        user_id=USER, data=bytes(21 * MiB), file_name="huge.png", mime_type="image/png"
    )
    with pytest.raises(BadRequest, match="File is too big"):
        await bot.get_file(big.file.file_id)
    fake.file_limits = FileLimits(upload=1 * MiB)  # 50 MB in earnest; kept small to stay fast
    with pytest.raises(NetworkError, match="Request Entity Too Large"):
        await bot.send_video(USER, bytes(MiB + 1))
    await bot.send_video(USER, VIDEO)


async def test_local_mode_lifts_the_download_limit_and_answers_with_a_local_path() -> None:
    async with (
        FakeTelegram(local_mode=True) as tg,
        Bot(tg.token, base_url=tg.base_url, local_mode=True) as bot,
    ):
        big = tg.user_sends_document(
            user_id=USER, data=bytes(21 * MiB), file_name="huge.bin", mime_type="x/y"
        )
        file = await bot.get_file(big.file.file_id)
        assert len(await file.download_as_bytearray()) == 21 * MiB
    assert tg.file_limits.upload == 2000 * MiB


async def test_a_button_press_reaches_the_callback_handler_and_its_answer_is_recorded(
    fake: FakeTelegram,
) -> None:
    async def on_press(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Answer first, as the adapter will."""
        await update.callback_query.answer(f"got {update.callback_query.data}")

    async with polling(fake, CallbackQueryHandler(on_press)) as app:
        fake.user_sends_text(user_id=USER, text="/start")
        keyboard = InlineKeyboardMarkup(
            [[InlineKeyboardButton("Re-roll", callback_data="fpb:reroll:9")]]
        )
        sent = await app.bot.send_message(USER, "done", reply_markup=keyboard)
        data = fake.messages(USER)[0].button("Re-roll").callback_data
        query_id = fake.user_presses_button(
            user_id=USER, chat_id=USER, message_id=sent.message_id, data=data
        )
        await fake.wait_for(lambda: fake.answered_callbacks)
    (answer,) = fake.answered_callbacks
    assert (answer.query_id, answer.text, answer.data) == (query_id, "got fpb:reroll:9", data)


async def test_delete_marks_the_message_deleted(bot: Bot, fake: FakeTelegram) -> None:
    fake.user_sends_text(user_id=USER, text="/start")
    sent = await bot.send_message(USER, "done")
    assert await bot.delete_message(USER, sent.message_id)
    assert fake.messages(USER)[0].deleted
    with pytest.raises(BadRequest, match="Message to delete not found"):
        await bot.delete_message(USER, sent.message_id)


async def test_chat_actions_and_blocked_users(bot: Bot, fake: FakeTelegram) -> None:
    fake.user_sends_text(user_id=USER, text="/start")
    await bot.send_chat_action(USER, "upload_video")
    assert [(a.chat_id, a.action) for a in fake.chat_actions] == [(USER, "upload_video")]
    fake.user_blocks_bot(USER)
    with pytest.raises(Forbidden, match="bot was blocked by the user"):
        await bot.send_message(USER, "done")


async def test_updates_stay_queued_until_confirmed(fake: FakeTelegram, bot: Bot) -> None:
    fake.user_sends_text(user_id=USER, text="/queue")
    first = await bot.get_updates(timeout=0)
    again = await bot.get_updates(timeout=0)  # a bot that died before confirming
    assert [u.update_id for u in first] == [u.update_id for u in again] == [1]
    assert await bot.get_updates(offset=2, timeout=0) == ()
    assert fake.pending_updates == 0


async def test_a_second_bot_instance_polling_ends_the_first_with_a_conflict(
    fake: FakeTelegram, bot: Bot
) -> None:
    async with Bot(fake.token, base_url=fake.base_url) as second:
        first = asyncio.create_task(bot.get_updates(timeout=5))
        await fake.wait_for(lambda: fake.waiting_polls == 1)
        assert await second.get_updates(timeout=0) == ()
        with pytest.raises(Conflict, match="only one bot instance"):
            await first
