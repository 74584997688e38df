"""End to end on Telegram: the real bot process and the real GPU worker (tiny model,
64 px, a few steps) against the fake Bot API on this test's loop.

- `framepack-bot run` (the bot and its supervised worker): a photo with /animate
  gives one reply message that goes queued → rendering with a preview → partial
  video → the finished video; re-roll queues a new job with a new seed; a job's cancel
  button stops it while it renders; two users are served in the fair order; bad input
  is explained and queues nothing.
- The bot process killed in the middle of a job (the worker a process of its own
  goes on): started again, it delivers the video, fitted to the upload limit, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from framepack.video.probe import probe
from storage.records import JobStatus
from storage.store import JobStore
from tests.fakes.telegram_api import FakeTelegram, FileLimits, Message
from tests.telegram_harness import (
    ADMIN,
    OTHER,
    USER,
    config_data,
    job_messages,
    png,
    replies,
    write_config,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:.*retry_after.*:DeprecationWarning"),
]

REPO = Path(__file__).resolve().parents[1]
WAIT = 120.0  # seconds for a worker to start (torch, the tiny model) and render


def e2e_config(tmp_path: Path, fake: FakeTelegram) -> Path:
    """The tiny model at 64 px on the CPU, an event every step, quick heartbeats."""
    document = config_data(
        tmp_path / "data",
        fake,
        model={"device": "cpu"},
        # many steps, so that each section takes longer than an edit (about 2 s at 64 px)
        generation={"resolution": 64, "max_steps": 100},
        queue={
            "max_waiting_per_user": 10,
            "max_video_seconds_per_day": 0.0,
            "heartbeat_timeout": 5.0,
        },
        worker={"heartbeat_seconds": 0.5, "step_event_interval": 0.0},
    )
    return write_config(tmp_path / "config.toml", document)


@contextlib.asynccontextmanager
async def process(
    args: Sequence[str], log_path: Path, fake: FakeTelegram
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A subprocess of this repository's Python, stopped with SIGINT at the end."""
    env = {**os.environ, "FPB_TEST_TELEGRAM_TOKEN": fake.token, "PYTHONPATH": str(REPO)}
    with log_path.open("ab") as log:  # a file, not a pipe: a full pipe would block it
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *args, cwd=REPO, env=env,
            stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
        )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 60)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def heads(message: Message) -> list[str]:
    """The first line of every state the message went through."""
    return [state.text.split("\n")[0] for state in message.history]


def done(message: Message) -> bool:
    return message.kind == "video" and message.text.startswith("✅ Done")


async def job_of(config: Path, job_id: int) -> object:
    async with await JobStore.open(config.parent / "data" / "framepack-bot.sqlite3") as store:
        return await store.get(job_id)


