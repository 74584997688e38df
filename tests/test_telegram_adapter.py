"""The Telegram adapter against the fake Bot API, with a stand-in for the GPU worker.

The real `Application` long-polls `FakeTelegram` on loopback inside `run_bots` (the
bot process's loop); the stand-in writes the events and files the worker writes.
Tests read what users would see: the bot's messages and every state they went
through. The end-to-end tests with the real worker are in test_telegram_e2e.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from PIL import Image

from bot.progress import render
from bot.telegram.messages import PLATFORM, upload_limit
from bot.telegram.render import Shown, parse_callback, utf16_len
from storage.config import Settings, TelegramSettings
from storage.records import JobStatus
from storage.store import JobStore
from tests.fakes.telegram_api import CAPTION_LIMIT, FakeTelegram, FileLimits, MiB
from tests.telegram_harness import (
    ADMIN,
    GROUP,
    OTHER,
    USER,
    StandInWorker,
    job_messages,
    make_settings,
    png,
    replies,
    running_bot,
    settled,
)

# python-telegram-bot warns about its own RetryAfter constructor (the int form of retry_after).
pytestmark = pytest.mark.filterwarnings("ignore:.*retry_after.*:DeprecationWarning")


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as tg:
        yield tg


StandIns = Callable[[Settings], Awaitable[StandInWorker]]


@pytest.fixture
async def stand_in() -> AsyncIterator[StandIns]:
    """Opens stand-in workers on a test's database; closes them after the test."""
    opened: list[StandInWorker] = []

    async def open_one(settings: Settings) -> StandInWorker:
        opened.append(await StandInWorker.open(settings))
        return opened[-1]

    yield open_one
    for worker in opened:
        await worker.close()


async def all_jobs(settings: Settings) -> list:
    async with await JobStore.open(settings.database_path) as store:
        return [job for s in JobStatus for job in await store.jobs_of(PLATFORM, str(USER), [s])]


# ---- a job's message ---------------------------------------------------------------------


async def test_a_photo_with_animate_gives_one_reply_edited_from_queued_to_the_video(
    tmp_path: Path, fake: FakeTelegram, stand_in: StandIns
) -> None:
    settings = make_settings(tmp_path, fake)
    worker = await stand_in(settings)
    async with running_bot(settings, fake):
        sent = fake.user_sends_photo(
            user_id=USER, image=png(), caption="/animate a cat waves --seconds 2 --seed 7"
        )
        (message,) = await fake.wait_for(lambda: job_messages(fake, USER))
        assert message.reply_to_message_id == sent.message_id
        assert message.kind == "photo" and message.text.startswith("⏳ Queued · position 1")
        assert "a cat waves" in message.text and "seed 7 · 2 s" in message.text
        assert "random noise" in message.text  # the tiny preset says so
        assert [b.text for b in message.buttons] == ["✖ Cancel"]
        assert message.buttons[0].callback_data.startswith("fpb:cancel:")

        job = await worker.claim()
        await worker.start(job)
        preview = await worker.step(job, 0, 1)
        # The start and the step may reach the message in one edit or in two: wait for the step.
        await fake.wait_for(lambda: "section 1/2 · step 1/3" in message.text, timeout=10)
        assert message.kind == "photo" and "Rendering" in message.text
        await fake.wait_for(lambda: message.media == preview.read_bytes(), timeout=10)
        partial = await worker.section(job, 0)
        await fake.wait_for(lambda: message.kind == "video", timeout=10)
        assert message.media == partial.read_bytes()
        assert "Rendering" in message.text and [b.text for b in message.buttons] == ["✖ Cancel"]
        done = await worker.finish(job)
        await fake.wait_for(lambda: message.text.startswith("✅ Done"), timeout=10)
        async with await JobStore.open(settings.database_path) as store:
            # recorded once Telegram answered the edit: a moment after the fake showed it
            for _ in range(200):
                if (await store.get(job.id)).delivered_at is not None:
                    break
                await asyncio.sleep(0.05)
            assert (await store.get(job.id)).delivered_at is not None

    assert message.kind == "video" and message.media == Path(done.result_path).read_bytes()
    assert "rendered in 12 s" in message.text and "seed 7" in message.text
    assert [b.text for b in message.buttons] == ["🎲 Re-roll", "⏩ Extend", "🎨 Remix", "🗑 Delete"]
    kinds = [s.kind for s in message.history]
    assert kinds[0] == "photo" and kinds[-1] == "video"
    heads = [s.text.split("\n")[0] for s in message.history]
    assert heads[0].startswith("⏳ Queued") and heads[-1] == "✅ Done"
    assert any(h.startswith("🎞 Rendering") for h in heads)
    assert len(job_messages(fake, USER)) == 1 and replies(fake, USER) == []
    assert any(a.action == "upload_video" for a in fake.chat_actions)
    assert all(call.ok for call in fake.calls if call.method.startswith("edit"))


