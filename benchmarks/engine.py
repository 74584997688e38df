"""The engine with each solver against diffusers' HunyuanVideoFramepackPipeline, in one run.

    python benchmarks/engine.py [--seconds 5] [--steps 25] [--repeats 3] [--threads N]
    python benchmarks/engine.py --lora [--seconds 1] [--steps 2] [--repeats 5] [--threads N]
    python benchmarks/engine.py --full [benchmarks/gpu.py's options]

Default: the tiny preset on the CPU, the same job (picture, prompt, seed) through
the engine with UniPC (its default, FramePack's sampler), through the engine with
Euler, and through the pipeline (Euler, its own encodings), whose frames are then
written as one MP4 (what a user of the pipeline must do; the pipeline alone is
shown too). The engine's runs include its events, step previews, a partial MP4
after every section and its checkpoints. Runs alternate; shown are the best and
the median wall seconds of --repeats runs (the best is the least disturbed by
other work on a shared machine), the median CPU seconds (this process and its
ffmpeg children) and the peak resident memory during a run, and the ratios.
Targets, judged on the best wall time: engine (unipc) / (pipeline + mp4) <= 1.05
(issue 3); engine unipc / engine euler <= 1.05 (the demo's sampler costs nothing
noticeable). Each is printed met/MISSED; a miss exits 1.

--lora: the cost of LoRA adapters on the tiny preset (CPU): two random LoRAs (rank 16
over every block linear layer, written as files in the original naming) attached once,
then the time to switch adapters between two jobs (`set_adapters` to the other LoRA,
and off for a job without) next to one section's time with and without a LoRA on.
Target: a switch takes <= 1 % of a section.
Step caches, in the same run: the engine (unipc) with each cache (off is "engine
unipc"), their block-stack passes per section (counted on the last block) and
best wall time against off. Judged: each cache's wall <= off's, and MagCache's
passes <= 0.6 of off's (its schedule follows the ratio table: on the tiny
preset, a flat one). TeaCache's skips depend on the weights: its pass count on
random weights is printed, not judged.

--full: the full-size model on a GPU, per memory mode: runs benchmarks/gpu.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # run as a script from anywhere

import argparse  # noqa: E402
import contextlib  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, replace  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from framepack.engine.buckets import find_nearest_bucket, resize_and_center_crop  # noqa: E402
from framepack.engine.engine import FramePackEngine  # noqa: E402
from framepack.engine.events import Done, Step  # noqa: E402
from framepack.engine.params import GenerationParams  # noqa: E402
from framepack.models.components import Components  # noqa: E402
from framepack.video.encode import encode_mp4  # noqa: E402

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


def pipeline_for(components: Components) -> Any:
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
    pipe: Any, components: Components, params: GenerationParams, image: Image.Image, *,
    write_mp4: bool,
) -> np.ndarray:  # fmt: skip
    """The pipeline as its users call it: the prompt and the cropped picture, its own
    encodings, Euler, uint8 frames rounded from its floats."""
    rgb = np.asarray(image.convert("RGB"))
    height, width = find_nearest_bucket(*rgb.shape[:2], resolution=params.resolution)
    window_frames = (params.latent_window - 1) * 4 + 1
    frames = pipe(
        image=Image.fromarray(resize_and_center_crop(rgb, width, height)), prompt=params.prompt,
        height=height, width=width, num_frames=params.sections() * window_frames,
        latent_window_size=params.latent_window, num_inference_steps=params.steps,
        guidance_scale=params.guidance, generator=torch.Generator().manual_seed(params.seed),
        output_type="np", prompt_template=components.prompt_template,
        sampling_type="inverted_anti_drifting" if params.sampler == "inverted" else "vanilla",
    ).frames[0]  # fmt: skip
    video = np.round(frames * 255).astype(np.uint8)
    if write_mp4:
        with tempfile.TemporaryDirectory() as folder:
            encode_mp4(video, Path(folder) / "video.mp4", fps=params.fps, crf=params.crf)
    return video


@dataclass(frozen=True)
class Target:
    name: str
    numerator: str
    denominator: str
    limit: float

    def verdict(self, best: dict[str, float]) -> tuple[bool, str]:
        ratio = best[self.numerator] / best[self.denominator]
        met = ratio <= self.limit
        return (
            met,
            f"target: {self.name} <= {self.limit}: {'met' if met else 'MISSED'} ({ratio:.3f})",
        )


TARGETS = (
    Target("engine (unipc) / (pipeline + mp4), best wall", "engine unipc", "pipeline + mp4", 1.05),
    Target("engine unipc / engine euler, best wall", "engine unipc", "engine euler", 1.05),
    Target("engine teacache / engine off, best wall", "engine teacache", "engine unipc", 1.0),
    Target("engine magcache / engine off, best wall", "engine magcache", "engine unipc", 1.0),
)
CACHE_JOBS = {"off": "engine unipc", "teacache": "engine teacache", "magcache": "engine magcache"}
MAGCACHE_PASSES = Target("magcache / off block-stack passes", "magcache", "off", 0.6)


# --- tiny preset on the CPU --------------------------------------------------------------


def tiny(args: argparse.Namespace) -> int:
    from framepack.models.tiny import build_tiny_components

    components = build_tiny_components()
    engine = FramePackEngine(components, device="cpu")
    pipe = pipeline_for(components)
    params = GenerationParams(
        prompt=PROMPT, seconds=args.seconds, steps=args.steps, seed=1, sampler=args.sampler,
        resolution=128,
    )  # fmt: skip
    euler = replace(params, scheduler="euler")
    image = test_picture(608, 640)
    warm = replace(params, seconds=1.0, steps=1)
    render_with_engine(engine, warm, image)
    render_with_pipeline(pipe, components, warm, image, write_mp4=True)

    passes: dict[str, int] = {}  # block-stack passes of a job, per cache

    def cached(cache: str) -> Callable[[], object]:
        job = replace(params, cache=cache)

        def run() -> None:
            before = engine.block_passes.count
            render_with_engine(engine, job, image)
            passes[cache] = engine.block_passes.count - before

        return run

    jobs: dict[str, Callable[[], object]] = {
        "engine unipc": cached("off"),
        "engine euler": lambda: render_with_engine(engine, euler, image),
        "pipeline + mp4": lambda: render_with_pipeline(
            pipe, components, euler, image, write_mp4=True
        ),
        "pipeline alone": lambda: render_with_pipeline(
            pipe, components, euler, image, write_mp4=False
        ),
        "engine teacache": cached("teacache"),
        "engine magcache": cached("magcache"),
    }
    runs: dict[str, list[Measure]] = {name: [] for name in jobs}
    for _ in range(args.repeats):
        for name, job in jobs.items():
            runs[name].append(measure(job))

    print(
        f"tiny preset, CPU ({torch.get_num_threads()} threads), {params.sections()} sections x "
        f"{params.steps} steps, {params.sampler}, 128 bucket, {args.repeats} runs each"
    )
    heads = ("best wall s", "median wall s", "median cpu s", "peak RSS MiB")
    print(f"{'':16} {heads[0]:>12} {heads[1]:>14} {heads[2]:>13} {heads[3]:>13}")
    best = {name: min(m.wall for m in ms) for name, ms in runs.items()}
    median = {name: statistics.median(m.wall for m in ms) for name, ms in runs.items()}
    cpu = {name: statistics.median(m.cpu for m in ms) for name, ms in runs.items()}
    for name, ms in runs.items():
        rss = max(m.peak_rss for m in ms) / 2**20
        print(f"{name:16} {best[name]:12.2f} {median[name]:14.2f} {cpu[name]:13.2f} {rss:13.0f}")
    for numerator, base in (
        ("engine unipc", "engine euler"),
        ("engine unipc", "pipeline + mp4"),
        ("engine euler", "pipeline + mp4"),
        ("engine unipc", "pipeline alone"),
    ):
        print(
            f"{numerator} / {base + ':':15} best wall {best[numerator] / best[base]:.3f}, "
            f"median wall {median[numerator] / median[base]:.3f}, "
            f"median cpu {cpu[numerator] / cpu[base]:.3f}"
        )
    sections = params.sections()
    print(f"step caches (engine unipc, default thresholds), {params.steps} steps a section:")
    for cache, name in CACHE_JOBS.items():
        print(
            f"  {cache:9} block-stack passes per section {passes[cache] / sections:6.2f}, "
            f"best wall {best[name]:.2f} s, {best['engine unipc'] / best[name]:.2f}x off"
        )
    verdicts = [target.verdict(best) for target in TARGETS]
    verdicts.append(MAGCACHE_PASSES.verdict({c: float(n) for c, n in passes.items()}))
    for _met, line in verdicts:
        print(line)
    print("rerun: python benchmarks/engine.py " + " ".join(sys.argv[1:]))
    return 0 if all(met for met, _ in verdicts) else 1


# --- LoRA adapters: attach once, switch per job -------------------------------------------

SWITCH_SHARE = 0.01  # target: switching adapters costs at most this share of a section


def write_random_lora(path: Path, transformer: torch.nn.Module, *, rank: int, seed: int) -> Path:
    """A LoRA over every linear layer of the transformer's blocks, in the original naming
    (fused q/k/v and linear1 as such), random, as a .safetensors file."""
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)

    def small(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * 0.01

    original = {
        "attn.to_q": "img_attn_qkv", "attn.add_q_proj": "txt_attn_qkv",
        "attn.to_out.0": "img_attn_proj", "attn.to_add_out": "txt_attn_proj",
        "ff.net.0.proj": "img_mlp.fc1", "ff.net.2": "img_mlp.fc2",
        "ff_context.net.0.proj": "txt_mlp.fc1", "ff_context.net.2": "txt_mlp.fc2",
    }  # fmt: skip
    fused_rows = {"img_attn_qkv": 3, "txt_attn_qkv": 3}
    tensors: dict[str, torch.Tensor] = {}
    for i, block in enumerate(transformer.transformer_blocks):
        for module, name in original.items():
            layer = block.get_submodule(module)
            rows = layer.out_features * fused_rows.get(name, 1)
            key = f"diffusion_model.double_blocks.{i}.{name}"
            tensors[f"{key}.lora_A.weight"] = small(rank, layer.in_features)
            tensors[f"{key}.lora_B.weight"] = small(rows, rank)
    for i, block in enumerate(transformer.single_transformer_blocks):
        hidden = block.attn.to_q.in_features
        rows = 3 * block.attn.to_q.out_features + block.proj_mlp.out_features
        for name, (inputs, outputs) in {
            "linear1": (hidden, rows),
            "linear2": (block.proj_out.in_features, block.proj_out.out_features),
        }.items():
            key = f"diffusion_model.single_blocks.{i}.{name}"
            tensors[f"{key}.lora_A.weight"] = small(rank, inputs)
            tensors[f"{key}.lora_B.weight"] = small(outputs, rank)
    save_file(tensors, str(path))
    return path


def lora(args: argparse.Namespace) -> int:
    from framepack.models.tiny import build_tiny_components

    components = build_tiny_components()
    with tempfile.TemporaryDirectory() as folder:
        files = {
            name: write_random_lora(Path(folder) / f"{name}.safetensors",
                                    components.transformer, rank=16, seed=seed)
            for seed, name in enumerate(("first", "second"))
        }  # fmt: skip
        start = time.perf_counter()
        engine = FramePackEngine(components, device="cpu", loras=files)
        attach = time.perf_counter() - start
    params = GenerationParams(
        prompt=PROMPT, seconds=args.seconds, steps=args.steps, seed=1, resolution=128
    )
    first = replace(params, loras=(("first", 1.0),))
    second = replace(params, loras=(("second", 0.8),))
    image = test_picture(608, 640)
    render_with_engine(engine, replace(first, seconds=1.0, steps=1), image)  # warm up

    switches: list[float] = []
    for _ in range(20):  # first -> second -> none -> first: each a job's switch
        for job in (second, params, first):
            start = time.perf_counter()
            engine.use_loras(job)
            switches.append(time.perf_counter() - start)
    sections = params.sections()
    runs: dict[str, list[float]] = {"without LoRA": [], "with a LoRA": [], "with two LoRAs": []}
    both = replace(params, loras=(("first", 1.0), ("second", 0.8)))
    for _ in range(args.repeats):
        for name, job in zip(runs, (params, first, both), strict=True):
            runs[name].append(measure(lambda job=job: render_with_engine(engine, job, image)).wall)
    section = {name: min(walls) / sections for name, walls in runs.items()}
    switch = statistics.median(switches)

    print(
        f"tiny preset, CPU ({torch.get_num_threads()} threads), {sections} sections x "
        f"{params.steps} steps, 128 bucket, two rank-16 LoRAs over every block linear layer"
    )
    print(f"attach both LoRAs once (read, convert, load): {attach * 1000:.0f} ms")
    print(
        f"switch adapters between two jobs: {switch * 1000:.2f} ms median, "
        f"{max(switches) * 1000:.2f} ms worst of {len(switches)}"
    )
    for name, seconds in section.items():
        print(f"one section {name + ':':16} {seconds:.3f} s (best of {args.repeats} runs)")
    base = section["without LoRA"]
    print(
        f"a LoRA's cost per section: {section['with a LoRA'] / base - 1:+.1%} "
        f"(two: {section['with two LoRAs'] / base - 1:+.1%})"
    )
    share = switch / section["with a LoRA"]
    met = share <= SWITCH_SHARE
    print(
        f"target: switch <= {SWITCH_SHARE:.0%} of a section: {'met' if met else 'MISSED'} "
        f"({share:.4%})"
    )
    print("rerun: python benchmarks/engine.py " + " ".join(sys.argv[1:]))
    return 0 if met else 1


def full(argv: list[str]) -> int:
    """The full-size benchmark (benchmarks/gpu.py), with the rest of the arguments."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "benchmark_gpu", Path(__file__).with_name("gpu.py")
    )
    assert spec is not None and spec.loader is not None
    gpu = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = gpu  # dataclasses look their module up
    spec.loader.exec_module(gpu)
    return gpu.main(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--full" in argv:
        return full([a for a in argv if a != "--full"])
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--full", action="store_true", help="full size on a GPU: benchmarks/gpu.py")
    parser.add_argument("--lora", action="store_true", help="LoRA adapters: attach, switch")
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
    return lora(args) if args.lora else tiny(args)


if __name__ == "__main__":
    sys.exit(main())
