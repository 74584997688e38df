"""`framepack-bot calibrate-cache`: MagCache's magnitude ratios, recorded on the real model.

MagCache skips a step when the block stack's residual is expected to change
little; how much it changes from one step to the next (the ratio of the
residuals' norms) is a property of the weights, the resolution and the step
count. This renders one section with diffusers' MagCache in calibration mode
(nothing skipped, every ratio recorded) and writes the table, in the shape of
`framepack.engine.caches.mag_ratios`. It needs a CUDA GPU and the model's
weights; the tables shipped (FramePack-Studio's) serve until then.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from storage.config import ConfigError, load_settings
from storage.files import DataDir

if TYPE_CHECKING:
    from PIL import Image

    from framepack.engine.engine import FramePackEngine
    from framepack.engine.params import GenerationParams

EXIT_UNAVAILABLE = 1


def add_calibrate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", default="config.toml", help="TOML config (default: config.toml)"
    )
    parser.add_argument(
        "--model", choices=["framepack", "f1"], default=None, help="default: config"
    )
    parser.add_argument("--steps", type=int, default=25, help="sampling steps (default 25)")
    parser.add_argument("--resolution", type=int, default=640, help="bucket base (default 640)")
    parser.add_argument("--image", type=Path, default=None, help="picture (default: a test one)")
    parser.add_argument("--prompt", default="a person turns around and smiles")
    parser.add_argument("--seed", type=int, default=31337)
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="where the table goes (default: the data folder's mag_ratios/, which the "
        "worker reads at start)",
    )


def _say(message: str) -> int:
    print(f"framepack-bot calibrate-cache: {message}", file=sys.stderr)
    return EXIT_UNAVAILABLE


def calibrate(engine: FramePackEngine, params: GenerationParams, image: Image.Image) -> list[float]:
    """The ratios of one section of `params` (the first is 1), in MagCache's calibration mode."""
    import torch
    from diffusers.hooks.mag_cache import MagCacheConfig, apply_mag_cache

    from framepack.engine.caches import remove_step_cache

    transformer = engine.components.transformer
    recorded: list[list[float]] = []
    handler = _RatiosHandler(recorded)
    mag_log = logging.getLogger("diffusers.hooks.mag_cache")
    level = mag_log.level
    mag_log.addHandler(handler)
    mag_log.setLevel(logging.INFO)
    params = dataclasses.replace(params, cache="off", seconds=params.section_seconds())
    try:
        job = engine.prepare(params, image)
        history, end = engine.start(job)
        spec = job.specs[0]
        apply_mag_cache(
            transformer, MagCacheConfig(calibrate=True, num_inference_steps=params.steps)
        )
        steps = engine.section_steps(
            job, spec, history.context(spec, end), torch.Generator("cpu").manual_seed(params.seed)
        )
        for _ in steps:
            pass
    finally:
        remove_step_cache(transformer)
        mag_log.removeHandler(handler)
        mag_log.setLevel(level)
    if not recorded:
        raise RuntimeError("diffusers' MagCache calibration recorded no ratios")
    return [round(r, 5) for r in recorded[-1]]


class _RatiosHandler(logging.Handler):
    """Collects the table diffusers' calibration mode logs at a section's last step."""

    PREFIX = "MagCache Calibration Results: "

    def __init__(self, into: list[list[float]]) -> None:
        super().__init__(logging.INFO)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith(self.PREFIX):
            self.into.append([float(x) for x in json.loads(message[len(self.PREFIX) :])])


def main(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config if Path(args.config).exists() else None)
    except ConfigError as exc:
        return _say(str(exc))
    import torch

    if not torch.cuda.is_available():
        return _say(
            "no CUDA GPU is visible: calibrating MagCache renders with the real 13B model, which "
            "needs a GPU and its weights (the shipped FramePack-Studio tables serve meanwhile)."
        )
    from framepack.engine.caches.mag_ratios import table_file_name
    from framepack.engine.engine import FramePackEngine
    from framepack.engine.params import GenerationParams
    from framepack.models.components import load_components
    from framepack.models.presets import get_preset
    from framepack_bot.doctor import check_models

    model = dataclasses.replace(settings.model, preset=args.model or settings.model.preset)
    if model.preset == "tiny":
        return _say("the tiny preset's random weights have nothing to calibrate; use --model.")
    findings = check_models(dataclasses.replace(settings, model=model))
    if any(f.level != "ok" for f in findings):
        return _say(
            f"the {model.preset} model's weights are not here ({findings[0].what}); "
            "run `framepack-bot animate` once to fetch them, then calibrate."
        )
    from PIL import Image

    image = Image.open(args.image).convert("RGB") if args.image else _test_picture()
    engine = FramePackEngine(load_components(model), device=model.device, memory=model.memory)
    preset = get_preset(model.preset)
    params = GenerationParams(
        prompt=args.prompt,
        seed=args.seed,
        steps=args.steps,
        sampler=preset.sampler,
        resolution=args.resolution,
    )
    ratios = calibrate(engine, params, image)
    table = {
        "family": model.preset,
        "resolution": args.resolution,
        "steps": args.steps,
        "ratios": ratios,
    }
    output = args.output or DataDir(settings.storage.data_dir).mag_ratios / table_file_name(
        model.preset, args.resolution, args.steps
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(table, indent=1) + "\n")
    print(json.dumps(table))
    print(
        f"written to {output}: a worker that reads this data folder uses it from its next "
        "start, before the shipped FramePack-Studio tables"
    )
    return 0


def _test_picture() -> Image.Image:
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:640, 0:640] / 640
    rgb = np.stack([0.5 + 0.5 * np.sin(6 * x), 0.5 + 0.5 * np.cos(5 * y), (x + y) / 2], axis=-1)
    return Image.fromarray((rgb * 255).astype(np.uint8))
