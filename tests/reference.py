"""The same job through diffusers' `HunyuanVideoFramepackPipeline`, for the pipeline
comparison and the engine benchmark: one mapping of our params to the pipeline's
arguments, so that what is compared is compared on identical inputs.

The engine follows FramePack's demo where the pipeline differs from it; what the
pipeline is given here takes those differences out, so that the comparison is of
what the two share (the section loop, the history, Euler on the shifted schedule,
decoding and blending):

- the conditioning is the engine's: the demo's text layout (the prompt's tokens
  zero-padded to 512) as `prompt_embeds`, SigLIP of the uint8 crop instead of the
  pipeline's float input, and the VAE posterior's mean as `image_latents`, so that
  the pipeline draws nothing from the generator but the section noises (it would
  draw its VAE sample first);
- the frames are the pipeline's decoded floats, converted to uint8 as the demo
  does (truncated; the pipeline's own postprocessing rounds).

Where the two still differ, the engine follows the demo: UniPC, and real CFG
(combined in float32, and run with an empty negative prompt too).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from framepack.engine.buckets import find_nearest_bucket, resize_and_center_crop
from framepack.engine.conditioning import (
    encode_image_features,
    encode_latent,
    encode_prompt,
    image_to_tensor,
)
from framepack.engine.frames import to_uint8
from framepack.engine.params import GenerationParams
from framepack.models.components import Components


def _crop(image: Image.Image, width: int, height: int) -> np.ndarray:
    return resize_and_center_crop(np.asarray(image.convert("RGB")), width, height)


def pipeline_kwargs(
    components: Components,
    params: GenerationParams,
    image: Image.Image,
    *,
    end_image: Image.Image | None = None,
) -> dict[str, Any]:
    """Arguments of `HunyuanVideoFramepackPipeline.__call__` for this job."""
    rgb = np.asarray(image.convert("RGB"))
    height, width = find_nearest_bucket(*rgb.shape[:2], resolution=params.resolution)
    start = _crop(image, width, height)
    dtype = components.transformer.dtype
    cpu = torch.device("cpu")
    prompt = encode_prompt(components, params.prompt, device=cpu, dtype=dtype)
    window_frames = (params.latent_window - 1) * 4 + 1
    kwargs: dict[str, Any] = {
        "image": Image.fromarray(start),
        "prompt_embeds": prompt.embeds,
        "prompt_attention_mask": prompt.mask,
        "pooled_prompt_embeds": prompt.pooled,
        "height": height,
        "width": width,
        # the pipeline makes ceil(num_frames / window_frames) sections
        "num_frames": params.sections() * window_frames,
        "latent_window_size": params.latent_window,
        "num_inference_steps": params.steps,
        "guidance_scale": params.guidance,
        "generator": torch.Generator().manual_seed(params.seed),
        "output_type": "pt",
        "sampling_type": ("inverted_anti_drifting" if params.sampler == "inverted" else "vanilla"),
        "prompt_template": components.prompt_template,
    }
    if end_image is not None:
        kwargs["last_image"] = Image.fromarray(_crop(end_image, width, height))
    return kwargs


def pipeline_frames(
    components: Components,
    params: GenerationParams,
    image: Image.Image,
    *,
    end_image: Image.Image | None = None,
) -> np.ndarray:
    """The pipeline's video for this job, as uint8 frames (T, H, W, 3)."""
    from diffusers import HunyuanVideoFramepackPipeline

    pipe = HunyuanVideoFramepackPipeline(**components.pipeline_parts())
    pipe.set_progress_bar_config(disable=True)
    kwargs = pipeline_kwargs(components, params, image, end_image=end_image)
    cpu = torch.device("cpu")
    crops = [np.array(kwargs["image"])]
    if end_image is not None:
        crops.append(np.array(kwargs["last_image"]))
    features = encode_image_features(
        components, crops[0], device=cpu, dtype=components.transformer.dtype
    )
    # The pipeline encodes the start picture, then the end picture; it is given the
    # engine's encodings of the same uint8 crops instead.
    latents = iter(encode_latent(components, image_to_tensor(rgb), device=cpu) for rgb in crops)

    def prepare_image_latents(image: torch.Tensor, **_: Any) -> torch.Tensor:
        return next(latents)

    pipe.prepare_image_latents = prepare_image_latents  # type: ignore[method-assign]
    pipe.encode_image = lambda image, **_: features  # type: ignore[method-assign]
    decoded: list[torch.Tensor] = []

    def keep_decoded(video: torch.Tensor, output_type: str = "pt") -> torch.Tensor:
        decoded.append(video)
        return video

    pipe.video_processor.postprocess_video = keep_decoded  # type: ignore[method-assign]
    pipe(**kwargs)
    return to_uint8(decoded[0])
