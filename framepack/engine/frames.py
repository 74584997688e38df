"""Decoded frames so far, with each new section blended over its neighbour as the
original FramePack (and the diffusers pipeline) do.

A new section's decode overlaps the frames next to it by one window; the overlap
is cross-faded linearly. Only the frames that a later section will still blend
into stay as floats on the device; the rest are final and kept as 8-bit RGB on
the CPU, so a 60 s video does not hold gigabytes of floats on the GPU.
"""

from __future__ import annotations

import numpy as np
import torch


def to_uint8(pixels: torch.Tensor) -> np.ndarray:
    """VAE output (B, 3, T, H, W) in [-1, 1] -> (T, H, W, 3) uint8 of the first batch item.

    Truncated, not rounded, as the demo's `save_bcthw_as_mp4` converts: x * 127.5 + 127.5
    cast to uint8 (the diffusers pipeline rounds, up to one level brighter).
    """
    video = pixels[0].float().clamp(-1, 1) * 127.5 + 127.5
    return video.to(torch.uint8).permute(1, 2, 3, 0).cpu().numpy()


def soft_append(history: torch.Tensor, current: torch.Tensor, overlap: int) -> torch.Tensor:
    """`history` then `current` along time, cross-fading `overlap` frames (the pipeline's
    `_soft_append`, op for op, so that the floats match)."""
    # The weights are made on the CPU, as the demo makes them, then moved.
    weights = torch.linspace(1, 0, overlap, dtype=history.dtype).to(history.device)
    weights = weights.view(1, 1, -1, 1, 1)
    blended = weights * history[:, :, -overlap:] + (1 - weights) * current[:, :, :overlap]
    return torch.cat([history[:, :, :-overlap], blended, current[:, :, overlap:]], dim=2).to(
        history
    )


class FrameHistory:
    """The video's frames so far, growing at its start (`prepends`) or at its end."""

    def __init__(self, overlap: int, *, prepends: bool) -> None:
        self.overlap = overlap
        self.prepends = prepends
        self._open: torch.Tensor | None = None  # frames a later section still blends into
        self._final: list[np.ndarray] = []  # settled frames, in video order

    def add(self, pixels: torch.Tensor) -> None:
        """Take in one section's decoded frames, (B, 3, T, H, W) in [-1, 1]."""
        if self._open is None:
            video = pixels
        elif self.prepends:
            video = soft_append(pixels, self._open, self.overlap)
        else:
            video = soft_append(self._open, pixels, self.overlap)
        keep = min(self.overlap, video.shape[2])
        if self.prepends:
            self._open, settled = video[:, :, :keep], video[:, :, keep:]
            if settled.shape[2]:
                self._final.insert(0, to_uint8(settled))
        else:
            settled, self._open = video[:, :, : video.shape[2] - keep], video[:, :, -keep:]
            if settled.shape[2]:
                self._final.append(to_uint8(settled))

    @property
    def unsettled(self) -> int:
        """How many frames a later section may still blend into (kept as floats)."""
        return 0 if self._open is None else self._open.shape[2]

    def __len__(self) -> int:
        open_frames = 0 if self._open is None else self._open.shape[2]
        return open_frames + sum(chunk.shape[0] for chunk in self._final)

    def frames(self) -> np.ndarray:
        """Every frame so far, (T, H, W, 3) uint8."""
        if self._open is None:
            raise ValueError("no frames yet")
        chunks = (
            [to_uint8(self._open), *self._final]
            if self.prepends
            else [*self._final, to_uint8(self._open)]
        )
        return np.concatenate(chunks, axis=0)
