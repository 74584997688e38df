"""A scene for the Discord adapter's tests: the fake Discord, a guild with a few
members, the bot process (`run_bots` with the real adapter, tracker and store)
and a stand-in worker that writes the events and files the real one writes.

The stand-in lets fast tests move a job through every stage at the pace the
test wants; the slow tests run the real worker subprocess instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import discord
import numpy as np
from PIL import Image

from bot.app import run_bots
from bot.discord.adapter import DiscordAdapter
from bot.tracker import JobTracker
from framepack.engine.previews import save_png
from framepack.video.encode import encode_mp4
from framepack.worker.delivery import deliver
from storage.config import Settings, load_settings
from storage.files import DataDir, write_atomic
from storage.records import EventKind, Job, JobStatus
from storage.store import JobStore, QueueLimits
from tests.fakes.discord_harness import DiscordHarness, FakeMessage, InteractionRecord
from tests.fakes.discord_state import FakeChannel, FakeGuild, FakeUser

WORKER = "stand-in-worker"


def write_config(tmp_path: Path, **sections: dict[str, Any]) -> Path:
    """config.toml in tmp_path: the tiny preset at 64 px, generous queue limits, fast
    heartbeats, and `sections` on top (tables of scalars and lists only)."""
    tables: dict[str, dict[str, Any]] = {
        "storage": {"data_dir": str(tmp_path / "data")},
        "model": {"preset": "tiny", "device": "cpu"},
        "generation": {"resolution": 64},
        "queue": {"max_waiting_per_user": 20, "max_video_seconds_per_day": 0.0},
        "worker": {"heartbeat_seconds": 0.5, "step_event_interval": 0.0},
        # the web page's own tests turn it on, each on a port of its own
        "web": {"enabled": False},
    }
    for name, values in sections.items():
        tables.setdefault(name, {}).update(values)
    lines = []
    for name, values in tables.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def two_platforms_config(
    tmp_path: Path, discord_fake: Any, guild: Any, telegram: Any, extra: str = ""
) -> Path:
    """A config for one `framepack-bot run` serving both loopback fakes, with `extra` TOML
    after it (their tokens come from the environment: `platform_tokens`)."""
    config = write_config(
        tmp_path,
        discord={
            "enabled": True,
            "token_env": "FPB_TEST_DISCORD_TOKEN",
            "allowed_guilds": [guild.id],
            "edit_interval": 1.0,
            "api_base": discord_fake.api_base,
            "gateway_url": discord_fake.gateway_url,
        },
        telegram={
            "enabled": True,
            "token_env": "FPB_TEST_TELEGRAM_TOKEN",
            "base_url": telegram.base_url,
            "base_file_url": telegram.base_file_url,
            "edit_interval": 1.0,
        },
    )
    config.write_text(config.read_text() + extra)
    return config


def platform_tokens(discord_fake: Any, telegram: Any) -> dict[str, str]:
    """The environment variables `two_platforms_config` reads the fakes' tokens from."""
    return {
        "FPB_TEST_DISCORD_TOKEN": discord_fake.token,
        "FPB_TEST_TELEGRAM_TOKEN": telegram.token,
    }


async def open_store(settings: Settings) -> JobStore:
    data = DataDir(settings.storage.data_dir)
    data.ensure()
    return await JobStore.open(data.database, QueueLimits.from_settings(settings.queue))


def png(size: tuple[int, int] = (96, 64), colour: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="PNG")
    return out.getvalue()


