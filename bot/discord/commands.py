"""The slash commands, with the bounds of the config in their schema.

No `from __future__ import annotations` here: the annotations of the command
callbacks carry the config's bounds (`Range[float, 0.5, max_seconds]`) and
discord.py reads them when the commands are built. The Discord client then
refuses out-of-range values before they are sent; the service checks again, so
a value that slips through gets the same answer as on Telegram.
"""

from typing import TYPE_CHECKING, Literal

import discord
from discord import app_commands

from bot.discord.client import answer
from bot.requests import SEED_MAX, AnimateOptions, UserError, build_params, parse_lora_specs
from storage.config import ModelSettings

if TYPE_CHECKING:
    from bot.discord.adapter import DiscordAdapter


def build_commands(adapter: "DiscordAdapter") -> list[app_commands.Command]:
    """The slash commands, with the bounds of the config in their schema (the Discord
    client then refuses out-of-range values before they are sent; the service checks
    again, so a value that slips through gets the same answer as on Telegram)."""
    settings = adapter.service.settings
    gen = settings.generation
    max_prompt = min(gen.max_prompt_chars, 6000)

    @app_commands.command(name="animate", description="Turn a picture into a video")
    @app_commands.describe(
        image="the picture to animate (PNG, JPEG or WebP), or a video to continue",
        prompt="what should happen, e.g. 'the cat turns its head and blinks'",
        seconds=f"video length in seconds (default {gen.seconds:g})",
        seed="a number, to get the same video again (default: random)",
        steps=f"more is slower and finer (default {gen.steps})",
        guidance=f"how closely to follow the prompt (default {gen.guidance:g})",
        model="framepack (default) or f1",
        cache=f"skip steps, ~2x faster, not lossless; off is exact (default {gen.cache})",
        end_image="a picture the video should end on (framepack only)",
        lora="a style of /loras, name or name:scale (several: a,b:0.5)",
    )
    async def animate(
        interaction: discord.Interaction,
        image: discord.Attachment,
        prompt: app_commands.Range[str, 1, max_prompt],
        seconds: app_commands.Range[float, 0.5, gen.max_seconds] | None = None,
        seed: app_commands.Range[int, 0, SEED_MAX] | None = None,
        steps: app_commands.Range[int, 1, gen.max_steps] | None = None,
        guidance: app_commands.Range[float, 1.0, 32.0] | None = None,
        model: Literal["framepack", "f1"] | None = None,
        cache: Literal["off", "teacache", "magcache"] | None = None,
        end_image: discord.Attachment | None = None,
        lora: app_commands.Range[str, 1, 200] | None = None,
    ) -> None:
        try:  # refused at once, before the pictures are fetched
            loras = tuple(parse_lora_specs(lora)) if lora else None
            options = AnimateOptions(
                prompt, seconds, seed, steps, guidance, model, cache=cache, loras=loras
            )
            build_params(
                options, gen, has_end_image=end_image is not None, catalogue=settings.model
            )
        except UserError as refused:
            await answer(interaction, refused.message)
            return
        await adapter.animate(interaction, image, options, end_image)

    @animate.autocomplete("lora")
    async def lora_autocomplete(
        interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        model = getattr(interaction.namespace, "model", None) or "framepack"
        return lora_choices(settings.model, current, model)

    @app_commands.command(name="loras", description="The styles (LoRAs) to add with lora:")
    async def loras(interaction: discord.Interaction) -> None:
        await adapter.loras(interaction)

    @app_commands.command(name="queue", description="What is rendering and waiting")
    async def queue(interaction: discord.Interaction) -> None:
        await adapter.queue(interaction)

    @app_commands.command(name="status", description="Your latest jobs")
    async def status(interaction: discord.Interaction) -> None:
        await adapter.status(interaction)

    @app_commands.command(name="help", description="How to use this bot")
    async def help_(interaction: discord.Interaction) -> None:
        await adapter.help(interaction)

    @app_commands.command(name="cancel", description="Stop a job (default: your latest)")
    @app_commands.describe(job="the job number (admins: any job)")
    async def cancel(
        interaction: discord.Interaction, job: app_commands.Range[int, 1, None] | None = None
    ) -> None:
        await adapter.cancel(interaction, job)

    @app_commands.command(name="pause", description="Admins: start no new job until /resume")
    async def pause(interaction: discord.Interaction) -> None:
        await adapter.admin(interaction, "pause")

    @app_commands.command(name="resume", description="Admins: start jobs again")
    async def resume(interaction: discord.Interaction) -> None:
        await adapter.admin(interaction, "resume")

    @app_commands.command(name="ban", description="Admins: stop a user from queueing jobs")
    @app_commands.describe(user="who", reason="shown to them when they try")
    async def ban(interaction: discord.Interaction, user: discord.User, reason: str = "") -> None:
        await adapter.admin(interaction, "ban", str(user.id), reason)

    @app_commands.command(name="unban", description="Admins: let a user queue jobs again")
    async def unban(interaction: discord.Interaction, user: discord.User) -> None:
        await adapter.admin(interaction, "unban", str(user.id))

    @app_commands.command(name="limit", description="Admins: a user's own queue limits")
    @app_commands.describe(
        user="who",
        waiting="jobs they may have waiting or rendering (leave both out: the usual limits)",
        seconds_per_day="seconds of video a day (0: no limit)",
    )
    async def limit(
        interaction: discord.Interaction,
        user: discord.User,
        waiting: app_commands.Range[int, 1, 1000] | None = None,
        seconds_per_day: app_commands.Range[float, 0.0, 86400.0] | None = None,
    ) -> None:
        await adapter.admin(interaction, "set_limits", str(user.id), waiting, seconds_per_day)

    return [animate, queue, status, help_, cancel, pause, resume, ban, unban, limit, loras]


def lora_choices(catalogue: ModelSettings, current: str, model: str) -> list[app_commands.Choice]:
    """The catalogue's LoRAs for `model` that complete what is typed: the last of a
    comma-separated list (the ones before kept as typed), by name or description."""
    done, comma, last = current.rpartition(",")
    prefix = done + comma
    typed = last.strip().partition(":")[0].lower()
    choices = []
    for lora in catalogue.loras_for(model):
        if typed in lora.name or typed in lora.description.lower():
            label = f"{lora.name} (scale {lora.scale:g})"
            if lora.description:
                label += f" — {lora.description}"
            choices.append(app_commands.Choice(name=label[:100], value=(prefix + lora.name)[:100]))
    return choices[:25]  # Discord shows 25 at most
