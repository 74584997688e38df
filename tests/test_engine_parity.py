"""The engine renders what diffusers' HunyuanVideoFramepackPipeline renders.

Same tiny components, same seed, flow-match Euler (the pipeline's scheduler):
the engine's frames must equal the pipeline's output rounded to 8 bits, pixel for
pixel. Tolerance: zero 8-bit levels. The pipeline gives floats in [0, 1]; the
engine does the same float operations in the same order and rounds them to
uint8, so any difference at all means the two computed different videos.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tests.engine_fixtures import FAST, picture, pipeline_frames, run_job


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
    assert_same_frames(run.frames, pipeline_frames(params, image))


def test_end_image_frames_equal_the_pipelines(tmp_path: Path) -> None:
    params = replace(FAST, scheduler="euler", seconds=3.6)  # 3 sections: the end image only
    # conditions the first one rendered
    image, end = picture(seed=1), picture(seed=2)
    run = run_job(tmp_path, params, image, end_image=end)
    assert_same_frames(run.frames, pipeline_frames(params, image, end_image=end))
