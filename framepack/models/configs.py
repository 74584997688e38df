"""The published configurations of the real models, written down in code.

What the checkpoints' ``config.json`` files say, so that the full-size
architecture can be built without downloading anything: on the meta device to
check that the components fit together (tests/test_full_size.py), and with
random weights on a GPU to measure speed and memory (benchmarks/gpu.py).

- transformer: ``lllyasviel/FramePackI2V_HY`` (``HunyuanVideoTransformer3DModelPacked``,
  the same architecture as diffusers' ``HunyuanVideoFramepackTransformer3DModel``);
  ``lllyasviel/FramePack_F1_I2V_HY_20250503`` has the same one;
- text encoders and VAE: ``hunyuanvideo-community/HunyuanVideo`` (``text_encoder``:
  the Llama 3 8B of llava-llama-3-8b; ``text_encoder_2``: CLIP-L; ``vae``);
- image encoder and its processor: ``lllyasviel/flux_redux_bfl`` (SigLIP so400m/14 at 384).
"""

from __future__ import annotations

from copy import deepcopy
from typing import Any

TRANSFORMER: dict[str, Any] = {
    "attention_head_dim": 128, "guidance_embeds": True, "has_clean_x_embedder": True,
    "has_image_proj": True, "image_proj_dim": 1152, "in_channels": 16, "mlp_ratio": 4.0,
    "num_attention_heads": 24, "num_layers": 20, "num_refiner_layers": 2,
    "num_single_layers": 40, "out_channels": 16, "patch_size": 2, "patch_size_t": 1,
    "pooled_projection_dim": 768, "qk_norm": "rms_norm", "rope_axes_dim": (16, 56, 56),
    "rope_theta": 256.0, "text_embed_dim": 4096,
}  # fmt: skip

VAE: dict[str, Any] = {
    "act_fn": "silu", "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("HunyuanVideoDownBlock3D",) * 4, "in_channels": 3,
    "latent_channels": 16, "layers_per_block": 2, "mid_block_add_attention": True,
    "norm_num_groups": 32, "out_channels": 3, "scaling_factor": 0.476986,
    "spatial_compression_ratio": 8, "temporal_compression_ratio": 4,
    "up_block_types": ("HunyuanVideoUpBlock3D",) * 4,
}  # fmt: skip

LLAMA: dict[str, Any] = {
    "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 128000,
    "eos_token_id": 128001, "head_dim": 128, "hidden_act": "silu", "hidden_size": 4096,
    "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 8192,
    "mlp_bias": False, "num_attention_heads": 32, "num_hidden_layers": 32,
    "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": None,
    "rope_theta": 500000.0, "tie_word_embeddings": False, "vocab_size": 128320,
}  # fmt: skip

CLIP_TEXT: dict[str, Any] = {
    "attention_dropout": 0.0, "bos_token_id": 0, "dropout": 0.0, "eos_token_id": 2,
    "hidden_act": "quick_gelu", "hidden_size": 768, "initializer_factor": 1.0,
    "initializer_range": 0.02, "intermediate_size": 3072, "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77, "num_attention_heads": 12, "num_hidden_layers": 12,
    "pad_token_id": 1, "projection_dim": 768, "vocab_size": 49408,
}  # fmt: skip

SIGLIP_VISION: dict[str, Any] = {
    "attention_dropout": 0.0, "hidden_act": "gelu_pytorch_tanh", "hidden_size": 1152,
    "image_size": 384, "intermediate_size": 4304, "layer_norm_eps": 1e-06,
    "num_attention_heads": 16, "num_channels": 3, "num_hidden_layers": 27, "patch_size": 14,
}  # fmt: skip

SIGLIP_PROCESSOR: dict[str, Any] = {
    "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5], "resample": 3, "rescale_factor": 1 / 255,
    "size": {"height": 384, "width": 384},
}  # fmt: skip

_SHARED = {
    "vae": VAE,
    "text_encoder": LLAMA,
    "text_encoder_2": CLIP_TEXT,
    "image_encoder": SIGLIP_VISION,
    "feature_extractor": SIGLIP_PROCESSOR,
}
PUBLISHED: dict[str, dict[str, dict[str, Any]]] = {
    "framepack": {"transformer": TRANSFORMER, **_SHARED},
    "f1": {"transformer": TRANSFORMER, **_SHARED},  # F1 is a fine-tune: the same shapes
}


def published(preset: str, **changes: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A copy of `preset`'s configurations, with `changes` merged into some of them:
    ``published("framepack", text_encoder_2={"hidden_size": 512})``."""
    try:
        configs = deepcopy(PUBLISHED[preset])
    except KeyError:
        raise ValueError(
            f"no published configuration for {preset!r}; choose one of {', '.join(PUBLISHED)}"
        ) from None
    for name, change in changes.items():
        if name not in configs:
            raise ValueError(f"unknown component {name!r}; valid: {', '.join(configs)}")
        configs[name] |= change
    return configs
