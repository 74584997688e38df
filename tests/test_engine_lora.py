"""LoRA adapters on the tiny engine, from files written in code in each of the three
namings: scale 0 renders the base model exactly, scale s the frames of a transformer
merged by hand, two together add up, and switching between jobs leaks nothing."""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from framepack.engine.engine import FramePackEngine
from framepack.models.lora import (
    LoraError,
    LoraUnavailable,
    check_against,
    convert_lora,
    naming_of,
)
from framepack.models.tiny import build_tiny_components
from tests.engine_fixtures import FAST, picture, run_job, tiny_engine
from tests.lora_fixtures import NAMINGS, lora_tensors, merge_by_hand, random_lora, write_lora

# One section of two steps at the smallest bucket: enough to carry a LoRA's change into
# the frames, quick on a CPU.
JOB = replace(FAST, seconds=1.0, resolution=64)
SCALE = 0.7
# The unfused adapter computes W x + s (B (A x)) * alpha / r; the merged weights
# (W + s alpha / r B A) x. In float32 the two round differently, by about 1e-6 of the
# activations; through the sampler and the VAE decode that stays below 2 of 255 in
# any pixel (measured: at most 1), and the frames are otherwise identical.
MERGED_TOLERANCE = 2


@functools.cache
def _lora_dir() -> Path:
    import tempfile

    return Path(tempfile.mkdtemp(prefix="loras-"))


@functools.cache
def loras():
    """The LoRA (and a second one) drawn for the tiny transformer's sizes."""
    transformer = tiny_engine().components.transformer
    return random_lora(transformer, seed=1), random_lora(transformer, rank=2, alpha=1.0, seed=2)


@functools.cache
def lora_engine() -> FramePackEngine:
    """A tiny engine with the LoRA attached once per naming, and a second LoRA."""
    first, second = loras()
    base = tiny_engine().components.transformer
    files = {
        naming: write_lora(_lora_dir() / f"{naming}.safetensors", first, naming, base)
        for naming in NAMINGS
    }
    files["second"] = write_lora(_lora_dir() / "second.safetensors", second, "original", base)
    return FramePackEngine(build_tiny_components(), device="cpu", loras=files)


@functools.cache
def merged_engine(*scales: float) -> FramePackEngine:
    """A tiny engine whose transformer has the LoRAs merged into its weights by hand."""
    components = build_tiny_components()
    merge_by_hand(components.transformer, list(zip(loras(), scales, strict=False)))
    return FramePackEngine(components, device="cpu")


@functools.cache
def base_frames() -> np.ndarray:
    import tempfile

    return run_job(Path(tempfile.mkdtemp()), JOB).frames


def frames(engine: FramePackEngine, tmp_path: Path, name: str, *adapters) -> np.ndarray:
    run = run_job(tmp_path / name, replace(JOB, loras=tuple(adapters)), engine=engine)
    return run.frames


def test_the_three_namings_convert_to_the_same_adapter() -> None:
    transformer = tiny_engine().components.transformer
    first, _ = loras()
    converted = {n: convert_lora(lora_tensors(first, n, transformer)) for n in NAMINGS}
    assert {n: c[1] for n, c in converted.items()} == {n: n for n in NAMINGS}
    reference = converted["original"][0]
    # 7 original modules, 3 of them fused (q, k, v and the MLP): 14 diffusers modules
    assert len(reference) == 2 * 14
    assert reference["transformer.single_transformer_blocks.0.proj_mlp.lora_B.weight"].shape == (
        128,
        4,
    )
    for naming in NAMINGS[1:]:
        other = converted[naming][0]
        assert other.keys() == reference.keys()
        for key in reference:
            torch.testing.assert_close(other[key], reference[key])
    check_against(reference, transformer)  # every module exists, with these sizes
    again, naming = convert_lora(reference)  # diffusers' own PEFT naming is taken as it is
    assert naming == "diffusers" and again.keys() == reference.keys()
    assert all(torch.equal(again[k], reference[k]) for k in reference)


def test_alpha_over_rank_is_folded_into_lora_b() -> None:
    down, up = torch.ones(4, 32), torch.ones(96, 4)
    tensors = {
        "diffusion_model.double_blocks.0.img_attn_qkv.lora_A.weight": down,
        "diffusion_model.double_blocks.0.img_attn_qkv.lora_B.weight": up,
        "diffusion_model.double_blocks.0.img_attn_qkv.alpha": torch.tensor(2.0),
    }
    converted, _ = convert_lora(tensors)
    key = "transformer.transformer_blocks.0.attn.to_k.lora_B.weight"
    assert torch.equal(converted[key], torch.full((32, 4), 0.5))  # alpha 2 / rank 4
    del tensors["diffusion_model.double_blocks.0.img_attn_qkv.alpha"]  # none: alpha = rank
    assert torch.equal(convert_lora(tensors)[0][key], torch.ones(32, 4))


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ({}, "no tensors"),
        ({"model.foo.weight": torch.ones(2, 2)}, "no LoRA naming"),
        (
            {"diffusion_model.double_blocks.0.img_attn_qkv.lora_A.weight": torch.ones(4, 32)},
            r"no up \(B\) matrix",
        ),
        (
            {
                "diffusion_model.double_blocks.0.img_bogus.lora_A.weight": torch.ones(4, 32),
                "diffusion_model.double_blocks.0.img_bogus.lora_B.weight": torch.ones(32, 4),
            },
            "no such module",
        ),
        (
            {
                "lora_unet_single_blocks_0_linear1.lora_down.weight": torch.ones(4, 32),
                "lora_unet_single_blocks_0_linear1.lora_up.weight": torch.ones(50, 4),
            },
            "cannot be split",
        ),
        (  # an empty alpha (it raised IndexError, and the engine could not be built)
            {
                "lora_unet_double_blocks_0_img_attn_proj.lora_down.weight": torch.ones(4, 32),
                "lora_unet_double_blocks_0_img_attn_proj.lora_up.weight": torch.ones(32, 4),
                "lora_unet_double_blocks_0_img_attn_proj.alpha": torch.ones(0),
            },
            "not one alpha",
        ),
        (  # rank 0 (alpha / rank divided by 0), and ranks that do not agree
            {
                "diffusion_model.double_blocks.0.img_attn_proj.lora_A.weight": torch.ones(0, 32),
                "diffusion_model.double_blocks.0.img_attn_proj.lora_B.weight": torch.ones(32, 0),
            },
            "do not fit together",
        ),
        (
            {
                "diffusion_model.double_blocks.0.img_attn_proj.lora_A.weight": torch.ones(4, 32),
                "diffusion_model.double_blocks.0.img_attn_proj.lora_B.weight": torch.ones(32, 8),
            },
            "do not fit together",
        ),
    ],
)
def test_files_that_are_no_lora_are_refused_with_the_reason(tensors: dict, message: str) -> None:
    with pytest.raises(LoraError, match=message):
        convert_lora(tensors)


