"""What the Telegram adapter's tests share: settings pointed at the fake Bot API, the
bot process's `run_bots` on the test's loop, and a stand-in for the GPU worker that
writes what the real one writes (events and files through the job store) for the
fast tests of rendering. The end-to-end tests run the real worker instead.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from PIL import Image

from bot.app import run_bots
from bot.service import BotService
from bot.telegram.adapter import TelegramAdapter
from bot.tracker import JobTracker
from storage.config import Secret, Settings, parse_settings
from storage.files import DataDir, write_atomic
from storage.records import EventKind, Job
from storage.store import JobStore, QueueLimits
from tests.fakes.telegram_api import FakeTelegram, Message

USER = 1001
OTHER = 1002
ADMIN = 4242
GROUP = -100777


def png(width: int = 320, height: int = 240, color: str = "red") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, "PNG")
    return buffer.getvalue()


def config_data(
    data_dir: Path,
    fake: FakeTelegram,
    *,
    telegram: Mapping[str, Any] | None = None,
    generation: Mapping[str, Any] | None = None,
    queue: Mapping[str, Any] | None = None,
    model: Mapping[str, Any] | None = None,
    worker: Mapping[str, Any] | None = None,
    storage: Mapping[str, Any] | None = None,
    web: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A config document: the tiny preset, the fake's URLs, fast edits, no web page
    (the web page's tests turn it on, each on a port of its own)."""
    return {
        "web": {"enabled": False, **(web or {})},
        "storage": {"data_dir": str(data_dir), **(storage or {})},
        "model": {"preset": "tiny", **(model or {})},
        "generation": {**(generation or {})},
        "queue": {**(queue or {})},
        "worker": {**(worker or {})},
        "telegram": {
            "enabled": True,
            "token_env": "FPB_TEST_TELEGRAM_TOKEN",
            "base_url": fake.base_url,
            "base_file_url": fake.base_file_url,
            "admins": [ADMIN],
            "edit_interval": 1.0,
            "upload_limit_mb": 50,
            **(telegram or {}),
        },
    }


def make_settings(data_dir: Path, fake: FakeTelegram, **sections: Any) -> Settings:
    settings = parse_settings(config_data(data_dir, fake, **sections), base_dir=data_dir)
    telegram = dataclasses.replace(settings.telegram, token=Secret(fake.token))
    return dataclasses.replace(settings, telegram=telegram)


def write_config(path: Path, document: Mapping[str, Any]) -> Path:
    """A TOML file of `document` (tables of scalars and lists only)."""
    lines = []
    for section, table in document.items():
        lines.append(f"[{section}]")
        for key, value in table.items():
            lines.append(f"{key} = {json.dumps(value)}")
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@asynccontextmanager
async def running_bot(
    settings: Settings, fake: FakeTelegram, *, poll_interval: float = 0.05
) -> AsyncIterator[TelegramAdapter]:
    """The bot process's `run_bots` with the real adapter, on this loop, until the block ends."""
    stop = asyncio.Event()
    made: list[TelegramAdapter] = []
    trackers: list[JobTracker] = []

    def factory(service: BotService, on_change: Any) -> TelegramAdapter:
        made.append(TelegramAdapter(service, on_change))
        return made[0]

    task = asyncio.create_task(
        run_bots(
            settings,
            stop,
            factories={"telegram": factory},
            poll_interval=poll_interval,
            on_tracker=trackers.append,
        )
    )
    await fake.wait_for(lambda: task.done() or fake.waiting_polls > 0 or fake.pending_updates)
    if task.done():
        task.result()  # raises what stopped it
    _TRACKERS[made[0]] = trackers[0]
    try:
        yield made[0]
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


_TRACKERS: dict[TelegramAdapter, JobTracker] = {}


async def settled(adapter: TelegramAdapter) -> None:
    """Once the running bot's start-up pass has run and it has nothing left to send: a
    test may then assert that something was not sent (a fixed sleep could come before
    the pass even started)."""
    await asyncio.wait_for(_TRACKERS[adapter].settled(), 30)


