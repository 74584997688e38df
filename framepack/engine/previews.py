"""Step previews: the current latents as a small RGB picture, without the VAE.

Decoding with the VAE costs seconds per step at full size; a fixed linear map
from HunyuanVideo's 16 latent channels to RGB (the factors the original
FramePack's `vae_decode_fake` uses, which it took from ComfyUI) costs nothing
and shows the composition and colours well enough to watch a job render.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from framepack.video.ffmpeg import atomic_path

# (16 latent channels) x (R, G, B)
LATENT_RGB_FACTORS: tuple[tuple[float, float, float], ...] = (
    (-0.0395, -0.0331, 0.0445),
    (0.0696, 0.0795, 0.0518),
    (0.0135, -0.0945, -0.0282),
    (0.0108, -0.0250, -0.0765),
    (-0.0209, 0.0032, 0.0224),
    (-0.0804, -0.0254, -0.0639),
    (-0.0991, 0.0271, -0.0669),
    (-0.0646, -0.0422, -0.0400),
    (-0.0696, -0.0595, -0.0894),
    (-0.0799, -0.0208, -0.0375),
    (0.1166, 0.1627, 0.0962),
    (0.1165, 0.0432, 0.0407),
    (-0.2315, -0.1920, -0.1355),
    (-0.0270, 0.0401, -0.0821),
    (-0.0616, -0.0997, -0.0727),
    (0.0249, -0.0469, -0.1703),
)
LATENT_RGB_BIAS: tuple[float, float, float] = (0.0259, -0.0192, -0.0761)


def latents_to_rgb(latents: torch.Tensor, *, frame: int = -1, scale: int = 2) -> np.ndarray:
    """One latent frame of `latents` (B, 16, T, h, w) as an (h*scale, w*scale, 3) uint8 picture.

    The first batch item's frame `frame` (the last by default), enlarged by
    repeating pixels so an 8x-downsampled latent is big enough to look at.
    """
    if latents.ndim != 5 or latents.shape[1] != len(LATENT_RGB_FACTORS):
        raise ValueError(f"latents must be (B, 16, T, h, w), got {tuple(latents.shape)}")
    with torch.no_grad():
        x = latents[0, :, frame].float()  # (16, h, w); float: bf16 would band the colours
        weight = torch.tensor(LATENT_RGB_FACTORS, device=x.device)
        bias = torch.tensor(LATENT_RGB_BIAS, device=x.device)
        rgb = torch.einsum("chw,cr->hwr", x, weight) + bias
        # Truncated, not rounded, to 0..255, as the original's preview is.
        pixels = (rgb.clamp(0.0, 1.0) * 255.0).to(torch.uint8).cpu().numpy()
    if scale > 1:
        pixels = pixels.repeat(scale, axis=0).repeat(scale, axis=1)
    return pixels


def save_png(rgb: np.ndarray, path: Path) -> Path:
    """Write an (H, W, 3) uint8 picture as an optimised PNG at `path`, atomically; return `path`."""
    path = Path(path)
    image = Image.fromarray(np.ascontiguousarray(rgb), "RGB")
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", optimize=True)
    return path
