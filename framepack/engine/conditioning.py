"""What the transformer is conditioned on: the prompts (Llama hidden states and CLIP's
pooled vector), the start image (SigLIP features and a VAE latent), and the noise.

Each function computes what FramePack's demo computes (``diffusers_helper/hunyuan.py``,
``clip_vision.py``, ``utils.py``), in the same order of operations, so that equal
inputs give equal floats:

- prompt: the HunyuanVideo template, Llama's third-to-last hidden state cut to the
  prompt's own tokens and zero-padded to 512 with a boolean mask; CLIP-L's pooled
  output;
- picture: the uint8 crop through SigLIP's PIL processor; the VAE sees it as
  x / 127.5 - 1;
- start latent: the posterior's mean (see `encode_latent`);
- noise: one float32 draw per section from the job's CPU generator, the generator's
  only use.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from framepack.models.components import Components

LLAMA_MAX_TOKENS = 256  # prompt tokens the Llama encoder reads (after the template)
TEXT_TOKENS = 512  # the transformer's text length: the prompt's tokens, then zeros
CLIP_MAX_TOKENS = 77
LLAMA_SKIPPED_LAYERS = 2  # HunyuanVideo reads the third-to-last hidden state


@dataclass(frozen=True)
class PromptEmbeds:
    embeds: torch.Tensor  # (1, 512, text_dim) in the transformer's dtype, zeros after the prompt
    mask: torch.Tensor  # (1, 512) bool, True on the prompt's tokens
    pooled: torch.Tensor  # (1, pooled_dim) in the transformer's dtype


def pad_tokens(
    embeds: torch.Tensor, length: int = TEXT_TOKENS
) -> tuple[torch.Tensor, torch.Tensor]:
    """`embeds` (B, n, C) zero-padded (or cut) to `length` tokens, and the mask of the real ones."""
    batch, n, channels = embeds.shape
    if n >= length:
        mask = torch.ones(batch, length, dtype=torch.bool, device=embeds.device)
        return embeds[:, :length], mask
    padded = torch.zeros(batch, length, channels, dtype=embeds.dtype, device=embeds.device)
    padded[:, :n] = embeds
    mask = torch.zeros(batch, length, dtype=torch.bool, device=embeds.device)
    mask[:, :n] = True
    return padded, mask


def encode_prompt(
    components: Components, prompt: str, *, device: torch.device, dtype: torch.dtype
) -> PromptEmbeds:
    """The transformer's text inputs for `prompt` ("" too: the demo's negative prompt)."""
    template = components.prompt_template
    crop_start = template["crop_start"]
    tokens = components.tokenizer(
        [template["template"].format(prompt)],
        max_length=LLAMA_MAX_TOKENS + crop_start,
        padding="max_length",
        truncation=True,
        return_tensors="pt",
        return_attention_mask=True,
    )
    # Counted on the tokenizer's CPU mask: no device round trip (padding is on the right).
    length = int(tokens.attention_mask.sum())
    hidden = components.text_encoder(
        input_ids=tokens.input_ids.to(device),
        attention_mask=tokens.attention_mask.to(device),
        output_hidden_states=True,
    ).hidden_states[-(LLAMA_SKIPPED_LAYERS + 1)]
    embeds, mask = pad_tokens(hidden[:, crop_start:length])

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
    return PromptEmbeds(embeds.to(dtype), mask, pooled.to(dtype))


def image_to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 in [-1, 1], as the demo's `vae_encode` scales it."""
    return (torch.from_numpy(np.ascontiguousarray(rgb)).float() / 127.5 - 1).permute(2, 0, 1)[None]


def encode_image_features(
    components: Components, rgb: np.ndarray, *, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """SigLIP's last hidden state of the (H, W, 3) uint8 picture.

    The uint8 pixels go to the PIL processor, which resizes, rescales and
    normalizes them as the demo's processor does; floats with ``do_rescale=False``
    (the diffusers pipeline's way) come out a level lower for a quarter of the
    values, and the torchvision processor resizes differently.
    """
    encoder = components.image_encoder
    inputs = components.feature_extractor.preprocess(images=rgb, return_tensors="pt")
    inputs = inputs.to(device=device, dtype=encoder.dtype)
    return encoder(**inputs).last_hidden_state.to(dtype=dtype)


def encode_latent(
    components: Components, image: torch.Tensor, *, device: torch.device
) -> torch.Tensor:
    """The VAE latent of `image` (1, 3, H, W) in [-1, 1]: (1, 16, 1, h, w) float32.

    The posterior's mean, not a sample. The demo samples it from the global CUDA
    generator, which it never seeds, so its start latent is not a function of the
    seed anyway; the mean is what its samples scatter around (closer to any one of
    them, on average, than another sample would be), needs no generator, and is the
    same on every device and after every resume.
    """
    vae = components.vae
    pixels = image.unsqueeze(2).to(device=device, dtype=vae.dtype)
    latent = vae.encode(pixels).latent_dist.mode()
    return (latent * vae.config.scaling_factor).to(dtype=torch.float32)


def section_noise(
    shape: tuple[int, ...], *, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """A section's starting noise, float32, drawn on the generator's device (the CPU, so
    that a seed gives the same video on any machine), then moved."""
    noise = torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float32)
    return noise.to(device)