class StandInWorker:
    """Writes a job's events and files as the GPU worker does, without a model."""

    def __init__(self, store: JobStore, data: DataDir, worker_id: str = "stand-in") -> None:
        self.store = store
        self.data = data
        self.worker_id = worker_id

    @classmethod
    async def open(cls, settings: Settings) -> StandInWorker:
        data = DataDir(settings.storage.data_dir)
        data.ensure()
        store = await JobStore.open(data.database, QueueLimits.from_settings(settings.queue))
        return cls(store, data)

    async def close(self) -> None:
        await self.store.close()

    async def claim(self) -> Job:
        job = await self.store.claim(self.worker_id)
        assert job is not None, "no job waiting"
        return job

    async def start(self, job: Job, sections: int = 2, steps: int = 3) -> None:
        await self.store.add_event(
            job.id, EventKind.STARTED, {"sections": sections, "steps": steps, "attempt": 1}
        )

    async def step(
        self, job: Job, section: int, step: int, *, sections: int = 2, steps: int = 3
    ) -> Path:
        colors = ["navy", "teal", "olive", "maroon", "purple", "gray"]
        path = self.data.previews_dir(job.id) / f"step_{section}_{step}.png"
        write_atomic(path, png(64, 48, colors[(section * steps + step) % len(colors)]))
        await self.store.add_event(
            job.id,
            EventKind.STEP,
            {
                "section": section,
                "step": step,
                "steps": steps,
                "sections": sections,
                "preview": str(path),
            },
        )
        return path

    async def section(self, job: Job, section: int, *, sections: int = 2) -> Path:
        path = self.data.work_dir(job.id) / f"partial_{section:03d}.mp4"
        write_atomic(path, fake_mp4(3000 + section))
        await self.store.add_event(
            job.id,
            EventKind.SECTION,
            {
                "section": section,
                "sections": sections,
                "frames": 9 * (section + 1),
                "video": str(path),
            },
        )
        return path

    async def finish(self, job: Job, *, size: int = 5000, delivery_size: int | None = None) -> Job:
        # the worker keeps a finished job's checkpoint (it is what Extend continues from)
        write_atomic(self.data.checkpoint(job.id), b"stand-in checkpoint")
        videos = self.data.videos_dir(job.id)
        result = write_atomic(videos / "final.mp4", fake_mp4(size))
        delivery = None
        if delivery_size is not None:
            delivery = str(write_atomic(videos / "delivery.mp4", fake_mp4(delivery_size)))
        return await self.store.complete(
            job.id,
            self.worker_id,
            result_path=str(result),
            delivery_path=delivery,
            metadata={"render_seconds": 12.0},
        )

    async def run(self, job: Job, *, sections: int = 2, steps: int = 2) -> Job:
        """A whole job at once."""
        await self.start(job, sections, steps)
        for section in range(sections):
            for step in range(1, steps + 1):
                await self.step(job, section, step, sections=sections, steps=steps)
            await self.section(job, section, sections=sections)
        return await self.finish(job)

    async def stop_cancelled(self, job: Job) -> Job:
        assert await self.store.heartbeat(job.id, self.worker_id)
        return await self.store.confirm_cancelled(job.id, self.worker_id)


def fake_mp4(size: int) -> bytes:
    """Bytes in an MP4's clothing: all the fake Bot API keeps of a video."""
    head = b"\x00\x00\x00\x18ftypmp42"
    return head + os.urandom(max(0, size - len(head)))


def job_messages(fake: FakeTelegram, chat_id: int) -> list[Message]:
    """The bot's media messages in a chat (a job's message is one of them)."""
    return [m for m in fake.messages(chat_id) if m.kind != "text"]


def replies(fake: FakeTelegram, chat_id: int) -> list[str]:
    """The bot's text replies in a chat, oldest first."""
    return [m.text for m in fake.messages(chat_id) if m.kind == "text"]
