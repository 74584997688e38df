"""The model presets: where each component comes from and which sampler fits it.

A source is a Hub repo id, optionally followed by the component's subfolder
(``owner/name/subfolder``), or a local folder. ``[model] sources`` in the config
overrides any of them (see `framepack.models.loading`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

HUNYUAN = "hunyuanvideo-community/HunyuanVideo"
REDUX = "lllyasviel/flux_redux_bfl"

# Text encoders, tokenizers and VAE of HunyuanVideo; SigLIP of Flux Redux: shared by both models.
_SHARED = {
    "text_encoder": f"{HUNYUAN}/text_encoder",
    "tokenizer": f"{HUNYUAN}/tokenizer",
    "text_encoder_2": f"{HUNYUAN}/text_encoder_2",
    "tokenizer_2": f"{HUNYUAN}/tokenizer_2",
    "vae": f"{HUNYUAN}/vae",
    "image_encoder": f"{REDUX}/image_encoder",
    "feature_extractor": f"{REDUX}/feature_extractor",
}


@dataclass(frozen=True)
class Preset:
    name: str
    samplers: tuple[str, ...]  # the first is the one to use
    resolution: int  # default base of the bucket set
    sources: Mapping[str, str] = field(default_factory=dict)  # empty: built in code

    @property
    def sampler(self) -> str:
        return self.samplers[0]


PRESETS: dict[str, Preset] = {
    "framepack": Preset(
        "framepack",
        samplers=("inverted",),
        resolution=640,
        sources={"transformer": "lllyasviel/FramePackI2V_HY", **_SHARED},
    ),
    "f1": Preset(
        "f1",
        samplers=("forward",),
        resolution=640,
        sources={"transformer": "lllyasviel/FramePack_F1_I2V_HY_20250503", **_SHARED},
    ),
    # random weights: either order runs, so tests cover both
    "tiny": Preset("tiny", samplers=("inverted", "forward"), resolution=128),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(
            f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}"
        ) from None


def allowed_samplers(preset: str) -> tuple[str, ...]:
    """The samplers `preset`'s weights were trained for (any for an unknown preset)."""
    from framepack.engine.params import SAMPLERS

    known = PRESETS.get(preset)
    return SAMPLERS if known is None else known.samplers
