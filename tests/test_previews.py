"""Step previews: latents to RGB by FramePack's fixed projection, written as small PNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from framepack.engine.previews import LATENT_RGB_BIAS, LATENT_RGB_FACTORS, latents_to_rgb, save_png


def reference_projection(latents: torch.Tensor) -> torch.Tensor:
    """FramePack's `vae_decode_fake`: a 1x1x1 conv3d with the 16x3 factors, clamped to 0..1."""
    weight = torch.tensor(LATENT_RGB_FACTORS).T[:, :, None, None, None]
    images = torch.nn.functional.conv3d(latents, weight, bias=torch.tensor(LATENT_RGB_BIAS))
    return images.clamp(0.0, 1.0)


def test_preview_is_the_last_latent_frame_twice_as_big() -> None:
    latents = torch.randn(1, 16, 9, 30, 52)
    rgb = latents_to_rgb(latents)
    assert rgb.shape == (60, 104, 3) and rgb.dtype == np.uint8


def test_preview_equals_framepacks_projection() -> None:
    latents = torch.randn(2, 16, 3, 6, 8, generator=torch.Generator().manual_seed(0)) * 3
    expected = (reference_projection(latents) * 255).to(torch.uint8)[0, :, -1].permute(1, 2, 0)
    assert np.array_equal(latents_to_rgb(latents, scale=1), expected.numpy())
    first = (reference_projection(latents) * 255).to(torch.uint8)[0, :, 0].permute(1, 2, 0)
    assert np.array_equal(latents_to_rgb(latents, frame=0, scale=1), first.numpy())


@pytest.mark.parametrize(
    ("channel", "value", "colour"),
    [
        (None, 0.0, (6, 0, 0)),  # zero latents: just the bias, 0.0259*255
        (10, 1.0, (36, 36, 5)),  # channel 10 alone: a dark grey-yellow
        (10, 5.0, (155, 202, 103)),
        (12, -4.0, (242, 190, 118)),  # channel 12's negative pole: a warm light tone
    ],
)
def test_known_latents_give_known_colours(
    channel: int | None, value: float, colour: tuple[int, int, int]
) -> None:
    latents = torch.zeros(1, 16, 2, 4, 4)
    if channel is not None:
        latents[:, channel] = value
    rgb = latents_to_rgb(latents)
    assert rgb.shape == (8, 8, 3)
    assert (rgb == colour).all()


def test_bf16_latents_on_any_device_give_a_picture() -> None:
    latents = torch.randn(1, 16, 2, 4, 6, dtype=torch.bfloat16)
    assert latents_to_rgb(latents).shape == (8, 12, 3)


def test_latents_of_the_wrong_shape_are_refused() -> None:
    with pytest.raises(ValueError, match="16"):
        latents_to_rgb(torch.zeros(1, 4, 2, 4, 4))
    with pytest.raises(ValueError):
        latents_to_rgb(torch.zeros(16, 2, 4, 4))


def test_png_reads_back_and_is_small(tmp_path: Path) -> None:
    rgb = latents_to_rgb(torch.randn(1, 16, 9, 60, 104))  # the 640 bucket 480x832
    path = save_png(rgb, tmp_path / "previews" / "step.png")
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert np.array_equal(np.asarray(image.convert("RGB")), rgb)
    assert path.stat().st_size < 100_000
    assert [p.name for p in path.parent.iterdir()] == ["step.png"]
