"""LoRA files written in code, in each naming users' files come in, and the same LoRA
merged into a transformer's weights by hand (W + s * alpha / r * B @ A), to compare with.

One random LoRA is drawn over HunyuanVideo's original modules (fused q/k/v and
``linear1`` included); `write_lora` writes it in the naming asked, so the three files
hold the same adapter and must render the same frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

NAMINGS = ("original", "kohya", "musubi-framepack")

# original module -> (diffusers modules its output rows split into, in order)
_MODULES = {
    "double_blocks.0.img_attn_qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "double_blocks.0.txt_attn_qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
    "double_blocks.0.img_attn_proj": ("attn.to_out.0",),
    "double_blocks.0.img_mlp.fc1": ("ff.net.0.proj",),
    "double_blocks.0.txt_mlp.fc2": ("ff_context.net.2",),
    "single_blocks.0.linear1": ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"),
    "single_blocks.0.linear2": ("proj_out",),
}
_BLOCKS = {"double_blocks": "transformer_blocks", "single_blocks": "single_transformer_blocks"}


@dataclass(frozen=True)
class Factor:
    """One adapted diffusers module: lora_B (out, r) @ lora_A (r, in), times alpha / r."""

    module: str  # diffusers name, e.g. transformer_blocks.0.attn.to_q
    down: torch.Tensor
    up: torch.Tensor
    alpha: float

    def delta(self) -> torch.Tensor:
        return self.alpha / self.down.shape[0] * self.up @ self.down


@dataclass(frozen=True)
class RandomLora:
    """A LoRA over the original modules: (original module, down, up), one alpha."""

    parts: tuple[tuple[str, torch.Tensor, torch.Tensor], ...]
    alpha: float

    def factors(self, transformer: torch.nn.Module) -> list[Factor]:
        """The adapter per diffusers module (a fused module's up split by output rows)."""
        modules = dict(transformer.named_modules())
        out = []
        for original, down, up in self.parts:
            block, index, _ = original.split(".", 2)
            start = 0
            for target in _MODULES[original]:
                name = f"{_BLOCKS[block]}.{index}.{target}"
                rows = modules[name].out_features
                out.append(Factor(name, down, up[start : start + rows], self.alpha))
                start += rows
        return out


def random_lora(transformer: torch.nn.Module, *, rank: int = 4, alpha: float = 2.0, seed: int = 0):
    """A random LoRA of `rank` for `transformer`'s sizes (read from its modules)."""
    generator = torch.Generator().manual_seed(seed)
    modules = dict(transformer.named_modules())
    parts = []
    for original, targets in _MODULES.items():
        block, index, _ = original.split(".", 2)
        layers = [modules[f"{_BLOCKS[block]}.{index}.{t}"] for t in targets]
        rows = sum(layer.out_features for layer in layers)
        down = torch.randn(rank, layers[0].in_features, generator=generator) * 0.3
        up = torch.randn(rows, rank, generator=generator) * 0.3
        parts.append((original, down, up))
    return RandomLora(tuple(parts), alpha)


def lora_tensors(lora: RandomLora, naming: str, transformer: torch.nn.Module) -> dict:
    """The tensors of a file of `lora` in `naming`."""
    tensors: dict[str, torch.Tensor] = {}
    alpha = torch.tensor(lora.alpha)
    if naming == "original":
        for module, down, up in lora.parts:
            tensors[f"diffusion_model.{module}.lora_A.weight"] = down
            tensors[f"diffusion_model.{module}.lora_B.weight"] = up
            tensors[f"diffusion_model.{module}.alpha"] = alpha
    elif naming == "kohya":
        for module, down, up in lora.parts:
            stem = "lora_unet_" + module.replace(".", "_")
            tensors[f"{stem}.lora_down.weight"] = down
            tensors[f"{stem}.lora_up.weight"] = up
            tensors[f"{stem}.alpha"] = alpha
    elif naming == "musubi-framepack":  # diffusers' module names, each with its own matrices
        for factor in lora.factors(transformer):
            stem = "lora_unet_" + factor.module.replace(".", "_")
            tensors[f"{stem}.lora_down.weight"] = factor.down.clone()
            tensors[f"{stem}.lora_up.weight"] = factor.up.clone()
            tensors[f"{stem}.alpha"] = alpha
    else:
        raise ValueError(naming)
    return tensors


def write_lora(path: Path, lora: RandomLora, naming: str, transformer: torch.nn.Module) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        k: v.clone().contiguous() for k, v in lora_tensors(lora, naming, transformer).items()
    }
    save_file(tensors, str(path))
    return path


@torch.no_grad()
def merge_by_hand(transformer: torch.nn.Module, loras: list[tuple[RandomLora, float]]) -> None:
    """W += s * alpha / r * B @ A for every adapted module of each (lora, scale)."""
    modules = dict(transformer.named_modules())
    for lora, scale in loras:
        for factor in lora.factors(transformer):
            weight = modules[factor.module].weight
            weight += (scale * factor.delta()).to(weight.dtype)
