"""Frames as lossless PNG files: for editing, and to check exactness without the codec."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def frame_name(index: int) -> str:
    return f"frame_{index:05d}.png"


def write_png_frames(frames: np.ndarray, folder: Path) -> list[Path]:
    """Write `frames` (T, H, W, 3) uint8 as folder/frame_00000.png, ...; their paths.

    PNG is lossless: reading a file back gives the engine's pixels exactly.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, frame in enumerate(frames):
        path = folder / frame_name(index)
        Image.fromarray(np.ascontiguousarray(frame), "RGB").save(path, format="PNG")
        paths.append(path)
    return paths
