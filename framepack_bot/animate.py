"""`framepack-bot animate`: one video on this machine, with a progress bar.

The same engine and options as the bot. The work folder (checkpoint and partial
videos) sits beside the output until the video is done, so an interrupted run
resumes when the same command is given again with the same seed. A video (MP4,
WebM) in place of the picture is continued, as a video sent to the bot is: the
output is that video followed by the new part.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import random
import re
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageOps, UnidentifiedImageError

from storage.config import ConfigError, ModelSettings, load_settings
from storage.files import DataDir, is_video_input

if TYPE_CHECKING:
    import numpy as np

    from framepack.engine.continuation import VideoSource
    from framepack.engine.params import GenerationParams

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _fail(message: str) -> int:
    print(f"framepack-bot animate: {message}", file=sys.stderr)
    return EXIT_USAGE


def _open_picture(path: Path, what: str) -> Image.Image:
    try:
        with Image.open(path) as image:
            image.load()
            return ImageOps.exif_transpose(image).convert("RGB")  # a phone's photo, upright
    except FileNotFoundError:
        raise ValueError(f"{what} {path}: no such file") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{what} {path}: not a picture ({exc})") from None


def main(args: argparse.Namespace) -> int:
    from framepack.engine.continuation import VideoSource
    from framepack.engine.params import GenerationParams, check_params
    from framepack.engine.prompts import add_triggers
    from framepack.models.lora import LoraUnavailable
    from framepack.models.presets import get_preset

    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        return _fail(str(exc))
    model = settings.model
    overrides = {"preset": args.model, "memory": args.memory, "device": args.device}
    model = dataclasses.replace(model, **{k: v for k, v in overrides.items() if v is not None})
    preset = get_preset(model.preset)
    generation = settings.generation
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    cache = args.cache or generation.cache
    threshold = (
        args.cache_threshold
        if args.cache_threshold is not None
        else generation.cache_threshold(cache)
    )
    params = GenerationParams(
        prompt=args.prompt,
        seconds=args.seconds if args.seconds is not None else generation.seconds,
        seed=seed,
        steps=args.steps if args.steps is not None else generation.steps,
        guidance=args.guidance if args.guidance is not None else generation.guidance,
        cfg=args.cfg if args.cfg is not None else generation.cfg,
        negative_prompt=(
            args.negative_prompt if args.negative_prompt is not None else generation.negative_prompt
        ),
        sampler=preset.sampler,
        scheduler=args.scheduler or generation.scheduler,
        resolution=args.resolution or generation.resolution or preset.resolution,
        cache=cache,  # type: ignore[arg-type]
        cache_threshold=threshold,
    )
    try:
        loras = _loras(args.lora, model)
        prompt = params.prompt
        for _, _, triggers in loras.values():
            prompt = add_triggers(prompt, triggers)
        params = dataclasses.replace(
            params,
            prompt=prompt,
            loras=tuple((name, scale) for name, (_, scale, _) in loras.items()),
        )
        check_params(params, preset=preset.name, has_end_image=args.end_image is not None)
        source = image = None
        if is_video_input(args.image):
            if not args.image.is_file():
                raise ValueError(f"video {args.image}: no such file")
            source = VideoSource(args.image)
        else:
            image = _open_picture(args.image, "image")
        end_image = _open_picture(args.end_image, "end image") if args.end_image else None
    except ValueError as exc:
        return _fail(str(exc))

    output: Path = args.output
    output.parent.mkdir(parents=True, exist_ok=True)
    workdir = output.with_name(f".{output.name}.work")
    try:
        video = _render(
            model,
            params,
            image,
            end_image,
            workdir,
            source=source,
            frames_dir=args.frames,
            loras={name: path for name, (path, _, _) in loras.items()},
            mag_tables=DataDir(settings.storage.data_dir).mag_ratios,
        )
    except LoraUnavailable as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        print(
            f"\ninterrupted; run the same command with --seed {seed} to resume from {workdir}",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    shutil.copyfile(video, output)
    shutil.rmtree(workdir, ignore_errors=True)
    print(f"{output}  (seed {seed})")
    if args.frames is not None:
        print(f"{args.frames}/  ({len(list(args.frames.glob('*.png')))} frames as PNG)")
    if preset.name == "tiny":
        print("the tiny model has random weights: its video is coloured noise")
    return 0


def _loras(specs: list[str], model: ModelSettings) -> dict[str, tuple[Path, float, str]]:
    """`--lora NAME[:SCALE]` values as name -> (file, scale, trigger words): a name of the
    catalogue (for the preset's model; a Hub file is fetched), or a path to a file."""
    from framepack.models.lora import LoraError
    from framepack.worker.engines import lora_path

    chosen: dict[str, tuple[Path, float, str]] = {}
    for spec in specs:
        text, colon, scale_text = spec.rpartition(":")
        if not colon or not _is_number(scale_text):
            text, scale_text = spec, ""
        lora = model.lora(text)
        if lora is not None:
            if model.preset != "tiny" and not lora.for_model(model.preset):
                raise ValueError(
                    f"--lora {text}: it is for the {' and '.join(lora.models)} model, "
                    f"not {model.preset}"
                )
            try:
                path = lora_path(lora, model.cache_dir, download=True)
            except LoraError as exc:
                raise ValueError(f"--lora {text}: {exc}") from None
            name, default, triggers = lora.name, lora.scale, lora.triggers
        elif Path(text).expanduser().is_file():
            path = Path(text).expanduser()
            # the adapter's name: PEFT refuses dots in it ("style.v1.safetensors")
            name = re.sub(r"[^a-z0-9_-]+", "_", path.stem.lower()).strip("_") or "lora"
            default, triggers = 1.0, ""
        else:
            known = ", ".join(lora.name for lora in model.loras) or "none in the config"
            raise ValueError(
                f"--lora {text}: no such LoRA in the catalogue ({known}) and no such file"
            )
        if name in chosen:
            raise ValueError(f"--lora {text}: given twice")
        chosen[name] = (path, float(scale_text) if scale_text else default, triggers)
    return chosen


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _render(
    model: ModelSettings,
    params: GenerationParams,
    image: Image.Image | None,
    end_image: Image.Image | None,
    workdir: Path,
    *,
    source: VideoSource | None = None,
    frames_dir: Path | None = None,
    loras: dict[str, Path] | None = None,
    mag_tables: Path | None = None,
) -> Path:
    """Run the engine with a progress bar; the finished video's path. With `frames_dir`,
    every frame is also written there as a PNG, from the engine's uint8 frames (before
    the codec)."""
    from tqdm import tqdm

    from framepack.engine.caches.mag_ratios import load_tables
    from framepack.engine.engine import FramePackEngine
    from framepack.engine.events import Done, Section, Started, Step
    from framepack.models.components import load_components
    from framepack.video.png import write_png_frames

    def write_frames(frames: np.ndarray) -> None:
        assert frames_dir is not None
        write_png_frames(frames, frames_dir)

    print(f"loading the {model.preset} model ...", file=sys.stderr)
    engine = FramePackEngine(
        load_components(model),
        device=model.device,
        memory=model.memory,
        loras=loras,
        # the host's calibrated MagCache tables, as the worker reads them
        mag_tables=load_tables(mag_tables) if mag_tables is not None else None,
    )
    bar = None
    events = engine.generate(
        params,
        image,
        workdir=workdir,
        end_image=end_image,
        source=source,
        on_frames=write_frames if frames_dir is not None else None,
    )
    try:
        for event in events:
            if isinstance(event, Started):
                total = event.sections * event.steps
                bar = tqdm(total=total, initial=event.first_section * event.steps, unit="step")
                bar.set_description(f"section {event.first_section + 1}/{event.sections}")
            elif isinstance(event, Step) and bar is not None:
                bar.update(1)
            elif isinstance(event, Section) and bar is not None:
                bar.set_description(
                    f"section {min(event.section + 2, event.sections)}/{event.sections}"
                )
                bar.set_postfix(frames=event.frames)
            elif isinstance(event, Done):
                return event.video
    finally:
        if bar is not None:
            bar.close()
    raise RuntimeError("the engine ended without a video")