def test_a_lora_for_another_model_size_is_refused_against_the_transformer() -> None:
    tensors = {  # hidden size 3072 (the real model) on the tiny one (32)
        "diffusion_model.double_blocks.0.img_attn_proj.lora_A.weight": torch.ones(4, 3072),
        "diffusion_model.double_blocks.0.img_attn_proj.lora_B.weight": torch.ones(3072, 4),
    }
    assert naming_of(list(tensors)) == "original"
    with pytest.raises(LoraError, match=r"another model size.*32 inputs here, 3072"):
        check_against(convert_lora(tensors)[0], tiny_engine().components.transformer)


@pytest.mark.parametrize("naming", NAMINGS)
def test_scale_zero_renders_the_base_model_exactly(naming: str, tmp_path: Path) -> None:
    assert np.array_equal(frames(lora_engine(), tmp_path, "zero", (naming, 0.0)), base_frames())


@pytest.mark.parametrize("naming", NAMINGS)
def test_scale_s_renders_the_hand_merged_weights(naming: str, tmp_path: Path) -> None:
    with_lora = frames(lora_engine(), tmp_path, "lora", (naming, SCALE))
    merged = run_job(tmp_path / "merged", JOB, engine=merged_engine(SCALE)).frames
    assert not np.array_equal(with_lora, base_frames())  # the LoRA changes the video
    difference = np.abs(with_lora.astype(int) - merged.astype(int))
    assert difference.max() <= MERGED_TOLERANCE, difference.max()


def test_two_loras_together_render_both_merged(tmp_path: Path) -> None:
    both = frames(lora_engine(), tmp_path, "both", ("original", SCALE), ("second", 0.5))
    merged = run_job(tmp_path / "merged", JOB, engine=merged_engine(SCALE, 0.5)).frames
    assert np.abs(both.astype(int) - merged.astype(int)).max() <= MERGED_TOLERANCE
    one = frames(lora_engine(), tmp_path, "one", ("original", SCALE))
    assert not np.array_equal(both, one)


def test_switching_between_jobs_leaks_nothing(tmp_path: Path) -> None:
    engine = lora_engine()
    first = frames(engine, tmp_path, "a", ("kohya", SCALE))
    assert np.array_equal(frames(engine, tmp_path, "base"), base_frames())  # no LoRA: the base
    other = frames(engine, tmp_path, "b", ("second", 1.0))
    assert np.array_equal(frames(engine, tmp_path, "a2", ("kohya", SCALE)), first)
    assert not np.array_equal(other, first)


def test_the_loras_are_in_the_metadata_and_the_fingerprint(tmp_path: Path) -> None:
    engine = lora_engine()
    image = picture()
    plain = engine.prepare(JOB, image)
    styled = engine.prepare(replace(JOB, loras=(("original", 0.7),)), image)
    stronger = engine.prepare(replace(JOB, loras=(("original", 0.8),)), image)
    assert len({plain.fingerprint, styled.fingerprint, stronger.fingerprint}) == 3
    assert styled.metadata["loras"] == "original 0.7" and "loras" not in plain.metadata
    run = run_job(tmp_path, replace(JOB, loras=(("original", 0.7),)), engine=engine)
    assert run.done.metadata["loras"] == "original 0.7"


def test_an_unknown_or_broken_lora_is_refused_before_anything_runs(tmp_path: Path) -> None:
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    mismatched = tmp_path / "big.safetensors"
    save_file(
        {
            "diffusion_model.double_blocks.0.img_attn_proj.lora_A.weight": torch.ones(4, 3072),
            "diffusion_model.double_blocks.0.img_attn_proj.lora_B.weight": torch.ones(3072, 4),
        },
        str(mismatched),
    )
    engine = FramePackEngine(
        build_tiny_components(),
        device="cpu",
        loras={"broken": broken, "big": mismatched, "gone": LoraError("no such file x")},
    )
    assert "not a readable safetensors file" in (engine.loras["broken"].error or "")
    assert "another model size" in (engine.loras["big"].error or "")
    for name, reason in [
        ("broken", "could not be loaded"),
        ("gone", "no such file"),
        ("other", "not in this worker's catalogue"),
    ]:
        with pytest.raises(LoraUnavailable, match=reason):
            engine.generate(replace(JOB, loras=((name, 1.0),)), picture(), workdir=tmp_path)
    assert np.array_equal(run_job(tmp_path / "ok", JOB, engine=engine).frames, base_frames())
