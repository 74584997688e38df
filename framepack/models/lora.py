"""LoRA adapters on the FramePack transformer: read in any of the namings users'
files come in, attached once per engine, switched per job.

The files come in three namings (all safetensors):

- HunyuanVideo "original" keys, as diffusion-pipe and ComfyUI write them:
  ``diffusion_model.double_blocks.0.img_attn_qkv.lora_A.weight`` / ``lora_B``
  (an optional ``.alpha``);
- musubi-tuner / kohya keys over the same modules:
  ``lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight`` / ``lora_up`` and
  ``.alpha``;
- musubi-tuner's FramePack-trained LoRAs, kohya keys over diffusers' module names:
  ``lora_unet_transformer_blocks_0_attn_to_q.lora_down.weight``.

Diffusers' own PEFT naming (``transformer.transformer_blocks.0.attn.to_q.lora_A.weight``)
is taken as it is. `convert_lora` turns each into that naming: the fused q/k/v
(``img_attn_qkv``, ``txt_attn_qkv``) and ``linear1`` (q, k, v and the MLP's input)
have their ``lora_B`` split along the output (the ``lora_A`` is shared), the sizes
read from the tensors; ``alpha / rank`` is folded into ``lora_B``, so that a
scale of 1 means what the trainer meant.

`attach_loras` loads each file once, unfused, before the memory mode places the
weights (its hooks then manage the adapters' weights too); `apply_loras` sets the
adapters of one job, and with none the transformer computes exactly its base
weights (PEFT's adapters off)::

    attached = attach_loras(transformer, {"ghibli": Path("ghibli.safetensors")})
    apply_loras(transformer, LoraConfig((("ghibli", 0.8),)), attached)
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

PREFIX = "transformer."

# Original (HunyuanVideo) module names inside a block -> diffusers' names; the fused
# ones -> the diffusers modules their output rows are split into.
_DOUBLE = {
    "img_attn_proj": "attn.to_out.0",
    "txt_attn_proj": "attn.to_add_out",
    "img_mlp.fc1": "ff.net.0.proj",
    "img_mlp.fc2": "ff.net.2",
    "txt_mlp.fc1": "ff_context.net.0.proj",
    "txt_mlp.fc2": "ff_context.net.2",
    "img_mod.linear": "norm1.linear",
    "txt_mod.linear": "norm1_context.linear",
}
_DOUBLE_FUSED = {
    "img_attn_qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "txt_attn_qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
}
_SINGLE = {"linear2": "proj_out", "modulation.linear": "norm.linear"}
_SINGLE_FUSED = {"linear1": ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")}

# diffusers' module names inside a block, for the kohya keys that spell them with "_"
_DIFFUSERS_DOUBLE = (
    "attn.to_q", "attn.to_k", "attn.to_v", "attn.add_q_proj", "attn.add_k_proj",
    "attn.add_v_proj", "attn.to_out.0", "attn.to_add_out", "ff.net.0.proj", "ff.net.2",
    "ff_context.net.0.proj", "ff_context.net.2", "norm1.linear", "norm1_context.linear",
)  # fmt: skip
_DIFFUSERS_SINGLE = ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp", "proj_out", "norm.linear")

_KOHYA = re.compile(r"^lora_unet_(?P<block>[a-z_]+?)_(?P<index>\d+)_(?P<module>.+)$")
_DOTTED = re.compile(r"^(?P<block>[a-z_]+)\.(?P<index>\d+)\.(?P<module>.+)$")


class LoraError(ValueError):
    """A LoRA file that cannot be used; the message says why, in one line."""


class LoraUnavailable(ValueError):
    """A job asks for a LoRA that is not attached (its file failed, or it is unknown here)."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"the LoRA {name!r} {reason}")
        self.name = name
        self.reason = reason


@dataclass(frozen=True)
class LoraConfig:
    """The adapters of one job: (name, scale) pairs, in the order asked; empty: none."""

    adapters: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class LoadedLora:
    """A LoRA attached to a transformer, or why it is not."""

    name: str
    path: Path
    digest: str = ""  # sha256 of the file (part of a job's fingerprint)
    naming: str = ""  # original | kohya | musubi-framepack | diffusers
    modules: int = 0  # transformer modules it changes
    error: str | None = None  # why it could not be attached; the jobs asking for it fail


@dataclass
class _Pair:
    down: torch.Tensor | None = None
    up: torch.Tensor | None = None
    alpha: float | None = None


def naming_of(keys: Sequence[str]) -> str:
    """Which of the namings `keys` follow (`LoraError` for none of them)."""
    if not keys:
        raise LoraError("the file holds no tensors")
    if all(k.startswith("lora_unet_") for k in keys):
        kohya_blocks = {m["block"] for k in keys if (m := _KOHYA.match(k.split(".")[0]))}
        if kohya_blocks and kohya_blocks <= {"transformer_blocks", "single_transformer_blocks"}:
            return "musubi-framepack"
        return "kohya"
    stripped = [_strip(k) for k in keys]
    if any(k.startswith(("double_blocks.", "single_blocks.")) for k in stripped):
        return "original"
    if any(k.startswith(("transformer_blocks.", "single_transformer_blocks.")) for k in stripped):
        return "diffusers"
    raise LoraError(f"its keys follow no LoRA naming I know (the first is {keys[0]!r})")