async def test_a_reply_to_a_picture_and_an_image_file_both_queue(
    tmp_path: Path, fake: FakeTelegram
) -> None:
    settings = make_settings(tmp_path, fake)
    async with running_bot(settings, fake):
        photo = fake.user_sends_photo(user_id=USER, image=png(color="blue"))
        await fake.wait_for(lambda: replies(fake, USER))  # the hint for a bare picture
        assert "caption /animate" in replies(fake, USER)[0]
        command = fake.user_sends_text(
            user_id=USER, text="/animate the sea moves", reply_to=photo.message_id
        )
        fake.user_sends_document(
            user_id=USER,
            data=png(color="green"),
            file_name="green.png",
            mime_type="image/png",
            caption="/animate grass grows",
        )
        await fake.wait_for(lambda: len(job_messages(fake, USER)) == 2)
    by_prompt = {m.text.split("\n")[1]: m for m in job_messages(fake, USER)}
    assert by_prompt.keys() == {"🎬 the sea moves", "🎬 grass grows"}
    assert by_prompt["🎬 the sea moves"].reply_to_message_id == command.message_id
    assert len(await all_jobs(settings)) == 2


async def test_groups_serve_commands_addressed_to_this_bot_only(
    tmp_path: Path, fake: FakeTelegram
) -> None:
    settings = make_settings(tmp_path, fake)
    group = {"chat_id": GROUP, "chat_type": "group"}
    async with running_bot(settings, fake):
        fake.user_sends_photo(user_id=USER, image=png(), caption="/animate@other_bot x", **group)
        fake.user_sends_text(user_id=USER, text="/queue@other_bot", **group)
        fake.user_sends_photo(
            user_id=USER, image=png(), caption="/animate@framepack_test_bot a dog runs", **group
        )
        await fake.wait_for(lambda: job_messages(fake, GROUP))
        fake.user_sends_text(user_id=USER, text="/queue@framepack_test_bot", **group)
        await fake.wait_for(lambda: replies(fake, GROUP))
    (message,) = job_messages(fake, GROUP)
    assert "a dog runs" in message.text
    assert len(replies(fake, GROUP)) == 1 and "#1" in replies(fake, GROUP)[0]
    assert len(await all_jobs(settings)) == 1


# ---- buttons and commands ----------------------------------------------------------------


async def test_cancel_reroll_and_delete_buttons_for_the_owner_only(
    tmp_path: Path, fake: FakeTelegram, stand_in: StandIns
) -> None:
    settings = make_settings(tmp_path, fake)
    worker = await stand_in(settings)
    async with running_bot(settings, fake):
        fake.user_sends_photo(user_id=USER, image=png(), caption="/animate a cat --seed 1")
        (message,) = await fake.wait_for(lambda: job_messages(fake, USER))
        cancel = message.button("Cancel").callback_data
        # another user in the same chat (a group would do the same) is refused with an alert
        press = {"chat_id": USER, "message_id": message.message_id}
        fake.user_presses_button(user_id=OTHER, data=cancel, **press)
        await fake.wait_for(lambda: fake.answered_callbacks)
        refused = fake.answered_callbacks[-1]
        assert refused.show_alert and "Only the person who asked" in refused.text

        job = await worker.claim()
        await worker.run(job)
        await fake.wait_for(lambda: message.text.startswith("✅ Done"), timeout=10)
        reroll = message.button("Re-roll").callback_data
        fake.user_presses_button(user_id=USER, data=reroll, **press)
        await fake.wait_for(lambda: len(job_messages(fake, USER)) == 2)
        again = job_messages(fake, USER)[1]
        assert again.reply_to_message_id == message.message_id
        assert again.text.startswith("⏳ Queued") and "a cat" in again.text
        assert "seed 1 ·" not in again.text  # a new seed
        assert "Queued again as job" in fake.answered_callbacks[-1].text

        fake.user_presses_button(
            user_id=USER, chat_id=USER, message_id=again.message_id,
            data=again.button("Cancel").callback_data,
        )  # fmt: skip
        await fake.wait_for(lambda: again.text.startswith("✖ Cancelled"))
        assert [b.text for b in again.buttons] == ["🎲 Re-roll", "🎨 Remix", "🗑 Delete"]

        fake.user_presses_button(user_id=USER, data=message.button("Delete").callback_data, **press)
        await fake.wait_for(lambda: message.deleted)
    jobs = await all_jobs(settings)
    assert sorted(j.status for j in jobs) == [JobStatus.CANCELLED, JobStatus.DONE]