async def test_animate_reroll_cancel_and_fair_turns_with_framepack_bot_run(
    tmp_path: Path,
) -> None:
    async with FakeTelegram() as fake:
        config = e2e_config(tmp_path, fake)
        log_path = tmp_path / "run.log"
        run = ["-m", "framepack_bot.cli", "run", "--config", str(config)]
        async with process(run, log_path, fake) as bot:
            await fake.wait_for(lambda: fake.waiting_polls or bot.returncode is not None, 30)
            assert bot.returncode is None, log_path.read_text()

            # ---- one job, from the photo to the finished video ----------------------
            sent = fake.user_sends_photo(
                user_id=USER,
                image=png(160, 120, "orange"),
                caption="/animate a red square turns --seconds 3.6 --steps 80 --seed 5",
            )
            (message,) = await fake.wait_for(lambda: job_messages(fake, USER))
            assert message.reply_to_message_id == sent.message_id
            assert message.kind == "photo" and heads(message)[0].startswith("⏳ Queued")
            await fake.wait_for(lambda: done(message), WAIT)

            # ---- re-roll it: a new job with a new seed, in a message of its own -------
            press = {"user_id": USER, "chat_id": USER}
            fake.user_presses_button(
                message_id=message.message_id, data=message.button("Re-roll").callback_data, **press
            )
            await fake.wait_for(lambda: len(job_messages(fake, USER)) == 2)
            again = job_messages(fake, USER)[1]
            assert again.reply_to_message_id == message.message_id
            await fake.wait_for(lambda: done(again), WAIT)

            # ---- cancel a job while it renders ------------------------------------
            fake.user_sends_photo(
                user_id=USER, image=png(160, 120, "gray"),
                caption="/animate a long one --seconds 12 --steps 8",
            )  # fmt: skip
            await fake.wait_for(lambda: len(job_messages(fake, USER)) == 3)
            long = job_messages(fake, USER)[2]
            await fake.wait_for(lambda: long.text.startswith("🎞 Rendering"), WAIT)
            fake.user_presses_button(
                message_id=long.message_id, data=long.button("Cancel").callback_data, **press
            )
            await fake.wait_for(lambda: long.text.startswith("✖ Cancelled"), WAIT)

            # ---- bad input: explained, nothing queued ------------------------------
            fake.user_sends_document(
                user_id=OTHER, data=b"just some text", file_name="x.gif", mime_type="image/gif",
                caption="/animate a cat",
            )  # fmt: skip
            fake.user_sends_photo(user_id=OTHER, image=png(), caption="/animate a cat --fps 9")
            await fake.wait_for(lambda: len(replies(fake, OTHER)) == 2)

            # ---- fair turns: USER, served just now, queues two; OTHER's one goes first --
            fake.user_sends_text(user_id=ADMIN, text="/pause")
            await fake.wait_for(lambda: replies(fake, ADMIN))
            small = "--seconds 1 --steps 1"
            fake.user_sends_photo(user_id=USER, image=png(), caption=f"/animate first {small}")
            await fake.wait_for(lambda: len(job_messages(fake, USER)) == 4)
            fake.user_sends_photo(user_id=USER, image=png(), caption=f"/animate second {small}")
            await fake.wait_for(lambda: len(job_messages(fake, USER)) == 5)
            fake.user_sends_photo(user_id=OTHER, image=png(), caption=f"/animate other {small}")
            (other,) = await fake.wait_for(lambda: job_messages(fake, OTHER))
            first, second = job_messages(fake, USER)[3:]
            assert other.text.startswith("⏳ Queued · position 1")
            await fake.wait_for(
                lambda: (
                    first.text.startswith("⏳ Queued · position 2")
                    and second.text.startswith("⏳ Queued · position 3")
                ),
                10,
            )
            fake.user_sends_text(user_id=ADMIN, text="/resume")
            await fake.wait_for(lambda: all(done(m) for m in (first, second, other)), WAIT)

        log = log_path.read_text()
        assert bot.returncode == 0, log
        assert "Traceback" not in log, log

    # What the user saw of the first job, in order.
    states = message.history
    assert heads(message)[0].startswith("⏳ Queued") and states[0].kind == "photo"
    rendering = [s for s in states if s.text.startswith("🎞 Rendering")]
    previews = [s for s in rendering if s.kind == "photo" and s.file != states[0].file]
    partials = [s for s in rendering if s.kind == "video"]
    assert previews, heads(message)  # the preview picture of a step
    assert partials, heads(message)  # a partial video after a section
    assert any("section 1/3 · step" in s.text for s in rendering)
    assert states.index(previews[0]) < states.index(partials[0]) < len(states) - 1
    assert [h for h in heads(message) if h == "✅ Done"] == ["✅ Done"]
    job = await job_of(config, 1)
    assert job.status is JobStatus.DONE and job.delivered_at is not None
    assert message.media == Path(job.delivery_path).read_bytes()
    received = tmp_path / "received.mp4"
    received.write_bytes(message.media)
    assert probe(received).frames == 109  # the whole video: three sections
    assert "seed 5" in message.text and "rendered in" in message.text
    assert "random noise" in message.text
    assert [b.text for b in message.buttons] == ["🎲 Re-roll", "⏩ Extend", "🎨 Remix", "🗑 Delete"]
    assert any(a.action == "upload_video" for a in fake.chat_actions)

    # The re-roll: the same picture and prompt, a new seed, rendered too.
    reroll = await job_of(config, 2)
    assert reroll.status is JobStatus.DONE and reroll.params.seed != 5
    assert f"seed {reroll.params.seed}" in again.text and "a red square turns" in again.text

    # The cancel: stopped while it rendered, the message says so.
    cancelled = await job_of(config, 3)
    assert cancelled.status is JobStatus.CANCELLED and cancelled.started_at is not None
    assert any(h.startswith("🎞 Rendering") for h in heads(long))
    assert [b.text for b in long.buttons] == ["🎲 Re-roll", "🎨 Remix", "🗑 Delete"]

    # Bad input: each explained, no job for it.
    answers = sorted(replies(fake, OTHER))  # handled concurrently: in either order
    assert "not a picture I can read" in answers[0] and "Unknown option --fps" in answers[1]
    assert len(job_messages(fake, OTHER)) == 1

    # Fair turns: OTHER's job ran before USER's two (USER was served just before), as
    # the positions in the messages said.
    started = [(await job_of(config, job_id)).started_at for job_id in (6, 4, 5)]
    assert started == sorted(started)  # jobs 4, 5: USER's; 6: OTHER's
    assert fake.provoked_429s == 0


