"""What one video job asks for, the few numbers that follow from it, and its checks.

Imports no torch: `framepack-bot animate` refuses bad options before loading a model.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from typing import Literal

from framepack.engine.prompts import parse_prompt
from framepack.models.presets import allowed_samplers
from storage.records import LATENT_WINDOW, sections_for

Sampler = Literal["inverted", "forward"]
SAMPLERS: tuple[str, ...] = ("inverted", "forward")
SCHEDULERS: tuple[str, ...] = ("unipc", "euler")  # see framepack.engine.solvers
# see framepack.engine.caches (here without torch: the CLI checks before loading a model)
CACHES: tuple[str, ...] = ("off", "teacache", "magcache")


@dataclass(frozen=True)
class GenerationParams:
    """One job's settings. Defaults are the original FramePack demo's."""

    prompt: str  # may hold per-section prompts "[0s: a man walks] [3s: he turns around]"
    seconds: float = 5.0
    seed: int = 0
    steps: int = 25
    guidance: float = 10.0  # distilled guidance, fed to the transformer as an embedding
    cfg: float = 1.0  # real CFG: > 1 adds a pass on `negative_prompt` ("" too), as the demo
    negative_prompt: str = ""
    sampler: Sampler = "inverted"  # framepack: inverted anti-drifting (end first); f1: forward
    scheduler: Literal["unipc", "euler"] = "unipc"
    resolution: int = 640  # base of the bucket set
    latent_window: int = LATENT_WINDOW  # latent frames sampled per section (4 frames each)
    fps: int = 30
    crf: int = 16  # H.264 quality of the MP4s (1-51, lower is better)
    # LoRA adapters attached to the engine, (name, scale), in order; () renders the base
    loras: tuple[tuple[str, float], ...] = ()
    # a step cache skips the block stack on steps where its input barely changed
    cache: Literal["off", "teacache", "magcache"] = "off"
    cache_threshold: float | None = None  # None: the cache's default; unused when off

    def sections(self) -> int:
        """Number of sections, as the demo computes it from the requested seconds (at 30
        frames a second whatever `fps`: the formula the queue's estimates use too)."""
        return sections_for(self.seconds, self.latent_window)

    def frames(self) -> int:
        """Frames of the finished video: each section adds 4 per latent frame, plus the first."""
        return self.sections() * self.latent_window * 4 + 1

    def duration(self) -> float:
        """Seconds of the finished video (close to, not exactly, `seconds`)."""
        return self.frames() / self.fps

    def section_seconds(self) -> float:
        """Video time one section covers (1.2 s at the defaults)."""
        return self.latent_window * 4 / self.fps

    def fingerprint(self) -> str:
        """Hash of every field that changes the frames; the MP4 quality does not. Without a
        cache and LoRAs the hash is the one of the settings before they existed (their
        checkpoints still resume)."""
        fields = asdict(self)
        del fields["crf"]
        if self.cache == "off":
            del fields["cache"], fields["cache_threshold"]
        if not self.loras:
            del fields["loras"]
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def check_params(params: GenerationParams, *, preset: str, has_end_image: bool) -> None:
    """Every check of a job's settings, so that a bad job fails before any model runs."""
    if not isinstance(params.prompt, str) or not params.prompt.strip():
        raise ValueError("the prompt is empty; say what should happen in the video")
    parse_prompt(params.prompt)  # raises ValueError naming what is wrong with timed prompts
    if not math.isfinite(params.seconds) or params.seconds <= 0:
        raise ValueError(f"seconds must be a positive number, not {params.seconds}")
    if (
        isinstance(params.seed, bool)
        or not isinstance(params.seed, int)
        or not 0 <= params.seed < 2**63
    ):
        raise ValueError(f"seed must be a whole number from 0 to 2**63 - 1, not {params.seed!r}")
    if not 1 <= params.steps <= 1000:
        raise ValueError(f"steps must be between 1 and 1000, not {params.steps}")
    if not math.isfinite(params.guidance) or params.guidance < 0:
        raise ValueError(f"guidance must be a number >= 0, not {params.guidance}")
    if not math.isfinite(params.cfg) or params.cfg < 1:
        raise ValueError(f"cfg must be a number >= 1 (1 turns real CFG off), not {params.cfg}")
    if not isinstance(params.negative_prompt, str):
        raise ValueError(f"the negative prompt must be text, not {params.negative_prompt!r}")
    if params.sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, not {params.sampler!r}")
    if params.scheduler not in SCHEDULERS:
        raise ValueError(
            f"scheduler must be one of {', '.join(SCHEDULERS)}, not {params.scheduler!r}"
        )
    if params.cache not in CACHES:
        raise ValueError(f"cache must be one of {', '.join(CACHES)}, not {params.cache!r}")
    threshold = params.cache_threshold
    if threshold is not None and (
        isinstance(threshold, bool)
        or not isinstance(threshold, int | float)
        or not math.isfinite(threshold)
        or threshold <= 0
    ):
        raise ValueError(
            f"the cache threshold must be a number above 0, not {threshold!r} "
            "(cache off computes every step)"
        )
    if params.cache == "magcache" and threshold is not None and threshold >= 1:
        raise ValueError(
            f"MagCache's threshold must be below 1, not {threshold} (from 1 on it could skip "
            "a section's last step)"
        )
    allowed = allowed_samplers(preset)
    if params.sampler in SAMPLERS and params.sampler not in allowed:
        raise ValueError(
            f"the {preset} model renders with the {' or '.join(allowed)} sampler, "
            f"not {params.sampler!r}"
        )
    if params.resolution < 64:
        raise ValueError(f"resolution must be at least 64, not {params.resolution}")
    if params.latent_window < 2:
        raise ValueError(f"latent_window must be at least 2, not {params.latent_window}")
    if not 1 <= params.fps <= 120:
        raise ValueError(f"fps must be between 1 and 120, not {params.fps}")
    if not 1 <= params.crf <= 51:
        raise ValueError(
            f"crf must be between 1 and 51, not {params.crf} "
            "(0, lossless, plays as a black video in many players)"
        )
    for lora in params.loras:
        if (
            len(lora) != 2
            or not isinstance(lora[0], str)
            or not isinstance(lora[1], int | float)
            or not math.isfinite(lora[1])
        ):
            raise ValueError(f"a LoRA is a (name, finite scale) pair, not {lora!r}")
    if len({name for name, _ in params.loras}) != len(params.loras):
        raise ValueError("a LoRA is given twice")
    if has_end_image and params.sampler != "inverted":
        raise ValueError(
            "an end image needs the inverted sampler (the framepack model): "
            "the forward sampler builds the video from the start and cannot aim at a last frame"
        )
