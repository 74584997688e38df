"""The Discord adapter's other commands, places and rules: /queue, /status, /help,
/cancel, the admin commands, threads, direct messages, global commands, and the
pace of edits."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import discord
import pytest

from bot.adapters import AdapterStartFailed
from storage.config import Secret
from storage.records import JobStatus
from tests.discord_scene import Scene, discord_scene, embed_text
from tests.fakes.discord_harness import FakeUser, HarnessError


@pytest.fixture
async def scene(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Scene]:
    async with discord_scene(tmp_path, monkeypatch) as scene:
        await scene.start()
        yield scene


async def say(scene: Scene, who: FakeUser, command: str, **options: Any) -> str:
    """Run a command and return its (ephemeral) answer."""
    reply = await scene.discord.slash(who, scene.channel, command, **options)
    text = await scene.answered(reply)
    assert reply.ephemeral, f"/{command} answered in public: {text!r}"
    return text


async def test_queue_status_help_and_cancel(scene: Scene) -> None:
    assert await say(scene, scene.alice, "queue") == "The queue is empty: a new job starts at once."
    assert (await say(scene, scene.alice, "status")).startswith("You have no jobs yet.")
    await scene.animate(prompt="first")
    await scene.animate(scene.bob, prompt="second")

    queue = await say(scene, scene.bob, "queue")
    assert "1. #1 ·" in queue and "2. #2 (you) ·" in queue
    assert (await say(scene, scene.alice, "status")).startswith("#1 queued, position 1")

    help_text = await say(scene, scene.alice, "help")
    assert "/animate image:<picture> prompt:<text>" in help_text and "--seconds" not in help_text
    assert "/pause" not in help_text
    assert "Admin: /pause" in await say(scene, scene.mod, "help")

    assert await say(scene, scene.alice, "cancel", job=2) == (
        "Only the person who asked for that video (or an admin) can do that."
    )
    assert await say(scene, scene.alice, "cancel") == "Job #1 is cancelled."
    message = scene.job_message(1)
    await scene.wait_for(lambda: message.embed["title"] == "✖ Cancelled", "the cancelled job")
    assert await say(scene, scene.alice, "cancel") == "You have no job waiting or rendering."
    assert await say(scene, scene.mod, "cancel", job=2) == "Job #2 is cancelled."
    assert await say(scene, scene.mod, "cancel", job=99) == "There is no job #99."


async def test_admin_commands_for_configured_admins_and_server_managers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with discord_scene(tmp_path, monkeypatch) as scene:
        carol = scene.discord.add_user("carol")  # a configured admin without any permission
        scene.guild.add_member(carol)
        scene.configure(admins=[carol.id])
        await scene.start()

        assert await say(scene, scene.bob, "pause") == "That command is for the bot's admins."
        assert not await scene.store.paused()
        assert (await say(scene, scene.mod, "pause")).startswith("⏸ Queue paused")
        assert await scene.store.paused()
        await scene.animate()
        message = scene.job_message(1)
        assert "The queue is paused by an admin." in embed_text(message)
        assert await say(scene, carol, "resume") == "▶️ Queue resumed."
        await scene.wait_for(
            lambda: "paused" not in embed_text(message), "the message without the pause"
        )

        assert await say(scene, scene.bob, "ban", user=scene.alice) == (
            "That command is for the bot's admins."
        )
        banned = await say(scene, carol, "ban", user=scene.bob, reason="spam")
        assert banned == f"User {scene.bob.id} is banned; their waiting jobs are cancelled."
        refused = await scene.animate(scene.bob)
        # the admin's reason reaches the user
        assert refused.replies[0].content == "You are not allowed to queue jobs here (spam)."
        assert await say(scene, scene.mod, "unban", user=scene.bob) == (
            f"User {scene.bob.id} may queue jobs again."
        )
        await scene.animate(scene.bob)
        assert [j.user_id for j in await scene.jobs()] == [str(scene.alice.id), str(scene.bob.id)]


async def test_a_thread_of_its_own_for_each_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with discord_scene(tmp_path, monkeypatch, threads=True) as scene:
        await scene.start()
        await scene.animate(prompt="a cat turns its head")
        message = scene.job_message(1)
        [thread] = scene.channel.threads
        assert thread.id == message.id and thread.name == "#1 a cat turns its head"

        await scene.worker.render_all(await scene.worker.claim())
        await scene.wait_for(lambda: message.embed["title"] == "✅ Done", "the finished video")

        # a re-roll pressed on the job's message gets a message and a thread of its own
        rerolled = await scene.discord.press(scene.alice, message, "fpb:reroll:1")
        await scene.answered(rerolled)
        second = scene.job_message(2)
        assert [t.id for t in scene.channel.threads] == [message.id, second.id]


async def test_direct_messages_only_when_allowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with discord_scene(tmp_path, monkeypatch, allow_dms=True) as scene:
        await scene.start()
        dm = scene.discord.dm_channel(scene.alice)
        assert set(scene.discord.commands()) >= {"animate", "queue", "cancel"}
        assert scene.discord.commands()["animate"]["contexts"] == [1], "DMs only, globally"

        reply = await scene.animate(channel=dm, prompt="a dog in a DM")
        assert reply.replies[0].content.startswith("✅ Queued as job #1.")
        assert f"/@me/{dm.id}/" in reply.replies[0].content
        message = scene.job_message(1, dm)
        await scene.worker.render_all(await scene.worker.claim())
        await scene.wait_for(lambda: message.embed["title"] == "✅ Done", "the video in the DM")

        # the global (DM) command reaches a guild the config does not list: refused there
        other = scene.discord.add_guild("Other Guild")
        elsewhere = other.add_text_channel("general")
        other.add_member(scene.alice)
        picture = scene.discord.upload(b"x", "a.png")
        refused = await scene.discord.slash(
            scene.alice, elsewhere, "animate", image=picture, prompt="a cat"
        )
        assert await scene.answered(refused) == "This bot is not enabled in this server."
        assert refused.ephemeral and len(await scene.jobs()) == 1


async def test_no_direct_messages_by_default(scene: Scene) -> None:
    picture = scene.discord.upload(b"x", "a.png")
    with pytest.raises(HarnessError, match="not synced"):
        await scene.discord.slash(
            scene.alice, scene.discord.dm_channel(scene.alice), "animate", image=picture,
            prompt="a cat",
        )  # fmt: skip


async def test_global_commands_when_no_guild_is_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with discord_scene(tmp_path, monkeypatch, allowed_guilds=[]) as scene:
        await scene.start()
        assert scene.discord.commands(scene.guild) == {}
        commands = scene.discord.commands()
        assert "animate" in commands and commands["animate"]["contexts"] == [0]

        other = scene.discord.add_guild("Another Guild")
        channel = other.add_text_channel("videos")
        other.add_member(scene.bob)
        reply = await scene.animate(scene.bob, channel)
        assert reply.replies[0].content.startswith("✅ Queued as job #1.")
        assert scene.job_message(1, channel).embed is not None


async def test_edits_keep_their_pace_and_never_repeat_after_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with discord_scene(tmp_path, monkeypatch) as scene:
        scene.configure(edit_interval=1.0)  # the least the config allows
        await scene.start()
        await scene.animate()
        message = scene.job_message(1)
        job = await scene.worker.claim()
        await scene.worker.started(job, sections=1, steps=8)
        for step in range(1, 9):  # a step every 0.3 s: faster than the edits may go
            await scene.worker.step(job, 0, step, sections=1, steps=8)
            await asyncio.sleep(0.3)
        await scene.wait_for(lambda: "step 8/8" in embed_text(message), "the last step", timeout=10)
        edits = scene.discord.requests_to("PATCH", f"/channels/*/messages/{message.id}")
        gaps = [b.at - a.at for a, b in itertools.pairwise(edits)]
        assert 2 <= len(edits) <= 4 and all(gap >= 0.95 for gap in gaps), gaps
        assert message.unchanged_edits == 0

        await scene.restart()
        await scene.wait_for(lambda: scene.adapter.client.is_ready(), "the restarted bot")
        before = len(scene.discord.requests_to("PATCH", "/channels/*/messages/*"))
        await scene.animate(scene.bob)  # a change that wakes the tracker
        assert len(scene.discord.requests_to("PATCH", "/channels/*/messages/*")) == before
        assert (await scene.job(1)).status is JobStatus.RUNNING


async def test_a_deleted_job_message_is_posted_again(scene: Scene) -> None:
    await scene.animate()
    message = scene.job_message(1)
    bot = scene.adapter.client
    channel = bot.get_partial_messageable(scene.channel.id)
    await channel.get_partial_message(message.id).delete()  # a moderator removed it
    assert message.deleted

    await scene.worker.render_all(await scene.worker.claim())
    await scene.wait_delivered(1)
    again = scene.job_message(1)
    assert again.id != message.id and again.embed is not None
    assert again.embed["title"] == "✅ Done" and again.attachments
    ref = await scene.store.message(1, "discord")
    assert ref is not None and ref.message_id == str(again.id)


async def test_a_channel_where_the_bot_cannot_post_queues_nothing(scene: Scene) -> None:
    attach_files = discord.Permissions(attach_files=True).value
    for role in scene.guild.roles.values():
        role.permissions &= ~attach_files
    refused = await scene.animate()
    assert refused.replies[0].content.startswith(
        "I cannot post videos in this channel: I need the permission Attach Files here."
    )
    for role in scene.guild.roles.values():
        role.permissions |= attach_files

    scene.discord.inject_error(
        "POST", f"/channels/{scene.channel.id}/messages", status=403, code=50013,
        message="Missing Permissions",
    )  # fmt: skip
    failed = await scene.animate()
    assert failed.replies[0].content.startswith("I could not post in this channel")
    [job] = await scene.jobs()
    assert job.status is JobStatus.CANCELLED and job.delivered_at is not None
    await scene.settled()  # the tracker has seen the job: it must not post it either
    assert scene.channel.messages == []


async def test_a_wrong_token_stops_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One sentence for the host, what to fix and never the token (the run command
    prints it without a traceback: tests/test_telegram_adapter.py runs it)."""
    async with discord_scene(tmp_path, monkeypatch) as scene:
        scene.configure(token=Secret("not-the-bot-token"))
        with pytest.raises(AdapterStartFailed, match="refused the bot token") as refused:
            await scene.start()
        assert "Reset Token" in str(refused.value)
        assert "not-the-bot-token" not in str(refused.value)
