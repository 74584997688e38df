"""discord.py's client for the bot: the command tree that refuses unserved places,
the persistent job buttons, and the ephemeral answer every interaction gets.

Buttons are `DynamicItem`s whose custom_id names the action and the job
(``fpb:reroll:42``), registered in `setup_hook`: a restarted bot handles the
buttons of messages it sent before, and the database says whose job it is.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, cast

import discord
from discord import app_commands

from bot.discord.render import BUTTON_STYLES, CUSTOM_ID_TEMPLATE, custom_id
from bot.progress import Action
from bot.requests import parse_job_id

if TYPE_CHECKING:
    from bot.discord.adapter import DiscordAdapter

log = logging.getLogger("framepack_bot.discord")

MESSAGE_LIMIT = 2000  # characters of a plain message


class JobButton(discord.ui.DynamicItem[discord.ui.Button], template=CUSTOM_ID_TEMPLATE):
    """One button of a job's message; it works for messages sent before a restart."""

    def __init__(self, action: Action, job_id: int, label: str | None = None) -> None:
        super().__init__(
            discord.ui.Button(
                label=label or action.capitalize(),
                style=BUTTON_STYLES[action],
                custom_id=custom_id(action, job_id),
            )
        )
        self.action: Action = action
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: Any
    ) -> JobButton:
        job_id = parse_job_id(match["job"])
        if job_id is None:  # a forged id no job can have: the press is answered as unknown
            job_id = 0
        return cls(cast(Action, match["action"]), job_id, item.label)

    async def callback(self, interaction: discord.Interaction) -> None:
        client = cast(FramepackClient, interaction.client)
        await client.adapter.on_button(interaction, self.action, self.job_id)


class FramepackTree(app_commands.CommandTree):
    """Refuses places the config does not serve; answers every failure ephemerally."""

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        adapter = cast(FramepackClient, self.client).adapter
        refusal = adapter.refusal(interaction)
        if refusal is not None:
            await interaction.response.send_message(refusal, ephemeral=True)
            return False
        return True

    async def on_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        cause = error.original if isinstance(error, app_commands.CommandInvokeError) else error
        log.error(
            "discord: /%s failed",
            interaction.command.qualified_name if interaction.command else "?",
            exc_info=cause,
        )
        await answer(interaction, "Something went wrong on my side. Please try again later.")


class FramepackClient(discord.Client):
    def __init__(self, adapter: DiscordAdapter, **options: Any) -> None:
        # The bot never joins voice: no warning that voice libraries are missing.
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False
        # No privileged intents: interactions reach a bot whatever its intents.
        super().__init__(intents=discord.Intents(guilds=True), **options)
        self.adapter = adapter
        self.tree = FramepackTree(self)
        self.ready = asyncio.Event()

    async def setup_hook(self) -> None:
        self.add_dynamic_items(JobButton)
        await self.adapter.sync_commands()

    async def on_ready(self) -> None:
        self.ready.set()


async def answer(interaction: discord.Interaction, text: str) -> None:
    """An ephemeral answer, whether or not the interaction was acknowledged already."""
    text = text[:MESSAGE_LIMIT]
    try:
        if interaction.response.is_done():
            await interaction.followup.send(text, ephemeral=True)
        else:
            await interaction.response.send_message(text, ephemeral=True)
    except discord.HTTPException as exc:  # the token expired, or Discord is down: log only
        log.warning("discord: could not answer interaction %s: %s", interaction.id, exc)
