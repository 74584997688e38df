"""End to end: the real `framepack-bot run` (a bot process and its supervised GPU
worker running the tiny model), serving Discord and Telegram at once.

The fake Discord and the fake Telegram Bot API run on this test's loop; the bot
process reaches them through the config (`[discord] api_base`, `gateway_url`,
`[telegram] base_url`), as it would reach the real ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

import pytest

from framepack.video.probe import probe
from storage.records import EventKind
from storage.store import JobStore
from tests.discord_scene import platform_tokens, png, two_platforms_config
from tests.fakes.discord_harness import DiscordHarness, FakeMessage
from tests.fakes.telegram_api import FakeTelegram

REPO = Path(__file__).resolve().parents[1]
TELEGRAM_USER = 7007
UPLOAD_LIMIT = 60_000  # bytes: the Discord server's; the 2-second tiny video is ~90 kB


async def jobs_of_alice(tmp_path: Path, user_id: int) -> list:  # type: ignore[type-arg]
    async with await JobStore.open(tmp_path / "data" / "framepack-bot.sqlite3") as store:
        return await store.jobs_of("discord", str(user_id))


def heads(message: FakeMessage) -> list[str]:
    """The embed title of every state the message went through."""
    return [(s.embeds[0].get("title", "") if s.embeds else "") for s in message.history]


@pytest.mark.slow
async def test_discord_and_telegram_together_in_one_framepack_bot_run(tmp_path: Path) -> None:
    async with DiscordHarness() as discord_fake, FakeTelegram() as telegram:
        guild = discord_fake.add_guild("Test Guild", upload_limit=UPLOAD_LIMIT)
        channel = guild.add_text_channel("videos")
        alice = discord_fake.add_user("alice")
        guild.add_member(alice)
        config = two_platforms_config(tmp_path, discord_fake, guild, telegram)
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

            picture = discord_fake.upload(png((160, 120)), "square.png")
            reply = await discord_fake.slash(
                alice, channel, "animate",
                image=picture, prompt="a red square spins", seconds=2.0, steps=10, seed=5,
            )  # fmt: skip
            assert reply.thinking and reply.ephemeral and (reply.ack_seconds or 0) < 3
            telegram.user_sends_photo(
                user_id=TELEGRAM_USER,
                image=png((160, 120), (30, 90, 200)),
                caption="/animate a blue square waves --seconds 1 --steps 2",
            )

            await discord_fake.wait_until(
                lambda: bool(channel.messages) and heads(channel.messages[0])[-1] == "✅ Done",
                timeout=150,
                what=f"the finished video on Discord\n{log_path.read_text()}",
            )
            [job_message] = await telegram.wait_for(
                lambda: [
                    m
                    for m in telegram.messages(TELEGRAM_USER)
                    if m.kind == "video" and m.text.startswith("✅ Done")
                ],
                timeout=150,
            )

            # Extend the Discord video from its message: a form, then the whole clip
            first = channel.messages[0]
            extend = next(c for c in first.custom_ids if c.startswith("fpb:extend:"))
            shown = await discord_fake.press(alice, first, extend)
            assert shown.modal is not None
            await discord_fake.submit(alice, shown, {"seconds": "1", "prompt": "it spins back"})
            await discord_fake.wait_until(
                lambda: len(channel.messages) == 2 and heads(channel.messages[1])[-1] == "✅ Done",
                timeout=150,
                what=f"the extended video on Discord\n{log_path.read_text()}",
            )
        finally:
            with contextlib.suppress(ProcessLookupError):
                run.send_signal(signal.SIGINT)
            code = await asyncio.wait_for(run.wait(), 60)

        log_text = log_path.read_text()
        assert code == 0, log_text
        assert "Traceback" not in log_text, log_text
        for token in (discord_fake.token, telegram.token, telegram.token.split(":")[1]):
            assert token not in log_text  # the whole run's log (bot and worker), not its start

        # Discord: queued → rendering → partial video → the finished video, fitted to the limit
        message = channel.messages[0]
        titles = heads(message)
        assert titles[0].startswith("⏳ Queued")
        files = [[a.filename for a in s.attachments] for s in message.history]
        # Edits follow the latest view: a stage shows if it lasted more than an edit
        # interval (1 s) before the next. The tiny model can be faster than that; the
        # adapter tests cover each stage with a worker they pace themselves.
        # Both platforms queue at once: either may get job #1.
        async with await JobStore.open(tmp_path / "data" / "framepack-bot.sqlite3") as store:
            [job] = [
                j for j in await store.jobs_of("discord", str(alice.id)) if not j.params.extend_of
            ]
            events = await store.events_since(0, job_id=job.id)
        started = next(e.created_at for e in events if e.kind is EventKind.STARTED)
        section = next(e.created_at for e in events if e.kind is EventKind.SECTION)
        done = next(e.created_at for e in events if e.kind is EventKind.DONE)
        if section - started > 2.5:
            assert any(t.startswith("🎞 Rendering") for t in titles), titles
        if done - section > 2.5:
            assert any(names == [f"framepack-{job.id}-partial.mp4"] for names in files), files
        final = message.attachment(f"framepack-{job.id}.mp4")
        assert final.size <= UPLOAD_LIMIT
        received = tmp_path / "discord.mp4"
        received.write_bytes(final.data)
        assert probe(received).frames == 73, "the whole video, re-encoded to fit"
        assert "seed 5" in message.embed["description"]
        assert message.custom_ids == [
            f"fpb:{action}:{job.id}" for action in ("reroll", "extend", "remix", "delete")
        ]
        assert reply.webhook_errors == []

        extended_id = int(extend.rsplit(":", 1)[1])
        [extension] = [j for j in await jobs_of_alice(tmp_path, alice.id) if j.id != job.id]
        assert extension.params.extend_of == extended_id == job.id
        whole = tmp_path / "extended.mp4"
        whole.write_bytes(channel.messages[1].attachment(f"framepack-{extension.id}.mp4").data)
        assert probe(whole).frames == 73 + 36, "the whole clip: the old part, then the new"

        # Telegram: the same worker rendered its job too
        assert "a blue square waves" in job_message.text
        assert job_message.media and job_message.media[4:8] == b"ftyp"