async def test_cancel_of_a_running_job_stops_it_at_the_next_step(
    tmp_path: Path, fake: FakeTelegram, stand_in: StandIns
) -> None:
    settings = make_settings(tmp_path, fake)
    worker = await stand_in(settings)
    async with running_bot(settings, fake):
        fake.user_sends_photo(user_id=USER, image=png(), caption="/animate a cat")
        (message,) = await fake.wait_for(lambda: job_messages(fake, USER))
        job = await worker.claim()
        await worker.start(job)
        await worker.step(job, 0, 1)
        await fake.wait_for(lambda: "Rendering" in message.text)
        fake.user_sends_text(user_id=USER, text="/cancel")
        await fake.wait_for(lambda: replies(fake, USER))
        assert replies(fake, USER) == [f"Job #{job.id} is stopping; it ends at the next step."]
        await worker.stop_cancelled(job)  # the worker reads the flag before its next step
        await fake.wait_for(lambda: message.text.startswith("✖ Cancelled"))
        fake.user_sends_text(user_id=USER, text="/cancel")
        await fake.wait_for(lambda: len(replies(fake, USER)) == 2)
    assert replies(fake, USER)[1] == "You have no job waiting or rendering."


async def test_help_queue_status_and_admin_commands(tmp_path: Path, fake: FakeTelegram) -> None:
    settings = make_settings(tmp_path, fake)
    async with running_bot(settings, fake):

        async def ask(*questions: tuple[int, str]) -> list[str]:
            """Several users ask at once (one chat each): their answers."""
            counts = {user: len(replies(fake, user)) for user, _ in questions}
            for user, text in questions:
                fake.user_sends_text(user_id=user, text=text)
            await fake.wait_for(lambda: all(len(replies(fake, u)) > n for u, n in counts.items()))
            return [replies(fake, user)[counts[user]] for user, _ in questions]

        start, admin_help, refused = await ask(
            (USER, "/start"), (ADMIN, "/help"), (OTHER, "/pause")
        )
        assert "random noise" in start and "/animate <prompt>" in start and "Admin" not in start
        assert "Admin: /pause" in admin_help and "for the bot's admins" in refused
        queue, status, unknown = await ask((USER, "/queue"), (OTHER, "/status"), (ADMIN, "/dance"))
        assert "empty" in queue and "no jobs yet" in status and "I don't know /dance" in unknown
        (paused,) = await ask((ADMIN, "/pause"))
        assert "Queue paused" in paused
        fake.user_sends_photo(user_id=USER, image=png(), caption="/animate a cat")
        (message,) = await fake.wait_for(lambda: job_messages(fake, USER))
        assert "paused by an admin" in message.text
        queue, status, resumed = await ask((USER, "/queue"), (OTHER, "/queue"), (ADMIN, "/resume"))
        assert "#1 (you)" in queue and "#1 ·" in status and "resumed" in resumed
        await fake.wait_for(lambda: "paused" not in message.text)
        (status,) = await ask((USER, "/status"))
        assert "#1 queued, position 1" in status
        (banned,) = await ask((ADMIN, f"/ban {USER} spam"))
        assert "banned" in banned
        await fake.wait_for(lambda: message.text.startswith("✖ Cancelled"))
        count = len(replies(fake, USER))
        fake.user_sends_photo(user_id=USER, image=png(), caption="/animate again")
        await fake.wait_for(lambda: len(replies(fake, USER)) > count)
        assert "not allowed" in replies(fake, USER)[-1]
        unbanned, usage = await ask((ADMIN, f"/unban {USER}"), (OTHER, "/cancel soon"))
        assert "may queue jobs again" in unbanned and "Usage: /cancel" in usage
    assert [c["command"] for c in fake.commands][:1] == ["animate"]
    assert len(job_messages(fake, USER)) == 1


async def test_only_the_allowed_chats_are_served(tmp_path: Path, fake: FakeTelegram) -> None:
    settings = make_settings(tmp_path, fake, telegram={"allowed_chats": [GROUP]})
    async with running_bot(settings, fake):
        fake.user_sends_text(user_id=USER, text="/help")
        fake.user_sends_photo(user_id=USER, image=png(), caption="/animate a cat")
        fake.user_sends_text(user_id=USER, text="/help", chat_id=GROUP, chat_type="group")
        await fake.wait_for(lambda: replies(fake, GROUP))
        await fake.wait_for(lambda: fake.pending_updates == 0)
    assert fake.messages(USER) == [] and await all_jobs(settings) == []


# ---- bad input ---------------------------------------------------------------------------


def gif(frames: int) -> bytes:
    images = [Image.new("RGB", (64, 64), c) for c in ("red", "blue", "green")[:frames]]
    out = io.BytesIO()
    images[0].save(out, "GIF", save_all=frames > 1, append_images=images[1:], duration=100)
    return out.getvalue()


