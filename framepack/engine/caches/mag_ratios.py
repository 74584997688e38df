"""MagCache's magnitude ratios of FramePack's transformers, as data.

A ratio is mean(|residual at step t| / |residual at step t-1|) of the block
stack, per model family, resolution and step count. These are FramePack-Studio's
published calibrations (FP-Studio/FramePack-Studio,
``diffusers_helper/models/mag_cache_ratios.py``: "calibrations performed with
FramePackStudio v0.4 with default settings and seed 31337"), the 512, 640 and 768
resolution groups at 25 and 50 steps; other step counts are interpolated as
diffusers' MagCache does (nearest). `framepack-bot calibrate-cache` records a
table of one's own in the data folder (``mag_ratios/*.json``); the worker reads
those at start and they come before the shipped ones (`load_tables`).

The tiny preset's random weights have no ratios worth calibrating: it gets a flat
table (every ratio 1, so MagCache skips as often as `max_skip_steps` allows):
what its tests and benchmark measure is the plumbing, not the quality. Whatever
the table, the engine computes a section's last step (`framepack.engine.caches`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)

# family -> resolution group ((height + width) / 2) -> steps -> ratios (the first is 1)
MAG_RATIOS: dict[str, dict[int, dict[int, tuple[float, ...]]]] = {
    "framepack": {
        768: {
            25: (1.0, 1.30469, 1.22656, 1.03906, 1.02344, 1.03906, 1.01562, 1.03906, 1.05469,
                 1.02344, 1.03906, 0.99609, 1.02344, 1.03125, 1.01562, 1.02344, 1.00781, 1.04688,
                 0.99219, 1.00781, 1.00781, 0.98828, 0.94141, 0.93359, 0.78906),
            50: (1.0, 1.30469, 0.99609, 1.16406, 1.0625, 1.01562, 1.02344, 1.01562, 1.0, 1.04688,
                 0.99219, 1.00781, 1.00781, 1.00781, 1.03125, 1.02344, 1.03125, 1.00781, 1.01562,
                 0.99219, 1.04688, 1.00781, 0.98828, 1.01562, 1.00781, 1.01562, 1.01562, 1.00781,
                 1.00781, 1.00781, 1.01562, 1.00781, 1.0, 1.03125, 1.01562, 0.97266, 1.01562,
                 1.01562, 0.98828, 1.01562, 0.98828, 0.98828, 1.0, 0.98438, 0.95703, 0.95312,
                 0.98047, 0.91016, 0.85938, 0.78125),
        },
        640: {
            25: (1.0, 1.30469, 1.22656, 1.05469, 1.02344, 1.03906, 1.02344, 1.03906, 1.05469,
                 1.02344, 1.03906, 0.99609, 1.02344, 1.03125, 1.01562, 1.02344, 1.00781, 1.03906,
                 0.98828, 1.0, 1.0, 0.98828, 0.94531, 0.93359, 0.78516),
            50: (1.0, 1.28906, 1.0, 1.17188, 1.0625, 1.02344, 1.02344, 1.02344, 1.0, 1.04688,
                 0.99219, 1.00781, 1.01562, 1.00781, 1.03125, 1.02344, 1.03125, 1.00781, 1.01562,
                 0.99219, 1.04688, 1.00781, 0.98828, 1.01562, 1.00781, 1.01562, 1.01562, 1.00781,
                 1.00781, 1.00781, 1.01562, 1.00781, 1.0, 1.03125, 1.01562, 0.97266, 1.01562,
                 1.01562, 0.98828, 1.01562, 0.98828, 0.98828, 1.0, 0.98438, 0.95703, 0.95312,
                 0.97656, 0.91016, 0.85547, 0.76953),
        },
        512: {
            25: (1.0, 1.32031, 1.21875, 1.03906, 1.02344, 1.03906, 1.01562, 1.03906, 1.05469,
                 1.02344, 1.03906, 0.99609, 1.02344, 1.03125, 1.01562, 1.02344, 1.00781, 1.04688,
                 0.98828, 1.0, 1.00781, 0.98828, 0.94141, 0.9375, 0.78516),
            50: (1.0, 1.32031, 0.99609, 1.15625, 1.0625, 1.01562, 1.02344, 1.02344, 1.0, 1.04688,
                 0.99219, 1.00781, 1.00781, 1.00781, 1.03125, 1.02344, 1.03125, 1.00781, 1.01562,
                 0.98828, 1.04688, 1.00781, 0.98828, 1.01562, 1.00781, 1.01562, 1.01562, 1.00781,
                 1.00781, 1.00781, 1.01562, 1.00781, 1.0, 1.03125, 1.01562, 0.97266, 1.01562,
                 1.01562, 0.98828, 1.01562, 0.98828, 0.98828, 1.0, 0.98438, 0.95703, 0.95312,
                 0.98047, 0.91016, 0.85938, 0.77734),
        },
    },
    "f1": {
        768: {
            25: (1.0, 1.27344, 1.08594, 1.03125, 1.00781, 1.00781, 1.00781, 1.03125, 1.03906,
                 1.00781, 1.03125, 0.98828, 1.01562, 1.00781, 1.01562, 1.00781, 0.98438, 1.04688,
                 0.98438, 0.96875, 1.03125, 0.97266, 0.92188, 0.95703, 0.77734),
            50: (1.0, 1.27344, 1.0, 1.07031, 1.01562, 1.0, 1.02344, 1.0, 1.01562, 1.02344, 0.98828,
                 1.00781, 1.00781, 1.0, 1.02344, 1.00781, 1.03125, 1.0, 1.00781, 0.97656, 1.05469,
                 1.00781, 0.98047, 1.01562, 1.0, 1.00781, 1.00781, 0.99609, 1.02344, 1.00781,
                 0.99609, 1.00781, 0.98047, 1.04688, 1.00781, 0.95312, 1.03125, 0.99609, 0.97266,
                 1.02344, 1.00781, 0.95312, 1.02344, 0.98828, 0.93359, 0.97656, 0.97656, 0.92188,
                 0.84375, 0.76562),
        },
        640: {
            25: (1.0, 1.27344, 1.07031, 1.03906, 1.00781, 1.00781, 1.00781, 1.03125, 1.04688,
                 1.00781, 1.03125, 0.99219, 1.01562, 1.01562, 1.01562, 1.00781, 0.98438, 1.05469,
                 0.98438, 0.96875, 1.03125, 0.97266, 0.92578, 0.95703, 0.77734),
            50: (1.0, 1.27344, 1.0, 1.07812, 1.01562, 1.0, 1.01562, 1.00781, 1.00781, 1.02344,
                 0.98828, 1.00781, 1.00781, 1.00781, 1.02344, 1.01562, 1.03125, 1.0, 1.00781,
                 0.98047, 1.05469, 1.00781, 0.98047, 1.01562, 1.0, 1.00781, 1.00781, 0.99609,
                 1.02344, 1.01562, 0.99609, 1.00781, 0.98047, 1.04688, 1.00781, 0.95312, 1.03125,
                 0.99609, 0.97266, 1.02344, 1.00781, 0.95312, 1.02344, 0.98828, 0.93359, 0.97656,
                 0.97656, 0.92188, 0.84375, 0.76953),
        },
        512: {
            25: (1.0, 1.28125, 1.08594, 1.02344, 1.01562, 1.00781, 1.00781, 1.03125, 1.03906,
                 1.00781, 1.03125, 0.98828, 1.01562, 1.00781, 1.01562, 1.00781, 0.98438, 1.04688,
                 0.98438, 0.96875, 1.03125, 0.97656, 0.92188, 0.96094, 0.77734),
            50: (1.0, 1.28125, 1.00781, 1.08594, 1.0, 1.01562, 1.01562, 1.00781, 1.00781, 1.02344,
                 0.98438, 1.00781, 1.00781, 1.00781, 1.02344, 1.01562, 1.03125, 1.0, 1.00781,
                 0.97656, 1.05469, 1.00781, 0.98047, 1.01562, 1.0, 1.00781, 1.00781, 0.99609,
                 1.02344, 1.00781, 0.99609, 1.00781, 0.98047, 1.04688, 1.00781, 0.95312, 1.03125,
                 0.99609, 0.97266, 1.02344, 1.00781, 0.94922, 1.02344, 0.98828, 0.93359, 0.97656,
                 0.97656, 0.92188, 0.83984, 0.76953),
        },
    },
}  # fmt: skip


# family -> resolution group -> steps -> ratios, as MAG_RATIOS
MagTables = Mapping[str, Mapping[int, Mapping[int, tuple[float, ...]]]]


def mag_ratios(
    family: str, *, height: int, width: int, steps: int, calibrated: MagTables | None = None
) -> tuple[float, ...]:
    """The table closest to a job: its family's nearest resolution group, then the nearest
    step count (MagCacheConfig interpolates it to `steps`). `calibrated` tables (the host's
    own, `load_tables`) replace the shipped ones of their resolution group and step count
    and join the rest. A family without a table (the tiny preset) gets the flat one."""
    groups: dict[int, dict[int, tuple[float, ...]]] = {
        size: dict(by_steps) for size, by_steps in MAG_RATIOS.get(family, {}).items()
    }
    for size, by_steps in (calibrated or {}).get(family, {}).items():
        groups.setdefault(size, {}).update(by_steps)
    if not groups:
        return (1.0,) * steps
    size = (height + width) / 2
    by_steps = groups[min(groups, key=lambda r: abs(r - size))]
    return by_steps[min(by_steps, key=lambda s: abs(s - steps))]


def table_file_name(family: str, resolution: int, steps: int) -> str:
    """The name `framepack-bot calibrate-cache` gives a table in the tables folder."""
    return f"{family}-{resolution}-{steps}.json"


def load_tables(folder: Path) -> dict[str, dict[int, dict[int, tuple[float, ...]]]]:
    """The calibrated tables in `folder` (each file as `calibrate-cache` writes it:
    family, resolution, steps, ratios). A file that is not such a table is logged and
    left out: a bad table must not keep the worker from rendering."""
    tables: dict[str, dict[int, dict[int, tuple[float, ...]]]] = {}
    if not folder.is_dir():
        return tables
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text())
            family, resolution, steps = (
                str(data["family"]),
                int(data["resolution"]),
                int(data["steps"]),
            )
            ratios = tuple(float(r) for r in data["ratios"])
            if len(ratios) != steps or steps < 2 or not all(r >= 0 for r in ratios):
                raise ValueError(f"{steps} steps with {len(ratios)} ratios")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("MagCache table %s left out: not a calibrated table (%s)", path, exc)
            continue
        tables.setdefault(family, {}).setdefault(resolution, {})[steps] = ratios
    return tables
