"""Where the models live while a job runs: one memory mode, chosen once per engine.

- ``high``: every model on the GPU. Fastest; needs the free VRAM of all weights
  plus an untiled VAE decode (about 60 GB for the real model, as the original's
  high-VRAM threshold).
- ``offload``: the transformer and the VAE stay on the GPU; the text and image
  encoders wait on the CPU and come over for the prompt and image of each job,
  the transformer stepping out meanwhile (accelerate's CPU-offload hooks, once
  per job, never per section). VAE tiling on.
- ``low``: diffusers group offloading with CUDA streams (the next layers are
  copied while the current ones compute) for the transformer and the Llama,
  CLIP and SigLIP encoders; the small VAE stays on the GPU and decodes in tiles.
  FramePack's 6 GB promise. The host holds one copy of the weights (the
  transformer's page-locked), about 43 GB for the real model.
- ``auto``: the fastest mode that fits the free VRAM when the engine starts.

On a CPU there is nowhere to offload to: every mode runs as ``high``.

Step caches (`framepack.engine.caches`) work in every mode: their hooks sit on
the transformer's blocks, above ``low``'s leaf-level groups, so a skipped step
runs none of the stack's layers and onloads none of their weights. ``low``'s
streams prefetch in the order recorded on the transformer's first pass, which is
a section's first step: it always computes the whole stack, and TeaCache then
takes its indicator from the first block's own norm1 (no extra call), so the
recorded order is an uncached pass's whatever the first job's cache. On a skipped
step the one layer prefetched ahead of the stack waits for the next computed
step, and the output layers after it onload synchronously (diffusers' fallback
for a group its predecessor did not prefetch): a few small layers, not the stack.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from framepack.models.components import Components

log = logging.getLogger(__name__)

MEMORY_MODES: tuple[str, ...] = ("auto", "high", "offload", "low")

# Working memory beyond the weights, as a share of the transformer's weights. For the
# real 13B transformer (26 GB in bf16) at the 640 bucket: about 17 GB in `high`
# (activations and an untiled decode of 73 frames: the original's 60 GB threshold for
# 43 GB of weights) and about 8 GB in `offload` (activations, tiled decode).
HIGH_WORKING_SHARE = 0.65
OFFLOAD_WORKING_SHARE = 0.3


def resolve_device(spec: torch.device | str) -> torch.device:
    """``auto`` is the first CUDA GPU when there is one, else the CPU."""
    if isinstance(spec, torch.device):
        return spec
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ValueError(f"device {spec!r}: choose auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {spec!r}: no CUDA GPU is visible to PyTorch")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {spec!r}: choose auto, cpu, cuda or cuda:N")
    return device


@dataclass(frozen=True)
class WeightBytes:
    """Bytes of weights of each model, as loaded (dtype included)."""

    by_model: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.by_model.values())

    def of(self, name: str) -> int:
        return self.by_model.get(name, 0)

    @classmethod
    def of_components(cls, components: Components) -> WeightBytes:
        return cls(
            {
                name: sum(p.numel() * p.element_size() for p in model.parameters())
                for name, model in components.models().items()
            }
        )


def choose_memory_mode(
    requested: str, *, device: torch.device, free_bytes: int | None, weights: WeightBytes
) -> str:
    """The mode to run: `requested`, or for ``auto`` the fastest that fits `free_bytes`."""
    if requested not in MEMORY_MODES:
        raise ValueError(f"memory mode must be one of {', '.join(MEMORY_MODES)}, not {requested!r}")
    if device.type != "cuda":
        return "high"
    if requested != "auto":
        return requested
    if free_bytes is None:
        raise ValueError("auto memory mode needs the free VRAM of the device")
    transformer = weights.of("transformer")
    if free_bytes >= weights.total + HIGH_WORKING_SHARE * transformer:
        return "high"
    resident = transformer + weights.of("vae")
    if (
        free_bytes
        >= max(resident, weights.of("text_encoder")) + OFFLOAD_WORKING_SHARE * transformer
    ):
        return "offload"
    return "low"


def free_vram(device: torch.device) -> int | None:
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return free


def pin_in_place(model: torch.nn.Module) -> None:
    """Page-lock `model`'s CPU weights one tensor at a time (RAM grows by one tensor at most).

    `Tensor.pin_memory()` returns a pinned tensor itself, so offloading code that pins
    what it is given keeps these and copies nothing.
    """
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        if tensor.device.type == "cpu" and not tensor.is_pinned():
            tensor.data = tensor.data.pin_memory()


def apply_memory_mode(components: Components, mode: str, device: torch.device) -> None:
    """Place the models for `mode`; called once, when the engine is built."""
    if mode == "high" or device.type != "cuda":
        for model in components.models().values():
            model.to(device)
        return
    if mode == "offload":
        from accelerate import cpu_offload_with_hook

        components.vae.to(device)
        components.vae.enable_tiling()
        # A ring in order of use: each model's hook sends the previous one back to the
        # CPU, so the transformer makes room for the Llama encoder once per job, and the
        # image encoder for the transformer; nothing moves between sections.
        hooks = []
        for name in ("transformer", "text_encoder", "text_encoder_2", "image_encoder"):
            previous = hooks[-1] if hooks else None
            _, hook = cpu_offload_with_hook(
                getattr(components, name), device, prev_module_hook=previous
            )
            hooks.append(hook)
        hooks[0].hook.prev_module_hook = hooks[-1]
        return
    if mode == "low":
        from diffusers.hooks import apply_group_offloading

        components.vae.to(device)
        components.vae.enable_tiling()
        for name in ("transformer", "text_encoder", "text_encoder_2", "image_encoder"):
            model = getattr(components, name)
            # The transformer streams every step: its weights are page-locked (fast
            # copies), in place, so that group offloading keeps these pinned tensors
            # instead of pinned copies of them (one copy in RAM, not two). Pinning 16 GB
            # of Llama for one prompt per job is not worth the RAM: pinned on the fly.
            pinned = name == "transformer"
            if pinned:
                pin_in_place(model)
            apply_group_offloading(
                model,
                onload_device=device,
                offload_device=torch.device("cpu"),
                offload_type="leaf_level",
                use_stream=True,
                low_cpu_mem_usage=not pinned,
            )
        return
    raise ValueError(f"unknown memory mode {mode!r}")
