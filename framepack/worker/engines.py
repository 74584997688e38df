"""Which engine renders a job: one loaded at a time, kept for many jobs, and the
memory-mode fallback after a CUDA out-of-memory error.

A job names a model (``framepack``: the inverted anti-drifting sampler, ``f1``:
the forward one). With the ``tiny`` preset one random model serves both; with
the real presets a job for the other model loads that model's components in
place of the current ones (one set in memory at a time).
"""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image, ImageOps

from framepack.engine.continuation import VideoSource
from framepack.engine.events import EngineEvent
from framepack.engine.params import GenerationParams
from framepack.engine.prompts import add_triggers
from framepack.models.components import Components
from framepack.models.lora import LoraError
from storage.config import LoraSettings, ModelSettings, Settings
from storage.files import DataDir, is_video_input
from storage.records import Job

VIDEO_NAME = "video.mp4"  # the engine's, in a job's work dir (framepack.engine.engine)

SAMPLER_OF_MODEL = {"framepack": "inverted", "f1": "forward"}
# After an out-of-memory error a job is tried once more in the next lower mode.
LOWER_MEMORY_MODE = {"high": "offload", "offload": "low"}


class EngineLike(Protocol):
    """What the worker uses of `framepack.engine.engine.FramePackEngine`."""

    components: Components
    memory_mode: str

    def generate(
        self,
        params: GenerationParams,
        image: Image.Image | None,
        *,
        workdir: Path,
        end_image: Image.Image | None = None,
        source: VideoSource | None = None,
        should_cancel: Callable[[], bool] = ...,
        on_frames: Callable[[np.ndarray], None] | None = None,
    ) -> Iterator[EngineEvent]: ...


# (preset, memory mode) -> a ready engine; blocking (it loads the weights)
EngineFactory = Callable[[str, str], EngineLike]


def engine_factory(
    model: ModelSettings,
    on_download: Callable[[int, int], None] | None = None,
    *,
    mag_tables: Path | None = None,
) -> EngineFactory:
    """Engines of the configured device, loading each preset's components from its sources
    (downloading what the cache lacks first, reported to `on_download`), with the MagCache
    tables the host calibrated into the folder `mag_tables`."""

    def build(preset: str, memory: str) -> EngineLike:
        from framepack.engine.engine import FramePackEngine
        from framepack.models.components import load_components

        components = load_components(
            dataclasses.replace(model, preset=preset), on_download=on_download
        )
        from framepack.engine.caches.mag_ratios import load_tables

        loras = lora_files(model, preset)
        tables = load_tables(mag_tables) if mag_tables is not None else None
        return FramePackEngine(
            components, device=model.device, memory=memory, loras=loras, mag_tables=tables
        )

    return build


def lora_files(model: ModelSettings, preset: str) -> dict[str, Path | LoraError]:
    """The catalogue's LoRAs for `preset`'s model (the tiny preset serves both), each as
    its local file, fetched from the Hub first where it is one, or why it cannot be had."""
    files: dict[str, Path | LoraError] = {}
    for lora in model.loras:
        if preset == "tiny" or lora.for_model(preset):
            try:
                files[lora.name] = lora_path(lora, model.cache_dir, download=True)
            except LoraError as exc:
                files[lora.name] = exc
    return files


def lora_path(lora: LoraSettings, cache_dir: str, *, download: bool) -> Path:
    """The local file of a catalogue LoRA: its path, or its Hub file in the Hugging Face
    cache (fetched when `download`). `LoraError` says why there is none."""
    if lora.hub is None:
        assert lora.path is not None
        if not lora.path.is_file():
            raise LoraError(f"no such file {lora.path}")
        return lora.path
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    repo, filename = lora.hub
    cache = cache_dir or None
    cached = try_to_load_from_cache(repo, filename, cache_dir=cache)
    if isinstance(cached, str):
        return Path(cached)
    if not download:
        raise LoraError(f"{repo}/{filename} is not in the Hugging Face cache yet")
    try:
        return Path(hf_hub_download(repo, filename, cache_dir=cache))
    except Exception as exc:
        raise LoraError(f"cannot fetch {repo}/{filename} from the Hub: {exc}") from None


