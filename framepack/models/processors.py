"""SigLIP's image processor, on the same code path as FramePack's demo.

The demo (transformers 4.46) preprocesses with the PIL/NumPy `SiglipImageProcessor`:
PIL resize, then rescale and normalize. From transformers 5 that class name is the
torchvision backend, which resizes tensors with another filter; the PIL path is
`SiglipImageProcessorPil`. This picks the PIL one on either release.
"""

from __future__ import annotations

from typing import Any


def siglip_processor_class() -> type:
    """SigLIP's PIL-backed processor: the same pixels with or without torchvision installed."""
    try:
        from transformers import SiglipImageProcessorPil  # transformers >= 5

        return SiglipImageProcessorPil
    except ImportError:  # transformers 4: this name is the PIL one
        from transformers import SiglipImageProcessor

        return SiglipImageProcessor


def load_siglip_processor(location: str, subfolder: str | None, **kwargs: Any) -> Any:
    """The processor of a checkpoint (its preprocessor_config.json), on the PIL path."""
    return siglip_processor_class().from_pretrained(location, subfolder=subfolder or "", **kwargs)
