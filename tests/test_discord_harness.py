"""The fake Discord drives discord.py's own code paths; a stand-in bot shows each rule it enforces.

The bot here is the smallest one that uses what the real adapter will: a slash
command with an attachment option that defers and downloads, a channel message
with an embed, a file and a persistent DynamicItem button, edits with the bot
token, and the interaction token for the ephemeral answers.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import discord
import pytest
from discord import app_commands
from PIL import Image

from tests.fakes.discord_harness import DiscordHarness, HarnessError
from tests.fakes.discord_state import FakeChannel, FakeGuild, FakeUser


def png(color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (16, 12)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


# the stand-in bot


@dataclass(frozen=True)
class Echo:
    owner_id: int
    channel_id: int
    message_id: int


class EchoButton(discord.ui.DynamicItem[discord.ui.Button], template=r"fpb:test:(?P<id>[0-9]+)"):
    def __init__(self, echo_id: int) -> None:
        super().__init__(discord.ui.Button(label="Done", custom_id=f"fpb:test:{echo_id}"))
        self.echo_id = echo_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: object
    ) -> EchoButton:
        return cls(int(match["id"]))  # type: ignore[index]

    async def callback(self, interaction: discord.Interaction[EchoBot]) -> None:  # type: ignore[override]
        echo = interaction.client.store[self.echo_id]
        if interaction.user.id == echo.owner_id:
            await interaction.response.defer()  # a deferred update: no new message
            await interaction.edit_original_response(content="Done by its owner.")
        elif interaction.permissions.manage_guild:
            await interaction.response.edit_message(content="Closed by an admin.", view=None)
        else:
            await interaction.response.send_message(
                "Only the person who asked can press this.", ephemeral=True
            )


@app_commands.command(description="Echo a picture with a caption")
async def echo(
    interaction: discord.Interaction[EchoBot],
    image: discord.Attachment,
    text: app_commands.Range[str, 1, 100],
) -> None:
    bot = interaction.client
    bot.size_limits.append(interaction.filesize_limit)
    await interaction.response.defer(ephemeral=True, thinking=True)
    try:
        picture = await image.read()
    except discord.NotFound:
        await interaction.followup.send(
            "Your picture expired before I could fetch it; send it again."
        )
        return
    echo_id = len(bot.store) + 1
    embed = discord.Embed(title=f"Echo #{echo_id}", description=text)
    embed.add_field(name="Size", value=f"{len(picture)} bytes")
    embed.set_image(url=f"attachment://{image.filename}")
    view = discord.ui.View(timeout=None)
    view.add_item(EchoButton(echo_id))
    assert isinstance(interaction.channel, discord.TextChannel)
    message = await interaction.channel.send(
        embed=embed, file=discord.File(io.BytesIO(picture), image.filename), view=view
    )
    bot.store[echo_id] = Echo(interaction.user.id, message.channel.id, message.id)
    bot.interactions[echo_id] = interaction
    await interaction.followup.send(f"Queued as #{echo_id}.", ephemeral=True)


@app_commands.command(description="Acknowledge only when the test says so")
async def slow(interaction: discord.Interaction[EchoBot]) -> None:
    bot = interaction.client
    await bot.release.wait()
    try:
        await interaction.response.defer()
    except discord.HTTPException as error:
        bot.met(error)


@app_commands.command(description="Are you there?")
async def ping(interaction: discord.Interaction[EchoBot]) -> None:
    await interaction.response.send_message("pong")


@app_commands.command(description="Admins only")
@app_commands.default_permissions(manage_guild=True)
async def purge(
    interaction: discord.Interaction[EchoBot], keep: app_commands.Range[int, 0, 10] = 0
) -> None:
    await interaction.response.send_message(f"Purged all but {keep}.", ephemeral=True)


@app_commands.command(description="Download first, acknowledge later: too slow on a slow link")
async def rush(interaction: discord.Interaction[EchoBot], image: discord.Attachment) -> None:
    await image.read()
    try:
        await interaction.response.send_message("Got it.", ephemeral=True)
    except discord.HTTPException as error:
        interaction.client.met(error)


@app_commands.command(description="Open a thread of its own")
async def discuss(interaction: discord.Interaction[EchoBot], topic: str) -> None:
    await interaction.response.defer(ephemeral=True)
    assert isinstance(interaction.channel, discord.TextChannel)
    starter = await interaction.channel.send(f"Let's talk about {topic}.")
    thread = await starter.create_thread(name=topic)
    await thread.send("First post.")
    await interaction.followup.send(f"See {thread.mention}.", ephemeral=True)


@app_commands.command(description="Fail the way an untested adapter might")
async def boom(interaction: discord.Interaction[EchoBot]) -> None:
    await interaction.response.defer(ephemeral=True)
    assert interaction.guild is not None
    await interaction.guild.fetch_roles()  # a route the fake does not serve


class EchoBot(discord.Client):
    def __init__(self, store: dict[int, Echo], guild_id: int) -> None:
        super().__init__(intents=discord.Intents.default())
        self.tree = app_commands.CommandTree(self)
        self.store = store  # stands in for the database: it outlives the bot
        self.guild = discord.Object(guild_id)
        self.interactions: dict[int, discord.Interaction] = {}
        self.size_limits: list[int] = []
        self.errors: list[int] = []  # Discord's error codes the bot met
        self.error_seen = asyncio.Event()
        self.release = asyncio.Event()
        for command in (echo, slow, rush, purge, discuss, boom):
            self.tree.add_command(command, guild=self.guild)
        self.tree.add_command(ping)

    def met(self, error: discord.HTTPException) -> None:
        self.errors.append(error.code)
        self.error_seen.set()

    async def setup_hook(self) -> None:
        self.add_dynamic_items(EchoButton)
        await self.tree.sync(guild=self.guild)
        await self.tree.sync()

    async def finish(self, echo_id: int, video: bytes) -> None:
        """Swap the picture for the video (bot token); tell the requester (interaction token)."""
        job = self.store[echo_id]
        channel = self.get_partial_messageable(job.channel_id)
        embed = discord.Embed(title=f"Echo #{echo_id} finished").set_image(
            url="attachment://echo.mp4"
        )
        await channel.get_partial_message(job.message_id).edit(
            embed=embed, attachments=[discord.File(io.BytesIO(video), "echo.mp4")]
        )
        try:
            await self.interactions[echo_id].edit_original_response(
                content=f"#{echo_id} is finished."
            )
        except discord.HTTPException as error:
            self.met(error)


# the scene


@dataclass
class Scene:
    discord: DiscordHarness
    guild: FakeGuild
    channel: FakeChannel
    alice: FakeUser
    bob: FakeUser
    mod: FakeUser
    store: dict[int, Echo]

    def bot(self) -> EchoBot:
        return EchoBot(self.store, self.guild.id)


@pytest.fixture
async def scene() -> AsyncIterator[Scene]:
    async with DiscordHarness() as fake:
        guild = fake.add_guild("Test Guild")
        channel = guild.add_text_channel("general")
        alice, bob, mod = fake.add_user("alice"), fake.add_user("bob"), fake.add_user("mod")
        guild.add_member(alice)
        guild.add_member(bob)
        guild.add_member(mod, permissions=discord.Permissions(manage_guild=True))
        yield Scene(fake, guild, channel, alice, bob, mod, {})


async def run_echo(scene: Scene, bot: EchoBot, text: str = "hello") -> int:
    """Alice echoes a picture; the id of the channel message it makes."""
    picture = scene.discord.upload(png(), "cat.png")
    reply = await scene.discord.slash(scene.alice, scene.channel, "echo", image=picture, text=text)
    assert reply.thinking and reply.ephemeral and not reply.failed
    await scene.discord.wait_until(
        lambda: reply.original is not None and not reply.original.loading, what="reply"
    )
    message = scene.channel.last_message
    assert message is not None
    return message.id


# the tests


async def test_slash_command_with_attachment_defers_downloads_posts_and_edits(scene: Scene) -> None:
    fake = scene.discord
    bot = scene.bot()
    await fake.start_bot(bot)
    assert set(fake.commands(scene.guild)) == {"echo", "slow", "rush", "purge", "discuss", "boom"}
    assert set(fake.commands()) == {"ping"}

    picture = fake.upload(png(), "cat.png")
    reply = await fake.slash(scene.alice, scene.channel, "echo", image=picture, text="a red square")

    assert reply.thinking and reply.ephemeral
    assert reply.ack_seconds is not None and reply.ack_seconds < 3
    await fake.wait_until(
        lambda: reply.original is not None and not reply.original.loading, what="the reply"
    )
    assert [m.content for m in reply.replies] == ["Queued as #1."]
    assert reply.original is not None and reply.original.ephemeral
    assert bot.size_limits == [10 * 1024 * 1024]
    assert [r.status for r in fake.requests_to("GET", "/attachments/*")] == [200]

    [message] = scene.channel.messages
    assert message.embed is not None
    assert message.embed["title"] == "Echo #1"
    assert message.embed["description"] == "a red square"
    assert message.embed["fields"] == [
        {"name": "Size", "value": f"{len(png())} bytes", "inline": True}
    ]
    image = message.embed_image()
    assert image is not None and not isinstance(image, str) and image.data == png()
    assert [(a.filename, a.content_type) for a in message.attachments] == [("cat.png", "image/png")]
    assert message.custom_ids == ["fpb:test:1"]
    assert message.author_id == fake.bot_user.id

    await bot.finish(1, b"not really a video")

    assert message.edits == 1 and message.unchanged_edits == 0
    assert [a.filename for a in message.attachments] == ["echo.mp4"]
    assert message.attachment("echo.mp4").data == b"not really a video"
    assert message.embed is not None and message.embed["title"] == "Echo #1 finished"
    assert message.custom_ids == ["fpb:test:1"], "an edit without components keeps the button"
    assert message.history[0].attachments[0].filename == "cat.png"
    assert reply.original.content == "#1 is finished."
    assert fake.requests_to("PATCH", "/channels/*/messages/*")[0].auth == "bot"


async def test_button_survives_a_restart_and_refuses_other_users(scene: Scene) -> None:
    fake = scene.discord
    first = scene.bot()
    await fake.start_bot(first)
    message = fake.message(await run_echo(scene, first))
    await fake.stop_bot(first)

    await fake.start_bot(scene.bot())

    refused = await fake.press(scene.bob, message, "fpb:test:1")
    assert refused.response_type == 4 and refused.ephemeral
    assert [m.content for m in refused.replies] == ["Only the person who asked can press this."]
    assert message.edits == 0
    with pytest.raises(HarnessError):
        await fake.press(scene.alice, refused.replies[0], "fpb:test:1")  # bob's ephemeral: not hers

    owned = await fake.press(scene.alice, message, "fpb:test:1")
    assert owned.response_type == 6 and owned.replies == []
    await fake.wait_until(lambda: message.content == "Done by its owner.", what="the owner's edit")

    closed = await fake.press(scene.mod, message, "fpb:test:1")
    assert closed.response_type == 7
    assert message.content == "Closed by an admin." and message.buttons == []
    assert len(scene.channel.messages) == 1


async def test_channel_edits_outlive_the_interaction_token(scene: Scene) -> None:
    fake = scene.discord
    bot = scene.bot()
    await fake.start_bot(bot)
    message = fake.message(await run_echo(scene, bot))
    [reply] = fake.interactions

    fake.advance(16 * 60)
    await bot.finish(1, b"video after a long render")

    assert message.attachment("echo.mp4").data == b"video after a long render"
    assert bot.errors == [50027]
    assert [(status, code) for _, status, code in reply.webhook_errors] == [(401, 50027)]
    assert reply.original is not None and reply.original.content == "Queued as #1."


async def test_an_acknowledgement_after_three_seconds_fails_the_interaction(scene: Scene) -> None:
    fake = scene.discord
    bot = scene.bot()
    await fake.start_bot(bot)

    late = await fake.slash(scene.alice, scene.channel, "slow", wait=False)
    fake.advance(3.5)
    assert late.failed and not late.acked
    bot.release.set()
    await asyncio.wait_for(bot.error_seen.wait(), 5)

    assert bot.errors == [10062]
    assert late.response_type is None


async def test_nobody_acknowledging_fails_the_interaction_in_real_time() -> None:
    async with DiscordHarness(ack_window=0.2) as fake:
        guild = fake.add_guild()
        channel = guild.add_text_channel("general")
        alice = fake.add_user("alice")
        guild.add_member(alice)
        bot = EchoBot({}, guild.id)
        await fake.start_bot(bot)
        await fake.stop_bot(bot)

        unanswered = await fake.slash(alice, channel, "ping")

        assert unanswered.failed and unanswered.replies == []


async def test_downloading_before_acknowledging_misses_the_window_on_a_slow_link(
    scene: Scene,
) -> None:
    fake = scene.discord
    bot = scene.bot()
    await fake.start_bot(bot)
    fake.download_delay = 4.0

    rushed = await fake.slash(scene.alice, scene.channel, "rush", image=fake.upload(png(), "a.png"))
    await asyncio.wait_for(bot.error_seen.wait(), 5)
    assert rushed.failed and bot.errors == [10062]

    await run_echo(scene, bot)  # defers first, so the slow download does not matter


async def test_uploads_over_the_limit_and_oversized_embeds_are_refused(scene: Scene) -> None:
    fake = scene.discord
    bot = scene.bot()
    await fake.start_bot(bot)
    message = fake.message(await run_echo(scene, bot))

    scene.guild.upload_limit = 100_000
    with pytest.raises(discord.HTTPException) as refused:
        await bot.finish(1, b"x" * 100_001)
    assert (refused.value.status, refused.value.code) == (413, 40005)
    assert message.edits == 0

    await run_echo(scene, bot)
    assert bot.size_limits == [10 * 1024 * 1024, 100_000]

    channel = bot.get_channel(scene.channel.id)
    assert isinstance(channel, discord.TextChannel)
    with pytest.raises(discord.HTTPException) as invalid:
        await channel.send(embed=discord.Embed(title="x" * 257))
    assert (invalid.value.status, invalid.value.code) == (400, 50035)
    assert "embeds.0.title" in invalid.value.text


async def test_discord_py_waits_out_429s_itself(scene: Scene) -> None:
    fake = scene.discord
    bot = scene.bot()
    await fake.start_bot(bot)
    message = fake.message(await run_echo(scene, bot))

    fake.inject_rate_limit("PATCH", "/channels/*/messages/*", retry_after=0.2)
    started = time.monotonic()
    await bot.finish(1, b"first")
    assert time.monotonic() - started >= 0.2
    assert [r.status for r in fake.requests_to("PATCH", "/channels/*/messages/*")] == [429, 200]

    fake.limit_rate("PATCH", "/channels/*/messages/*", limit=2, per=0.3)
    for n in range(3):
        await bot.finish(1, f"edit {n}".encode())
    assert message.attachment("echo.mp4").data == b"edit 2"
    assert message.edits == 4


async def test_an_expired_attachment_url_answers_404(scene: Scene) -> None:
    fake = scene.discord
    await fake.start_bot(scene.bot())
    picture = fake.upload(png(), "cat.png", expires_after=60)

    fake.advance(61)
    reply = await fake.slash(scene.alice, scene.channel, "echo", image=picture, text="late")
    await fake.wait_until(
        lambda: reply.original is not None and not reply.original.loading, what="the reply"
    )

    assert [m.content for m in reply.replies] == [
        "Your picture expired before I could fetch it; send it again."
    ]
    assert reply.ephemeral
    assert [r.status for r in fake.requests_to("GET", "/attachments/*")] == [404]
    assert scene.channel.messages == []


async def test_what_the_discord_client_would_not_let_a_user_do(scene: Scene) -> None:
    fake = scene.discord
    await fake.start_bot(scene.bot())
    picture = fake.upload(png(), "cat.png")

    with pytest.raises(HarnessError, match="needs option 'text'"):
        await fake.slash(scene.alice, scene.channel, "echo", image=picture)
    with pytest.raises(HarnessError, match="outside the command's bounds"):
        await fake.slash(scene.alice, scene.channel, "echo", image=picture, text="x" * 101)
    with pytest.raises(HarnessError, match="may not use /purge"):
        await fake.slash(scene.bob, scene.channel, "purge")
    with pytest.raises(HarnessError, match="not synced"):
        await fake.slash(
            scene.alice, fake.dm_channel(scene.alice), "echo", image=picture, text="hi"
        )

    purged = await fake.slash(scene.mod, scene.channel, "purge", keep=3)
    assert [m.content for m in purged.replies] == ["Purged all but 3."]
    pong = await fake.slash(scene.alice, fake.dm_channel(scene.alice), "ping")
    assert pong.guild_id is None and [m.content for m in pong.replies] == ["pong"]
    assert not pong.ephemeral


async def test_a_thread_of_its_own_and_a_resumed_gateway(scene: Scene) -> None:
    fake = scene.discord
    await fake.start_bot(scene.bot())

    await fake.reconnect_gateway()
    reply = await fake.slash(scene.alice, scene.channel, "discuss", topic="cats")
    await fake.wait_until(lambda: reply.replies and not reply.replies[0].loading, what="reply")

    [starter] = scene.channel.messages
    [thread] = scene.channel.threads
    assert (thread.id, thread.name) == (starter.id, "cats")
    assert [m.content for m in thread.messages] == ["First post."]
    assert [m.content for m in reply.replies] == [f"See <#{thread.id}>."]


async def test_the_harness_fails_a_test_whose_bot_swallowed_errors_or_used_unserved_routes() -> (
    None
):
    fake = DiscordHarness()
    await fake.start()
    guild = fake.add_guild()
    channel = guild.add_text_channel("general")
    alice = fake.add_user("alice")
    guild.add_member(alice)
    await fake.start_bot(EchoBot({}, guild.id))

    await fake.slash(alice, channel, "boom")
    await fake.wait_until(lambda: fake.bot_errors, what="the logged error")

    with pytest.raises(AssertionError) as failure:
        await fake.close()
    assert "NotFound" in str(failure.value)
    assert f"GET /guilds/{guild.id}/roles" in str(failure.value)
