"""The words of Remix and Extend on Telegram.

Remix asks for the new prompt as a reply to a question of the bot (a force-reply,
so the member's app opens the reply box): the question names the job, so its
answer finds the job from the question alone, after a restart too.
"""

from __future__ import annotations

import re

from bot.formatting import cut
from bot.requests import parse_job_id

REMIX_MARK = "🎨 Remix of job #"
EXTEND_USAGE = (
    "Reply /extend to a finished video of mine to continue it: /extend [new prompt] "
    "[--seconds S] (default: the same prompt and the usual length)."
)
_REMIX = re.compile(re.escape(REMIX_MARK) + r"(\d+)")


def remix_question(job_id: int, prompt: str) -> str:
    return (
        f"{REMIX_MARK}{job_id}: reply to this message with the new prompt (options too, e.g. "
        f"--seconds 4). The picture and the seed stay.\nIt was: {cut(prompt, 300)}"
    )


def remix_job_of(question: str) -> int | None:
    """The job a remix question is about (None: the text is no remix question)."""
    found = _REMIX.match(question)
    return None if found is None else parse_job_id(found[1])
