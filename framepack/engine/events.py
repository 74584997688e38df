"""What the engine reports while it renders, in this order:
`Started`, then per section its `Step`s and one `Section`, then `Done`.
A cancelled job raises `Cancelled` instead of reaching `Done`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Started:
    sections: int
    steps: int  # steps per section
    first_section: int = 0  # > 0 when resumed from a checkpoint: sections already done


@dataclass(frozen=True)
class Step:
    section: int  # 0-based, in the order the sections are rendered
    step: int  # 1-based
    steps: int
    preview: np.ndarray = field(
        repr=False, compare=False
    )  # HxWx3 uint8, the current denoised guess


@dataclass(frozen=True)
class Section:
    section: int  # 0-based index of the section just finished
    sections: int
    frames: int  # frames in `video`
    video: Path  # playable MP4 of every frame so far


@dataclass(frozen=True)
class Done:
    video: Path
    frames: int
    seconds: float
    width: int
    height: int
    metadata: dict[str, str]


EngineEvent = Started | Step | Section | Done


class Cancelled(Exception):
    """`should_cancel()` turned true; the checkpoint of the last finished section is kept."""

    def __init__(self, sections_done: int = 0) -> None:
        super().__init__(f"cancelled after {sections_done} finished section(s)")
        self.sections_done = sections_done