def noise_frames(count: int, side: int = 64, seed: int = 0) -> np.ndarray:
    """Frames of noise: they compress badly, so a few make a video of a known weight."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, side, side, 3), dtype=np.uint8)


class StandInWorker:
    """Writes what `framepack.worker.loop` writes for a job, one call per stage."""

    def __init__(self, store: JobStore, data: DataDir) -> None:
        self.store = store
        self.data = data

    async def claim(self) -> Job:
        job = await self.store.claim(WORKER)
        assert job is not None, "no job waiting"
        return job

    async def started(self, job: Job, sections: int = 2, steps: int = 2) -> None:
        await self.store.add_event(
            job.id,
            EventKind.STARTED,
            {"sections": sections, "steps": steps, "first_section": 0, "attempt": 1},
        )

    async def step(
        self, job: Job, section: int, step: int, sections: int = 2, steps: int = 2
    ) -> Path:
        rgb = np.full((64, 64, 3), (40 * step) % 256, dtype=np.uint8)
        path = save_png(rgb, self.data.previews_dir(job.id) / f"1-{section:03d}-{step:03d}.png")
        await self.store.add_event(
            job.id,
            EventKind.STEP,
            {
                "section": section,
                "sections": sections,
                "step": step,
                "steps": steps,
                "preview": str(path),
            },
        )
        return path

    async def section(self, job: Job, section: int, sections: int = 2, frames: int = 9) -> Path:
        path = self.data.work_dir(job.id) / f"partial_{section:03d}.mp4"
        await asyncio.to_thread(encode_mp4, noise_frames(frames, seed=section), path, fps=30)
        await self.store.add_event(
            job.id,
            EventKind.SECTION,
            {"section": section, "sections": sections, "frames": frames, "video": str(path)},
        )
        return path

    async def done(self, job: Job, frames: int = 18, side: int = 64, crf: int = 23) -> Job:
        """Encode the final video; the copy that fits the job's upload limit is made by the
        worker's own code, re-encoding when it must."""
        video = self.data.work_dir(job.id) / "video.mp4"
        await asyncio.to_thread(
            encode_mp4, noise_frames(frames, side, seed=99), video, fps=30, crf=crf
        )
        fresh = await self.store.get(job.id)
        files = await asyncio.to_thread(
            deliver, video, self.data.videos_dir(job.id), fresh.upload_limit
        )
        # the worker keeps a finished job's checkpoint (what Extend continues from)
        write_atomic(self.data.checkpoint(job.id), b"stand-in checkpoint")
        return await self.store.complete(
            job.id,
            WORKER,
            result_path=str(files.final),
            delivery_path=str(files.upload) if files.upload else None,
            metadata={"render_seconds": 12.0},
        )

    async def render_all(self, job: Job) -> Job:
        await self.started(job)
        await self.step(job, 0, 1)
        await self.section(job, 0)
        return await self.done(job)


