"""The engine against diffusers' HunyuanVideoFramepackPipeline, in one run.

    python benchmarks/engine.py [--seconds 5] [--steps 25] [--repeats 3] [--threads N]
    python benchmarks/engine.py --full [--modes high,offload,low] [--steps 25]

Default: the tiny preset on the CPU, the same job (picture, prompt, seed, flow-match
Euler: the pipeline's scheduler) through the engine, with its events, step previews,
a partial MP4 after every section and its checkpoints, and through the pipeline,
whose frames are then written as one MP4 (what a user of the pipeline must do; the
pipeline alone is shown too). Runs alternate; shown are the best and the median wall
seconds of --repeats runs (the best is the least disturbed by other work on a shared
machine), the median CPU seconds (this process and its ffmpeg children) and the peak
resident memory during a run.
Target (issue 3): engine / pipeline <= 1.05.

--full: the full-size architecture (13B transformer, Llama 3 8B, CLIP-L, SigLIP,
HunyuanVideo VAE) with random weights, on a CUDA GPU, one 640x608 section (latent
window 9) of 25 steps: seconds per step and peak VRAM in each memory mode, each in
a fresh process, and the pipeline on the same GPU. Targets: `low` at most 6 GiB;
`high` no slower than the pipeline. Without CUDA it says so and exits.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # run as a script from anywhere

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, replace  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from framepack.engine.buckets import find_nearest_bucket, resize_and_center_crop  # noqa: E402
from framepack.engine.engine import FramePackEngine  # noqa: E402
from framepack.engine.events import Done, Step  # noqa: E402
from framepack.engine.params import GenerationParams  # noqa: E402
from framepack.models.components import Components, llama_prompt_template  # noqa: E402
from framepack.video.encode import encode_mp4  # noqa: E402
from tests.reference import pipeline_kwargs, to_uint8  # noqa: E402

PROMPT = "A cat walks through tall grass, the camera follows it slowly."
GIB = 1 << 30


def test_picture(height: int, width: int) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    rgb = np.stack([np.sin(7 * x) * 0.5 + 0.5, np.cos(5 * y) * 0.5 + 0.5, x * y], axis=-1)
    return Image.fromarray((rgb * 255).astype(np.uint8))


# --- peak memory -------------------------------------------------------------------------


def _proc_status(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_peak_rss() -> None:
    """Linux: writing 5 to clear_refs resets the peak RSS (VmHWM) to the current RSS."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss() -> int:
    peak = _proc_status("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass
class Measure:
    wall: float
    cpu: float
    peak_rss: int


def measure(fn: Callable[[], object]) -> Measure:
    reset_peak_rss()
    self0, child0 = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    start = time.perf_counter()
    fn()
    wall = time.perf_counter() - start
    self1, child1 = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    cpu = sum(
        b.ru_utime + b.ru_stime - a.ru_utime - a.ru_stime
        for a, b in ((self0, self1), (child0, child1))
    )
    return Measure(wall, cpu, peak_rss())


# --- the two ways to render one job ------------------------------------------------------


def pipeline_for(components: Components):
    from diffusers import HunyuanVideoFramepackPipeline

    pipe = HunyuanVideoFramepackPipeline(**components.pipeline_parts())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def render_with_engine(
    engine: FramePackEngine, params: GenerationParams, image: Image.Image
) -> int:
    steps = 0
    with tempfile.TemporaryDirectory() as workdir:
        for event in engine.generate(params, image, workdir=Path(workdir)):
            if isinstance(event, Step):
                assert event.preview.size > 0
                steps += 1
            elif isinstance(event, Done):
                assert event.video.stat().st_size > 0
    return steps


def render_with_pipeline(
    pipe, components: Components, params: GenerationParams, image: Image.Image, *, write_mp4: bool
) -> np.ndarray:
    kwargs = pipeline_kwargs(params, image, prompt_template=components.prompt_template)
    video = to_uint8(pipe(**kwargs).frames[0])
    if write_mp4:
        with tempfile.TemporaryDirectory() as folder:
            encode_mp4(video, Path(folder) / "video.mp4", fps=params.fps, crf=params.crf)
    return video


# --- tiny preset on the CPU --------------------------------------------------------------


def tiny(args: argparse.Namespace) -> int:
    from framepack.models.tiny import build_tiny_components

    components = build_tiny_components()
    engine = FramePackEngine(components, device="cpu")
    pipe = pipeline_for(components)
    params = GenerationParams(
        prompt=PROMPT, seconds=args.seconds, steps=args.steps, seed=1, scheduler="euler",
        sampler=args.sampler, resolution=128,
    )  # fmt: skip
    image = test_picture(608, 640)
    warm = replace(params, seconds=1.0, steps=1)
    render_with_engine(engine, warm, image)
    render_with_pipeline(pipe, components, warm, image, write_mp4=True)

    runs: dict[str, list[Measure]] = {"engine": [], "pipeline + mp4": [], "pipeline alone": []}
    for _ in range(args.repeats):
        runs["engine"].append(measure(lambda: render_with_engine(engine, params, image)))
        runs["pipeline + mp4"].append(
            measure(lambda: render_with_pipeline(pipe, components, params, image, write_mp4=True))
        )
        runs["pipeline alone"].append(
            measure(lambda: render_with_pipeline(pipe, components, params, image, write_mp4=False))
        )

    print(
        f"tiny preset, CPU ({torch.get_num_threads()} threads), {params.sections()} sections x "
        f"{params.steps} steps, {params.sampler}, euler, 128 bucket, {args.repeats} runs each"
    )
    heads = ("best wall s", "median wall s", "median cpu s", "peak RSS MiB")
    print(f"{'':16} {heads[0]:>12} {heads[1]:>14} {heads[2]:>13} {heads[3]:>13}")
    best = {name: min(m.wall for m in ms) for name, ms in runs.items()}
    median = {name: statistics.median(m.wall for m in ms) for name, ms in runs.items()}
    cpu = {name: statistics.median(m.cpu for m in ms) for name, ms in runs.items()}
    for name, ms in runs.items():
        rss = max(m.peak_rss for m in ms) / 2**20
        print(f"{name:16} {best[name]:12.2f} {median[name]:14.2f} {cpu[name]:13.2f} {rss:13.0f}")
    for base in ("pipeline + mp4", "pipeline alone"):
        print(
            f"engine / {base + ':':15} best wall {best['engine'] / best[base]:.3f}, "
            f"median wall {median['engine'] / median[base]:.3f}, "
            f"median cpu {cpu['engine'] / cpu[base]:.3f}"
        )
    print("target: engine / (pipeline + mp4) <= 1.05")
    print("rerun: python benchmarks/engine.py " + " ".join(sys.argv[1:]))
    return 0


# --- full size on a GPU ------------------------------------------------------------------


# The released checkpoints' architectures (FramePackI2V_HY; HunyuanVideo's Llama 3 8B,
# CLIP-L and VAE; Flux Redux's SigLIP so400m).
FULL_SIZE: dict[str, dict] = {
    "transformer": {
        "num_attention_heads": 24, "attention_head_dim": 128, "num_layers": 20,
        "num_single_layers": 40, "num_refiner_layers": 2, "text_embed_dim": 4096,
        "pooled_projection_dim": 768, "rope_axes_dim": (16, 56, 56), "has_image_proj": True,
        "image_proj_dim": 1152, "has_clean_x_embedder": True,
    },
    "vae": {},
    "text_encoder": {
        "vocab_size": 128_256, "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "max_position_embeddings": 8192,
    },
    "text_encoder_2": {"vocab_size": 49408},
    "image_encoder": {
        "hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27,
        "num_attention_heads": 16, "image_size": 384, "patch_size": 14,
    },
}  # fmt: skip


def random_components(
    sizes: dict[str, dict], *, transformer_dtype: torch.dtype, dtype: torch.dtype
) -> Components:
    """FramePack's architecture at `sizes` with random weights, on the CPU. The tiny
    preset's byte-level tokenizers stand in for the real ones."""
    from diffusers import AutoencoderKLHunyuanVideo, HunyuanVideoFramepackTransformer3DModel
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        LlamaConfig,
        LlamaModel,
        SiglipVisionConfig,
        SiglipVisionModel,
    )

    from framepack.engine.schedulers import make_scheduler
    from framepack.models.tiny import clip_tokenizer, llama_tokenizer, siglip_processor_class

    noise = torch.randn(1 << 20, generator=torch.Generator().manual_seed(0)) * 0.02

    def big(build: Callable[[], torch.nn.Module], dtype: torch.dtype) -> torch.nn.Module:
        # Built on the meta device and its weights filled with a tiled block of small
        # noise: drawing 21B random numbers takes minutes, and a benchmark only needs
        # the shapes. (Neither model holds an integer buffer to rebuild.)
        with torch.device("meta"):
            model = build()
        model = model.to_empty(device="cpu").to(dtype)
        for tensor in model.parameters():
            flat, n, block = tensor.data.view(-1), tensor.numel(), noise.numel()
            rows = n // block
            flat[: rows * block].view(rows, block).copy_(noise.expand(rows, -1))
            flat[rows * block :].copy_(noise[: n - rows * block])
        if hasattr(model, "rotary_emb"):  # Llama: its RoPE frequencies are a computed buffer
            model.rotary_emb = type(model.rotary_emb)(config=model.config)
        return model.eval().requires_grad_(False)

    def small(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
        return model.to(dtype).eval().requires_grad_(False)

    tokenizer, tokenizer_2 = llama_tokenizer(), clip_tokenizer()
    siglip = sizes["image_encoder"]
    return Components(
        transformer=big(
            lambda: HunyuanVideoFramepackTransformer3DModel(**sizes["transformer"]),
            transformer_dtype,
        ),
        vae=small(AutoencoderKLHunyuanVideo(**sizes["vae"]), dtype),
        text_encoder=big(lambda: LlamaModel(LlamaConfig(**sizes["text_encoder"])), dtype),
        tokenizer=tokenizer,
        text_encoder_2=small(
            CLIPTextModel(
                CLIPTextConfig(**sizes["text_encoder_2"], eos_token_id=tokenizer_2.eos_token_id)
            ),
            dtype,
        ),
        tokenizer_2=tokenizer_2,
        image_encoder=small(SiglipVisionModel(SiglipVisionConfig(**siglip)), dtype),
        feature_extractor=siglip_processor_class()(
            size={"height": siglip["image_size"], "width": siglip["image_size"]},
            image_mean=[0.5] * 3,
            image_std=[0.5] * 3,
        ),
        scheduler=make_scheduler("euler"),
        preset="framepack",
        is_random=True,
        prompt_template=llama_prompt_template(tokenizer),
    )


def full_one(mode: str, steps: int) -> dict[str, float | str]:
    """One memory mode (or the pipeline, `mode == "pipeline"`) in this process."""
    device = torch.device("cuda")
    components = random_components(FULL_SIZE, transformer_dtype=torch.bfloat16, dtype=torch.float16)
    params = GenerationParams(prompt=PROMPT, seconds=1.0, steps=steps, scheduler="euler")
    image = test_picture(608, 640)  # the 640x608 bucket: one section of 33 frames
    stamps: list[float] = []
    if mode == "pipeline":
        pipe = pipeline_for(components).to(device)

        def on_step(_pipe, _i, _t, kwargs):
            torch.cuda.synchronize()
            stamps.append(time.perf_counter())
            return kwargs

        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        rgb = np.asarray(image)
        h, w = find_nearest_bucket(*rgb.shape[:2], resolution=640)
        pipe(
            image=Image.fromarray(resize_and_center_crop(rgb, w, h)), prompt=PROMPT, height=h,
            width=w, num_frames=33, num_inference_steps=steps, guidance_scale=10.0,
            generator=torch.Generator().manual_seed(0), output_type="np",
            prompt_template=components.prompt_template, callback_on_step_end=on_step,
        )  # fmt: skip
    else:
        engine = FramePackEngine(components, device=device, memory=mode)
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as workdir:
            for event in engine.generate(params, image, workdir=Path(workdir)):
                if isinstance(event, Step):
                    torch.cuda.synchronize()
                    stamps.append(time.perf_counter())
    total = time.perf_counter() - start
    # Seconds per step: between the first and the last step (the first pays for warm-up).
    per_step = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else float("nan")
    return {
        "mode": mode,
        "s_per_step": per_step,
        "job_s": total,
        "peak_vram_gib": torch.cuda.max_memory_allocated() / GIB,
        "peak_reserved_gib": torch.cuda.max_memory_reserved() / GIB,
    }


def full(args: argparse.Namespace) -> int:
    if not torch.cuda.is_available():
        print("--full needs a CUDA GPU; none is visible to PyTorch: skipped")
        return 0
    if args.one:
        print(json.dumps(full_one(args.one, args.steps)))
        return 0
    rows = []
    for mode in ["pipeline", *args.modes.split(",")]:
        # A fresh process per mode: clean peak counters, no hooks left from another mode.
        out = subprocess.run(
            [sys.executable, __file__, "--full", "--one", mode, "--steps", str(args.steps)],
            capture_output=True, text=True,
        )  # fmt: skip
        if out.returncode != 0:
            print(f"{mode}: failed\n{out.stderr[-3000:]}")
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    gpu = torch.cuda.get_device_name()
    print(f"full-size random model, {gpu}, 640x608, window 9, {args.steps} steps")
    print(f"{'mode':10} {'s/step':>8} {'job s':>8} {'peak VRAM GiB':>14} {'reserved GiB':>13}")
    for r in rows:
        print(
            f"{r['mode']:10} {r['s_per_step']:8.3f} {r['job_s']:8.1f} "
            f"{r['peak_vram_gib']:14.2f} {r['peak_reserved_gib']:13.2f}"
        )
    print("targets: low <= 6 GiB; high s/step <= pipeline s/step")
    print("rerun: python benchmarks/engine.py " + " ".join(sys.argv[1:]))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--full", action="store_true", help="full-size model on a GPU")
    parser.add_argument("--modes", default="high,offload,low", help="--full: memory modes to run")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # --full: one mode, as JSON
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sampler", choices=["inverted", "forward"], default="inverted")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (1 is steadier on a busy machine)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    return full(args) if args.full else tiny(args)


if __name__ == "__main__":
    sys.exit(main())