async def log_says(path: Path, words: str, *, times: int, timeout: float = 30.0) -> None:
    """Wait until the log at `path` has `words` at least `times` times."""
    deadline = asyncio.get_running_loop().time() + timeout
    while path.read_text(errors="replace").count(words) < times:
        assert asyncio.get_running_loop().time() < deadline, f"no {words!r} in {path}"
        await asyncio.sleep(0.1)


async def test_a_killed_bot_delivers_the_video_once_when_it_starts_again(tmp_path: Path) -> None:
    upload_limit = 50_000  # stands in for Telegram's 50 MB: the tiny video is larger
    async with FakeTelegram() as fake:
        fake.file_limits = FileLimits(upload=upload_limit)
        config = e2e_config(tmp_path, fake)
        bot_args = [
            "-m", "tests.telegram_bot_process", "--config", str(config),
            "--upload-limit", str(upload_limit),
        ]  # fmt: skip
        worker_args = ["-m", "framepack_bot.cli", "worker", "--config", str(config)]
        bot_log, worker_log = tmp_path / "bot.log", tmp_path / "worker.log"
        async with process(worker_args, worker_log, fake):
            async with process(bot_args, bot_log, fake) as bot:
                await fake.wait_for(lambda: fake.waiting_polls, 30)
                fake.user_sends_photo(
                    user_id=USER,
                    image=png(160, 120, "purple"),
                    caption="/animate a purple square grows --seconds 3.6 --steps 80",
                )
                (message,) = await fake.wait_for(lambda: job_messages(fake, USER))
                await fake.wait_for(lambda: message.text.startswith("🎞 Rendering"), WAIT)
                bot.kill()  # SIGKILL: no goodbye, no last edit
                await bot.wait()
            seen_while_up = len(message.history)

            async def finished() -> bool:
                return (await job_of(config, 1)).status is JobStatus.DONE

            while not await finished():  # the worker goes on while the bot is down
                await asyncio.sleep(0.2)
            assert len(message.history) == seen_while_up  # nobody edited it meanwhile
            assert not done(message)

            async with process(bot_args, bot_log, fake):
                await fake.wait_for(lambda: done(message), 30)
                await log_says(bot_log, "job 1 delivered (done)", times=1)
            async with process(bot_args, bot_log, fake):  # and once more: nothing to deliver
                # its start-up pass has run (it found nothing undelivered), and edited nothing
                await log_says(bot_log, "tracker: the start-up pass is done", times=3)

    log = bot_log.read_text()
    assert "Traceback" not in log, log
    for text in (log, worker_log.read_text()):  # the whole run's logs, not the start only
        assert fake.token not in text and fake.token.split(":")[1] not in text
    assert len(job_messages(fake, USER)) == 1 and replies(fake, USER) == []
    finals = [s for s in message.history if s.text.startswith("✅ Done")]
    assert len(finals) == 1 and finals[0].kind == "video"
    job = await job_of(config, 1)
    assert job.delivered_at is not None
    assert Path(job.result_path).stat().st_size > upload_limit  # too large as rendered
    assert message.media == Path(job.delivery_path).read_bytes()  # the copy fitted to it
    assert len(message.media) <= upload_limit
    received = tmp_path / "received.mp4"
    received.write_bytes(message.media)
    assert probe(received).frames == 109
    assert not any(c.status == 413 for c in fake.calls)


