"""The solvers on flows with a known solution: errors, orders, and how far apart they are.

    python benchmarks/sampler.py [--points 256]

Data from a Gaussian mixture (tests/flows.py: three narrow components in 2-D, so the
velocity is analytic and non-linear in x), noise from a fixed seed; the exact path
is integrated in float64. Printed:

- our UniPC (bh1, the demo's variant, and bh2) against the exact solution: on a
  schedule of unequal steps that ends at sigma 0.25, by step count (the error and
  its ratio at twice the steps: 8 for third order), and on the demo's own schedule
  (sigma shifted by 7, 25 and 50 steps), where the exact answer is the clean
  estimate at the last non-zero sigma of the exact path;
- diffusers' UniPCMultistepScheduler(use_flow_sigmas=True, bh2) on the demo's
  schedule, against the exact path at sigma 0 (it steps there), and its distance
  from ours (norm of the difference / norm), and bh1 against bh2.

Targets: our UniPC within 1e-4 of the exact solution at 64 graded steps; bh1 and
bh2 within 1e-5 of each other (relative); each met/MISSED, a miss exits 1.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # run as a script from anywhere

import argparse  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from diffusers import UniPCMultistepScheduler  # noqa: E402

from framepack.engine.denoiser import Prediction  # noqa: E402
from framepack.engine.schedule import flux_mu, flux_sigmas, section_tokens  # noqa: E402
from framepack.engine.unipc import FlowUniPC  # noqa: E402
from tests.flows import MIXTURE, graded_sigmas, noise_points  # noqa: E402

TOKENS_640 = section_tokens(9, 80, 76)


def unipc(x: torch.Tensor, sigmas: torch.Tensor, variant: str) -> torch.Tensor:
    solver = FlowUniPC(sigmas, variant=variant)
    for i, sigma in enumerate(sigmas[:-1]):
        denoised = MIXTURE.denoise(x, float(sigma)).float()
        x = solver.step(i, x, Prediction(velocity=(x - denoised) / sigma, denoised=denoised))
    return x


def diffusers_unipc(x: torch.Tensor, steps: int) -> torch.Tensor:
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, solver_order=3,
        solver_type="bh2", use_dynamic_shifting=True,
    )  # fmt: skip
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 0.0, steps + 1)[:-1], mu=flux_mu(TOKENS_640))
    for i, t in enumerate(scheduler.timesteps):
        velocity = MIXTURE.velocity(x, float(scheduler.sigmas[i])).float()
        x = scheduler.step(velocity, t, x, return_dict=False)[0]
    return x


def max_error(result: torch.Tensor, exact: torch.Tensor) -> float:
    return float((result.double() - exact).abs().max())


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--points", type=int, default=256)
    args = parser.parse_args(argv)
    x1 = noise_points(args.points)

    print(f"Gaussian mixture flow, {args.points} points in 2-D; max |error| against the exact")
    print("graded schedule to sigma 0.25:")
    exact = MIXTURE.denoise(MIXTURE.trajectory(x1, 0.25), 0.25)
    errors: dict[tuple[str, int], float] = {}
    for steps in (16, 32, 64):
        for variant in ("bh1", "bh2"):
            errors[variant, steps] = max_error(unipc(x1, graded_sigmas(steps), variant), exact)
        bh1, bh2 = errors["bh1", steps], errors["bh2", steps]
        ratio = "" if steps == 16 else f"  (half the steps: x{errors['bh1', steps // 2] / bh1:.1f})"
        print(f"  {steps:3} steps: bh1 {bh1:.2e}  bh2 {bh2:.2e}{ratio}")

    print("the demo's schedule (mu = log 7):")
    bh1_vs_bh2 = 0.0
    at_zero = MIXTURE.denoise(MIXTURE.trajectory(x1, 1e-4, steps=3000), 1e-4)
    for steps in (25, 50):
        sigmas = flux_sigmas(steps, flux_mu(TOKENS_640))
        last = float(sigmas[-2])
        target = MIXTURE.denoise(MIXTURE.trajectory(x1, last), last)
        bh1, bh2 = unipc(x1, sigmas, "bh1"), unipc(x1, sigmas, "bh2")
        theirs = diffusers_unipc(x1, steps)
        bh1_vs_bh2 = max(bh1_vs_bh2, relative(bh2, bh1))
        print(
            f"  {steps} steps: ours bh1 {max_error(bh1, target):.2e} max, "
            f"{relative(bh1, target):.2%} of the norm (vs x0 at sigma {last:.3f}); "
            f"diffusers {max_error(theirs, at_zero):.2e} max, {relative(theirs, at_zero):.2%} "
            f"(vs the path at 0)\n"
            f"            diffusers vs ours: {relative(theirs, bh1):.2%} of the norm; "
            f"bh2 vs bh1: {relative(bh2, bh1):.1e}"
        )

    verdicts = [
        (
            errors["bh1", 64] <= 1e-4,
            f"UniPC bh1 at 64 graded steps <= 1e-4 ({errors['bh1', 64]:.1e})",
        ),
        (bh1_vs_bh2 <= 1e-5, f"bh1 vs bh2 on the demo's schedule <= 1e-5 ({bh1_vs_bh2:.1e})"),
    ]
    for met, what in verdicts:
        print(f"target: {what}: {'met' if met else 'MISSED'}")
    print("rerun: python benchmarks/sampler.py " + " ".join(sys.argv[1:]))
    return 0 if all(met for met, _ in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
