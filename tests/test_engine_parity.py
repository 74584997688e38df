"""The engine against diffusers' HunyuanVideoFramepackPipeline, where the two agree.

FramePack's demo is the engine's reference (tests/test_engine_demo_parity.py);
the pipeline differs from it in its sampler, its numerics, its random stream and
its text and image preprocessing. This compares what the two still share: the
section loop, the history and its indices, the end image, flow-match Euler on the
pipeline's shifted schedule, VAE decoding and blending. The pipeline is given the
engine's conditioning and its frames are converted to uint8 as the engine converts
them (`tests/reference.py` says exactly what and why); Euler, cfg 1, same seed,
same section noises. Tolerance: zero 8-bit levels, pixel for pixel.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tests.engine_fixtures import FAST, picture, run_job, tiny_components
from tests.reference import pipeline_frames


def assert_same_frames(engine: np.ndarray, pipeline: np.ndarray) -> None:
    assert engine.shape == pipeline.shape
    differing = int((engine != pipeline).any(axis=-1).sum())
    assert differing == 0, (
        f"{differing} pixels differ; max {np.abs(engine - pipeline.astype(int)).max()}"
    )


@pytest.mark.parametrize("sampler", ["inverted", "forward"])
def test_frames_equal_the_pipelines(tmp_path: Path, sampler: str) -> None:
    params = replace(FAST, sampler=sampler, scheduler="euler")
    image = picture(160, 120)  # a portrait picture: cropped to a non-square bucket
    run = run_job(tmp_path, params, image)
    assert run.frames is not None and run.frames.shape[0] == params.frames()
    assert_same_frames(run.frames, pipeline_frames(tiny_components(), params, image))


def test_end_image_frames_equal_the_pipelines(tmp_path: Path) -> None:
    params = replace(FAST, scheduler="euler", seconds=3.6)  # 3 sections: the end image only
    # conditions the first one rendered
    image, end = picture(seed=1), picture(seed=2)
    run = run_job(tmp_path, params, image, end_image=end)
    assert_same_frames(run.frames, pipeline_frames(tiny_components(), params, image, end_image=end))