@dataclass
class Scene:
    discord: DiscordHarness
    guild: FakeGuild
    channel: FakeChannel
    alice: FakeUser
    bob: FakeUser
    mod: FakeUser  # Manage Server
    settings: Settings
    store: JobStore  # the worker's side of the database (its own connection)
    worker: StandInWorker
    adapters: list[DiscordAdapter] = field(default_factory=list)
    _stop: asyncio.Event | None = None
    _task: asyncio.Task[None] | None = None
    trackers: list[JobTracker] = dataclasses.field(default_factory=list)

    @property
    def data(self) -> DataDir:
        return DataDir(self.settings.storage.data_dir)

    @property
    def adapter(self) -> DiscordAdapter:
        return self.adapters[-1]

    def configure(self, **discord_settings: Any) -> None:
        """Change [discord] settings (before `start`), past the config's own bounds if need be."""
        self.settings = dataclasses.replace(
            self.settings, discord=dataclasses.replace(self.settings.discord, **discord_settings)
        )

    async def start(self) -> None:
        """`run_bots` with the real Discord adapter, as `framepack-bot run` starts it."""
        created = asyncio.Event()

        def factory(service: Any, wake: Any) -> DiscordAdapter:
            adapter = DiscordAdapter(service, wake, guild_ready_timeout=0.05)
            self.adapters.append(adapter)
            created.set()
            return adapter

        self._stop = asyncio.Event()
        self._task = asyncio.create_task(
            run_bots(
                self.settings,
                self._stop,
                factories={"discord": factory},
                poll_interval=0.05,
                on_tracker=self.trackers.append,
            )
        )
        await asyncio.wait_for(created.wait(), 10)
        ready = asyncio.create_task(self.adapter.client.ready.wait())
        await asyncio.wait({ready, self._task}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            if self._task.done():
                task, self._task = self._task, None
                task.result()  # raises what stopped the bot
            raise AssertionError("the bot was not ready within 10 s")

    async def stop(self) -> None:
        if self._task is not None and self._stop is not None:
            self._stop.set()
            await asyncio.wait_for(self._task, 15)
            self._task = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def settled(self) -> None:
        """Once the running bot's start-up pass has run and it has nothing left to send."""
        await asyncio.wait_for(self.trackers[-1].settled(), 30)

    async def animate(
        self,
        user: FakeUser | None = None,
        channel: FakeChannel | None = None,
        *,
        picture: bytes | None = None,
        prompt: str = "a red square spins",
        **options: Any,
    ) -> InteractionRecord:
        """`/animate` with an attachment; returns once the ephemeral answer is written."""
        image = self.discord.upload(picture if picture is not None else png(), "square.png")
        reply = await self.discord.slash(
            user or self.alice,
            channel or self.channel,
            "animate",
            image=image,
            prompt=prompt,
            **options,
        )
        await self.answered(reply)
        return reply

    async def answered(self, reply: InteractionRecord) -> str:
        """The text of the first answer to `reply`, once it is there."""
        await self.discord.wait_until(
            lambda: bool(reply.replies) and not reply.replies[0].loading,
            what=f"an answer to {reply.name}",
        )
        return reply.replies[0].content

    def job_message(self, job_id: int, channel: FakeChannel | None = None) -> FakeMessage:
        """The (visible) message whose buttons name `job_id`."""
        where = channel or self.channel
        for message in where.messages:
            if any(cid.endswith(f":{job_id}") for cid in message.custom_ids):
                return message
        raise AssertionError(f"no message for job {job_id}\n{self.discord.transcript()}")

    async def wait_for(self, predicate: Any, what: str, timeout: float = 10.0) -> None:
        await self.discord.wait_until(predicate, timeout=timeout, what=what)

    async def job(self, job_id: int) -> Job:
        return await self.store.get(job_id)

    async def jobs(self) -> list[Job]:
        counts = await self.store.counts()
        total = sum(counts.values())
        return [await self.store.get(i) for i in range(1, total + 1)]

    async def wait_delivered(self, job_id: int, timeout: float = 10.0) -> Job:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (job := await self.store.get(job_id)).delivered_at is None:
            assert loop.time() < deadline, (
                f"job {job_id} not delivered\n{self.discord.transcript()}"
            )
            await asyncio.sleep(0.05)
        return job


@contextlib.asynccontextmanager
async def discord_scene(
    tmp_path: Path, monkeypatch: Any, **discord_options: Any
) -> AsyncIterator[Scene]:
    async with DiscordHarness() as fake:
        guild = fake.add_guild("Test Guild")
        channel = guild.add_text_channel("general")
        alice, bob, mod = fake.add_user("alice"), fake.add_user("bob"), fake.add_user("mod")
        guild.add_member(alice)
        guild.add_member(bob)
        guild.add_member(mod, permissions=discord.Permissions(manage_guild=True))
        monkeypatch.setenv("DISCORD_BOT_TOKEN", fake.token)
        config = write_config(
            tmp_path,
            discord={"enabled": True, "allowed_guilds": [guild.id], **discord_options},
        )
        settings = load_settings(config)
        # edits every 0.05 s (the config's least is 1 s) keep the tests fast
        settings = dataclasses.replace(
            settings, discord=dataclasses.replace(settings.discord, edit_interval=0.05)
        )
        store = await open_store(settings)
        scene = Scene(
            fake, guild, channel, alice, bob, mod, settings, store,
            StandInWorker(store, DataDir(settings.storage.data_dir)),
        )  # fmt: skip
        try:
            yield scene
        finally:
            await scene.stop()
            await store.close()


def embed_text(message: FakeMessage) -> str:
    embed = message.embed or {}
    return f"{embed.get('title', '')}\n{embed.get('description', '')}"


def done_jobs(jobs: list[Job]) -> list[Job]:
    return [j for j in jobs if j.status is JobStatus.DONE]
