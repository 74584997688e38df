"""The parts of `HunyuanVideoFramepackPipeline`, held together, and how to get them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch

if TYPE_CHECKING:
    from diffusers import AutoencoderKLHunyuanVideo, HunyuanVideoFramepackTransformer3DModel
    from diffusers.schedulers.scheduling_utils import SchedulerMixin
    from transformers import (
        CLIPTextModel,
        LlamaModel,
        PreTrainedTokenizerBase,
        SiglipVisionModel,
    )
    from transformers.image_processing_utils import BaseImageProcessor


@dataclass
class Components:
    """The models, tokenizers and processors of one FramePack model, loaded once."""

    transformer: HunyuanVideoFramepackTransformer3DModel
    vae: AutoencoderKLHunyuanVideo
    text_encoder: LlamaModel
    tokenizer: PreTrainedTokenizerBase
    text_encoder_2: CLIPTextModel
    tokenizer_2: PreTrainedTokenizerBase
    image_encoder: SiglipVisionModel
    feature_extractor: BaseImageProcessor
    scheduler: SchedulerMixin  # the pipeline's (flow-match Euler); the engine makes its own solvers
    # HunyuanVideo's template and its crop_start counted by `tokenizer`
    # (`framepack.models.prompt_template.llama_prompt_template`)
    prompt_template: dict[str, Any]
    preset: str = "framepack"
    is_random: bool = False  # the tiny preset: random weights, its videos are noise

    def models(self) -> dict[str, torch.nn.Module]:
        """The parts with weights, in the order a job uses them."""
        return {
            "text_encoder": self.text_encoder,
            "text_encoder_2": self.text_encoder_2,
            "image_encoder": self.image_encoder,
            "vae": self.vae,
            "transformer": self.transformer,
        }

    def pipeline_parts(self) -> dict[str, Any]:
        """Keyword arguments of `HunyuanVideoFramepackPipeline(...)` with these parts."""
        return {
            name: getattr(self, name)
            for name in (
                "transformer",
                "vae",
                "text_encoder",
                "tokenizer",
                "text_encoder_2",
                "tokenizer_2",
                "image_encoder",
                "feature_extractor",
                "scheduler",
            )
        }


class ModelSettingsLike(Protocol):
    """What `load_components` reads of `storage.config.ModelSettings`."""

    preset: str
    device: str
    sources: Mapping[str, str]
    cache_dir: str


def load_components(
    model: ModelSettingsLike,
    *,
    device: torch.device | str | None = None,
    on_download: Callable[[int, int], None] | None = None,
) -> Components:
    """The components of `model.preset`: built in code for ``tiny``, else from the Hub or disk.

    They come back on the CPU; `FramePackEngine` places them for its memory mode.
    `device` (default: `model.device`) only picks the dtypes. `on_download` gets the
    bytes of the files fetched first (`framepack.models.download.DownloadReport`).
    """
    from framepack.models.memory import resolve_device
    from framepack.models.presets import get_preset

    preset = get_preset(model.preset)
    target = resolve_device(device if device is not None else model.device)
    if preset.name == "tiny":
        from framepack.models.tiny import build_tiny_components

        return build_tiny_components()
    from framepack.models.loading import load_pretrained

    return load_pretrained(
        preset,
        sources=model.sources,
        cache_dir=model.cache_dir,
        device=target,
        on_download=on_download,
    )
