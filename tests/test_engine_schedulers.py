"""The flow-matching solvers against fields whose exact solution is known, and the
noise schedule against the original FramePack's."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from framepack.engine.schedulers import (
    flux_mu,
    make_scheduler,
    model_timesteps,
    set_section_timesteps,
)

TOKENS_128 = 9 * 16 * 14 / 4  # a section at the tiny preset's 128x112 bucket
TOKENS_640 = 9 * 80 * 76 / 4  # and at the real model's 640x608


def solve(name: str, velocity, x: torch.Tensor, steps: int, tokens: float) -> torch.Tensor:
    scheduler = make_scheduler(name)
    set_section_timesteps(scheduler, steps, tokens=tokens)
    for i, t in enumerate(scheduler.timesteps):
        x = scheduler.step(velocity(x, scheduler.sigmas[i]), t, x, return_dict=False)[0]
    return x


@pytest.mark.parametrize("name", ["unipc", "euler"])
@pytest.mark.parametrize("steps", [1, 2, 3, 5, 25])
@pytest.mark.parametrize("tokens", [TOKENS_128, TOKENS_640])
def test_solvers_land_on_the_data_of_an_exact_flow(name: str, steps: int, tokens: float) -> None:
    # One data point x0: on the path x = (1 - sigma) x0 + sigma * noise, the exact
    # velocity is (x - x0) / sigma, and every step should land on that path.
    generator = torch.Generator().manual_seed(0)
    x0 = torch.randn(1, 16, 3, 4, 4, generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    result = solve(name, lambda x, sigma: (x - x0) / sigma, noise, steps, tokens)
    assert torch.isfinite(result).all()
    torch.testing.assert_close(result, x0, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["unipc", "euler"])
def test_solvers_follow_a_constant_velocity(name: str) -> None:
    # dx/dsigma = c from sigma 1 to 0: x(0) = x(1) - c.
    start = torch.linspace(-2, 2, 48).reshape(1, 3, 1, 4, 4)
    c = torch.full_like(start, 0.7)
    result = solve(name, lambda x, sigma: c, start, 25, TOKENS_640)
    torch.testing.assert_close(result, start - c, atol=1e-4, rtol=1e-4)


def original_sigmas(steps: int, tokens: float) -> np.ndarray:
    # diffusers_helper/pipelines/k_diffusion_hunyuan.py: calculate_flux_mu + flux_time_shift
    k = (1.15 - 0.5) / (4096 - 256)
    mu = min(k * tokens + 0.5 - k * 256, math.log(7.0))
    t = np.linspace(1, 0, steps + 1)[:-1]
    return math.exp(mu) / (math.exp(mu) + (1 / t - 1))


@pytest.mark.parametrize("name", ["unipc", "euler"])
@pytest.mark.parametrize("tokens", [TOKENS_128, TOKENS_640])
def test_schedule_is_the_originals(name: str, tokens: float) -> None:
    scheduler = make_scheduler(name)
    set_section_timesteps(scheduler, 25, tokens=tokens)
    sigmas = scheduler.sigmas.numpy()
    np.testing.assert_allclose(sigmas[:-1], original_sigmas(25, tokens), atol=2e-6)
    assert sigmas[-1] == 0
    # The transformer sees sigma * 1000 as a float, as in the original, never a rounded int.
    np.testing.assert_allclose(model_timesteps(scheduler).numpy(), sigmas[:-1] * 1000, rtol=1e-6)


def test_the_shift_is_capped_at_the_640_bucket() -> None:
    assert flux_mu(TOKENS_640) == pytest.approx(math.log(7.0))
    assert flux_mu(256) == pytest.approx(0.5)
    assert flux_mu(TOKENS_128) < math.log(7.0)


def test_an_unknown_scheduler_is_refused() -> None:
    with pytest.raises(ValueError, match="unipc, euler"):
        make_scheduler("ddim")
