"""Shared pieces of the worker tests: a config file in tmp_path (tiny preset, real
SQLite file), input pictures, real worker subprocesses and polling helpers."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from storage.config import Settings, load_settings
from storage.files import DataDir
from storage.records import EventKind, JobEvent, JobParams
from storage.store import JobStore, QueueLimits

REPO = Path(__file__).resolve().parents[1]

# Small jobs: the tiny model at its smallest bucket, 2 steps a section.
# seconds 1.0 is one section; 2.0 two; 3.6 three (sections = round(seconds * 30 / 36)).
TINY_STEPS = 2


def write_config(tmp_path: Path, extra: str = "", **sections: dict[str, Any]) -> Path:
    """A config.toml in tmp_path: tiny preset at 64 px, every step an event, fast heartbeats.

    `sections` override keys of those tables; `extra` is TOML appended as it is.
    """
    tables: dict[str, dict[str, Any]] = {
        "storage": {"data_dir": str(tmp_path / "data")},
        "model": {"preset": "tiny", "device": "cpu"},
        "generation": {"resolution": 64},
        "queue": {
            "max_waiting_per_user": 50,
            "max_video_seconds_per_day": 0.0,
            "heartbeat_timeout": 5.0,
        },
        "worker": {"heartbeat_seconds": 0.5, "step_event_interval": 0.0},
        # the web page's own tests turn it on, each on a port of its own
        "web": {"enabled": False},
    }
    for name, values in sections.items():
        tables.setdefault(name, {}).update(values)
    lines = []
    for name, values in tables.items():
        lines.append(f"[{name}]")
        for key, value in values.items():
            if isinstance(value, str):
                value = f'"{value}"'
            elif isinstance(value, bool):
                value = str(value).lower()
            lines.append(f"{key} = {value}")
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def settings_of(config: Path) -> Settings:
    return load_settings(config)


def write_picture(data: DataDir, seed: int = 0) -> str:
    """A smooth colourful PNG in inputs/, as the bot would write it."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:96, 0:128] / 128
    rgb = np.stack(
        [
            0.5 + 0.5 * np.sin(6 * x + rng.uniform(0, 6)),
            0.5 + 0.5 * np.cos(5 * y + rng.uniform(0, 6)),
            ((x - 0.5) ** 2 + (y - 0.4) ** 2 < 0.08).astype(float),
        ],
        axis=-1,
    )
    path = data.new_input_path(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((rgb * 255).astype(np.uint8)).save(path)
    return str(path)


async def open_store(settings: Settings) -> JobStore:
    data = DataDir(settings.storage.data_dir)
    data.ensure()
    return await JobStore.open(data.database, QueueLimits.from_settings(settings.queue))


async def enqueue(
    store: JobStore,
    settings: Settings,
    user: str,
    *,
    seconds: float = 1.0,
    steps: int = TINY_STEPS,
    seed: int = 1,
    picture: str | None = None,
    upload_limit: int | None = None,
    **params: Any,
) -> int:
    data = DataDir(settings.storage.data_dir)
    job = await store.enqueue(
        platform="telegram",
        user_id=user,
        chat_id=f"chat-{user}",
        params=JobParams(prompt="a cat walks", seconds=seconds, steps=steps, seed=seed, **params),
        input_path=picture or write_picture(data),
        upload_limit=upload_limit,
    )
    return job.id


async def events_of(store: JobStore, job_id: int) -> list[JobEvent]:
    return await store.events_since(0, job_id=job_id, limit=100_000)


def kinds(events: list[JobEvent], kind: EventKind) -> list[JobEvent]:
    return [e for e in events if e.kind is kind]


async def wait_until(
    check: Callable[[], Awaitable[bool]], *, timeout: float = 60.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


@dataclass
class WorkerProcess:
    """`python -m framepack_bot.cli worker --config X` as a real subprocess."""

    proc: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def start(cls, config: Path, *, burst: bool, name: str = "worker") -> WorkerProcess:
        log_path = config.parent / f"{name}.log"
        args = [sys.executable, "-m", "framepack_bot.cli", "worker", "--config", str(config)]
        if burst:
            args.append("--burst")
        with log_path.open("wb") as log:  # a file, not a pipe: a full pipe would block it
            proc = subprocess.Popen(
                args,
                cwd=REPO,
                env=worker_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return cls(proc, log_path)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait(self, timeout: float = 120.0) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"worker still running after {timeout} s:\n{self.log}")
            await asyncio.sleep(0.05)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env
