"""The forms a finished job's Extend and Remix buttons open.

A modal is the answer to the button's interaction (no 3-second race); its submit
is a new interaction, answered like a command. A form open while the bot
restarts cannot be submitted (Discord says so); its button opens a new one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import discord

from bot.formatting import cut
from bot.requests import UserError

Submit = Callable[[discord.Interaction, dict[str, str]], Awaitable[None]]
PROMPT_LIMIT = 4000  # a paragraph field holds at most this much


def number(text: str, kind: type, what: str) -> Any:
    """A number typed in a field, None when it is empty; a sentence when it is no number."""
    text = text.strip()
    if not text:
        return None
    try:
        return kind(text)
    except ValueError:
        noun = "a whole number" if kind is int else "a number"
        raise UserError(f"The {what} must be {noun}, not {text!r}.") from None


class JobForm(discord.ui.Modal):
    """A form of text fields; on submit, `submit(interaction, {field: value})`."""

    def __init__(self, title: str, fields: list[discord.ui.TextInput], submit: Submit) -> None:
        super().__init__(title=title[:45], timeout=15 * 60)
        self._fields = fields
        self._submit = submit
        for field in fields:
            self.add_item(field)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        values = {str(field.custom_id): str(field.value) for field in self._fields}
        await self._submit(interaction, values)


def extend_form(job_id: int, prompt: str, default_seconds: float, submit: Submit) -> JobForm:
    return JobForm(
        f"Extend job #{job_id}",
        [
            discord.ui.TextInput(
                label="Seconds more",
                custom_id="seconds",
                placeholder=f"{default_seconds:g}",
                required=False,
                max_length=8,
            ),
            discord.ui.TextInput(
                label="Prompt of the new part",
                custom_id="prompt",
                style=discord.TextStyle.paragraph,
                default=cut(prompt, PROMPT_LIMIT),
                required=False,
                max_length=PROMPT_LIMIT,
            ),
        ],
        submit,
    )


def remix_form(job_id: int, prompt: str, seconds: float, submit: Submit) -> JobForm:
    return JobForm(
        f"Remix job #{job_id}",
        [
            discord.ui.TextInput(
                label="Prompt",
                custom_id="prompt",
                style=discord.TextStyle.paragraph,
                default=cut(prompt, PROMPT_LIMIT),
                required=True,
                max_length=PROMPT_LIMIT,
            ),
            discord.ui.TextInput(
                label="Seconds",
                custom_id="seconds",
                placeholder=f"{seconds:g} (as it was)",
                required=False,
                max_length=8,
            ),
            discord.ui.TextInput(
                label="Seed",
                custom_id="seed",
                placeholder="the same (a number for another)",
                required=False,
                max_length=12,
            ),
        ],
        submit,
    )
