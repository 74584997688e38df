"""FramePack's resolution buckets: the picture sizes the model is run at.

The original FramePack (lllyasviel/FramePack, `diffusers_helper/bucket_tools.py`)
has one bucket list, for a 640 base, and picks the bucket whose aspect ratio is
nearest the input's. For another base we pick the same bucket in the 640 list
and scale it by `resolution / 640`, each side rounded to a multiple of 16 (the
VAE downsamples by 8 and the transformer patches by 2): at 640 the sizes are the
original's exactly, and the `tiny` preset's 128 gets the same aspect choices.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

BASE_RESOLUTION = 640
SIDE_MULTIPLE = 16

# (height, width) of the original's 640 buckets, from tallest-narrow to wide.
BUCKETS_640: tuple[tuple[int, int], ...] = (
    (416, 960),
    (448, 864),
    (480, 832),
    (512, 768),
    (544, 704),
    (576, 672),
    (608, 640),
    (640, 608),
    (672, 576),
    (704, 544),
    (768, 512),
    (832, 480),
    (864, 448),
    (960, 416),
)


def _nearest_640(h: int, w: int) -> tuple[int, int]:
    # |h*bw - w*bh| compares the aspect ratios without dividing; on a tie the
    # later bucket wins, as in the original (it keeps the last `<=` minimum).
    best = BUCKETS_640[0]
    best_metric = float("inf")
    for bucket_h, bucket_w in BUCKETS_640:
        metric = abs(h * bucket_w - w * bucket_h)
        if metric <= best_metric:
            best, best_metric = (bucket_h, bucket_w), metric
    return best


def _scale_side(side: int, resolution: int) -> int:
    # round() as Python rounds (halves to even), as the forks that scale the
    # 640 list do, so our sizes equal theirs; never below one multiple.
    scaled = round(side * resolution / BASE_RESOLUTION / SIDE_MULTIPLE) * SIDE_MULTIPLE
    return max(SIDE_MULTIPLE, scaled)


def find_nearest_bucket(h: int, w: int, resolution: int = BASE_RESOLUTION) -> tuple[int, int]:
    """The (height, width) bucket for an `h` x `w` picture at base `resolution`."""
    if h <= 0 or w <= 0:
        raise ValueError(f"picture size must be positive, got {h}x{w}")
    if resolution < SIDE_MULTIPLE:
        raise ValueError(f"resolution must be at least {SIDE_MULTIPLE}, got {resolution}")
    bucket_h, bucket_w = _nearest_640(h, w)
    if resolution == BASE_RESOLUTION:
        return bucket_h, bucket_w
    return _scale_side(bucket_h, resolution), _scale_side(bucket_w, resolution)


def buckets(resolution: int = BASE_RESOLUTION) -> tuple[tuple[int, int], ...]:
    """Every (height, width) bucket at base `resolution`, in the 640 list's order, no repeats."""
    scaled = (find_nearest_bucket(h, w, resolution) for h, w in BUCKETS_640)
    return tuple(dict.fromkeys(scaled))


def resize_and_center_crop(image: np.ndarray, target_width: int, target_height: int) -> np.ndarray:
    """Scale `image` (H, W, 3) uint8 with Lanczos until it covers the target, then crop its centre.

    The same arithmetic as the original FramePack's, so the model sees the same pixels.
    """
    height, width = image.shape[:2]
    if (height, width) == (target_height, target_width):
        return image.copy()
    scale = max(target_width / width, target_height / height)
    resized_w, resized_h = round(width * scale), round(height * scale)
    resized = Image.fromarray(image).resize((resized_w, resized_h), Image.Resampling.LANCZOS)
    # Half-pixel offsets are passed on as they are: PIL rounds the box itself,
    # and rounding them here differently would shift the crop by a pixel.
    left = (resized_w - target_width) / 2
    top = (resized_h - target_height) / 2
    box = (left, top, left + target_width, top + target_height)
    return np.array(resized.crop(box))
