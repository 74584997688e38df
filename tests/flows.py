"""Flows whose velocity is known in closed form, to test the solvers against.

Data x0 from a mixture of isotropic Gaussians N(mu_k, s_k^2 I) with weights w_k, on
the rectified-flow path x = (1 - sigma) x0 + sigma * noise. Given x at sigma, x0's
posterior is again a mixture, so the clean estimate (the model's x0 prediction)
and the velocity are analytic:

    E[x0 | x] = sum_k g_k(x) (mu_k + (1 - sigma) s_k^2 / v_k (x - (1 - sigma) mu_k)),
    v_k = (1 - sigma)^2 s_k^2 + sigma^2,  g_k the posterior responsibilities,
    velocity = (x - E[x0 | x]) / sigma.

It is non-linear in x (the responsibilities). For one component the ODE's solution
is closed-form too: x(sigma) = (1 - sigma) mu + sqrt(v(sigma)) * x(1). For a mixture
the exact trajectory is integrated with classical Runge-Kutta in float64 at a step
fine enough that halving it changes nothing at 1e-12.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import torch


class GaussianMixture:
    def __init__(
        self, means: Sequence[Sequence[float]], stds: Sequence[float], weights: Sequence[float]
    ) -> None:
        self.means = torch.tensor(means, dtype=torch.float64)  # (K, d)
        self.stds = torch.tensor(stds, dtype=torch.float64)  # (K,)
        self.log_weights = torch.log(torch.tensor(weights, dtype=torch.float64))

    def denoise(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """E[x0 | x at sigma], float64, for x (n, d)."""
        x, a = x.double(), 1.0 - float(sigma)
        var = a**2 * self.stds**2 + float(sigma) ** 2  # (K,)
        offset = x[:, None, :] - a * self.means[None]  # (n, K, d)
        log_p = (
            self.log_weights - 0.5 * (offset**2).sum(-1) / var - 0.5 * x.shape[-1] * torch.log(var)
        )
        responsibility = torch.softmax(log_p, dim=1)[..., None]
        posterior_mean = self.means[None] + (a * self.stds**2 / var)[None, :, None] * offset
        return (responsibility * posterior_mean).sum(1)

    def velocity(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        return (x.double() - self.denoise(x, sigma)) / float(sigma)

    def trajectory(self, x1: torch.Tensor, sigma_end: float, steps: int = 2000) -> torch.Tensor:
        """x at `sigma_end` on the ODE's path from x1 at sigma 1 (RK4, float64)."""
        x = x1.double()
        grid = np.linspace(1.0, sigma_end, steps + 1)
        for s0, s1 in itertools.pairwise(grid):
            h = s1 - s0
            k1 = self.velocity(x, s0)
            k2 = self.velocity(x + h / 2 * k1, s0 + h / 2)
            k3 = self.velocity(x + h / 2 * k2, s0 + h / 2)
            k4 = self.velocity(x + h * k3, s1)
            x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        return x

    def gaussian_trajectory(self, x1: torch.Tensor, sigma: float) -> torch.Tensor:
        """The closed-form path of a one-component mixture."""
        assert len(self.stds) == 1
        a = 1.0 - sigma
        return (
            a * self.means[0] + math.sqrt(a**2 * float(self.stds[0]) ** 2 + sigma**2) * x1.double()
        )


# Three narrow, overlapping components: curved paths that bend late, as images' do.
MIXTURE = GaussianMixture(
    means=[[1.5, -0.5], [-1.0, 1.0], [0.3, 0.8]], stds=[0.3, 0.5, 0.2], weights=[0.4, 0.35, 0.25]
)
GAUSSIAN = GaussianMixture(means=[[0.5, -0.3]], stds=[0.5], weights=[1.0])


def graded_sigmas(steps: int, end: float = 0.25, growth: float = 1.0) -> torch.Tensor:
    """`steps` sigmas from 1 to `end` whose log-steps grow by (1 + 2 * growth) along the
    way (a schedule with unequal steps), then 0: float32."""
    u = torch.linspace(0, 1, steps, dtype=torch.float64)
    log_sigma = math.log(end) * u * (1 + growth * u) / (1 + growth)
    return torch.cat([torch.exp(log_sigma), torch.zeros(1, dtype=torch.float64)]).float()


def noise_points(n: int = 64, dims: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, dims, generator=torch.Generator().manual_seed(seed))
