"""Resolution buckets equal the original FramePack's; the crop keeps the centre."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from framepack.engine.buckets import (
    BUCKETS_640,
    buckets,
    find_nearest_bucket,
    resize_and_center_crop,
)

# (input height, width) -> bucket at 640 and at 128. The 640 column is what
# lllyasviel/FramePack's diffusers_helper/bucket_tools.find_nearest_bucket
# returns; the 128 column is that bucket scaled by 128/640 with each side
# rounded to a multiple of 16, as the forks that add other bases do. Both were
# produced by running those functions (kept out of this repository).
ORIGINAL = [
    ((480, 832), (480, 832), (96, 160)),
    ((832, 480), (832, 480), (160, 96)),
    ((512, 512), (640, 608), (128, 128)),
    ((720, 1280), (480, 832), (96, 160)),
    ((1280, 720), (832, 480), (160, 96)),
    ((1080, 1920), (480, 832), (96, 160)),
    ((1920, 1080), (832, 480), (160, 96)),
    ((1024, 768), (704, 544), (144, 112)),
    ((768, 1024), (544, 704), (112, 144)),
    ((600, 800), (544, 704), (112, 144)),
    ((800, 600), (704, 544), (144, 112)),
    ((1000, 1000), (640, 608), (128, 128)),
    ((300, 1200), (416, 960), (80, 192)),
    ((1200, 300), (960, 416), (192, 80)),
    ((4000, 3000), (704, 544), (144, 112)),
    ((3000, 4000), (544, 704), (112, 144)),
    ((64, 64), (640, 608), (128, 128)),
    ((1, 1000), (416, 960), (80, 192)),
    ((1000, 1), (960, 416), (192, 80)),
    ((333, 517), (512, 768), (96, 160)),
    ((2160, 3840), (480, 832), (96, 160)),
    ((1440, 1080), (704, 544), (144, 112)),
    ((900, 1600), (480, 832), (96, 160)),
    ((256, 256), (640, 608), (128, 128)),
]


@pytest.mark.parametrize(("size", "at_640", "at_128"), ORIGINAL)
def test_buckets_equal_the_original(
    size: tuple[int, int], at_640: tuple[int, int], at_128: tuple[int, int]
) -> None:
    assert find_nearest_bucket(*size) == at_640
    assert find_nearest_bucket(*size, resolution=640) == at_640
    assert find_nearest_bucket(*size, resolution=128) == at_128


def original_rule(h: int, w: int) -> tuple[int, int]:
    """The original's rule, stated plainly: least |h*bw - w*bh|, the later bucket on a tie."""
    metrics = [abs(h * bw - w * bh) for bh, bw in BUCKETS_640]
    last_best = max(i for i, m in enumerate(metrics) if m == min(metrics))
    return BUCKETS_640[last_best]


@given(st.integers(1, 5000), st.integers(1, 5000))
def test_any_size_gets_the_bucket_of_the_original_rule(h: int, w: int) -> None:
    assert find_nearest_bucket(h, w) == original_rule(h, w)


@given(st.integers(1, 5000), st.integers(1, 5000), st.sampled_from([128, 256, 320, 480, 512, 768]))
def test_other_bases_scale_the_640_bucket(h: int, w: int, resolution: int) -> None:
    bh, bw = original_rule(h, w)
    got_h, got_w = find_nearest_bucket(h, w, resolution)
    assert got_h % 16 == 0 and got_w % 16 == 0
    assert abs(got_h - bh * resolution / 640) <= 8
    assert abs(got_w - bw * resolution / 640) <= 8


def test_the_original_bucket_list() -> None:
    assert buckets() == BUCKETS_640
    assert len(BUCKETS_640) == 14
    assert all(h % 16 == 0 and w % 16 == 0 for h, w in BUCKETS_640)


def test_the_tiny_presets_buckets_at_128() -> None:
    assert buckets(128) == (
        (80, 192), (96, 176), (96, 160), (112, 144), (112, 128), (128, 128),
        (128, 112), (144, 112), (160, 96), (176, 96), (192, 80),
    )  # fmt: skip


@pytest.mark.parametrize(("h", "w", "resolution"), [(0, 10, 640), (10, -1, 640), (10, 10, 8)])
def test_nonsense_sizes_are_refused(h: int, w: int, resolution: int) -> None:
    with pytest.raises(ValueError):
        find_nearest_bucket(h, w, resolution)


def test_smallest_base_keeps_every_side_a_multiple_of_16() -> None:
    assert find_nearest_bucket(100, 1000, resolution=16) == (16, 32)


def test_crop_has_the_target_size_and_keeps_the_centre() -> None:
    # A wide picture, a red square in its middle: scaled to cover 96x160 and
    # cropped left and right, the square stays in the middle and stays square.
    image = np.zeros((300, 1000, 3), np.uint8)
    image[100:200, 450:550] = (255, 0, 0)
    out = resize_and_center_crop(image, target_width=160, target_height=96)
    assert out.shape == (96, 160, 3) and out.dtype == np.uint8
    red = np.argwhere(out[..., 0] > 128)
    (top, left), (bottom, right) = red.min(axis=0), red.max(axis=0)
    assert (top + bottom) / 2 == pytest.approx(47.5, abs=1)
    assert (left + right) / 2 == pytest.approx(79.5, abs=1)
    assert bottom - top == pytest.approx(right - left, abs=1)  # not squashed
    assert bottom - top == pytest.approx(32, abs=2)  # scaled by 96/300


def test_crop_of_a_tall_picture_cuts_top_and_bottom() -> None:
    image = np.zeros((1000, 200, 3), np.uint8)
    image[:100] = 255  # a white band at the top, cut away by the crop
    out = resize_and_center_crop(image, target_width=80, target_height=192)
    assert out.shape == (192, 80, 3)
    assert out[:5].max() == 0


def test_crop_at_the_target_size_returns_the_same_pixels() -> None:
    image = np.random.default_rng(0).integers(0, 256, (96, 160, 3), np.uint8)
    out = resize_and_center_crop(image, 160, 96)
    assert np.array_equal(out, image) and out is not image
