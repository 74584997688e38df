"""The solvers against flows whose velocity (and, for a Gaussian, solution) is known in
closed form (tests/flows.py), against the demo's own UniPC (tests/demo_reference.py),
and the noise schedule against the demo's."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import UniPCMultistepScheduler

from framepack.engine.denoiser import Prediction
from framepack.engine.schedule import flux_mu, flux_sigmas, section_tokens
from framepack.engine.solvers import FlowEuler, Solver, make_solver
from framepack.engine.unipc import FlowUniPC
from tests import demo_reference as demo
from tests.flows import GAUSSIAN, MIXTURE, GaussianMixture, graded_sigmas, noise_points

TOKENS_128 = section_tokens(9, 16, 14)  # a section at the tiny preset's 128x112 bucket
TOKENS_640 = section_tokens(9, 80, 76)  # and at the real model's 640x608

# sample_hunyuan's sigmas for 25 steps at a 640 bucket (mu = log 7), as float32 on the CPU
DEMO_SIGMAS_25 = [
    1.0, 0.994083, 0.98773, 0.980892, 0.97351, 0.965517, 0.956835, 0.947368, 0.937008,
    0.92562, 0.913043, 0.899083, 0.883495, 0.865979, 0.846154, 0.823529, 0.797468, 0.767123,
    0.731343, 0.688525, 0.636364, 0.571429, 0.488372, 0.378378, 0.225806, 0.0,
]  # fmt: skip
# and the timesteps the transformer sees: sigma * 1000 rounded to bf16
DEMO_TIMESTEPS_25 = [
    1000, 996, 988, 980, 972, 964, 956, 948, 936, 924, 912, 900, 884, 864, 848, 824, 796,
    768, 732, 688, 636, 572, 488, 378, 226,
]  # fmt: skip


def prediction(flow: GaussianMixture, x: torch.Tensor, sigma: torch.Tensor) -> Prediction:
    denoised = flow.denoise(x, float(sigma)).float()
    return Prediction(velocity=(x - denoised) / sigma, denoised=denoised)


def solve(solver: Solver, flow: GaussianMixture, x: torch.Tensor) -> torch.Tensor:
    for i, sigma in enumerate(solver.sigmas[:-1]):
        x = solver.step(i, x, prediction(flow, x, sigma))
    return x


def unipc(
    flow: GaussianMixture, x: torch.Tensor, sigmas: torch.Tensor, variant: str = "bh1"
) -> torch.Tensor:
    return solve(FlowUniPC(sigmas, variant=variant), flow, x)


def diffusers_unipc(flow: GaussianMixture, x: torch.Tensor, steps: int) -> torch.Tensor:
    """diffusers' flow UniPC (bh2, order 3) on the pipeline's schedule: it steps to sigma 0."""
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, solver_order=3,
        solver_type="bh2", use_dynamic_shifting=True,
    )  # fmt: skip
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 0.0, steps + 1)[:-1], mu=flux_mu(TOKENS_640))
    for i, t in enumerate(scheduler.timesteps):
        velocity = flow.velocity(x, float(scheduler.sigmas[i])).float()
        x = scheduler.step(velocity, t, x, return_dict=False)[0]
    return x


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


# --- the schedule --------------------------------------------------------------------------


def test_schedule_is_the_demos() -> None:
    sigmas = flux_sigmas(25, flux_mu(TOKENS_640))
    assert sigmas.dtype == torch.float32 and sigmas[0] == 1 and sigmas[-1] == 0
    np.testing.assert_allclose(sigmas.numpy(), DEMO_SIGMAS_25, atol=1e-6)
    timesteps = (sigmas[:-1] * 1000).to(torch.bfloat16)
    assert timesteps.tolist() == DEMO_TIMESTEPS_25
    for steps, tokens in (
        (1, TOKENS_128),
        (5, TOKENS_128),
        (25, TOKENS_640),
        (50, 9 * 52 * 120 // 4),
    ):
        expected = demo.get_flux_sigmas_from_mu(steps, demo.calculate_flux_mu(tokens))
        assert torch.equal(flux_sigmas(steps, flux_mu(tokens)), expected)  # to the bit


def test_the_shift_is_capped_at_the_640_bucket() -> None:
    assert flux_mu(TOKENS_640) == pytest.approx(math.log(7.0))
    assert flux_mu(256) == pytest.approx(0.5)
    assert flux_mu(TOKENS_128) < math.log(7.0)
    assert TOKENS_640 == 9 * 80 * 76 // 4  # the section's noise only, not its history


# --- UniPC ---------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["bh1", "bh2"])
@pytest.mark.parametrize("steps", [1, 2, 3, 4, 25])
def test_unipc_equals_the_demos_solver(variant: str, steps: int) -> None:
    # the same clean estimates in, the same floats out: uni_pc_fm.sample_unipc as written
    # in tests/demo_reference.py, on the demo's schedule
    sigmas = flux_sigmas(steps, flux_mu(TOKENS_640))
    x1 = noise_points()
    ours = unipc(MIXTURE, x1, sigmas, variant)
    theirs = demo.sample_unipc(
        lambda x, t: prediction(MIXTURE, x, t[0]).denoised, x1, sigmas, variant
    )
    assert torch.equal(ours, theirs)


def test_unipc_solves_a_gaussian_flow_exactly() -> None:
    # closed-form solution; the result is the clean estimate at the last non-zero sigma
    x1 = noise_points()
    sigmas = graded_sigmas(48)
    end = float(sigmas[-2])
    exact = GAUSSIAN.denoise(GAUSSIAN.gaussian_trajectory(x1, end), end)
    assert (
        GAUSSIAN.trajectory(x1, end) - GAUSSIAN.gaussian_trajectory(x1, end)
    ).abs().max() < 1e-10
    assert (unipc(GAUSSIAN, x1, sigmas) - exact).abs().max() < 1e-4


def test_unipc_solves_a_gaussian_mixture_flow_to_third_order() -> None:
    # non-linear in x; unequal steps; the exact path integrated in float64
    x1 = noise_points()
    exact = MIXTURE.denoise(MIXTURE.trajectory(x1, 0.25), 0.25)
    errors = {
        n: float((unipc(MIXTURE, x1, graded_sigmas(n)) - exact).abs().max()) for n in (16, 32, 64)
    }
    assert errors[64] < 1e-4, errors
    assert errors[16] / errors[32] > 6 and errors[32] / errors[64] > 6, errors  # 2^3 = 8


@pytest.mark.parametrize("steps", [1, 2, 3, 5, 25])
def test_unipc_is_exact_for_one_data_point(steps: int) -> None:
    # x0 is the one point wherever the path is: every step must land on its path
    x0, noise = noise_points(seed=1), noise_points(seed=2)
    point = GaussianMixture(means=[x0[0].tolist()], stds=[0.0], weights=[1.0])
    result = unipc(point, noise[:1], flux_sigmas(steps, flux_mu(TOKENS_640)))
    torch.testing.assert_close(result, x0[:1], atol=1e-5, rtol=1e-5)


def test_bh1_and_bh2_nearly_agree_and_diffusers_unipc_is_another_sampler() -> None:
    # On the demo's 25-step schedule. The variants differ only where the coefficient
    # is fixed at 0.5 (the first two steps), so by float noise; diffusers' UniPC has
    # another lambda, no-alpha-free corrections, a lower final order and a step to 0.
    x1 = noise_points()
    sigmas = flux_sigmas(25, flux_mu(TOKENS_640))
    bh1, bh2 = unipc(MIXTURE, x1, sigmas, "bh1"), unipc(MIXTURE, x1, sigmas, "bh2")
    assert 0 < relative(bh1, bh2) < 1e-5
    assert relative(diffusers_unipc(MIXTURE, x1, 25), bh1) > 1e-3


# --- Euler ---------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [1, 2, 25])
def test_euler_lands_on_one_data_point_and_follows_a_constant_velocity(steps: int) -> None:
    x0, noise = noise_points(seed=1)[:1], noise_points(seed=2)[:1]
    point = GaussianMixture(means=[x0[0].tolist()], stds=[0.0], weights=[1.0])
    euler = FlowEuler(steps, tokens=TOKENS_640, device=torch.device("cpu"))
    assert euler.sigmas[0] == 1 and euler.sigmas[-1] == 0
    torch.testing.assert_close(solve(euler, point, noise), x0, atol=1e-5, rtol=1e-5)

    c = torch.full_like(noise, 0.7)
    x = noise
    euler = FlowEuler(steps, tokens=TOKENS_640, device=torch.device("cpu"))
    for i, _ in enumerate(euler.sigmas[:-1]):
        x = euler.step(i, x, Prediction(velocity=c, denoised=x))
    torch.testing.assert_close(x, noise - c, atol=1e-5, rtol=1e-5)


def test_euler_uses_the_pipelines_schedule() -> None:
    # sigma * 1000 in float32 is exactly the pipeline's timestep
    euler = FlowEuler(25, tokens=TOKENS_640, device=torch.device("cpu"))
    assert torch.equal(euler.sigmas[:-1] * 1000.0, euler.scheduler.timesteps)
    np.testing.assert_allclose(euler.sigmas.numpy(), DEMO_SIGMAS_25, atol=2e-6)


def test_each_scheduler_name_makes_its_solver() -> None:
    cpu = torch.device("cpu")
    unipc_solver = make_solver("unipc", steps=25, tokens=TOKENS_640, device=cpu)
    assert isinstance(unipc_solver, FlowUniPC) and unipc_solver.variant == "bh1"
    assert isinstance(make_solver("euler", steps=25, tokens=TOKENS_640, device=cpu), FlowEuler)
    with pytest.raises(ValueError, match="unipc, euler"):
        make_solver("ddim", steps=25, tokens=TOKENS_640, device=cpu)
