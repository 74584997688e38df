"""The same job as diffusers' `HunyuanVideoFramepackPipeline` call, for the parity
tests and the engine benchmark: one mapping of our params to the pipeline's
arguments, so that what is compared is compared on identical inputs."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from framepack.engine.buckets import find_nearest_bucket, resize_and_center_crop
from framepack.engine.params import GenerationParams


def pipeline_kwargs(
    params: GenerationParams,
    image: Image.Image,
    *,
    prompt_template: dict[str, Any],
    end_image: Image.Image | None = None,
) -> dict[str, Any]:
    """Arguments of `HunyuanVideoFramepackPipeline.__call__` for this job (uint8 frames out)."""
    rgb = np.asarray(image.convert("RGB"))
    height, width = find_nearest_bucket(*rgb.shape[:2], resolution=params.resolution)

    def crop(img: Image.Image) -> Image.Image:
        return Image.fromarray(
            resize_and_center_crop(np.asarray(img.convert("RGB")), width, height)
        )

    window_frames = (params.latent_window - 1) * 4 + 1
    return {
        "image": crop(image),
        "last_image": crop(end_image) if end_image is not None else None,
        "prompt": params.prompt,
        "height": height,
        "width": width,
        # the pipeline makes ceil(num_frames / window_frames) sections
        "num_frames": params.sections() * window_frames,
        "latent_window_size": params.latent_window,
        "num_inference_steps": params.steps,
        "guidance_scale": params.guidance,
        "generator": torch.Generator().manual_seed(params.seed),
        "output_type": "np",
        "sampling_type": ("inverted_anti_drifting" if params.sampler == "inverted" else "vanilla"),
        "prompt_template": prompt_template,
    }


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """The pipeline returns floats in [0, 1]; the engine rounds the same floats to 8 bits."""
    return np.round(frames * 255).astype(np.uint8)
