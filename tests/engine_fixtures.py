"""Shared pieces of the engine tests: the tiny model (built once per test session),
pictures, and a helper that runs a job and keeps what a user would see."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from framepack.engine.continuation import VideoSource
from framepack.engine.engine import FramePackEngine
from framepack.engine.events import Cancelled, Done, EngineEvent, Section, Started, Step
from framepack.engine.params import GenerationParams
from framepack.models.components import Components

# Small jobs: 2 sections (2.4 s of video) of 2 steps at the tiny preset's 128 buckets.
FAST = GenerationParams(prompt="a cat walks", seconds=2.0, steps=2, resolution=128, seed=7)


@functools.cache
def tiny_components() -> Components:
    from framepack.models.tiny import build_tiny_components

    return build_tiny_components()


@functools.cache
def tiny_engine() -> FramePackEngine:
    return FramePackEngine(tiny_components(), device="cpu")


def picture(height: int = 144, width: int = 128, seed: int = 0) -> Image.Image:
    """A smooth colourful picture (gradients plus a disc), not a flat one."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    r = 0.5 + 0.5 * np.sin(6 * x + rng.uniform(0, 6))
    g = 0.5 + 0.5 * np.cos(5 * y + rng.uniform(0, 6))
    b = ((x - 0.5) ** 2 + (y - 0.5) ** 2 < 0.1).astype(float)
    return Image.fromarray((np.stack([r, g, b], axis=-1) * 255).astype(np.uint8))


@dataclass
class Run:
    """What one `generate` call produced."""

    events: list[EngineEvent] = field(default_factory=list)
    frames: np.ndarray | None = None
    cancelled: Cancelled | None = None

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]

    @property
    def started(self) -> Started:
        return self.of(Started)[0]

    @property
    def steps(self) -> list[Step]:
        return self.of(Step)

    @property
    def sections(self) -> list[Section]:
        return self.of(Section)

    @property
    def done(self) -> Done:
        return self.of(Done)[0]


def run_job(
    workdir: Path,
    params: GenerationParams = FAST,
    image: Image.Image | None = None,
    *,
    end_image: Image.Image | None = None,
    source: VideoSource | None = None,
    cancel_when: Callable[[EngineEvent], bool] | None = None,
    engine: FramePackEngine | None = None,
    **changes: object,
) -> Run:
    """Run a job to its end, or until `cancel_when(event)` asks to stop after an event."""
    params = replace(params, **changes) if changes else params
    run = Run()
    stop = False

    def keep(frames: np.ndarray) -> None:
        run.frames = frames

    events = (engine or tiny_engine()).generate(
        params,
        None if source is not None else image or picture(),
        workdir=workdir,
        end_image=end_image,
        source=source,
        should_cancel=lambda: stop,
        on_frames=keep,
    )
    try:
        for event in events:
            run.events.append(event)
            if cancel_when is not None and cancel_when(event):
                stop = True
    except Cancelled as exc:
        run.cancelled = exc
    return run


def section_latents_equal(a: Run, b: Run, section: int) -> bool:
    """Whether two runs showed the same previews for every step of `section`."""
    pa = [s.preview for s in a.steps if s.section == section]
    pb = [s.preview for s in b.steps if s.section == section]
    return len(pa) == len(pb) > 0 and all(np.array_equal(x, y) for x, y in zip(pa, pb, strict=True))
