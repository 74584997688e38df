"""FramePack's noise schedule: the sigmas a section is denoised along.

The demo (``diffusers_helper/pipelines/k_diffusion_hunyuan.py``) shifts a linear
schedule with Flux's resolution-dependent ``mu``: it grows linearly with the
section's latent tokens, through (256 tokens, 0.5) and (4096 tokens, 1.15), and is
capped at ``log(7)``; every 640 bucket is above the cap, so there the schedule is
``7t / (1 + 6t)``. The sigmas are computed as the demo computes them, on the CPU in
float32 with the same expression, because a sigma one ulp off feeds the
transformer another bf16 timestep now and then.
"""

from __future__ import annotations

import math

import torch

BASE_SEQ_LEN, MAX_SEQ_LEN = 256, 4096
BASE_SHIFT, MAX_SHIFT = 0.5, 1.15
MAX_EXP_SHIFT = 7.0
TIMESTEP_SCALE = 1000.0  # the transformer reads sigma * 1000


def section_tokens(latent_frames: int, height: int, width: int, patch_size: int = 2) -> int:
    """Latent tokens of one section's noise (the clean history is not counted, as in the demo)."""
    return latent_frames * height * width // patch_size**2


def flux_mu(tokens: float) -> float:
    """Flux's shift for `tokens` latent tokens, capped at log(7)."""
    slope = (MAX_SHIFT - BASE_SHIFT) / (MAX_SEQ_LEN - BASE_SEQ_LEN)
    intercept = BASE_SHIFT - slope * BASE_SEQ_LEN
    return min(slope * tokens + intercept, math.log(MAX_EXP_SHIFT))


def flux_sigmas(steps: int, mu: float) -> torch.Tensor:
    """`steps + 1` sigmas from 1 to 0 (float32, CPU), shifted by `mu`.

    sigma[0] is exactly 1 and sigma[steps] exactly 0 (1 / 0 is inf); the model is
    evaluated at the first `steps` of them.
    """
    t = torch.linspace(1, 0, steps=steps + 1)
    shift = math.exp(mu)
    # `scalar / tensor` is torch's reciprocal-then-multiply: kept as the demo writes
    # it, so that every sigma is the demo's to the bit.
    return shift / (shift + (1 / t - 1))
