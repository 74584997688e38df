"""How numbers read in every message of the bot: sizes, durations, waits, progress.

One formatter of each, used by both platforms and the web page, so a size or a
wait reads the same wherever a member or the host meets it.
"""

from __future__ import annotations

BAR_WIDTH = 12


def format_bytes(size: int) -> str:
    """A file size as people read it: 300 kB, 2.1 MB, 50 MB (decimal units, as the
    platforms state their limits)."""
    if size < 1_000_000:
        return f"{max(0, size) / 1000:.0f} kB"
    megabytes = size / 1_000_000
    if megabytes < 10:
        text = f"{megabytes:.1f}".removesuffix(".0")
        return f"{text} MB"
    return f"{megabytes:.0f} MB"


def format_duration(seconds: float) -> str:
    """A measured time: 45 s, 3 min 05 s, 2 h 10 min."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s" if sec else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def format_eta(seconds: float) -> str:
    """A wait to come, coarse enough that it does not change every second (each change
    is an edit of every queued job's message)."""
    if seconds < 60:
        return "less than a minute"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(round(seconds / 600) * 10, 60)
    return f"{hours} h {minutes:02d} min" if minutes else f"{hours} h"


def progress_bar(fraction: float, width: int = BAR_WIDTH) -> str:
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "▰" * filled + "▱" * (width - filled)


def cut(text: str, limit: int) -> str:
    """`text` in at most `limit` characters, an ellipsis marking a cut."""
    return text if len(text) <= limit else text[: max(0, limit - 1)].rstrip() + "…"