def _strip(key: str) -> str:
    for prefix in ("diffusion_model.", "transformer.", "model."):
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def _pairs(state_dict: Mapping[str, torch.Tensor], naming: str) -> dict[str, _Pair]:
    """The file's tensors grouped by the module they adapt (named as in the file, dotted)."""
    pairs: dict[str, _Pair] = {}
    for key, tensor in state_dict.items():
        if naming in ("kohya", "musubi-framepack"):
            stem, _, kind = key.partition(".")
            match = _KOHYA.match(stem)
            if match is None:
                raise LoraError(f"key {key!r} names no block of the transformer")
            module = f"{match['block']}.{match['index']}.{match['module']}"
        else:
            for kind in ("lora_A.weight", "lora_B.weight", "lora_down.weight", "lora_up.weight"):
                if key.endswith("." + kind):
                    break
            else:
                kind = "alpha" if key.endswith(".alpha") else key.rpartition(".")[2]
            module = _strip(key).removesuffix("." + kind)
        pair = pairs.setdefault(module, _Pair())
        if kind in ("lora_A.weight", "lora_down.weight"):
            pair.down = tensor
        elif kind in ("lora_B.weight", "lora_up.weight"):
            pair.up = tensor
        elif kind == "alpha":
            if tensor.numel() != 1:
                raise LoraError(f"{key} holds {tensor.numel()} numbers, not one alpha")
            pair.alpha = float(tensor.float().reshape(-1)[0])
        else:
            raise LoraError(f"key {key!r} is no LoRA weight (lora_A/B, lora_down/up or alpha)")
    for module, pair in pairs.items():
        if pair.down is None or pair.up is None:
            raise LoraError(
                f"{module}: has no {'down (A)' if pair.down is None else 'up (B)'} matrix"
            )
        if (
            pair.down.ndim != 2
            or pair.up.ndim != 2
            or pair.down.shape[0] == 0  # rank 0: alpha / rank would divide by it
            or pair.up.shape[1] != pair.down.shape[0]
        ):
            raise LoraError(
                f"{module}: its matrices do not fit together "
                f"({tuple(pair.up.shape)} after {tuple(pair.down.shape)})"
            )
    return pairs


def _targets(module: str, naming: str, pair: _Pair) -> list[tuple[str, slice]]:
    """The diffusers modules (with the rows of lora_B each takes) one file module adapts."""
    match = _DOTTED.match(module)
    if match is None:
        raise LoraError(f"{module}: names no block of the transformer")
    block, index, inner = match["block"], match["index"], match["module"]
    out = pair.up.shape[0]
    if naming in ("diffusers", "musubi-framepack"):
        known = {
            "transformer_blocks": _DIFFUSERS_DOUBLE,
            "single_transformer_blocks": _DIFFUSERS_SINGLE,
        }.get(block, ())
        names = {name.replace(".", "_"): name for name in known}
        name = inner if inner in known else names.get(inner)
        if name is None:
            raise LoraError(f"{module}: no such module in a FramePack {block} block")
        return [(f"{block}.{index}.{name}", slice(0, out))]
    if naming == "kohya":  # the original's module names, dots written as "_"
        inner = {n.replace(".", "_"): n for n in (*_DOUBLE, *_SINGLE)}.get(inner, inner)
    if block == "double_blocks":
        plain, fused, new_block = _DOUBLE, _DOUBLE_FUSED, "transformer_blocks"
    elif block == "single_blocks":
        plain, fused, new_block = _SINGLE, _SINGLE_FUSED, "single_transformer_blocks"
    else:
        raise LoraError(f"{module}: names no block of the transformer")
    prefix = f"{new_block}.{index}."
    if inner in plain:
        return [(prefix + plain[inner], slice(0, out))]
    if inner not in fused:
        raise LoraError(f"{module}: no such module in a HunyuanVideo {block} block")
    hidden = pair.down.shape[1]  # the fused layers' input is the hidden state
    parts = fused[inner]
    sizes = [hidden] * len(parts) if len(parts) == 3 else [hidden] * 3 + [out - 3 * hidden]
    if sum(sizes) != out or min(sizes) <= 0:
        raise LoraError(
            f"{module}: {out} output rows cannot be split into {', '.join(parts)} "
            f"of a hidden size {hidden}"
        )
    targets, start = [], 0
    for part, size in zip(parts, sizes, strict=True):
        targets.append((prefix + part, slice(start, start + size)))
        start += size
    return targets


