"""A full disk fails nothing: on a real, small file system (a tmpfs of a few MB), a
job whose disk fills up while it renders goes back to the queue and resumes where
it stopped once there is room; no job is claimed meanwhile; an /animate meanwhile
is told why; the queued job's message says so; the admins are told, both ways."""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bot.progress import DISK_FULL_NOTE
from framepack.worker.engines import EngineSlot
from framepack.worker.loop import Worker
from storage.records import EventKind, JobStatus
from tests.engine_fixtures import tiny_engine
from tests.fakes.telegram_api import FakeTelegram
from tests.telegram_harness import (
    ADMIN,
    USER,
    job_messages,
    make_settings,
    png,
    replies,
    running_bot,
)
from tests.worker_fixtures import events_of, kinds, open_store


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MB tmpfs, a file system of its own that really fills up."""
    where = tmp_path / "disk"
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"this machine does not let the tests mount a tmpfs: {mounted.stderr}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path) -> Path:
    """Take every free byte of the disk; returns the filler file."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for chunk in (1 << 20, 4096, 1):
            while True:
                try:
                    os.write(fd, b"\0" * chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    return filler


def told(fake: FakeTelegram, words: str) -> bool:
    """Whether an admin got a private message with these words."""
    return any(words in text for text in replies(fake, ADMIN))


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as tg:
        yield tg


@pytest.mark.slow
async def test_a_disk_that_fills_up_under_a_job_delays_it_and_fails_nothing(
    small_disk: Path, fake: FakeTelegram
) -> None:
    settings = make_settings(
        small_disk / "data",
        fake,
        model={"device": "cpu"},
        generation={"resolution": 64},
        storage={"min_free_mb": 2.0},
        worker={"heartbeat_seconds": 0.5, "step_event_interval": 0.0},
    )
    store = await open_store(settings)
    slot = EngineSlot(lambda preset, memory: tiny_engine(), preset="tiny", memory="auto")
    worker = Worker(store, settings, slot, worker_id="w-disk")
    working = asyncio.create_task(worker.run())
    try:
        async with running_bot(settings, fake):
            fake.user_sends_text(user_id=ADMIN, text="/start")  # a bot writes to who wrote first
            await fake.wait_for(lambda: replies(fake, ADMIN), timeout=10)
            fake.user_sends_photo(
                user_id=USER, image=png(), caption="/animate a cat --seconds 2 --steps 12"
            )
            (message,) = await fake.wait_for(lambda: job_messages(fake, USER), timeout=10)
            [job] = await store.jobs_of("telegram", str(USER))

            async def first_section_done() -> bool:
                return bool(kinds(await events_of(store, job.id), EventKind.SECTION))

            while not await first_section_done():
                await asyncio.sleep(0.05)
            filler = fill(small_disk)

            # not failed: its message and the admins say why it waits
            await fake.wait_for(lambda: DISK_FULL_NOTE.split(":")[0] in message.text, timeout=30)
            await fake.wait_for(lambda: told(fake, "disk of the data dir is full"), timeout=10)
            assert (await store.get(job.id)).status is JobStatus.RUNNING  # held, to resume

            # an /animate meanwhile is told why nothing is queued
            fake.user_sends_photo(user_id=USER + 1, image=png(), caption="/animate a dog")
            (answer,) = await fake.wait_for(lambda: replies(fake, USER + 1), timeout=10)
            assert "disk is full" in answer
            await asyncio.sleep(2.5)  # a worker's look for room or two: nothing moves
            assert not kinds(await events_of(store, job.id), EventKind.FAILED)

            filler.unlink()  # room again: it resumes after its finished section
            await fake.wait_for(lambda: message.text.startswith("✅ Done"), timeout=60)
            await fake.wait_for(lambda: told(fake, "room on the disk again"), timeout=10)
        done = await store.get(job.id)
        assert done.status is JobStatus.DONE and done.delivered_at is not None
        assert done.attempts == 1  # given back when the disk filled: that attempt did not count
        requeued = kinds(await events_of(store, job.id), EventKind.REQUEUED)
        assert [e.data["why"] for e in requeued] == ["the disk was full"]
        started = kinds(await events_of(store, job.id), EventKind.STARTED)
        assert [e.data["first_section"] for e in started] == [0, 1]
        assert message.kind == "video"
    finally:
        worker.stop()
        await asyncio.wait_for(working, 60)
        await store.close()
