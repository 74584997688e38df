"""UniPC on the flow-matching path, the variant FramePack's demos sample with.

UniPC (Zhao et al., 2023, "UniPC: A Unified Predictor-Corrector Framework for
Fast Sampling of Diffusion Models") integrates the probability-flow ODE in
exponential form with the model's clean estimate x0(x, sigma). On the
rectified-flow path x = (1 - sigma) x0 + sigma * noise its exponential
integrator has, with lambda = -log(sigma) and h = lambda_t - lambda_s,

    x_t = (sigma_t / sigma_s) x_s + (1 - sigma_t / sigma_s) x0_s + B(h) * (higher-order terms)

so each step is a flow "DDIM" step plus corrections built from the differences of
the last clean estimates (the predictor, UniP) and, once the model has been
evaluated at the predicted point, from the new estimate too (the corrector, UniC,
which costs no extra model call).

This is the variant of FramePack's ``diffusers_helper/k_diffusion/uni_pc_fm.py``
(``bh1``), which differs from diffusers' ``UniPCMultistepScheduler(use_flow_sigmas=True)``:

- lambda is -log(sigma), not log((1 - sigma) / sigma), and the corrections carry
  no (1 - sigma) factor;
- B(h) = h for ``bh1`` (``bh2``: e^h - 1, kept for comparison);
- the order rises 1, 2, 3 over the first steps and then stays 3 to the end (no
  lower-order final steps);
- the model is evaluated at the first `steps` sigmas only, and the result is its
  clean estimate at the last non-zero sigma: no step to sigma = 0 (diffusers'
  ``bh1`` divides by log(0) there and returns NaN).

Every scalar is a float32 tensor on the latents' device, as in the demo, so that
the same inputs give the same floats on the same device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from framepack.engine.denoiser import Prediction

VARIANTS = ("bh1", "bh2")
MAX_ORDER = 3


@dataclass(frozen=True)
class _Predicted:
    """What the corrector needs of the predictor step that chose the next point."""

    base: torch.Tensor  # the first-order (flow DDIM) part of the step
    previous: torch.Tensor  # the last clean estimate, x0 at the step's start
    differences: torch.Tensor | None  # (B, order - 1, ...) divided differences of older x0
    rhos_c: torch.Tensor  # corrector coefficients, one per difference and one for the new x0
    b_h: torch.Tensor


class FlowUniPC:
    """One section's UniPC solve, a step at a time.

    `step(i, x, prediction)` takes the model's prediction at `sigmas[i]` for the
    point `x` it returned before (the noise for i = 0) and returns the next point
    to evaluate, or after the last step the section's latents.
    """

    def __init__(
        self, sigmas: torch.Tensor, *, variant: str = "bh1", max_order: int = MAX_ORDER
    ) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"UniPC variant must be one of {', '.join(VARIANTS)}, not {variant!r}")
        if sigmas.ndim != 1 or len(sigmas) < 2:
            raise ValueError("UniPC needs at least two sigmas (one step)")
        self.sigmas = sigmas
        self.variant = variant
        steps = len(sigmas) - 1
        # The order used once the history allows it; with 2 steps only first order.
        self.order = max(1, min(max_order, steps - 1))
        self._x: torch.Tensor | None = None  # the corrected state at the last sigma evaluated
        self._history: list[tuple[torch.Tensor, torch.Tensor]] = []  # (sigma, x0), newest last
        self._predicted: _Predicted | None = None

    @property
    def steps(self) -> int:
        return len(self.sigmas) - 1

    def step(self, i: int, x: torch.Tensor, prediction: Prediction) -> torch.Tensor:
        denoised = prediction.denoised
        if i == 0:
            self._x = x
        else:
            self._x = self._correct(denoised)
        self._history = [*self._history, (self.sigmas[i], denoised)][-self.order :]
        if i == self.steps - 1:
            return denoised  # the clean estimate at the last non-zero sigma
        return self._predict(self.sigmas[i + 1], order=min(i + 1, self.order))

    def _predict(self, sigma: torch.Tensor, *, order: int) -> torch.Tensor:
        """The predictor: the point at `sigma` where the model is evaluated next."""
        assert self._x is not None
        sigma_0, x0_0 = self._history[-1]
        lambda_0 = -torch.log(sigma_0)
        h = -torch.log(sigma) - lambda_0

        ratios, differences = [], []
        for k in range(1, order):
            sigma_k, x0_k = self._history[-(k + 1)]
            r_k = (-torch.log(sigma_k) - lambda_0) / h
            ratios.append(r_k)
            differences.append((x0_k - x0_0) / r_k)
        ratios.append(torch.ones_like(h))
        r = torch.stack(ratios)

        hh = -h  # log(sigma / sigma_0) < 0
        h_phi_1 = torch.expm1(hh)  # sigma / sigma_0 - 1
        h_phi_k = h_phi_1 / hh - 1
        b_h = hh if self.variant == "bh1" else torch.expm1(hh)
        rows, b = [], []
        factorial = 1
        for j in range(1, order + 1):
            rows.append(r ** (j - 1))
            b.append(h_phi_k * factorial / b_h)
            factorial *= j + 1
            h_phi_k = h_phi_k / hh - 1 / factorial
        vandermonde = torch.stack(rows)
        b = torch.stack(b)

        rhos_c = torch.full_like(b, 0.5) if order == 1 else torch.linalg.solve(vandermonde, b)
        base = (sigma / sigma_0) * self._x - h_phi_1 * x0_0
        point = base
        stacked = None
        if differences:
            stacked = torch.stack(differences, dim=1)
            if order == 2:
                rhos_p = torch.full_like(b[:1], 0.5)
            else:
                rhos_p = torch.linalg.solve(vandermonde[:-1, :-1], b[:-1])
            point = base - b_h * torch.tensordot(stacked, rhos_p, dims=([1], [0]))
        self._predicted = _Predicted(base, x0_0, stacked, rhos_c, b_h)
        return point

    def _correct(self, denoised: torch.Tensor) -> torch.Tensor:
        """The corrector: the state at the point just evaluated, from its clean estimate."""
        p = self._predicted
        assert p is not None
        correction = p.rhos_c[-1] * (denoised - p.previous)
        if p.differences is not None:
            correction = torch.tensordot(p.differences, p.rhos_c[:-1], dims=([1], [0])) + correction
        return p.base - p.b_h * correction
