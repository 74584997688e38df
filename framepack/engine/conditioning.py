"""What the transformer is conditioned on: the prompts (Llama hidden states and CLIP's
pooled vector), the start image (SigLIP features and a VAE latent) and the end image.

Each function does what `HunyuanVideoFramepackPipeline` does, in the same order of
operations, so that equal inputs give equal floats.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor

from framepack.models.components import Components

LLAMA_MAX_TOKENS = 256  # prompt tokens the Llama encoder reads (after the template)
CLIP_MAX_TOKENS = 77
LLAMA_SKIPPED_LAYERS = 2  # HunyuanVideo reads the third-to-last hidden state


@dataclass(frozen=True)
class PromptEmbeds:
    embeds: torch.Tensor  # (1, tokens, text_dim) in the transformer's dtype
    mask: torch.Tensor  # (1, tokens), also in the transformer's dtype (as the pipeline passes it)
    pooled: torch.Tensor  # (1, pooled_dim)


def encode_prompt(
    components: Components, prompt: str, *, device: torch.device, dtype: torch.dtype
) -> PromptEmbeds:
    template = components.prompt_template
    crop_start = template["crop_start"]
    text = template["template"].format(prompt)
    tokens = components.tokenizer(
        [text],
        max_length=LLAMA_MAX_TOKENS + crop_start,
        padding="max_length",
        truncation=True,
        return_tensors="pt",
        return_length=False,
        return_overflowing_tokens=False,
        return_attention_mask=True,
    )
    ids = tokens.input_ids.to(device=device)
    mask = tokens.attention_mask.to(device=device)
    hidden = components.text_encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    embeds = hidden.hidden_states[-(LLAMA_SKIPPED_LAYERS + 1)].to(
        dtype=components.text_encoder.dtype
    )
    embeds, mask = embeds[:, crop_start:], mask[:, crop_start:]

    clip_ids = components.tokenizer_2(
        [prompt],
        padding="max_length",
        max_length=CLIP_MAX_TOKENS,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    pooled = components.text_encoder_2(
        clip_ids.to(device), output_hidden_states=False
    ).pooler_output
    return PromptEmbeds(embeds.to(dtype), mask.to(dtype), pooled.to(dtype))


def image_to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 in [-1, 1], as the pipeline's image processor."""
    array = (rgb.astype(np.float32) / 255.0)[None].transpose(0, 3, 1, 2)
    return 2.0 * torch.from_numpy(array) - 1.0


def encode_image_features(
    components: Components, image: torch.Tensor, *, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """SigLIP's last hidden state of `image` (1, 3, H, W) in [-1, 1]."""
    encoder = components.image_encoder
    inputs = components.feature_extractor(
        images=(image + 1) / 2.0, return_tensors="pt", do_rescale=False
    ).to(device=device, dtype=encoder.dtype)
    return encoder(**inputs).last_hidden_state.to(dtype=dtype)


def encode_latent(
    components: Components, image: torch.Tensor, *, device: torch.device, generator: torch.Generator
) -> torch.Tensor:
    """The VAE latent of `image` (1, 3, H, W), sampled with `generator` as the pipeline does."""
    vae = components.vae
    pixels = image.unsqueeze(2).to(device=device, dtype=vae.dtype)
    latent = vae.encode(pixels).latent_dist.sample(generator=generator)
    return (latent * vae.config.scaling_factor).to(device=device, dtype=torch.float32)


def section_noise(
    shape: tuple[int, ...], *, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """A section's starting noise: drawn on the generator's device (the CPU), so that a
    seed gives the same video on any machine, then moved."""
    return randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
