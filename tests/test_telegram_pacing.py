"""Nobody waits behind somebody else: a group at Telegram's 20-a-minute pace holds up
no private chat, and inside the group finished videos go out first, in the order
the jobs finished, ahead of progress edits. The group's pace is shortened (5 in 6 s)
for speed, in the bot and in the fake alike."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage.records import Job
from tests.fakes.telegram_api import FakeTelegram, FloodLimits, Limit, Message
from tests.telegram_harness import (
    GROUP,
    StandInWorker,
    job_messages,
    make_settings,
    png,
    running_bot,
)

GROUP_LIMIT = Limit(5, 6.0)


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeTelegram]:
    monkeypatch.setattr("bot.telegram.pacing.GROUP_PACE", [(5, 6.2)])
    flood = FloodLimits(per_chat=Limit(3, 3.0), per_group=GROUP_LIMIT, overall=Limit(30, 1.0))
    async with FakeTelegram(flood=flood) as tg:
        yield tg


def done_at(message: Message) -> float:
    """When the fake took the edit that made a job's message "✅ Done"."""
    return next(s.at for s in message.history if s.text.startswith("✅ Done"))


def progress_edits(message: Message) -> list[float]:
    return [s.at for s in message.history[1:] if not s.text.startswith("✅")]


async def test_a_group_at_its_pace_holds_up_no_private_chat(
    tmp_path: Path, fake: FakeTelegram
) -> None:
    settings = make_settings(tmp_path, fake)
    worker = await StandInWorker.open(settings)
    group = {"chat_id": GROUP, "chat_type": "group"}
    try:
        async with running_bot(settings, fake):
            for user in (301, 302, 303):
                fake.user_sends_photo(user_id=user, image=png(), caption="/animate a cat", **group)
            await fake.wait_for(lambda: len(job_messages(fake, GROUP)) == 3, timeout=30)
            fake.user_sends_photo(user_id=401, image=png(), caption="/animate a dog")
            (private,) = await fake.wait_for(lambda: job_messages(fake, 401), timeout=30)
            # the group's jobs run first and fill its pace with their edits
            jobs: list[Job] = [await worker.claim() for _ in range(3)]
            for job in jobs:
                await worker.run(job, sections=2, steps=2)
            private_job = await worker.claim()
            await worker.run(private_job, sections=1, steps=1)
            finished = time.monotonic()
            await fake.wait_for(lambda: private.text.startswith("✅ Done"), timeout=30)
            waited = time.monotonic() - finished
            group_backlog = not all(m.text.startswith("✅") for m in job_messages(fake, GROUP))
    finally:
        await worker.close()
    assert group_backlog, "the group was not at its pace: the test proves nothing"
    assert waited < 4.0, f"the private video waited {waited:.1f} s behind the group"
    assert fake.provoked_429s == 0


async def test_in_a_group_videos_go_first_in_the_order_they_finished(
    tmp_path: Path, fake: FakeTelegram
) -> None:
    settings = make_settings(tmp_path, fake)
    worker = await StandInWorker.open(settings)
    group = {"chat_id": GROUP, "chat_type": "group"}
    try:
        async with running_bot(settings, fake):
            # A queues two jobs, then B one: the fair order runs A0, B0, A1
            fake.user_sends_photo(user_id=501, image=png(), caption="/animate a0", **group)
            await fake.wait_for(lambda: len(job_messages(fake, GROUP)) == 1, timeout=30)
            fake.user_sends_photo(user_id=501, image=png(), caption="/animate a1", **group)
            await fake.wait_for(lambda: len(job_messages(fake, GROUP)) == 2, timeout=30)
            fake.user_sends_photo(user_id=502, image=png(), caption="/animate b0", **group)
            await fake.wait_for(lambda: len(job_messages(fake, GROUP)) == 3, timeout=30)
            a0, b0, a1 = [await worker.claim() for _ in range(3)]
            assert [j.params.prompt for j in (a0, b0, a1)] == ["a0", "b0", "a1"]
            await worker.run(a0, sections=2, steps=2)
            await worker.run(b0, sections=1, steps=1)
            # a1 renders on: its progress edits wait behind b0's video in the group's pace
            await worker.start(a1, 2, 3)
            for step in (1, 2, 3):
                await worker.step(a1, 0, step, sections=2, steps=3)
            a0_message, a1_message, b0_message = job_messages(fake, GROUP)  # as they were sent
            await fake.wait_for(
                lambda: all(m.text.startswith("✅ Done") for m in (a0_message, b0_message)),
                timeout=60,
            )
            await fake.wait_for(lambda: progress_edits(a1_message), timeout=60)
    finally:
        await worker.close()
    assert done_at(a0_message) < done_at(b0_message)
    assert min(progress_edits(a1_message)) > done_at(b0_message), "an edit went before a video"
    assert fake.provoked_429s == 0
