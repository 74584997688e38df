"""One section's denoising loop, shared by both samplers and both solvers: the
samplers differ only in the context the denoiser is given, the solvers only in
how they step."""

from __future__ import annotations

from collections.abc import Callable, Generator

import torch

from framepack.engine.denoiser import Denoiser
from framepack.engine.solvers import Solver


class StepCancelled(Exception):
    """The caller's cancel check turned true before a step."""


@torch.no_grad()
def denoise_section(
    denoiser: Denoiser,
    solver: Solver,
    noise: torch.Tensor,
    *,
    should_cancel: Callable[[], bool],
) -> Generator[tuple[int, torch.Tensor], None, torch.Tensor]:
    """Denoise `noise` (1, 16, T, h, w) along the solver's sigmas.

    Yields (1-based step, the step's clean estimate) after each step (the previews
    are made of it) and returns the latents.
    """
    x = noise
    steps = len(solver.sigmas) - 1
    for i, sigma in enumerate(solver.sigmas[:-1]):
        if should_cancel():
            raise StepCancelled
        prediction = denoiser(x, sigma, step=i, steps=steps)
        x = solver.step(i, x, prediction)
        yield i + 1, prediction.denoised
    return x
