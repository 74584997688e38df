"""Memory modes: which one `auto` picks for the free VRAM (the modes themselves need a GPU),
and the step caches over the low mode's layer layout, on the CPU."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from framepack.engine.engine import FramePackEngine
from framepack.engine.events import Step
from framepack.models.memory import (
    WeightBytes,
    apply_memory_mode,
    choose_memory_mode,
    resolve_device,
)
from tests.engine_fixtures import FAST, run_job, tiny_components

GB = 10**9
CUDA = torch.device("cuda")
# The real FramePack model as loaded: 13B transformer in bf16, Llama 3 8B, CLIP-L, SigLIP and
# the HunyuanVideo VAE in fp16.
REAL = WeightBytes(
    {
        "transformer": int(25.7 * GB),
        "text_encoder": int(15.0 * GB),
        "text_encoder_2": int(0.25 * GB),
        "image_encoder": int(0.86 * GB),
        "vae": int(0.49 * GB),
    }
)


@pytest.mark.parametrize(
    ("free_gb", "mode"),
    [
        (141, "high"),  # H200
        (79, "high"),  # H100 80 GB
        (60, "high"),
        (56, "offload"),
        (44, "offload"),  # L40S, A6000 48 GB
        (34, "offload"),
        (32, "low"),  # RTX 5090
        (23, "low"),  # RTX 4090
        (6, "low"),  # FramePack's 6 GB laptop GPU
    ],
)
def test_auto_picks_the_fastest_mode_that_fits(free_gb: float, mode: str) -> None:
    chosen = choose_memory_mode("auto", device=CUDA, free_bytes=int(free_gb * GB), weights=REAL)
    assert chosen == mode


def test_an_explicit_mode_is_kept_on_a_gpu() -> None:
    for mode in ("high", "offload", "low"):
        assert choose_memory_mode(mode, device=CUDA, free_bytes=1, weights=REAL) == mode


def test_on_a_cpu_every_mode_runs_as_high() -> None:
    cpu = torch.device("cpu")
    for mode in ("auto", "high", "offload", "low"):
        assert choose_memory_mode(mode, device=cpu, free_bytes=None, weights=REAL) == "high"


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="auto, high, offload, low"):
        choose_memory_mode("medium", device=CUDA, free_bytes=80 * GB, weights=REAL)


def test_the_tiny_model_fits_any_gpu() -> None:
    weights = WeightBytes.of_components(tiny_components())
    assert weights.total < 10**7
    assert choose_memory_mode("auto", device=CUDA, free_bytes=GB, weights=weights) == "high"


def test_devices() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="choose auto, cpu, cuda"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda:0")


def test_high_on_a_cpu_leaves_the_models_on_the_cpu() -> None:
    components = tiny_components()
    apply_memory_mode(components, "high", torch.device("cpu"))
    assert {p.device.type for m in components.models().values() for p in m.parameters()} == {"cpu"}


def test_step_caches_work_over_the_low_modes_group_offloaded_layers(tmp_path: Path) -> None:
    """The low memory mode's layout (diffusers' leaf-level group offloading, here from the
    CPU to the CPU, without streams) under the block-level cache hooks: same frames; and
    TeaCache's first pass of a section runs norm1 once, as an uncached pass does (the
    streamed low mode records its prefetch order from the first pass)."""
    from diffusers.hooks import apply_group_offloading

    from framepack.models.tiny import build_tiny_components

    components = build_tiny_components()
    apply_group_offloading(
        components.transformer,
        onload_device=torch.device("cpu"),
        offload_device=torch.device("cpu"),
        offload_type="leaf_level",
    )
    offloaded = FramePackEngine(components, device="cpu")
    norm1_calls = []
    components.transformer.transformer_blocks[0].norm1.register_forward_pre_hook(
        lambda *_: norm1_calls.append(1)
    )
    for cache in ("teacache", "magcache"):
        params = replace(FAST, steps=6, seconds=1.0, cache=cache, cache_threshold=0.3)
        norm1_calls.clear()
        first_pass: list[int] = []

        def note_first_pass(event, seen: list[int] = first_pass) -> bool:
            if isinstance(event, Step) and not seen:
                seen.append(len(norm1_calls))
            return False

        run_job(
            tmp_path / cache / "offloaded", params, engine=offloaded, cancel_when=note_first_pass
        )
        assert first_pass == [1]
        plain = run_job(tmp_path / cache / "plain", params)
        again = run_job(tmp_path / cache / "offloaded2", params, engine=offloaded)
        assert np.array_equal(again.frames, plain.frames), cache