def convert_lora(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """`state_dict` in diffusers' PEFT naming (``transformer.`` prefixed) with alpha/rank
    folded into lora_B, and the naming it came in. `LoraError` says what does not fit."""
    naming = naming_of(list(state_dict))
    converted: dict[str, torch.Tensor] = {}
    for module, pair in _pairs(state_dict, naming).items():
        assert pair.down is not None and pair.up is not None
        rank = pair.down.shape[0]
        scale = 1.0 if pair.alpha is None else pair.alpha / rank
        up = pair.up.float() * scale
        for target, rows in _targets(module, naming, pair):
            converted[f"{PREFIX}{target}.lora_A.weight"] = pair.down.float().contiguous()
            converted[f"{PREFIX}{target}.lora_B.weight"] = up[rows].contiguous()
    return converted, naming


def read_lora_file(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file (`LoraError` when it is missing or not one)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise LoraError(f"no such file {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise LoraError(f"{path.name} is not a readable safetensors file ({exc})") from None


def check_against(converted: Mapping[str, torch.Tensor], transformer: torch.nn.Module) -> None:
    """`LoraError` unless every module the LoRA adapts is a linear layer of `transformer`
    with the LoRA's sizes."""
    modules = dict(transformer.named_modules())
    for key, tensor in converted.items():
        name, _, kind = key.removeprefix(PREFIX).rpartition(".lora_")
        layer = modules.get(name)
        layer = getattr(layer, "base_layer", layer)  # a module another LoRA adapts already
        if not isinstance(layer, torch.nn.Linear):
            raise LoraError(f"it adapts {name}, which this model does not have")
        if kind == "A.weight" and tensor.shape[1] != layer.in_features:
            raise LoraError(
                f"it was made for another model size: {name} takes {layer.in_features} "
                f"inputs here, {tensor.shape[1]} in the LoRA"
            )
        if kind == "B.weight" and tensor.shape[0] != layer.out_features:
            raise LoraError(
                f"it was made for another model size: {name} gives {layer.out_features} "
                f"outputs here, {tensor.shape[0]} in the LoRA"
            )


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def attach_lora(transformer: torch.nn.Module, name: str, path: Path | LoraError) -> LoadedLora:
    """Read, convert, check and attach one LoRA file as the adapter `name` (unfused);
    a file that cannot be used (or `path`, the error of fetching it) comes back with its
    `error` set, nothing attached."""
    if isinstance(path, LoraError):
        log.warning("LoRA %s cannot be used: %s", name, path)
        return LoadedLora(name, Path(), error=str(path))
    try:
        converted, naming = convert_lora(read_lora_file(path))
        check_against(converted, transformer)
        dtype = next(transformer.parameters()).dtype
        converted = {k: v.to(dtype) for k, v in converted.items()}
        _load_adapter(transformer, converted, name)
    except LoraError as exc:
        log.warning("LoRA %s (%s) cannot be used: %s", name, path, exc)
        return LoadedLora(name, path, error=str(exc))
    modules = len(converted) // 2
    log.info("LoRA %s: %s naming, %d modules, from %s", name, naming, modules, path)
    return LoadedLora(name, path, file_digest(path), naming, modules)


def _load_adapter(
    transformer: torch.nn.Module, converted: dict[str, torch.Tensor], name: str
) -> None:
    """diffusers' `load_lora_adapter`, its failures (a half-attached adapter taken off
    again) as a `LoraError`."""
    try:
        with warnings.catch_warnings():  # PEFT warns of a second adapter: we mean several
            warnings.filterwarnings("ignore", "Already found a `peft_config`")
            transformer.load_lora_adapter(converted, prefix="transformer", adapter_name=name)
    except Exception as exc:  # whatever PEFT meets in a file: that LoRA's jobs fail, not all
        with contextlib.suppress(Exception):
            transformer.delete_adapters(name)
        raise LoraError(f"diffusers could not attach it: {exc}") from None


def attach_loras(
    transformer: torch.nn.Module, files: Mapping[str, Path | LoraError]
) -> dict[str, LoadedLora]:
    """Attach every LoRA of `files` (name -> file, or why it could not be fetched) once;
    call it before the memory mode places the weights. The adapters start switched off."""
    attached = {name: attach_lora(transformer, name, path) for name, path in files.items()}
    if any(lora.error is None for lora in attached.values()):
        transformer.disable_lora()
    return attached


def apply_loras(
    transformer: torch.nn.Module, config: LoraConfig, attached: Mapping[str, LoadedLora]
) -> None:
    """Switch the adapters of one job on at their scales, the others off; with none the
    transformer computes its base weights only. `LoraUnavailable` for one not attached."""
    for name, _ in config.adapters:
        lora = attached.get(name)
        if lora is None:
            raise LoraUnavailable(name, "is not in this worker's catalogue")
        if lora.error is not None:
            raise LoraUnavailable(name, f"could not be loaded: {lora.error}")
    if not any(lora.error is None for lora in attached.values()):
        return  # no adapter on the model: nothing to switch
    if not config.adapters:
        transformer.disable_lora()
        return
    transformer.enable_lora()
    transformer.set_adapters(
        [name for name, _ in config.adapters], [scale for _, scale in config.adapters]
    )
