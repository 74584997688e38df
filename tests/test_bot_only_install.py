"""A host with the bot alone: `pip install framepack-bot` (no extra) has no PyTorch,
and its `framepack-bot run` serves Telegram and Discord while `framepack-bot
worker` renders on "another host" (here: this checkout's environment, with the
model stack, sharing the data dir)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.discord_scene import platform_tokens, png, two_platforms_config
from tests.fakes.discord_harness import DiscordHarness, FakeMessage
from tests.fakes.telegram_api import FakeTelegram

REPO = Path(__file__).resolve().parents[1]
TELEGRAM_USER = 7008


def heads(message: FakeMessage) -> list[str]:
    return [(s.embeds[0].get("title", "") if s.embeds else "") for s in message.history]


@pytest.fixture(scope="module")
def bot_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with `pip install <this checkout>` and nothing more."""
    where = tmp_path_factory.mktemp("bot-only") / "venv"
    venv.create(where, with_pip=True)
    subprocess.run(
        [where / "bin" / "python", "-m", "pip", "install", "-q", str(REPO)],
        check=True,
        timeout=900,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    return where


@pytest.mark.slow
def test_the_bot_only_install_has_no_torch(bot_only: Path) -> None:
    found = subprocess.run([bot_only / "bin" / "python", "-c", "import torch"], check=False)
    assert found.returncode != 0
    worker = subprocess.run(
        [bot_only / "bin" / "framepack-bot", "worker", "--config", "/nonexistent.toml"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert worker.returncode == 2 and "no such config file" in worker.stderr


@pytest.mark.slow
async def test_run_on_the_bot_host_and_a_worker_elsewhere_serve_both_platforms(
    bot_only: Path, tmp_path: Path
) -> None:
    async with DiscordHarness() as discord_fake, FakeTelegram() as telegram:
        guild = discord_fake.add_guild("Test Guild", upload_limit=200_000)
        channel = guild.add_text_channel("videos")
        alice = discord_fake.add_user("alice")
        guild.add_member(alice)
        config = two_platforms_config(tmp_path, discord_fake, guild, telegram)
        env = {
            **{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
            **platform_tokens(discord_fake, telegram),
        }
        run_log, worker_log = tmp_path / "run.log", tmp_path / "worker.log"
        with run_log.open("wb") as log:  # from another folder: nothing of the checkout
            run = await asyncio.create_subprocess_exec(
                bot_only / "bin" / "framepack-bot", "run", "--config", str(config),
                cwd=tmp_path, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
            )  # fmt: skip
        with worker_log.open("wb") as log:
            worker = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "framepack_bot.cli", "worker", "--config", str(config),
                cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
            )  # fmt: skip
        try:
            await discord_fake.wait_until(
                lambda: discord_fake.commands(guild) and discord_fake.gateway.identifications,
                timeout=60,
                what=f"the bot on Discord\n{run_log.read_text()}",
            )
            await telegram.wait_for(lambda: telegram.calls_to("getUpdates"), timeout=30)
            picture = discord_fake.upload(png((160, 120)), "square.png")
            await discord_fake.slash(
                alice, channel, "animate", image=picture, prompt="a red square spins",
                seconds=1.0, steps=2, seed=5,
            )  # fmt: skip
            telegram.user_sends_photo(
                user_id=TELEGRAM_USER,
                image=png((160, 120), (30, 90, 200)),
                caption="/animate a blue square waves --seconds 1 --steps 2",
            )
            await discord_fake.wait_until(
                lambda: bool(channel.messages) and heads(channel.messages[0])[-1] == "✅ Done",
                timeout=150,
                what=f"the video on Discord\n{run_log.read_text()}\n{worker_log.read_text()}",
            )
            await telegram.wait_for(
                lambda: [
                    m
                    for m in telegram.messages(TELEGRAM_USER)
                    if m.kind == "video" and m.text.startswith("✅ Done")
                ],
                timeout=150,
            )
        finally:
            for process in (run, worker):
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGINT)
            codes = [await asyncio.wait_for(p.wait(), 60) for p in (run, worker)]
    text = run_log.read_text()
    assert codes == [0, 0], text + worker_log.read_text()
    assert "no worker here" in text and "Traceback" not in text
    assert "worker started" not in text  # run started none
