"""One section's denoising loop, shared by both samplers: they differ only in the
context (`history.SectionContext`) the transformer is given."""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass

import numpy as np
import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from framepack.engine.conditioning import PromptEmbeds
from framepack.engine.history import SectionContext
from framepack.engine.previews import latents_to_rgb
from framepack.engine.schedulers import model_timesteps, set_section_timesteps


@dataclass(frozen=True)
class Guidance:
    distilled: torch.Tensor  # (1,), the guidance embedding's input (scale * 1000)
    cfg: float = 1.0
    negative: PromptEmbeds | None = None  # set only when real CFG is on


class StepCancelled(Exception):
    """The caller's cancel check turned true before a step."""


def denoise_section(
    transformer: torch.nn.Module,
    scheduler: SchedulerMixin,
    noise: torch.Tensor,
    context: SectionContext,
    *,
    prompt: PromptEmbeds,
    image_embeds: torch.Tensor,
    guidance: Guidance,
    steps: int,
    should_cancel: Callable[[], bool],
) -> Generator[tuple[int, np.ndarray], None, torch.Tensor]:
    """Denoise `noise` (1, 16, T, h, w) in `steps` steps.

    Yields (1-based step, preview picture) after each step and returns the latents.
    The preview is the current guess of the clean latents (x - sigma * velocity),
    projected to RGB without the VAE.
    """
    dtype = transformer.dtype
    tokens = noise.shape[2] * noise.shape[3] * noise.shape[4] / transformer.config.patch_size**2
    set_section_timesteps(scheduler, steps, tokens=tokens, device=noise.device)
    timesteps = model_timesteps(scheduler).to(noise.device)  # UniPC keeps its tables on the CPU
    fixed = {
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

    def velocity(latents: torch.Tensor, timestep: torch.Tensor, text: PromptEmbeds) -> torch.Tensor:
        return transformer(
            hidden_states=latents.to(dtype),
            timestep=timestep,
            encoder_hidden_states=text.embeds,
            encoder_attention_mask=text.mask,
            pooled_projections=text.pooled,
            **fixed,
        )[0]

    latents = noise
    for i, t in enumerate(scheduler.timesteps):
        if should_cancel():
            raise StepCancelled
        timestep = timesteps[i].expand(latents.shape[0])
        v = velocity(latents, timestep, prompt)
        if guidance.negative is not None:
            v_negative = velocity(latents, timestep, guidance.negative)
            v = v_negative + guidance.cfg * (v - v_negative)
        v = v.float()
        denoised = latents - scheduler.sigmas[i].to(latents.device) * v
        latents = scheduler.step(v, t, latents, return_dict=False)[0]
        yield i + 1, latents_to_rgb(denoised)
    return latents
