"""Arguments of `framepack-bot animate` (kept apart from `animate.py` so that
building the parser imports no torch)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_animate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "image", type=Path, help="the picture to animate, or a video (MP4, WebM) to continue"
    )
    parser.add_argument(
        "--prompt", required=True, help="what should happen; '[0s: ...] [3s: ...]' per section"
    )
    parser.add_argument("--output", "-o", type=Path, required=True, help="where to write the MP4")
    parser.add_argument(
        "--frames",
        type=Path,
        default=None,
        metavar="DIR",
        help="also write every frame to DIR as a lossless PNG (frame_00000.png, ...)",
    )
    parser.add_argument(
        "--seconds", type=float, default=None, help="video length (default: config)"
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps per section")
    parser.add_argument("--guidance", type=float, default=None, help="distilled guidance scale")
    parser.add_argument(
        "--cfg",
        type=float,
        default=None,
        help="real CFG scale; above 1 a second pass per step on --negative-prompt "
        "(about twice the time); default: config, 1 (off)",
    )
    parser.add_argument(
        "--negative-prompt",
        default=None,
        help="what real CFG steers away from (with --cfg above 1); default: config, empty",
    )
    parser.add_argument(
        "--model",
        choices=["framepack", "f1", "tiny"],
        default=None,
        help="model preset (default: config)",
    )
    parser.add_argument(
        "--lora",
        action="append",
        default=[],
        metavar="NAME[:SCALE]",
        help="a LoRA of the config's catalogue by name, or a .safetensors file (any of the "
        "three namings); repeat for several; scale default: the catalogue's, or 1",
    )
    parser.add_argument(
        "--end-image", type=Path, default=None, help="last frame (framepack model only)"
    )
    parser.add_argument(
        "--cache",
        choices=["off", "teacache", "magcache"],
        default=None,
        help="step cache: skips block-stack passes, about 2x faster, not lossless; "
        "off renders every step (default: config, magcache)",
    )
    parser.add_argument(
        "--cache-threshold",
        type=float,
        default=None,
        help="the cache's threshold (default: config's teacache_threshold or magcache_threshold)",
    )
    parser.add_argument(
        "--scheduler",
        choices=["unipc", "euler"],
        default=None,
        help="solver (default: config, unipc)",
    )
    parser.add_argument(
        "--resolution", type=int, default=None, help="bucket base (default: 640; tiny model: 128)"
    )
    parser.add_argument(
        "--memory", choices=["auto", "high", "offload", "low"], default=None, help="GPU memory mode"
    )
    parser.add_argument(
        "--device", default=None, help="auto, cpu, cuda or cuda:N (default: config)"
    )
    parser.add_argument(
        "--config", default=None, help="TOML config for model sources and memory mode"
    )
