"""Discord's 429s, which discord.py waits out by itself, are counted per adapter for
the web page's /metrics (`framepack_rate_limited_total{platform="discord"}`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.app import rate_limited
from tests.discord_scene import Scene, discord_scene


@pytest.fixture
async def scene(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Scene]:
    async with discord_scene(tmp_path, monkeypatch) as scene:
        await scene.start()
        yield scene


async def test_the_429s_discord_answers_are_counted(scene: Scene) -> None:
    await scene.animate(prompt="a red square spins")
    [job] = await scene.jobs()
    message = scene.job_message(job.id)
    assert scene.adapter.rate_limited == 0
    scene.discord.inject_rate_limit("PATCH", "/channels/*/messages/*", retry_after=0.1, times=2)
    running = await scene.worker.claim()
    await scene.worker.started(running, sections=2, steps=2)
    await scene.worker.step(running, 0, 1)
    await scene.wait_for(lambda: "Rendering" in message.embed["title"], "the edit, retried")
    assert scene.adapter.rate_limited == 2
    assert rate_limited({"discord": scene.adapter}) == {"discord": 2}
