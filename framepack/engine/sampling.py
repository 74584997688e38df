"""One section's denoising loop, shared by both samplers and both solvers: the
samplers differ only in the context the denoiser is given, the solvers only in
how they step."""

from __future__ import annotations

from collections.abc import Callable, Generator

import numpy as np
import torch

from framepack.engine.denoiser import Denoiser
from framepack.engine.previews import latents_to_rgb
from framepack.engine.solvers import Solver


class StepCancelled(Exception):
    """The caller's cancel check turned true before a step."""


def denoise_section(
    denoiser: Denoiser,
    solver: Solver,
    noise: torch.Tensor,
    *,
    should_cancel: Callable[[], bool],
) -> Generator[tuple[int, np.ndarray], None, torch.Tensor]:
    """Denoise `noise` (1, 16, T, h, w) along the solver's sigmas.

    Yields (1-based step, preview picture) after each step and returns the latents.
    The preview is the step's clean estimate, projected to RGB without the VAE.
    """
    x = noise
    for i, sigma in enumerate(solver.sigmas[:-1]):
        if should_cancel():
            raise StepCancelled
        prediction = denoiser(x, sigma)
        x = solver.step(i, x, prediction)
        yield i + 1, latents_to_rgb(prediction.denoised)
    return x
