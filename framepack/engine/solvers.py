"""The flow-matching solvers a job may ask for, one chosen per job.

- ``unipc`` (default): FramePack's own UniPC ``bh1`` on the demo's schedule
  (`framepack.engine.unipc`, `framepack.engine.schedule`): with it the engine
  renders what FramePack's demos render.
- ``euler``: diffusers' ``FlowMatchEulerDiscreteScheduler`` with the shift the
  diffusers pipeline gives it, the sampler of ``HunyuanVideoFramepackPipeline``:
  with it (and cfg 1) the engine's frames equal that pipeline's.

A solver is made per section: `step(i, x, prediction)` takes the model's
prediction at `sigmas[i]` for the point `x` and returns the next point, and after
the last step the section's latents.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from framepack.engine.params import SCHEDULERS
from framepack.engine.schedule import (
    BASE_SEQ_LEN,
    BASE_SHIFT,
    MAX_SEQ_LEN,
    MAX_SHIFT,
    flux_mu,
    flux_sigmas,
)
from framepack.engine.unipc import FlowUniPC

if TYPE_CHECKING:
    from framepack.engine.denoiser import Prediction

# What the diffusers pipeline reads of its scheduler's config to compute `mu`.
_SHIFT_CONFIG = {
    "use_dynamic_shifting": True,
    "base_shift": BASE_SHIFT,
    "max_shift": MAX_SHIFT,
    "base_image_seq_len": BASE_SEQ_LEN,
    "max_image_seq_len": MAX_SEQ_LEN,
}


class Solver(Protocol):
    sigmas: torch.Tensor  # (steps + 1,) float32 on the latents' device; the model runs at [:-1]

    def step(self, i: int, x: torch.Tensor, prediction: Prediction) -> torch.Tensor: ...


class FlowEuler:
    """diffusers' flow-match Euler on the velocity, with the pipeline's schedule."""

    def __init__(self, steps: int, *, tokens: float, device: torch.device) -> None:
        self.scheduler = pipeline_scheduler()
        self.scheduler.set_timesteps(
            sigmas=np.linspace(1.0, 0.0, steps + 1)[:-1], device=device, mu=flux_mu(tokens)
        )
        self.sigmas = self.scheduler.sigmas

    def step(self, i: int, x: torch.Tensor, prediction: Prediction) -> torch.Tensor:
        t = self.scheduler.timesteps[i]
        return self.scheduler.step(prediction.velocity, t, x, return_dict=False)[0]


def pipeline_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """The scheduler `HunyuanVideoFramepackPipeline` is built with (for `Components`)."""
    return FlowMatchEulerDiscreteScheduler(**_SHIFT_CONFIG)


def make_solver(name: str, *, steps: int, tokens: int, device: torch.device) -> Solver:
    """A fresh solver for one section of `tokens` latent tokens in `steps` steps."""
    if name == "unipc":
        return FlowUniPC(flux_sigmas(steps, flux_mu(tokens)).to(device), variant="bh1")
    if name == "euler":
        return FlowEuler(steps, tokens=tokens, device=device)
    raise ValueError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
