"""The engine renders what FramePack's demo renders.

Compared against `tests/demo_reference.py`, an independent re-implementation of
the demo's `worker()` loops (its text and image encoding, `sample_hunyuan` with
its flow-matching UniPC bh1, the section loops, decoding, blending and the uint8
conversion), run on the same tiny components with the same picture, prompt and
seed. Tolerance: zero 8-bit levels, pixel for pixel: both compute the same float
operations in the same order, so any difference is a different computation.

The picture is given at its bucket size (the demo's bucket list is for 640 only;
the crop is tested in tests/test_buckets.py). Like the engine, the reference
takes the VAE posterior's mean for the start latent (the demo's sample comes from
an unseeded generator).
"""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from framepack.engine.engine import FramePackEngine
from framepack.engine.params import GenerationParams
from framepack.models.components import Components
from tests.demo_reference import DemoJob, demo_frames
from tests.engine_fixtures import FAST, picture, run_job, tiny_components, tiny_engine

# 3 sections (the middle one reads real history at every scale) of 5 steps (UniPC
# reaches its order 3 at the third step).
DEMO_LIKE = replace(FAST, seconds=3.6, steps=5, seed=31337)


@functools.cache
def bf16_components() -> Components:
    """The tiny model with its transformer in bfloat16, as the real one runs."""
    from framepack.models.tiny import build_tiny_components

    components = build_tiny_components()
    components.transformer.to(torch.bfloat16)
    return components


def assert_same_frames(engine: np.ndarray, demo: np.ndarray) -> None:
    assert engine.shape == demo.shape
    differing = int((engine != demo).any(axis=-1).sum())
    worst = int(np.abs(engine.astype(int) - demo.astype(int)).max())
    assert differing == 0, f"{differing} pixels differ from the demo's, by up to {worst} levels"


def demo_job(params: GenerationParams, rgb: np.ndarray) -> DemoJob:
    return DemoJob(
        rgb=rgb, prompt=params.prompt, seed=params.seed, seconds=params.seconds,
        steps=params.steps, gs=params.guidance, cfg=params.cfg, n_prompt=params.negative_prompt,
        latent_window_size=params.latent_window,
    )  # fmt: skip


@pytest.mark.parametrize("sampler", ["inverted", "forward"])
@pytest.mark.parametrize("cfg", [1.0, 3.0])
def test_frames_equal_the_demos(tmp_path: Path, sampler: str, cfg: float) -> None:
    # cfg 3 with the default empty negative prompt: the demo encodes "" and runs both passes.
    params = replace(DEMO_LIKE, sampler=sampler, cfg=cfg)
    image = picture(128, 112)
    run = run_job(tmp_path, params, image)
    assert run.frames is not None and run.frames.shape[0] == params.frames()
    demo = demo_frames(
        tiny_components(), demo_job(params, np.array(image)), f1=sampler == "forward"
    )
    assert_same_frames(run.frames, demo)


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["inverted", "forward"])
def test_frames_equal_the_demos_with_a_bf16_transformer(tmp_path: Path, sampler: str) -> None:
    # bf16 is where the demo's numerics show: latents and timesteps rounded to bf16,
    # the velocity out of a float32 proj_out, x0 from the rounded latents.
    params = replace(DEMO_LIKE, sampler=sampler, cfg=2.0, negative_prompt="blurry")
    image = picture(112, 128, seed=4)
    engine = FramePackEngine(bf16_components(), device="cpu")
    run = run_job(tmp_path, params, image, engine=engine)
    demo = demo_frames(
        bf16_components(), demo_job(params, np.array(image)), f1=sampler == "forward"
    )
    assert_same_frames(run.frames, demo)


def test_a_resumed_job_still_equals_the_demo(tmp_path: Path) -> None:
    from framepack.engine.events import Step

    params = replace(DEMO_LIKE, seed=5)
    image = picture(128, 112, seed=2)
    run_job(tmp_path, params, image, cancel_when=lambda e: isinstance(e, Step) and e.section == 1)
    resumed = run_job(tmp_path, params, image, engine=tiny_engine())
    assert resumed.started.first_section == 1
    assert_same_frames(
        resumed.frames,
        demo_frames(tiny_components(), demo_job(params, np.array(image)), f1=False),
    )
