"""The demo's numerics, each checked on its own against a computation written here:
fp32 output layer, bf16 timesteps and latents, x0 from the rounded latents, real CFG
in float32 (with an empty negative prompt too), distilled guidance, the random
stream, the text layout, SigLIP's input, the start latent and the uint8 frames."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from framepack.engine.conditioning import (
    TEXT_TOKENS,
    PromptEmbeds,
    encode_image_features,
    encode_latent,
    encode_prompt,
    image_to_tensor,
)
from framepack.engine.denoiser import Denoiser, Guidance, distilled_guidance
from framepack.engine.frames import to_uint8
from framepack.engine.history import InvertedHistory
from framepack.engine.params import GenerationParams
from framepack.engine.schedule import flux_mu, flux_sigmas
from framepack.models.components import Components
from framepack.models.fp32_output import apply_fp32_output
from tests import demo_reference as demo
from tests.engine_fixtures import FAST, picture, run_job, tiny_components
from tests.test_engine_solvers import DEMO_TIMESTEPS_25

CPU = torch.device("cpu")


@functools.cache
def bf16_transformer() -> torch.nn.Module:
    from framepack.models.tiny import build_tiny_components

    transformer = build_tiny_components().transformer.to(torch.bfloat16)
    apply_fp32_output(transformer)
    return transformer


@contextlib.contextmanager
def transformer_calls(module: torch.nn.Module) -> Iterator[list[dict]]:
    """Every call of `module`: its keyword arguments (cloned) and its output."""
    calls: list[dict] = []

    def record(_module: torch.nn.Module, _args: tuple, kwargs: dict, output: object) -> None:
        kept = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
        calls.append(kept | {"output": output[0].clone()})

    handle = module.register_forward_hook(record, with_kwargs=True)
    try:
        yield calls
    finally:
        handle.remove()


def section_inputs(components: Components, dtype: torch.dtype) -> dict:
    """A section's context and text for the tiny model at 128x112."""
    start = torch.randn(1, 16, 1, 16, 14, generator=torch.Generator().manual_seed(3))
    history = InvertedHistory.new(start, 9)
    spec = history.plan(2)[0]
    prompt = encode_prompt(components, "a cat walks", device=CPU, dtype=dtype)
    return {
        "context": history.context(spec),
        "prompt": prompt,
        "image_embeds": torch.randn(1, 16, 16).to(dtype),
    }


# --- fp32 output layer ----------------------------------------------------------------------


def test_the_output_layer_runs_in_float32_on_the_bf16_models_output() -> None:
    from framepack.models.tiny import build_tiny_components

    transformer = build_tiny_components().transformer.to(torch.bfloat16)
    bf16_weight = transformer.proj_out.weight.detach().clone()
    apply_fp32_output(transformer)
    apply_fp32_output(transformer)  # a second call changes nothing
    assert transformer.dtype == torch.bfloat16  # the rest of the model: bf16
    assert transformer.proj_out.weight.dtype == torch.float32
    assert torch.equal(transformer.proj_out.weight, bf16_weight.float())  # upcast, not reloaded
    assert transformer.norm_out.linear.weight.dtype == torch.bfloat16

    seen = {}
    transformer.norm_out.register_forward_hook(lambda m, a, out: seen.update(norm=out))
    transformer.proj_out.register_forward_hook(lambda m, a, out: seen.update(proj=out))
    inputs = section_inputs(tiny_components(), torch.bfloat16)
    Denoiser(
        transformer, inputs["context"], prompt=inputs["prompt"],
        image_embeds=inputs["image_embeds"],
        guidance=Guidance(distilled_guidance(10.0, dtype=torch.bfloat16, device=CPU)),
    )(torch.randn(1, 16, 9, 16, 14), torch.tensor(0.5))  # fmt: skip
    assert seen["norm"].dtype == torch.bfloat16
    assert seen["proj"].dtype == torch.float32
    expected = torch.nn.functional.linear(
        seen["norm"].float(), bf16_weight.float(), transformer.proj_out.bias
    )
    assert torch.equal(seen["proj"], expected)


# --- the model call -------------------------------------------------------------------------


