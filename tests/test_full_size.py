"""The full-size model, proven on the meta device: every component of the framepack
and f1 presets at its published configuration (framepack/models/configs.py), one
section of the engine run in shapes only, so that a width mismatch between
components fails here rather than at a user's first step on a GPU."""

from __future__ import annotations

import pytest
import torch

from framepack.engine.engine import FramePackEngine
from framepack.engine.params import GenerationParams
from framepack.models.configs import published
from framepack.models.full_size import build_full_size
from framepack.models.presets import get_preset
from tests.engine_fixtures import picture
from tests.meta_shapes import MetaScalars

META = torch.device("meta")
HEIGHT, WIDTH = 608, 640  # a 640 bucket


def run_one_section(preset: str, configs: dict | None = None) -> dict[str, torch.Size]:
    """Build `preset` on the meta device and run the engine's first section; the shapes."""
    components = build_full_size(preset, device=META, configs=configs)
    engine = FramePackEngine(components, device=META)
    params = GenerationParams(
        prompt="a cat walks", seconds=1.0, steps=3, resolution=640,
        sampler=get_preset(preset).sampler, cfg=2.0,  # both CFG passes run
    )  # fmt: skip
    with MetaScalars():
        job = engine.prepare(params, picture(HEIGHT, WIDTH))
        history, end = engine.start(job)
        spec = job.specs[0]
        steps = engine.section_steps(job, spec, history.context(spec, end), torch.Generator())
        denoised = []
        try:
            while True:
                denoised.append(next(steps)[1])
        except StopIteration as finished:
            latents = finished.value
        history.add(latents, spec)
        pixels = engine.decode(history.decode_window(spec))
    assert len(denoised) == params.steps and latents.is_meta
    return {
        "text": job.prompts[0].embeds.shape,
        "pooled": job.prompts[0].pooled.shape,
        "image": job.image_embeds.shape,
        "start": history.start.shape,
        "latents": latents.shape,
        "pixels": pixels.shape,
    }


@pytest.mark.parametrize("preset", ["framepack", "f1"])
def test_the_published_components_fit_together(preset: str) -> None:
    shapes = run_one_section(preset)
    assert shapes == {
        "text": (1, 512, 4096),  # Llama 3 8B's width, the transformer's text_embed_dim
        "pooled": (1, 768),  # CLIP-L, pooled_projection_dim
        "image": (1, 729, 1152),  # SigLIP so400m at 384: 27x27 patches, image_proj_dim
        "start": (1, 16, 1, HEIGHT // 8, WIDTH // 8),
        "latents": (1, 16, 9, HEIGHT // 8, WIDTH // 8),
        "pixels": (1, 3, 37, HEIGHT, WIDTH),  # the first section with the start frame
    }


def test_the_sizes_are_the_released_models() -> None:
    components = build_full_size("framepack", device=META)
    billions = {
        name: sum(p.numel() for p in model.parameters()) / 1e9
        for name, model in components.models().items()
    }
    assert 12.8 < billions["transformer"] < 13.0  # "13B"
    assert 7.4 < billions["text_encoder"] < 7.6  # Llama 3 8B without its output head
    assert 0.12 < billions["text_encoder_2"] < 0.13  # CLIP-L's text tower
    assert 0.42 < billions["image_encoder"] < 0.43  # SigLIP so400m
    assert 0.2 < billions["vae"] < 0.3
    assert components.transformer.dtype == torch.bfloat16
    assert components.text_encoder.dtype == torch.float16


@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "message"),
    [
        # CLIP at width 512 where the transformer's pooled_projection_dim is 768
        (
            {
                "text_encoder_2": {
                    "hidden_size": 512,
                    "num_attention_heads": 8,
                    "projection_dim": 512,
                }
            },
            r"\[1, 512\] X \[768, 3072\]",
        ),
        ({"image_encoder": {"hidden_size": 1024}}, r"\[729, 1024\] X \[1152, 9216\]"),
    ],
)
def test_a_width_mismatch_fails(change: dict, message: str) -> None:
    with pytest.raises(RuntimeError, match=message):
        run_one_section("framepack", published("framepack", **change))
