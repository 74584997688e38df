"""Running the engine on the meta device: shapes only, no memory, no arithmetic.

Meta tensors have shapes and dtypes but no values, so the few places that read a
value (the Llama mask's "is everything valid?" check, the transformer's crop of
the text to its valid length) cannot get one. `MetaScalars` answers them with a
stand-in that keeps every shape the largest it can be: True for a check, a very
large number for a length (a slice up to it keeps the whole tensor).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

LARGE = 1 << 40


class MetaScalars(TorchDispatchMode):
    """Within it, reading a scalar out of a meta tensor gives a stand-in, not an error."""

    def __init__(self) -> None:
        super().__init__()
        self.answered: list[torch.dtype] = []

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple = (), kwargs: Any = None
    ) -> Any:
        if func is torch.ops.aten._local_scalar_dense.default and args[0].is_meta:
            dtype = args[0].dtype
            self.answered.append(dtype)
            if dtype == torch.bool:
                return True
            return 1.0 if dtype.is_floating_point else LARGE
        return func(*args, **(kwargs or {}))
