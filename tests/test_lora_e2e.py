"""End to end with a LoRA catalogue: the real `framepack-bot run` (bot process and its
supervised worker on the tiny model) serving the fake Discord and the fake Telegram.

A member picks a LoRA on each platform (`--lora` on Telegram, the `lora` option with
its autocomplete on Discord); the worker renders with it (the MP4 says so) and the
finished message names it. An unknown LoRA is refused at once with the list, and
nothing is queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

import pytest

from framepack.models.tiny import build_tiny_components
from framepack.video.probe import probe
from storage.store import JobStore
from tests.discord_scene import platform_tokens, png, two_platforms_config
from tests.fakes.discord_harness import DiscordHarness, FakeMessage
from tests.fakes.telegram_api import FakeTelegram
from tests.lora_fixtures import random_lora, write_lora

REPO = Path(__file__).resolve().parents[1]
TELEGRAM_USER = 7008

CATALOGUE = """
[[model.loras]]
name = "paint"
source = "loras/paint.safetensors"
scale = 0.8
triggers = "oil painting"
description = "thick brush strokes"

[[model.loras]]
name = "sketch"
source = "loras/sketch.safetensors"
models = ["f1"]
description = "pencil lines"
"""


def heads(message: FakeMessage) -> list[str]:
    return [(s.embeds[0].get("title", "") if s.embeds else "") for s in message.history]


@pytest.mark.slow
async def test_a_lora_picked_on_each_platform_reaches_the_worker_and_the_caption(
    tmp_path: Path,
) -> None:
    transformer = build_tiny_components().transformer
    write_lora(
        tmp_path / "loras/paint.safetensors", random_lora(transformer), "original", transformer
    )
    write_lora(
        tmp_path / "loras/sketch.safetensors",
        random_lora(transformer, seed=3),
        "kohya",
        transformer,
    )
    async with DiscordHarness() as discord_fake, FakeTelegram() as telegram:
        guild = discord_fake.add_guild("Test Guild")
        channel = guild.add_text_channel("videos")
        alice = discord_fake.add_user("alice")
        guild.add_member(alice)
        config = two_platforms_config(tmp_path, discord_fake, guild, telegram, CATALOGUE)
        env = {
            **os.environ,
            **platform_tokens(discord_fake, telegram),
            "PYTHONPATH": str(REPO),
        }
        log_path = tmp_path / "run.log"
        with log_path.open("wb") as log:
            run = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "framepack_bot.cli", "run", "--config", str(config),
                cwd=REPO, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
            )  # fmt: skip
        try:
            await discord_fake.wait_until(
                lambda: discord_fake.commands(guild) and discord_fake.gateway.identifications,
                timeout=30,
                what=f"the bot on Discord\n{log_path.read_text()}",
            )
            await telegram.wait_for(lambda: telegram.calls_to("getUpdates"), timeout=30)

            # Discord: the lora option completes from the catalogue, for the model chosen
            offered = await discord_fake.autocomplete(alice, channel, "animate", "lora", "pa")
            assert offered == [
                {"name": "paint (scale 0.8) — thick brush strokes", "value": "paint"}
            ]
            for_f1 = await discord_fake.autocomplete(
                alice, channel, "animate", "lora", "paint,", model="f1"
            )
            assert [c["value"] for c in for_f1] == ["paint,paint", "paint,sketch"]

            refused = await discord_fake.slash(
                alice, channel, "animate",
                image=discord_fake.upload(png((160, 120)), "a.png"), prompt="x", lora="ghibli",
            )  # fmt: skip
            await discord_fake.wait_until(lambda: bool(refused.replies), what="the refusal")
            assert refused.replies[0].content == (
                "There is no LoRA called 'ghibli'. The LoRAs for framepack are: paint (see /loras)."
            )
            telegram.user_sends_photo(
                user_id=TELEGRAM_USER,
                image=png((160, 120), (30, 90, 200)),
                caption="/animate a cat --lora sketch",
            )
            telegram.user_sends_text(user_id=TELEGRAM_USER, text="/loras")

            reply = await discord_fake.slash(
                alice, channel, "animate",
                image=discord_fake.upload(png((160, 120)), "square.png"),
                prompt="a red square spins", seconds=1.0, steps=2, seed=5, lora="paint:0.5",
            )  # fmt: skip
            assert reply.ephemeral
            telegram.user_sends_photo(
                user_id=TELEGRAM_USER,
                image=png((160, 120), (30, 90, 200)),
                caption="/animate a blue square waves --seconds 1 --steps 2 --lora paint",
            )
            await discord_fake.wait_until(
                lambda: bool(channel.messages) and heads(channel.messages[0])[-1] == "✅ Done",
                timeout=150,
                what=f"the finished video on Discord\n{log_path.read_text()}",
            )
            [done] = await telegram.wait_for(
                lambda: [
                    m
                    for m in telegram.messages(TELEGRAM_USER)
                    if m.kind == "video" and m.text.startswith("✅ Done")
                ],
                timeout=150,
            )
            texts = [m.text for m in telegram.messages(TELEGRAM_USER) if m.kind == "text"]
        finally:
            with contextlib.suppress(ProcessLookupError):
                run.send_signal(signal.SIGINT)
            code = await asyncio.wait_for(run.wait(), 60)

        log_text = log_path.read_text()
        assert code == 0, log_text
        assert "Traceback" not in log_text, log_text

        # Telegram: the LoRA for the other model refused with the list, /loras lists them
        assert any(
            "The LoRA 'sketch' is for the f1 model, not framepack" in t and "paint" in t
            for t in texts
        ), texts
        assert any("• paint (framepack, f1; scale 0.8) — thick brush strokes" in t for t in texts)
        assert "LoRA paint 0.8" in done.text  # the caption names it, at its default scale

        message = channel.messages[0]
        assert "LoRA paint 0.5" in message.embed["description"]
        async with await JobStore.open(tmp_path / "data" / "framepack-bot.sqlite3") as store:
            [discord_job] = await store.jobs_of("discord", str(alice.id))  # the refused: none
            [telegram_job] = await store.jobs_of("telegram", str(TELEGRAM_USER))
        assert discord_job.params.loras == (("paint", 0.5),)
        assert telegram_job.params.loras == (("paint", 0.8),)
        received = tmp_path / "discord.mp4"
        received.write_bytes(message.attachment(f"framepack-{discord_job.id}.mp4").data)
        metadata = probe(received).metadata  # rendered by the worker with the LoRA on
        assert metadata["loras"] == "paint 0.5"
        assert metadata["prompt"] == "a red square spins, oil painting"
