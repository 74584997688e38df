"""The transformer's output layer in float32, as FramePack's demo runs it.

The demo sets ``high_quality_fp32_output_for_inference``: the last linear layer
(``proj_out``, 3072 -> 64) runs in float32 on the bf16 output of ``norm_out``, so
the velocity is not rounded to bf16 (a bf16 velocity is off by up to 1/256 of
itself at every step). Its float32 weights are the loaded bf16 weights, upcast;
the rest of the model stays in its dtype.

Apply it once, before the memory mode places the weights (group offloading keeps
copies of them):

    apply_fp32_output(components.transformer)
"""

from __future__ import annotations

import torch

_APPLIED = "_framepack_fp32_output"


def _to_float32(_module: torch.nn.Module, args: tuple) -> tuple:
    return (args[0].to(torch.float32), *args[1:])


def apply_fp32_output(transformer: torch.nn.Module) -> None:
    """Make `transformer.proj_out` compute in float32; a second call changes nothing."""
    if getattr(transformer, _APPLIED, False):
        return
    projection = transformer.proj_out
    projection.to(torch.float32)
    projection.register_forward_pre_hook(_to_float32)
    setattr(transformer, _APPLIED, True)