def generation_params(job: Job, settings: Settings) -> GenerationParams:
    """The engine's settings for a job: the user's options, the host's scheduler and buckets,
    and the host's real-CFG and step-cache defaults where the job sets none."""
    p, defaults = job.params, settings.generation
    if p.model not in SAMPLER_OF_MODEL:
        raise ValueError(f"unknown model {p.model!r}; choose one of {', '.join(SAMPLER_OF_MODEL)}")
    prompt = p.prompt
    for name, _ in p.loras:  # a LoRA no longer in the catalogue fails in the engine
        lora = settings.model.lora(name)
        if lora is not None:
            prompt = add_triggers(prompt, lora.triggers)
    cache = p.cache if p.cache is not None else defaults.cache
    threshold = (
        p.cache_threshold if p.cache_threshold is not None else defaults.cache_threshold(cache)
    )
    return GenerationParams(
        prompt=prompt,
        seconds=p.seconds,
        seed=p.seed,
        steps=p.steps,
        guidance=p.guidance,
        cfg=p.cfg if p.cfg is not None else defaults.cfg,
        negative_prompt=(
            p.negative_prompt if p.negative_prompt is not None else defaults.negative_prompt
        ),
        sampler=SAMPLER_OF_MODEL[p.model],  # type: ignore[arg-type]
        scheduler=settings.generation.scheduler,  # type: ignore[arg-type]
        resolution=settings.resolution,
        loras=tuple(p.loras),
        cache=cache,  # type: ignore[arg-type]
        cache_threshold=threshold,
    )


def video_source(job: Job, data: DataDir) -> VideoSource | None:
    """The video `job` continues: the video of the finished job it extends (with its
    checkpoint: exact), or the video it was sent with; None for a picture."""
    if job.params.extend_of is not None:
        source = job.params.extend_of
        return VideoSource(data.work_dir(source) / VIDEO_NAME, data.checkpoint(source))
    if is_video_input(job.input_path):
        return VideoSource(Path(job.input_path))
    return None


class EngineSlot:
    """The one engine in memory. Its methods block: call them on the GPU thread."""

    def __init__(self, factory: EngineFactory, *, preset: str, memory: str) -> None:
        self.factory = factory
        self.preset = preset  # the configured preset, loaded at start
        self.memory = memory  # the mode asked for; lowered after an out-of-memory error
        self.engine: EngineLike | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, *, on_download: Callable[[int, int], None] | None = None
    ) -> EngineSlot:
        model = settings.model
        factory = engine_factory(
            model, on_download, mag_tables=DataDir(settings.storage.data_dir).mag_ratios
        )
        return cls(factory, preset=model.preset, memory=model.memory)

    @property
    def mode(self) -> str:
        """The memory mode in force (``auto`` resolved once an engine is loaded)."""
        return self.engine.memory_mode if self.engine is not None else self.memory

    def preset_for(self, model: str) -> str:
        """The preset whose weights render `model` (a job's ``framepack`` or ``f1``)."""
        if self.preset == "tiny":
            return "tiny"
        if model not in SAMPLER_OF_MODEL:
            raise ValueError(
                f"unknown model {model!r}; choose one of {', '.join(SAMPLER_OF_MODEL)}"
            )
        return model

    def get(self, preset: str | None = None) -> EngineLike:
        """The engine of `preset` (default: the configured one), loading it if needed."""
        preset = preset or self.preset
        if self.engine is not None and self.engine.components.preset != preset:
            self.unload()
        if self.engine is None:
            self.engine = self.factory(preset, self.memory)
        return self.engine

    def lower_memory(self) -> str | None:
        """Switch to the next lower memory mode; None when there is none (the job fails).

        The engine is dropped and the next `get` builds it again from scratch:
        the modes place the weights with hooks that cannot be taken off, and
        reloading is rare next to rendering. The lower mode stays for later jobs.
        """
        lower = LOWER_MEMORY_MODE.get(self.mode)
        if lower is None:
            return None
        self.unload()
        self.memory = lower
        return lower

    def unload(self) -> None:
        """Drop the engine and give its GPU memory back before another one loads."""
        self.engine = None
        gc.collect()
        _empty_cuda_cache()


def _empty_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def open_picture(path: str | None) -> Image.Image | None:
    """A job's picture as RGB, read fully now (the file may be removed later)."""
    if path is None:
        return None
    with Image.open(path) as image:
        image.load()
        # The bot stores clean pictures as sent; upright whatever wrote the file.
        return ImageOps.exif_transpose(image).convert("RGB")


def describe_model(engine: EngineLike) -> dict[str, Any]:
    """What the done event says of the model that rendered a video."""
    return {
        "preset": engine.components.preset,
        "random_model": engine.components.is_random,
        "memory_mode": engine.memory_mode,
    }