def test_the_transformer_reads_bf16_timesteps_latents_and_guidance() -> None:
    transformer = bf16_transformer()
    inputs = section_inputs(tiny_components(), torch.bfloat16)
    guidance = Guidance(distilled_guidance(10.0, dtype=torch.bfloat16, device=CPU))
    denoiser = Denoiser(
        transformer, inputs["context"], prompt=inputs["prompt"],
        image_embeds=inputs["image_embeds"], guidance=guidance,
    )  # fmt: skip
    sigmas = flux_sigmas(25, flux_mu(9 * 80 * 76 // 4))
    x = torch.randn(1, 16, 9, 16, 14, generator=torch.Generator().manual_seed(0))
    with transformer_calls(transformer) as calls:
        predictions = [denoiser(x, sigma) for sigma in sigmas[:-1]]
    assert [c["timestep"].dtype for c in calls] == [torch.bfloat16] * 25
    assert [float(c["timestep"]) for c in calls] == DEMO_TIMESTEPS_25
    assert calls[0]["guidance"].dtype == torch.bfloat16 and float(calls[0]["guidance"]) == 9984
    rounded = x.to(torch.bfloat16)
    assert all(torch.equal(c["hidden_states"], rounded) for c in calls)
    for call, sigma, p in zip(calls, sigmas, predictions, strict=False):
        assert call["output"].dtype == p.velocity.dtype == torch.float32
        assert torch.equal(p.velocity, call["output"])
        # x0 from the latents the model saw, not from the float32 ones
        assert torch.equal(p.denoised, rounded.float() - call["output"] * sigma)
        assert not torch.equal(p.denoised, x - call["output"] * sigma)


def test_real_cfg_combines_both_passes_in_float32() -> None:
    transformer = bf16_transformer()
    inputs = section_inputs(tiny_components(), torch.bfloat16)
    negative = encode_prompt(tiny_components(), "", device=CPU, dtype=torch.bfloat16)
    guidance = Guidance(
        distilled_guidance(10.0, dtype=torch.bfloat16, device=CPU), cfg=3.0, negative=negative
    )
    denoiser = Denoiser(
        transformer, inputs["context"], prompt=inputs["prompt"],
        image_embeds=inputs["image_embeds"], guidance=guidance,
    )  # fmt: skip
    x = torch.randn(1, 16, 9, 16, 14, generator=torch.Generator().manual_seed(1))
    with transformer_calls(transformer) as calls:
        p = denoiser(x, torch.tensor(0.8))
    positive, negative_call = calls
    assert torch.equal(positive["encoder_hidden_states"], inputs["prompt"].embeds)
    assert torch.equal(negative_call["encoder_hidden_states"], negative.embeds)
    v_pos, v_neg = positive["output"], negative_call["output"]
    assert torch.equal(p.velocity, v_neg + 3.0 * (v_pos - v_neg))
    bf16 = (v_neg.bfloat16() + 3.0 * (v_pos.bfloat16() - v_neg.bfloat16())).float()
    assert not torch.equal(p.velocity, bf16)


@pytest.mark.parametrize(("cfg", "passes"), [(1.0, 1), (1.5, 2)])
def test_cfg_above_1_runs_the_empty_negative_prompt(
    tmp_path: Path, cfg: float, passes: int
) -> None:
    params = replace(FAST, seconds=1.0, steps=2, cfg=cfg)
    with transformer_calls(tiny_components().transformer) as calls:
        run_job(tmp_path, params)
    assert len(calls) == passes * params.steps
    if passes == 2:
        empty = encode_prompt(tiny_components(), "", device=CPU, dtype=torch.float32)
        assert torch.equal(calls[1]["encoder_hidden_states"], empty.embeds)
        assert torch.equal(calls[1]["pooled_projections"], empty.pooled)


# --- randomness -----------------------------------------------------------------------------


@pytest.mark.parametrize("sampler", ["inverted", "forward"])
def test_the_seed_draws_the_section_noises_only_in_the_demos_order(
    tmp_path: Path, sampler: str
) -> None:
    params = replace(FAST, seconds=3.6, steps=2, sampler=sampler, seed=31337)  # 3 sections
    with transformer_calls(tiny_components().transformer) as calls:
        run_job(tmp_path, params, picture(128, 112))
    first_of_each_section = [c["hidden_states"] for c in calls[:: params.steps]]
    # the demo: one randn per section, in rendering order, from the seeded CPU generator
    rnd = torch.Generator("cpu").manual_seed(31337)
    frames = params.latent_window * 4 - 3
    expected = [
        torch.randn((1, 16, (frames + 3) // 4, 128 // 8, 112 // 8), generator=rnd)
        for _ in range(params.sections())
    ]
    assert len(first_of_each_section) == len(expected) == 3
    for seen, drawn in zip(first_of_each_section, expected, strict=True):
        assert seen.dtype == torch.float32 and torch.equal(seen, drawn)


def test_the_start_latent_is_the_posteriors_mean_and_draws_nothing() -> None:
    c = tiny_components()
    rgb = np.array(picture(128, 112))
    pixels = image_to_tensor(rgb)
    expected = (torch.from_numpy(rgb).float() / 127.5 - 1).permute(2, 0, 1)[None]
    assert torch.equal(pixels, expected)
    state = torch.random.get_rng_state()
    latent = encode_latent(c, pixels, device=CPU)
    assert torch.equal(torch.random.get_rng_state(), state)
    with torch.no_grad():
        mean = c.vae.encode(pixels.unsqueeze(2)).latent_dist.mean
    assert torch.equal(latent, mean * c.vae.config.scaling_factor)
    assert torch.equal(latent, encode_latent(c, pixels, device=CPU))


# --- text -----------------------------------------------------------------------------------


@pytest.mark.parametrize("prompt", ["a cat walks", ""])
def test_prompts_are_encoded_as_the_demo_encodes_them(prompt: str) -> None:
    c = tiny_components()
    with torch.no_grad():
        ours = encode_prompt(c, prompt, device=CPU, dtype=torch.float32)
        llama_vec, clip_pooler = demo.encode_prompt_conds(prompt, c)
    theirs, mask = demo.crop_or_pad_yield_mask(llama_vec, TEXT_TOKENS)
    assert isinstance(ours, PromptEmbeds)
    assert ours.embeds.shape == (1, TEXT_TOKENS, 16) and ours.mask.dtype == torch.bool
    assert torch.equal(ours.embeds, theirs) and torch.equal(ours.mask, mask)
    assert torch.equal(ours.pooled, clip_pooler)
    # the prompt's own tokens (and the template's closing <|eot_id|>), then zeros
    tokens = len(c.tokenizer(prompt + "<|eot_id|>", add_special_tokens=False).input_ids)
    assert int(ours.mask.sum()) == tokens
    assert not ours.embeds[:, tokens:].any()


# --- the picture ----------------------------------------------------------------------------


def test_siglip_reads_the_uint8_picture_through_the_pil_processor() -> None:
    c = tiny_components()
    assert type(c.feature_extractor).__name__ == "SiglipImageProcessorPil"
    rgb = np.array(picture(128, 112))
    with torch.no_grad():
        features = encode_image_features(c, rgb, device=CPU, dtype=torch.float32)
        expected = demo.hf_clip_vision_encode(rgb, c.feature_extractor, c.image_encoder)
    assert torch.equal(features, expected.last_hidden_state)
    # The diffusers pipeline's way: its [-1, 1] picture mapped back to [0, 1], with
    # do_rescale=False: a quarter of the values come out one level lower.
    floats = 2.0 * (torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255) - 1.0
    pipeline_way = c.feature_extractor(
        images=(floats + 1) / 2.0, return_tensors="pt", do_rescale=False
    ).pixel_values
    uint8_way = c.feature_extractor.preprocess(images=rgb, return_tensors="pt").pixel_values
    lower = (pipeline_way < uint8_way).float().mean()
    assert 0.1 < lower < 0.4 and not (pipeline_way > uint8_way).any()


# --- frames ---------------------------------------------------------------------------------


def test_frames_are_truncated_to_uint8_as_the_demo() -> None:
    # x * 127.5 + 127.5: 0.57 -> 200.2, -0.001 -> 127.4, 0.99 -> 253.7 (fp16 values)
    pixels = torch.tensor([0.57, -0.001, 0.99, 1.5, -2.0, -1.0], dtype=torch.float16)
    video = pixels.view(1, 1, 6, 1, 1).expand(1, 3, 6, 1, 1)
    assert to_uint8(video)[:, 0, 0, 0].tolist() == [200, 127, 253, 255, 0, 0]
    assert torch.equal(
        torch.from_numpy(to_uint8(video)), torch.from_numpy(demo.to_uint8_frames(video))
    )


def test_sections_come_from_the_seconds_at_30_fps_whatever_the_frame_rate() -> None:
    for fps in (15, 24, 30, 60):
        params = GenerationParams(prompt="x", seconds=5.0, fps=fps)
        assert params.sections() == 4 and params.frames() == 145
