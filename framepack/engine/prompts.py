"""Per-section prompts: ``"[0s: a man walks] [3s: he turns around]"``.

Each section takes the prompt of the time in the video where it starts: the
last timed prompt whose time is at or before the section's start. A prompt
without brackets applies to the whole video.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TIMED = re.compile(r"\[\s*(\d+(?:\.\d+)?)\s*s\s*:\s*([^\[\]]*?)\s*\]")
_LOOKS_TIMED = re.compile(r"\[\s*\d+(?:\.\d+)?\s*s\s*:")
_EPSILON = 1e-6  # section starts are sums of floats: 3.5999999 s starts at 3.6 s


@dataclass(frozen=True)
class TimedPrompt:
    start: float  # seconds into the video
    text: str


def parse_prompt(prompt: str) -> list[TimedPrompt]:
    """The timed prompts in order of time; a plain prompt is one that starts at 0 s."""
    if not _LOOKS_TIMED.search(prompt):
        return [TimedPrompt(0.0, prompt.strip())]
    matches = list(_TIMED.finditer(prompt))
    leftover = _TIMED.sub("", prompt).strip()
    if leftover:
        raise ValueError(
            f"text outside the timed prompts: {leftover[:40]!r}; write every part as "
            "[<seconds>s: <prompt>], e.g. '[0s: a man walks] [3s: he turns around]'"
        )
    timed = sorted((TimedPrompt(float(m[1]), m[2]) for m in matches), key=lambda t: t.start)
    for t in timed:
        if not t.text:
            raise ValueError(f"the prompt at {t.start:g}s is empty")
    starts = [t.start for t in timed]
    if len(set(starts)) != len(starts):
        raise ValueError("two timed prompts start at the same second")
    return timed


def add_triggers(prompt: str, triggers: str) -> str:
    """`prompt` with a LoRA's trigger words after it (after each timed prompt's text)."""
    triggers = triggers.strip()
    if not triggers:
        return prompt
    if not _LOOKS_TIMED.search(prompt):
        return f"{prompt.strip()}, {triggers}"
    return _TIMED.sub(lambda m: f"[{m[1]}s: {m[2]}, {triggers}]", prompt)


def prompt_at(timed: list[TimedPrompt], seconds: float) -> str:
    """The prompt in force at `seconds` (the first one before any prompt starts)."""
    current = timed[0].text
    for t in timed:
        if t.start <= seconds + _EPSILON:
            current = t.text
    return current


def section_prompts(
    prompt: str, *, sections: int, section_seconds: float, inverted: bool
) -> list[str]:
    """The prompt of each section, in rendering order.

    The inverted sampler renders the end of the video first: its k-th section is
    the video's (sections - 1 - k)-th.
    """
    timed = parse_prompt(prompt)
    by_position = [prompt_at(timed, i * section_seconds) for i in range(sections)]
    return by_position[::-1] if inverted else by_position
