"""The two flow-matching solvers a job may ask for, with FramePack's noise schedule.

- ``unipc`` (default): UniPC multistep on flow sigmas, the solver of the original
  FramePack demos. diffusers' ``bh1`` variant divides by ``log(0)`` on the last
  step to sigma 0 and returns NaN (diffusers 0.42.1), so this ships ``bh2``,
  which stays finite there (see tests/test_engine_schedulers.py).
- ``euler``: diffusers' flow-match Euler, the scheduler of
  ``HunyuanVideoFramepackPipeline``; with it the engine's frames equal the
  pipeline's.

Both take the Flux resolution-dependent shift of the original: ``mu`` grows
linearly with the number of latent tokens of a section and is capped at
``log(7)`` (a 640 bucket is always at the cap).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from framepack.engine.params import SCHEDULERS

SchedulerName = Literal["unipc", "euler"]

# The Flux shift line through (256 tokens, 0.5) and (4096 tokens, 1.15), capped at log(7).
BASE_SEQ_LEN, MAX_SEQ_LEN = 256, 4096
BASE_SHIFT, MAX_SHIFT = 0.5, 1.15
MAX_EXP_SHIFT = 7.0

_SHIFT_CONFIG = {
    "use_dynamic_shifting": True,
    "base_shift": BASE_SHIFT,
    "max_shift": MAX_SHIFT,
    "base_image_seq_len": BASE_SEQ_LEN,
    "max_image_seq_len": MAX_SEQ_LEN,
}


def make_scheduler(name: str) -> SchedulerMixin:
    """A fresh scheduler; cheap, so each job (and each section) may own one."""
    if name == "euler":
        return FlowMatchEulerDiscreteScheduler(**_SHIFT_CONFIG)
    if name == "unipc":
        return UniPCMultistepScheduler(
            prediction_type="flow_prediction",
            use_flow_sigmas=True,
            solver_order=3,  # the original's order (min(3, steps - 1))
            solver_type="bh2",
            # the dynamic shift of UniPC reads no base/max keys: `mu` comes from `flux_mu`
            use_dynamic_shifting=True,
        )
    raise ValueError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")


def flux_mu(tokens: float) -> float:
    """The original's ``calculate_flux_mu`` (and the pipeline's ``calculate_shift``, capped)."""
    # Written as the pipeline writes it, so that the float rounding is the same.
    slope = (MAX_SHIFT - BASE_SHIFT) / (MAX_SEQ_LEN - BASE_SEQ_LEN)
    intercept = BASE_SHIFT - slope * BASE_SEQ_LEN
    return min(tokens * slope + intercept, math.log(MAX_EXP_SHIFT))


def set_section_timesteps(
    scheduler: SchedulerMixin, steps: int, *, tokens: float, device: torch.device | None = None
) -> None:
    """Reset `scheduler` for one section of `tokens` latent tokens, as the pipeline does."""
    sigmas = np.linspace(1.0, 0.0, steps + 1)[:-1]
    scheduler.set_timesteps(sigmas=sigmas, device=device, mu=flux_mu(tokens))


def model_timesteps(scheduler: SchedulerMixin) -> torch.Tensor:
    """The timestep the transformer sees at each step: sigma * 1000, as a float.

    UniPC rounds its `timesteps` to integers (they only index its tables), while the
    original FramePack feeds the exact sigma; Euler's timesteps are exactly this.
    """
    if isinstance(scheduler, FlowMatchEulerDiscreteScheduler):
        return scheduler.timesteps
    return scheduler.sigmas[:-1] * scheduler.config.num_train_timesteps