async def test_extend_and_remix_render_after_a_restart(tmp_path: Path) -> None:
    """A finished job's Extend and Remix, pressed after the bot restarted: each renders
    a new video that arrives; the extension's is the whole clip; another member's
    press is refused."""
    async with FakeTelegram() as fake:
        config = e2e_config(tmp_path, fake)
        log_path = tmp_path / "run.log"
        run = ["-m", "framepack_bot.cli", "run", "--config", str(config)]
        async with process(run, log_path, fake):
            await fake.wait_for(lambda: fake.waiting_polls, 30)
            fake.user_sends_photo(
                user_id=USER, image=png(160, 120, "orange"),
                caption="/animate a red square turns --seconds 1 --steps 2 --seed 5",
            )  # fmt: skip
            (message,) = await fake.wait_for(lambda: job_messages(fake, USER))
            await fake.wait_for(lambda: done(message), WAIT)

        async with process(run, log_path, fake):  # a new bot process: the buttons still work
            await fake.wait_for(lambda: fake.waiting_polls, 30)
            press = {"chat_id": USER, "message_id": message.message_id}
            fake.user_presses_button(
                user_id=OTHER, data=message.button("Extend").callback_data, **press
            )
            await fake.wait_for(lambda: fake.answered_callbacks, 30)
            assert "Only the person who asked" in (fake.answered_callbacks[-1].text or "")

            fake.user_presses_button(
                user_id=USER, data=message.button("Extend").callback_data, **press
            )
            await fake.wait_for(lambda: len(job_messages(fake, USER)) == 2, 30)
            extension = job_messages(fake, USER)[1]
            await fake.wait_for(lambda: done(extension), WAIT)

            fake.user_presses_button(
                user_id=USER, data=message.button("Remix").callback_data, **press
            )
            question = await fake.wait_for(
                lambda: next((m for m in fake.messages(USER) if m.state.force_reply), None), 30
            )
            fake.user_sends_text(
                user_id=USER, text="a blue square turns", reply_to=question.message_id
            )
            await fake.wait_for(lambda: len(job_messages(fake, USER)) == 3, 30)
            remix = job_messages(fake, USER)[2]
            await fake.wait_for(lambda: done(remix), WAIT)

        log = log_path.read_text()
        assert "Traceback" not in log, log

    def frames_of(m: Message) -> int:
        path = tmp_path / f"received-{m.message_id}.mp4"
        path.write_bytes(m.media)
        return probe(path).frames

    extended, remixed = await job_of(config, 2), await job_of(config, 3)
    assert extended.params.extend_of == 1 and remixed.params.prompt == "a blue square turns"
    assert frames_of(message) == 37  # one section
    seconds = extended.params.seconds  # the host's default length, added to the clip
    new = int(max(round(seconds * 30 / 36), 1)) * 36
    assert frames_of(extension) == 37 + new  # the whole clip: the old part, then the new
    assert frames_of(remix) == 37 and remixed.params.seed == 5  # same seed, new prompt
    assert "a blue square turns" in remix.text
