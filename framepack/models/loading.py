"""Real checkpoints: each component from a Hub repo id or a local folder.

A source names the folder that holds one component:

- a Hub repo id, optionally with the component's subfolder after it:
  ``lllyasviel/FramePackI2V_HY`` or ``hunyuanvideo-community/HunyuanVideo/vae``;
- a local folder (an absolute or ``./`` path, or any path that exists): the
  component's own folder, or a whole snapshot that has the component in a
  subfolder named after it (``/models/HunyuanVideo`` for ``text_encoder``).

dtypes: the transformer in bfloat16, the rest in float16 (as the original). On a
CPU, where float16 kernels are slow or missing, the rest stay in float32.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from framepack.engine.solvers import pipeline_scheduler
from framepack.models.components import Components
from framepack.models.download import DownloadReport, download_sources
from framepack.models.presets import Preset
from framepack.models.processors import load_siglip_processor
from framepack.models.prompt_template import llama_prompt_template

log = logging.getLogger(__name__)

COMPONENT_NAMES = (
    "transformer", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "vae",
    "image_encoder", "feature_extractor",
)  # fmt: skip
_OWN_FILES = ("config.json", "tokenizer_config.json", "preprocessor_config.json")


@dataclass(frozen=True)
class Source:
    location: str  # Hub repo id or local folder
    subfolder: str | None = None

    def __str__(self) -> str:
        return f"{self.location}/{self.subfolder}" if self.subfolder else self.location


def parse_source(value: str, component: str) -> Source:
    """Where `component` is, from a config value (see the module's docstring)."""
    path = Path(value).expanduser()
    if value.startswith(("/", ".", "~")) or path.exists():
        if not path.is_dir():
            raise ValueError(f"model source for {component}: {value} is not a folder")
        own = any((path / name).is_file() for name in _OWN_FILES)
        if not own and (path / component).is_dir():
            return Source(str(path), component)
        return Source(str(path))
    parts = value.strip("/").split("/")
    if len(parts) < 2 or not all(parts):
        raise ValueError(
            f"model source for {component}: {value!r} is neither a folder nor a Hub repo id "
            "(owner/name, optionally followed by /subfolder)"
        )
    return Source("/".join(parts[:2]), "/".join(parts[2:]) or None)


def component_dtypes(device: torch.device) -> dict[str, torch.dtype]:
    rest = torch.float16 if device.type == "cuda" else torch.float32
    dtypes = dict.fromkeys(("text_encoder", "text_encoder_2", "image_encoder", "vae"), rest)
    return dtypes | {"transformer": torch.bfloat16}


def _loaders() -> dict[str, Callable[..., Any]]:
    from diffusers import AutoencoderKLHunyuanVideo, HunyuanVideoFramepackTransformer3DModel
    from transformers import (
        AutoTokenizer,
        CLIPTextModel,
        LlamaModel,
        SiglipVisionModel,
    )

    # Both libraries build the model on the meta device and fill it tensor by tensor
    # from the files, cast to `dtype` as each is read: the host holds about one copy
    # of the weights, never a float32 one.
    def diffusers_model(cls: Any) -> Callable[..., Any]:
        return lambda source, dtype, **kw: cls.from_pretrained(
            source.location,
            subfolder=source.subfolder,
            torch_dtype=dtype,
            low_cpu_mem_usage=True,
            **kw,
        )

    def transformers_model(cls: Any) -> Callable[..., Any]:
        return lambda source, dtype, **kw: cls.from_pretrained(
            source.location, subfolder=source.subfolder or "", dtype=dtype, **kw
        )

    def processor(cls: Any) -> Callable[..., Any]:
        # AutoTokenizer, not LlamaTokenizerFast: on transformers 5 the latter splits
        # HunyuanVideo's Llama 3 prompts into the wrong tokens.
        return lambda source, dtype, **kw: cls.from_pretrained(
            source.location, subfolder=source.subfolder or "", **kw
        )

    return {
        "transformer": diffusers_model(HunyuanVideoFramepackTransformer3DModel),
        "vae": diffusers_model(AutoencoderKLHunyuanVideo),
        "text_encoder": transformers_model(LlamaModel),
        "text_encoder_2": transformers_model(CLIPTextModel),
        "image_encoder": transformers_model(SiglipVisionModel),
        "tokenizer": processor(AutoTokenizer),
        "tokenizer_2": processor(AutoTokenizer),
        "feature_extractor": lambda source, dtype, **kw: load_siglip_processor(
            source.location, source.subfolder, **kw
        ),
    }


def load_pretrained(
    preset: Preset,
    *,
    sources: Mapping[str, str],
    cache_dir: str,
    device: torch.device,
    on_download: DownloadReport | None = None,
) -> Components:
    """Load every component of `preset`, `sources` overriding the preset's own.

    With `on_download`, the files the cache lacks are downloaded first and their
    bytes reported to it as they arrive (see `framepack.models.download`).
    """
    unknown = sorted(set(sources) - set(COMPONENT_NAMES))
    if unknown:
        raise ValueError(
            f"unknown model component(s) {', '.join(unknown)} in sources; "
            f"valid: {', '.join(COMPONENT_NAMES)}"
        )
    dtypes = component_dtypes(device)
    extra = {"cache_dir": cache_dir} if cache_dir else {}
    located = {
        name: parse_source({**preset.sources, **sources}[name], name) for name in COMPONENT_NAMES
    }
    if on_download is not None:
        download_sources(list(located.values()), cache_dir=cache_dir or None, report=on_download)
    loaders = _loaders()
    parts: dict[str, Any] = {}
    for name in COMPONENT_NAMES:
        source = located[name]
        log.info("loading %s from %s", name, source)
        part = loaders[name](source, dtypes.get(name), **extra)
        if isinstance(part, torch.nn.Module):
            part.eval().requires_grad_(False)
        parts[name] = part
    # Refuses a tokenizer that splits prompts wrongly, with the fix in the message.
    template = llama_prompt_template(parts["tokenizer"])
    log.info("prompt template: the prompt starts at token %d", template["crop_start"])
    return Components(
        **parts,
        scheduler=pipeline_scheduler(),
        preset=preset.name,
        is_random=False,
        prompt_template=template,
    )