BAD_INPUT = {
    "no picture": ({"text": "/animate a cat"}, "I need a picture"),
    "no prompt": ({"photo": True, "caption": "/animate"}, "Say what should happen"),
    "unknown option": ({"photo": True, "caption": "/animate a cat --fps 60"}, "Unknown option"),
    "bad value": ({"photo": True, "caption": "/animate a cat --steps many"}, "whole number"),
    "out of range": ({"photo": True, "caption": "/animate a cat --seconds 999"}, "between 0.5"),
    "bad model": ({"photo": True, "caption": "/animate a cat --model sd"}, "framepack or f1"),
    "bad cache": (
        {"photo": True, "caption": "/animate a cat --cache fast"},
        "--cache must be off, teacache or magcache, not 'fast'",
    ),
    "not an image": (
        {"document": (b"%PDF-1.4 hello", "cat.pdf", "application/pdf")},
        "not a picture I can read",
    ),
    "corrupt": ({"document": (png()[:300], "cut.png", "image/png")}, "damaged"),
    "too many pixels": (
        {"document": (png(1200, 1000), "big.png", "image/png")},
        "megapixels",
    ),
    "animated file": ({"document": (gif(3), "moving.gif", "image/gif")}, "animated"),
    "animation": ({"animation": True}, "animated"),
    "too small": ({"document": (png(8, 8), "tiny.png", "image/png")}, "at least 32"),
    "over 20 MB": (
        {"document": (bytes(21 * MiB), "huge.png", "image/png")},
        "I can take at most 20 MB",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
async def test_bad_input_gets_an_explanation_and_no_job(
    case: str, tmp_path: Path, fake: FakeTelegram
) -> None:
    settings = make_settings(tmp_path, fake, generation={"max_image_pixels": 1_000_000})
    sends, expected = BAD_INPUT[case]
    async with running_bot(settings, fake):
        caption = sends.get("caption", "/animate a cat")
        if "text" in sends:
            fake.user_sends_text(user_id=USER, text=sends["text"])
        elif "photo" in sends:
            fake.user_sends_photo(user_id=USER, image=png(), caption=caption)
        elif "animation" in sends:
            fake.user_sends_animation(user_id=USER, data=gif(3), caption=caption)
        else:
            data, name, mime = sends["document"]
            fake.user_sends_document(
                user_id=USER, data=data, file_name=name, mime_type=mime, caption=caption
            )
        (answer,) = await fake.wait_for(lambda: replies(fake, USER))
    assert expected in answer, answer
    assert job_messages(fake, USER) == [] and await all_jobs(settings) == []
    if case == "over 20 MB":
        assert fake.calls_to("getFile") == [] and fake.downloads == []  # refused before
    assert list((tmp_path / "inputs").glob("*")) == []


async def test_a_local_bot_api_server_hands_the_picture_over_on_disk(tmp_path: Path) -> None:
    """A local server (--local) answers getFile with a path on this machine: the bot
    reads it there, with no download, and queues the job."""
    async with FakeTelegram(local_mode=True) as fake:
        settings = make_settings(tmp_path, fake)
        async with running_bot(settings, fake):
            fake.user_sends_photo(user_id=USER, image=png(color="red"), caption="/animate waves")
            await fake.wait_for(lambda: job_messages(fake, USER))
        (job,) = await all_jobs(settings)
        assert fake.calls_to("getFile") and fake.downloads == []
        with Image.open(job.input_path) as stored:
            assert stored.getpixel((0, 0))[:3] == (255, 0, 0)


# ---- Telegram's limits -------------------------------------------------------------------


async def test_retry_after_is_honoured_and_the_final_delivery_is_never_lost(
    tmp_path: Path, fake: FakeTelegram, stand_in: StandIns
) -> None:
    settings = make_settings(tmp_path, fake)
    worker = await stand_in(settings)
    async with running_bot(settings, fake) as adapter:
        # 3 s: longer than the chat's own pace (1.1 s), so only honouring it waits this long
        fake.force_retry_after("sendPhoto", 3)
        fake.user_sends_photo(user_id=USER, image=png(), caption="/animate a cat")
        (message,) = await fake.wait_for(lambda: job_messages(fake, USER), timeout=10)
        first, second = fake.calls_to("sendPhoto")
        assert first.status == 429 and second.ok and second.at - first.at >= 3.0

        job = await worker.claim()
        fake.force_retry_after("editMessageMedia", 2, times=2)
        await worker.run(job)
        await fake.wait_for(lambda: message.text.startswith("✅ Done"), timeout=15)
    assert message.kind == "video"
    # the video is read from disk as it is sent: each retry sends it whole again
    (done,) = await all_jobs(settings)
    sent_file = Path(done.delivery_path or done.result_path)
    assert message.file is not None and message.file.data == sent_file.read_bytes()
    assert adapter.pacer.retry_afters == 3 and fake.too_many_requests == 3
    media_edits = fake.calls_to("editMessageMedia")
    assert [c.status for c in media_edits[:3]] == [429, 429, 200]
    assert media_edits[1].at - media_edits[0].at >= 2.0
    assert media_edits[2].at - media_edits[1].at >= 2.0


async def test_a_429_in_a_group_holds_that_group_alone(tmp_path: Path, fake: FakeTelegram) -> None:
    """A group's 429 is its own 20-a-minute limit: the group waits its retry_after, a
    private chat goes on meanwhile."""
    settings = make_settings(tmp_path, fake)
    async with running_bot(settings, fake) as adapter:
        fake.force_retry_after("sendPhoto", 3)
        fake.user_sends_photo(
            user_id=USER, image=png(), caption="/animate a cat", chat_id=GROUP, chat_type="group"
        )
        await fake.wait_for(lambda: fake.too_many_requests == 1, timeout=10)
        fake.user_sends_photo(user_id=OTHER, image=png(), caption="/animate a dog")
        await fake.wait_for(
            lambda: job_messages(fake, GROUP) and job_messages(fake, OTHER), timeout=10
        )
    refused, *sent = fake.calls_to("sendPhoto")
    by_chat = {c.params["chat_id"]: c for c in sent}
    assert refused.status == 429 and refused.params["chat_id"] == GROUP
    assert by_chat[GROUP].at - refused.at >= 3.0
    assert by_chat[OTHER].at - refused.at < 2.0  # the private chat did not wait
    assert adapter.pacer.retry_afters == 1


async def test_a_429_in_a_private_chat_holds_every_chat_for_its_retry_after(
    tmp_path: Path, fake: FakeTelegram
) -> None:
    """Our pace keeps each private chat under its limit, so such a 429 is the bot's."""
    settings = make_settings(tmp_path, fake)
    async with running_bot(settings, fake) as adapter:
        fake.force_retry_after("sendPhoto", 2)
        fake.user_sends_photo(user_id=USER, image=png(), caption="/animate a cat")
        await fake.wait_for(lambda: fake.too_many_requests == 1, timeout=10)
        fake.user_sends_photo(user_id=OTHER, image=png(), caption="/animate a dog")
        await fake.wait_for(
            lambda: job_messages(fake, USER) and job_messages(fake, OTHER), timeout=10
        )
    refused, *sent = fake.calls_to("sendPhoto")
    assert refused.status == 429 and [c.ok for c in sent] == [True, True]
    assert all(c.at - refused.at >= 2.0 for c in sent)  # the other user's reply waited too
    assert adapter.pacer.retry_afters == 1


async def test_many_jobs_in_one_group_keep_to_the_flood_limits(
    tmp_path: Path, fake: FakeTelegram, stand_in: StandIns
) -> None:
    """Three users' jobs in one group: sends and edits paced to one a second, no 429."""
    fake.flood = fake.flood.strict()
    settings = make_settings(tmp_path, fake)
    worker = await stand_in(settings)
    group = {"chat_id": GROUP, "chat_type": "group"}
    async with running_bot(settings, fake):
        for user in (USER, OTHER, ADMIN):
            fake.user_sends_photo(user_id=user, image=png(), caption="/animate a cat", **group)
        await fake.wait_for(lambda: len(job_messages(fake, GROUP)) == 3, timeout=10)
        job = await worker.claim()
        await worker.run(job, sections=1, steps=1)
        await fake.wait_for(
            lambda: all(not m.text.startswith("⏳ Queued · position 3") for m in
                        job_messages(fake, GROUP)) and any(
                m.text.startswith("✅") for m in job_messages(fake, GROUP)),
            timeout=15,
        )  # fmt: skip
    assert fake.provoked_429s == 0


async def test_an_unchanged_edit_is_never_sent_and_not_modified_is_taken_as_done(
    tmp_path: Path, fake: FakeTelegram
) -> None:
    settings = make_settings(tmp_path, fake)
    async with running_bot(settings, fake) as adapter:
        fake.user_sends_photo(user_id=USER, image=png(), caption="/animate a cat")
        (message,) = await fake.wait_for(lambda: job_messages(fake, USER))
        store = adapter.store
        (job,) = await store.waiting()
        view = render(job, None, await store.position(job.id), tiny=True)
        await adapter.show(job, view)
        await adapter.show(job, view)
        await asyncio.sleep(0.3)
        assert fake.calls_to("editMessageCaption") == []  # it shows that already
        # A state that lost track (a crash between an edit and its record): Telegram
        # answers "message is not modified", which means it shows what we want.
        ref = await store.message(job.id, PLATFORM)
        await store.update_message_state(job.id, PLATFORM, {**ref.state, "caption": "stale"})
        await adapter.show(job, view)
        await fake.wait_for(lambda: fake.calls_to("editMessageCaption"))
        await asyncio.sleep(0.3)
        (edit,) = fake.calls_to("editMessageCaption")
        assert edit.status == 400 and "not modified" in edit.description
        assert Shown.load((await store.message(job.id, PLATFORM)).state) == Shown.of(view, job.id)
    assert message.edits == 0


async def test_a_long_prompt_is_cut_in_the_caption_and_the_facts_stay(
    tmp_path: Path, fake: FakeTelegram, stand_in: StandIns
) -> None:
    settings = make_settings(tmp_path, fake)
    worker = await stand_in(settings)
    prompt = "🐈 a cat " + "walks slowly across the garden at dawn " * 24
    async with running_bot(settings, fake):
        fake.user_sends_photo(
            user_id=USER, image=png(), caption=f"/animate {prompt[:990]} --seed 31337"
        )
        (message,) = await fake.wait_for(lambda: job_messages(fake, USER))
        job = await worker.claim()
        await worker.run(job)
        await fake.wait_for(lambda: message.text.startswith("✅ Done"), timeout=10)
    for state in message.history:
        assert utf16_len(state.text) <= CAPTION_LIMIT
        assert "seed 31337" in state.text and "random noise" in state.text
        assert "…" in state.text  # the prompt was cut
    assert not any(c.description and "too long" in c.description for c in fake.calls)


async def test_a_video_over_the_upload_limit_arrives_as_the_fitted_copy(
    tmp_path: Path, fake: FakeTelegram, stand_in: StandIns
) -> None:
    """50 MB in earnest; here 1 MB, with the fake refusing larger uploads alike."""
    fake.file_limits = FileLimits(upload=1 * MiB)
    settings = make_settings(tmp_path, fake, telegram={"upload_limit_mb": 1})
    worker = await stand_in(settings)
    async with running_bot(settings, fake):
        for n in range(2):
            fake.user_sends_photo(user_id=USER, image=png(), caption=f"/animate cat {n}")
        await fake.wait_for(lambda: len(job_messages(fake, USER)) == 2)
        fitted_msg, too_big_msg = job_messages(fake, USER)
        job = await worker.claim()
        assert job.upload_limit == 1_000_000  # recorded when it was queued
        await worker.start(job, 1, 1)
        fitted = await worker.finish(job, size=2 * MiB, delivery_size=600_000)
        await fake.wait_for(lambda: fitted_msg.text.startswith("✅ Done"), timeout=10)
        job = await worker.claim()
        await worker.start(job, 1, 1)
        await worker.finish(job, size=2 * MiB)  # no copy fits (the worker could not fit it)
        await fake.wait_for(lambda: too_big_msg.text.startswith("✅ Done"), timeout=10)
    assert fitted_msg.kind == "video"
    assert fitted_msg.media == Path(fitted.delivery_path).read_bytes()
    assert too_big_msg.kind == "photo" and "more than the 1 MB Telegram lets" in too_big_msg.text
    assert not any(c.status == 413 for c in fake.calls)


async def test_a_lower_upload_limit_than_configured_is_learnt_from_telegram(
    tmp_path: Path, fake: FakeTelegram, stand_in: StandIns
) -> None:
    fake.file_limits = FileLimits(upload=1 * MiB)  # the server takes less than the config says
    settings = make_settings(tmp_path, fake, telegram={"upload_limit_mb": 50})
    worker = await stand_in(settings)
    async with running_bot(settings, fake):
        fake.user_sends_photo(user_id=USER, image=png(), caption="/animate a cat")
        (message,) = await fake.wait_for(lambda: job_messages(fake, USER))
        job = await worker.claim()
        await worker.start(job, 1, 1)
        done = await worker.finish(job, size=2 * MiB, delivery_size=2 * MiB)
        await fake.wait_for(lambda: message.text.startswith("✅ Done"), timeout=10)
    assert message.kind == "photo" and "Telegram refused the video (2.1 MB)" in message.text
    assert Path(done.result_path).exists()


def test_upload_limits_follow_the_server() -> None:
    assert upload_limit(TelegramSettings()) == 50_000_000
    assert upload_limit(TelegramSettings(base_url="http://localhost:8081/bot")) == 2_000_000_000
    assert upload_limit(TelegramSettings(upload_limit_mb=20)) == 20_000_000


def test_callback_data_names_the_action_and_the_job() -> None:
    assert parse_callback("fpb:reroll:12") == ("reroll", 12)
    assert parse_callback("fpb:explode:12") is None
    assert parse_callback("other:cancel:1") is None
    assert parse_callback("fpb:cancel:") is None


# ---- restarts ----------------------------------------------------------------------------


async def test_a_restarted_bot_edits_the_same_message_and_delivers_once(
    tmp_path: Path, fake: FakeTelegram, stand_in: StandIns
) -> None:
    settings = make_settings(tmp_path, fake)
    worker = await stand_in(settings)
    async with running_bot(settings, fake):
        fake.user_sends_photo(user_id=USER, image=png(), caption="/animate a cat")
        (message,) = await fake.wait_for(lambda: job_messages(fake, USER))
        job = await worker.claim()
        await worker.start(job)
        await worker.step(job, 0, 1)
        await fake.wait_for(lambda: "Rendering" in message.text)
    # the bot is down: the job goes on and finishes
    await worker.step(job, 0, 3)
    await worker.section(job, 0)
    await worker.section(job, 1)
    await worker.finish(job)
    async with running_bot(settings, fake):
        await fake.wait_for(lambda: message.text.startswith("✅ Done"), timeout=10)
        cancel_press = message.history[0].keyboard[0][0].callback_data
    async with running_bot(settings, fake) as adapter:  # and once more: nothing is sent again
        await settled(adapter)
    assert len(job_messages(fake, USER)) == 1
    assert [s.text.startswith("✅ Done") for s in message.history].count(True) == 1
    assert message.kind == "video"
    # queued, rendering, then the video: the restarted bot edited the same message
    heads = [s.text.split()[0] for s in message.history]
    assert heads[0] == "⏳" and heads[-1] == "✅" and set(heads[1:-1]) == {"🎞"}, heads
    assert parse_callback(cancel_press) == ("cancel", job.id)


async def test_a_job_message_deleted_by_the_user_gets_its_video_in_a_new_reply(
    tmp_path: Path, fake: FakeTelegram, stand_in: StandIns
) -> None:
    settings = make_settings(tmp_path, fake)
    worker = await stand_in(settings)
    async with running_bot(settings, fake):
        sent = fake.user_sends_photo(user_id=USER, image=png(), caption="/animate a cat")
        (message,) = await fake.wait_for(lambda: job_messages(fake, USER))
        message.deleted = True  # "delete for both" in a private chat
        job = await worker.claim()
        await worker.run(job)
        await fake.wait_for(lambda: len(job_messages(fake, USER)) == 2, timeout=10)
    video = job_messages(fake, USER)[1]
    assert video.kind == "video" and video.text.startswith("✅ Done")
    assert video.reply_to_message_id == sent.message_id


async def test_a_caption_fits_even_when_emoji_count_twice() -> None:
    from bot.progress import JobView, Media
    from bot.telegram.render import caption

    view = JobView(
        job_id=3,
        status=JobStatus.QUEUED,
        headline="⏳ Queued · position 1",
        prompt="🐈" * 2000,
        details=("seed 1 · 5 s · 25 steps · framepack",),
        media=Media("photo", "/x.png"),
        buttons=(),
        final=False,
    )
    text = caption(view, 3)
    assert utf16_len(text) <= CAPTION_LIMIT and text.endswith("job #3")
    assert "seed 1" in text
    assert dataclasses.replace(view, prompt="short").text() in caption(
        dataclasses.replace(view, prompt="short"), 3
    )


async def test_an_unexpected_error_is_logged_and_the_user_told(
    tmp_path: Path, fake: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(tmp_path, fake)
    async with running_bot(settings, fake) as adapter:

        async def broken(*args: object, **kwargs: object) -> str:
            raise RuntimeError("the disk is on fire")

        adapter.service.queue_text = broken  # type: ignore[method-assign]
        adapter.service.owned_job = broken  # type: ignore[method-assign]
        fake.user_sends_text(user_id=USER, text="/queue")
        (answer,) = await fake.wait_for(lambda: replies(fake, USER))
        fake.user_sends_photo(user_id=OTHER, image=png(), caption="/animate a cat")
        (message,) = await fake.wait_for(lambda: job_messages(fake, OTHER))
        fake.user_presses_button(
            user_id=OTHER, chat_id=OTHER, message_id=message.message_id,
            data=message.button("Cancel").callback_data,
        )  # fmt: skip
        (alert,) = await fake.wait_for(lambda: fake.answered_callbacks)
    assert answer.startswith("⚠️ Something went wrong on my side")
    assert alert.show_alert and alert.text.startswith("⚠️ Something went wrong")
    failures = [r for r in caplog.records if "an update failed" in r.getMessage()]
    assert len(failures) == 2 and "the disk is on fire" in str(failures[0].exc_info[1])


SERVE_WITH_IDLE_WORKER = """
import asyncio, sys
from bot.app import run_bots
from framepack_bot.commands import configure_logging
from framepack_bot.supervisor import serve
from storage.config import load_settings

settings = load_settings(sys.argv[1])
configure_logging(settings)
idle = [sys.executable, "-c", "import time; time.sleep(60)"]
sys.exit(asyncio.run(serve(settings, run_bots, command=idle)))
"""


async def test_a_wrong_token_or_no_bot_api_stops_run_with_a_sentence(
    tmp_path: Path, fake: FakeTelegram
) -> None:
    """What the host sees when `framepack-bot run` cannot start the bot: one line that
    says what to fix, exit code 1, no traceback (and never the token)."""
    import os
    import sys

    from tests.telegram_harness import config_data, write_config

    repo = Path(__file__).resolve().parents[1]
    closed = FakeTelegram()
    await closed.start()
    unreachable = closed.base_url
    await closed.stop()  # its port now refuses connections
    cases = [
        ({}, "123456:WRONG", "Telegram refused the bot token (from the environment variable "
         "FPB_TEST_TELEGRAM_TOKEN)"),
        ({"base_url": unreachable}, fake.token, f"cannot reach the Bot API at {unreachable}"),
    ]  # fmt: skip
    for telegram, token, said in cases:
        config = write_config(
            tmp_path / "config.toml", config_data(tmp_path / "data", fake, telegram=telegram)
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", SERVE_WITH_IDLE_WORKER, str(config),
            cwd=repo,
            env={**os.environ, "FPB_TEST_TELEGRAM_TOKEN": token, "PYTHONPATH": str(repo)},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        log = out.decode()
        assert proc.returncode == 1, log
        assert said in log, log
        assert "Traceback" not in log and "WRONG" not in log, log
        assert fake.token not in log, log


# ---- an outage of the Bot API -------------------------------------------------------------


@pytest.mark.parametrize("held", [False, True], ids=["500s", "held requests"])
async def test_an_animate_sent_during_an_outage_is_served_when_the_api_answers_again(
    held: bool, tmp_path: Path, fake: FakeTelegram, monkeypatch: pytest.MonkeyPatch
) -> None:
    """getFile and the download fail for a while (500s, or requests nobody answers):
    the member still gets the job's message once Telegram answers, not silence."""
    from telegram.request import HTTPXRequest

    if held:  # held requests end by the client's own timeout: a short one keeps this fast
        real_init = HTTPXRequest.__init__

        def short(self: HTTPXRequest, *args: object, **kwargs: object) -> None:
            real_init(self, *args, **{**kwargs, "read_timeout": 1.0})  # type: ignore[arg-type]

        monkeypatch.setattr(HTTPXRequest, "__init__", short)
    settings = make_settings(tmp_path, fake)
    async with running_bot(settings, fake):
        fake.outage(6.0, held=held)
        sent = fake.user_sends_photo(user_id=USER, image=png(), caption="/animate a cat waves")
        (message,) = await fake.wait_for(lambda: job_messages(fake, USER), timeout=30)
    assert message.reply_to_message_id == sent.message_id
    assert message.text.startswith("⏳ Queued")
    assert any(not c.ok for c in fake.calls_to("getFile")) or held  # the outage was met
    assert replies(fake, USER) == []  # no "something went wrong"


async def test_odd_job_numbers_and_forged_buttons_get_an_answer_not_a_crash(
    tmp_path: Path, fake: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    """Numbers no job can have, digits that are not 0-9, data without our prefix: each
    is answered with a sentence (a button that spins until Telegram gives up, or
    "something went wrong" with a traceback, was what they got)."""
    settings = make_settings(tmp_path, fake)
    async with running_bot(settings, fake):
        fake.user_sends_photo(user_id=USER, image=png(), caption="/animate a cat")
        (message,) = await fake.wait_for(lambda: job_messages(fake, USER))
        for text in ("/cancel 99999999999999999999", "/cancel ²", "/cancel " + "9" * 5000):
            fake.user_sends_text(user_id=USER, text=text)
        await fake.wait_for(lambda: len(replies(fake, USER)) == 3, timeout=10)
        forged = ["fpb:delete:" + "1" * 20, "fpb:cancel:²", "fpb:reroll:", "other:thing", "x"]
        for data in forged:
            fake.user_presses_button(
                user_id=USER, chat_id=USER, message_id=message.message_id, data=data, forged=True
            )
        await fake.wait_for(lambda: len(fake.answered_callbacks) == len(forged), timeout=10)
    assert replies(fake, USER) == ["Usage: /cancel [job number], e.g. /cancel 12"] * 3
    answers = [a.text for a in fake.answered_callbacks]
    assert answers == ["This button does not work any more."] * len(forged), answers
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


async def test_an_edit_telegram_refuses_is_tried_again_not_taken_as_shown(
    tmp_path: Path, fake: FakeTelegram, stand_in: StandIns, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only "message is not modified" means the message shows the view already. Any
    other 400 leaves it showing the old one: the edit is tried again, even when the job
    changes no more (it was recorded as shown and never sent again)."""
    monkeypatch.setattr("bot.tracker.RETRY_EDIT", 0.5)
    settings = make_settings(tmp_path, fake)
    worker = await stand_in(settings)
    async with running_bot(settings, fake):
        fake.user_sends_photo(user_id=USER, image=png(), caption="/animate a cat")
        (message,) = await fake.wait_for(lambda: job_messages(fake, USER))
        fake.force_error("editMessageCaption", "Bad Request: message caption is too long")
        job = await worker.claim()
        await worker.start(job)  # the one change: it renders
        await fake.wait_for(lambda: "Rendering" in message.text, timeout=15)
    refused, *later = fake.calls_to("editMessageCaption")
    assert refused.status == 400 and later and later[0].ok


async def test_a_prompt_with_control_characters_is_cleaned_and_the_member_told(
    tmp_path: Path, fake: FakeTelegram
) -> None:
    settings = make_settings(tmp_path, fake)
    async with running_bot(settings, fake):
        fake.user_sends_photo(
            user_id=USER, image=png(), caption="/animate a cat\x00 walks\u202e backwards\x1b[0m"
        )
        (message,) = await fake.wait_for(lambda: job_messages(fake, USER))
    assert "a cat walks backwards[0m" in message.text
    assert "\x00" not in message.text and "\u202e" not in message.text
    assert "Invisible control characters were removed from the prompt." in message.text
    (job,) = await all_jobs(settings)
    assert job.params.prompt == "a cat walks backwards[0m"
