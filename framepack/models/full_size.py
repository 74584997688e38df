"""The full-size architecture with random weights, from the published configurations.

Each model is built directly on `device` in its dtype (no float32 copy anywhere):
on ``meta`` it holds no memory and a section runs in shapes only, which checks
that every component's widths fit the transformer's; on a GPU it is what the GPU
benchmark measures. The tokenizers are the tiny preset's byte-level ones and the
SigLIP processor is built from its published settings: neither holds weights,
and any token ids they give fit the real vocabularies.

    components = build_full_size("framepack", device="meta")
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch

from framepack.engine.solvers import pipeline_scheduler
from framepack.models.components import Components
from framepack.models.configs import published
from framepack.models.processors import siglip_processor_class
from framepack.models.prompt_template import llama_prompt_template
from framepack.models.tiny import clip_tokenizer, llama_tokenizer


@contextlib.contextmanager
def _built_as(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """New parameters go straight to `device` in `dtype`."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def _build(make: Callable[[], torch.nn.Module], device: torch.device, dtype: torch.dtype) -> Any:
    with _built_as(device, dtype):
        model = make()
    return model.eval().requires_grad_(False)


def build_full_size(
    preset: str = "framepack",
    *,
    device: torch.device | str,
    transformer_dtype: torch.dtype = torch.bfloat16,
    dtype: torch.dtype = torch.float16,
    configs: dict[str, dict[str, Any]] | None = None,
) -> Components:
    """`preset`'s models at their published sizes (or `configs`, see
    `framepack.models.configs.published`), random weights, on `device`."""
    from diffusers import AutoencoderKLHunyuanVideo, HunyuanVideoFramepackTransformer3DModel
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        LlamaConfig,
        LlamaModel,
        SiglipVisionConfig,
        SiglipVisionModel,
    )

    device = torch.device(device)
    configs = configs if configs is not None else published(preset)
    tokenizer = llama_tokenizer()
    return Components(
        transformer=_build(
            lambda: HunyuanVideoFramepackTransformer3DModel(**configs["transformer"]),
            device,
            transformer_dtype,
        ),
        vae=_build(lambda: AutoencoderKLHunyuanVideo(**configs["vae"]), device, dtype),
        text_encoder=_build(
            lambda: LlamaModel(LlamaConfig(**configs["text_encoder"])), device, dtype
        ),
        tokenizer=tokenizer,
        text_encoder_2=_build(
            lambda: CLIPTextModel(CLIPTextConfig(**configs["text_encoder_2"])), device, dtype
        ),
        tokenizer_2=clip_tokenizer(),
        image_encoder=_build(
            lambda: SiglipVisionModel(SiglipVisionConfig(**configs["image_encoder"])), device, dtype
        ),
        feature_extractor=siglip_processor_class()(**configs["feature_extractor"]),
        scheduler=pipeline_scheduler(),
        prompt_template=llama_prompt_template(tokenizer),
        preset=preset,
        is_random=True,
    )
