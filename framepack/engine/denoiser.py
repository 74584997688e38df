"""The transformer as the solvers see it: (latents, sigma) -> velocity and clean estimate.

The numerics are those of FramePack's demo (``diffusers_helper/k_diffusion/wrapper.py``):

- the transformer reads the latents rounded to its dtype (bf16) and the timestep
  sigma * 1000 rounded to its dtype too (1000, 996, 988, ... for 25 steps);
- its velocity comes out in float32 (`framepack.models.fp32_output`);
- real CFG, when on, is a second pass on the negative prompt, combined in float32;
- the clean estimate is x0 = bf16(x) - sigma * v, in float32, from the rounded
  latents the transformer saw.

One `Denoiser` serves one section. Each transformer pass runs inside
``transformer.cache_context(branch, step_index=, num_inference_steps=)``, one
context per CFG branch, as diffusers' cache hooks need: a step cache
(`framepack.engine.caches`) keeps each branch's state apart and knows which step
of how many it is. Without a cache attached the context changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from framepack.engine.conditioning import PromptEmbeds
from framepack.engine.history import SectionContext
from framepack.engine.schedule import TIMESTEP_SCALE

POSITIVE, NEGATIVE = "cond", "uncond"  # the CFG branches (diffusers' cache_context names)


@dataclass(frozen=True)
class Prediction:
    velocity: torch.Tensor  # float32, after real CFG
    denoised: torch.Tensor  # float32 clean estimate x0 at this sigma


@dataclass(frozen=True)
class Guidance:
    distilled: torch.Tensor  # (1,) the guidance embedding's input, scale * 1000 in the model dtype
    cfg: float = 1.0
    negative: PromptEmbeds | None = None  # set exactly when real CFG is on (cfg > 1)


def distilled_guidance(scale: float, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """scale * 1000 rounded to the transformer's dtype, as the demo does (10 -> 9984 in bf16)."""
    return torch.tensor([scale * TIMESTEP_SCALE]).to(device=device, dtype=dtype)


class Denoiser:
    """One section's model calls."""

    def __init__(
        self,
        transformer: torch.nn.Module,
        context: SectionContext,
        *,
        prompt: PromptEmbeds,
        image_embeds: torch.Tensor,
        guidance: Guidance,
    ) -> None:
        self.transformer = transformer
        self.dtype = transformer.dtype
        self.prompt = prompt
        self.guidance = guidance
        dtype = self.dtype
        self._fixed = {
            "image_embeds": image_embeds,
            "indices_latents": context.indices_latents,
            "guidance": guidance.distilled,
            "latents_clean": context.latents_clean.to(dtype),
            "indices_latents_clean": context.indices_clean,
            "latents_history_2x": context.latents_2x.to(dtype),
            "indices_latents_history_2x": context.indices_2x,
            "latents_history_4x": context.latents_4x.to(dtype),
            "indices_latents_history_4x": context.indices_4x,
            "return_dict": False,
        }

    def __call__(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor,
        *,
        step: int | None = None,
        steps: int | None = None,
    ) -> Prediction:
        """The prediction at `x` (float32) and `sigma` (a 0-dim float32 tensor), at the
        0-based `step` of `steps` (what a step cache needs to know; None without one)."""
        x_model = x.to(self.dtype)
        timestep = (sigma.float() * TIMESTEP_SCALE).expand(x.shape[0]).to(self.dtype)
        where = {"step_index": step, "num_inference_steps": steps}
        v = self._transformer_pass(POSITIVE, x_model, timestep, self.prompt, where).float()
        negative = self.guidance.negative
        if negative is not None:
            v_negative = self._transformer_pass(
                NEGATIVE, x_model, timestep, negative, where
            ).float()
            v = v_negative + self.guidance.cfg * (v - v_negative)
        return Prediction(velocity=v, denoised=x_model.float() - v * sigma)

    def _transformer_pass(
        self,
        branch: str,
        x_model: torch.Tensor,
        timestep: torch.Tensor,
        text: PromptEmbeds,
        where: dict[str, int | None],
    ) -> torch.Tensor:
        with self.transformer.cache_context(branch, **where):
            return self.transformer(
                hidden_states=x_model,
                timestep=timestep,
                encoder_hidden_states=text.embeds,
                encoder_attention_mask=text.mask,
                pooled_projections=text.pooled,
                **self._fixed,
            )[0]
