"""Longer and again, on Telegram: Extend and Remix from a finished job's message,
/extend as a reply, an end picture (an album, or --end), a video to continue.
The stand-in worker plays the GPU; the end-to-end tests render for real."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest

from framepack.video.encode import encode_mp4
from storage.files import poster_of
from storage.records import JobStatus
from storage.store import JobStore
from tests.fakes.telegram_api import FakeTelegram, Message
from tests.telegram_harness import (
    GROUP,
    OTHER,
    USER,
    StandInWorker,
    job_messages,
    make_settings,
    png,
    replies,
    running_bot,
)

pytestmark = pytest.mark.filterwarnings("ignore:.*retry_after.*:DeprecationWarning")


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as tg:
        yield tg


StandIns = Callable[..., Awaitable[StandInWorker]]


@pytest.fixture
async def stand_in() -> AsyncIterator[StandIns]:
    opened: list[StandInWorker] = []

    async def open_one(settings) -> StandInWorker:  # type: ignore[no-untyped-def]
        opened.append(await StandInWorker.open(settings))
        return opened[-1]

    yield open_one
    for worker in opened:
        await worker.close()


async def jobs(settings) -> list:  # type: ignore[no-untyped-def]
    async with await JobStore.open(settings.database_path) as store:
        return sorted(
            [j for s in JobStatus for j in await store.jobs_of("telegram", str(USER), [s])],
            key=lambda j: j.id,
        )


async def finished_job(fake: FakeTelegram, worker: StandInWorker, caption: str) -> Message:
    fake.user_sends_photo(user_id=USER, image=png(), caption=caption)
    await fake.wait_for(lambda: job_messages(fake, USER))
    message = job_messages(fake, USER)[-1]
    await worker.run(await worker.claim(), sections=1, steps=1)
    await fake.wait_for(lambda: message.text.startswith("✅ Done"), timeout=10)
    return message


def press(fake: FakeTelegram, message: Message, label: str, user: int = USER) -> None:
    fake.user_presses_button(
        user_id=user,
        chat_id=message.chat_id,
        message_id=message.message_id,
        data=message.button(label).callback_data,
    )


async def test_extend_and_remix_from_the_finished_message(
    tmp_path: Path, fake: FakeTelegram, stand_in: StandIns
) -> None:
    settings = make_settings(tmp_path, fake)
    worker = await stand_in(settings)
    async with running_bot(settings, fake):
        message = await finished_job(fake, worker, "/animate a cat walks --seconds 2 --seed 9")
        assert [b.text for b in message.buttons] == [
            "🎲 Re-roll", "⏩ Extend", "🎨 Remix", "🗑 Delete",
        ]  # fmt: skip
        press(fake, message, "Extend", user=OTHER)  # somebody else's video
        await fake.wait_for(lambda: fake.answered_callbacks, timeout=10)
        assert "Only the person who asked" in (fake.answered_callbacks[-1].text or "")

        press(fake, message, "Extend")
        await fake.wait_for(lambda: len(job_messages(fake, USER)) == 2, timeout=10)
        extension = job_messages(fake, USER)[1]
        assert extension.reply_to_message_id == message.message_id
        assert extension.text.startswith("⏳ Queued") and "a cat walks" in extension.text

        press(fake, message, "Remix")
        question = await fake.wait_for(
            lambda: next((m for m in fake.messages(USER) if m.state.force_reply), None), 10
        )
        assert "Remix of job #1" in question.text and "a cat walks" in question.text
        fake.user_sends_text(
            user_id=USER, text="a cat runs --seconds 3", reply_to=question.message_id
        )
        await fake.wait_for(lambda: len(job_messages(fake, USER)) == 3, timeout=10)
    first, extended, remixed = await jobs(settings)
    assert extended.params.extend_of == first.id and extended.params.prompt == "a cat walks"
    assert extended.params.seconds == settings.generation.seconds
    assert extended.input_path == first.input_path
    assert remixed.params.prompt == "a cat runs" and remixed.params.seconds == 3
    assert remixed.params.seed == 9 and remixed.input_path == first.input_path
    assert remixed.origin["remix_of"] == first.id


async def test_extend_as_a_reply_to_the_video(
    tmp_path: Path, fake: FakeTelegram, stand_in: StandIns
) -> None:
    settings = make_settings(tmp_path, fake)
    worker = await stand_in(settings)
    async with running_bot(settings, fake):
        message = await finished_job(fake, worker, "/animate a cat walks")
        fake.user_sends_text(user_id=USER, text="/extend it sits down --seconds 1.5",
                             reply_to=message.message_id)  # fmt: skip
        await fake.wait_for(lambda: len(job_messages(fake, USER)) == 2, timeout=10)
        fake.user_sends_text(user_id=USER, text="/extend more")  # a reply to nothing
        # options an extension cannot change are refused, not dropped unsaid
        for options in ("--cache off", "--guidance 5", "--seed 3"):
            fake.user_sends_text(
                user_id=USER, text=f"/extend more {options}", reply_to=message.message_id
            )
        answers = await fake.wait_for(lambda: (r := replies(fake, USER))[3:] and r, timeout=10)
    assert all(a.startswith("Reply /extend to a finished video of mine") for a in answers)
    _, extended = await jobs(settings)
    assert (extended.params.prompt, extended.params.seconds) == ("it sits down", 1.5)
    assert extended.params.extend_of == 1


@pytest.mark.parametrize("how", ["album", "--end"])
async def test_an_end_picture_on_telegram(how: str, tmp_path: Path, fake: FakeTelegram) -> None:
    settings = make_settings(tmp_path, fake)
    start, end = png(320, 240, "red"), png(320, 240, "blue")
    async with running_bot(settings, fake):
        if how == "album":
            fake.user_sends_album(user_id=USER, images=[start, end], caption="/animate it fades")
        else:
            first = fake.user_sends_photo(user_id=USER, image=start)
            await fake.wait_for(lambda: replies(fake, USER), timeout=10)  # the bare picture's hint
            fake.user_sends_photo(
                user_id=USER, image=end, caption="/animate it fades --end",
                reply_to=first.message_id,
            )  # fmt: skip
        await fake.wait_for(lambda: job_messages(fake, USER), timeout=10)
    (job,) = await jobs(settings)
    assert job.end_image_path is not None
    from PIL import Image

    with Image.open(job.input_path) as a, Image.open(job.end_image_path) as b:
        assert a.convert("RGB").getpixel((5, 5))[0] > 200  # the red one starts
        assert b.convert("RGB").getpixel((5, 5))[2] > 200  # and the blue one ends


async def test_an_end_picture_in_a_group_goes_by_reply(tmp_path: Path, fake: FakeTelegram) -> None:
    """In a group, a bot in privacy mode sees the album's captioned picture only: the
    member is told how to do it there (--end as a reply works everywhere)."""
    settings = make_settings(tmp_path, fake)
    group = {"chat_id": GROUP, "chat_type": "group"}
    async with running_bot(settings, fake):
        fake.user_sends_album(
            user_id=USER, images=[png(), png(color="blue")], caption="/animate it fades", **group
        )
        (answer,) = await fake.wait_for(lambda: replies(fake, GROUP), timeout=15)
    assert "--end" in answer and await jobs(settings) == []


def clip(seconds: float = 1.0, size: tuple[int, int] = (96, 128)) -> bytes:
    frames = int(seconds * 30)
    y, x = np.mgrid[0 : size[0], 0 : size[1]]
    video = np.stack(
        [np.stack([(x + 3 * t) % 256, y % 256, np.full_like(x, 90)], -1) for t in range(frames)]
    ).astype(np.uint8)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return encode_mp4(video, Path(tmp) / "clip.mp4").read_bytes()


async def test_a_video_is_continued_and_its_last_frame_shown(
    tmp_path: Path, fake: FakeTelegram
) -> None:
    settings = make_settings(tmp_path, fake, generation={"max_video_seconds": 2.0})
    async with running_bot(settings, fake):
        fake.user_sends_video(
            user_id=USER, data=clip(1.0), duration=1, width=128, height=96,
            caption="/animate it goes on",
        )  # fmt: skip
        (message,) = await fake.wait_for(lambda: job_messages(fake, USER), timeout=15)
        fake.user_sends_video(
            user_id=OTHER, data=clip(3.0), duration=3, width=128, height=96,
            caption="/animate it goes on",
        )  # fmt: skip
        fake.user_sends_document(
            user_id=OTHER + 1, data=b"\x00\x00\x00\x18ftypmp42garbage" * 50,
            file_name="v.mp4", mime_type="video/mp4", caption="/animate it goes on",
        )  # fmt: skip
        (too_long,) = await fake.wait_for(lambda: replies(fake, OTHER), timeout=15)
        (damaged,) = await fake.wait_for(lambda: replies(fake, OTHER + 1), timeout=15)
    (job,) = await jobs(settings)
    assert job.input_path.endswith(".mp4") and poster_of(job.input_path).exists()
    assert message.kind == "photo"  # the video's last frame, the picture it goes on from
    assert "3 s long; the most I continue is 2 s" in too_long
    assert "damaged" in damaged


async def test_extensions_remixes_and_videos_count_toward_the_daily_seconds(
    tmp_path: Path, fake: FakeTelegram, stand_in: StandIns
) -> None:
    settings = make_settings(
        tmp_path, fake, generation={"seconds": 2.0, "max_video_seconds": 5.0},
        queue={"max_video_seconds_per_day": 5.0},
    )  # fmt: skip
    worker = await stand_in(settings)
    async with running_bot(settings, fake):
        message = await finished_job(fake, worker, "/animate a cat walks --seconds 2")
        press(fake, message, "Extend")  # 2 s more: 4 of 5 s used (the new part counts)
        await fake.wait_for(lambda: len(job_messages(fake, USER)) == 2, timeout=10)

        press(fake, message, "Remix")
        question = await fake.wait_for(
            lambda: next((m for m in fake.messages(USER) if m.state.force_reply), None), 10
        )
        fake.user_sends_text(user_id=USER, text="a cat runs", reply_to=question.message_id)
        await fake.wait_for(lambda: len(replies(fake, USER)) == 2, timeout=10)  # after the question
        remix_refused = replies(fake, USER)[1]

        fake.user_sends_video(
            user_id=USER, data=clip(1.0), duration=1, width=128, height=96,
            caption="/animate it goes on",
        )  # fmt: skip
        await fake.wait_for(lambda: len(replies(fake, USER)) == 3, timeout=15)
        video_refused = replies(fake, USER)[2]
    assert "1 of your 5 seconds of video left" in remix_refused
    assert "asks for 2" in remix_refused
    assert "1 of your 5 seconds of video left" in video_refused
    assert len(await jobs(settings)) == 2  # the first job and its extension only
