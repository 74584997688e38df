"""Frames blended section by section as the pipeline blends them, while only the
frames a later section still touches stay as floats."""

from __future__ import annotations

import pytest
import torch
from diffusers import HunyuanVideoFramepackPipeline

from framepack.engine.frames import FrameHistory, to_uint8

OVERLAP = 33  # (latent window 9 - 1) * 4 + 1


def decoded_sections(first: int, later: int, count: int) -> list[torch.Tensor]:
    """Random stand-ins for VAE output: the first section, then `count - 1` more."""
    g = torch.Generator().manual_seed(count)
    sizes = [first] + [later] * (count - 1)
    return [torch.rand(1, 3, n, 8, 6, generator=g) * 2 - 1 for n in sizes]


@pytest.mark.parametrize("prepends", [True, False])
@pytest.mark.parametrize("count", [1, 2, 5])
def test_frames_equal_the_pipelines_soft_append(prepends: bool, count: int) -> None:
    sections = decoded_sections(33 if prepends else 37, 69, count)
    history = FrameHistory(OVERLAP, prepends=prepends)
    reference = None
    for pixels in sections:
        history.add(pixels)
        if reference is None:
            reference = pixels
        elif prepends:  # the pipeline's inverted order: new frames in front
            reference = HunyuanVideoFramepackPipeline._soft_append(None, pixels, reference, OVERLAP)
        else:
            reference = HunyuanVideoFramepackPipeline._soft_append(None, reference, pixels, OVERLAP)
        assert len(history) == reference.shape[2]
        assert (history.frames() == to_uint8(reference)).all()
    # only the frames the next section blends into are kept as floats
    assert history.unsettled == OVERLAP


def test_frames_before_the_first_section_are_an_error() -> None:
    with pytest.raises(ValueError, match="no frames yet"):
        FrameHistory(OVERLAP, prepends=True).frames()
