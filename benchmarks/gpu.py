"""The full-size model on one GPU, per memory mode, in minutes.

    python benchmarks/gpu.py [--steps 8] [--modes high,low,offload,pipeline]
                             [--caches off,teacache,magcache] [--cache-modes high]
                             [--results gpu_benchmark.jsonl] [--budget 470]
    python benchmarks/gpu.py --dry-run    # the same code path on the CPU, tiny model

The released architecture (framepack/models/configs.py: 13B transformer, Llama 3
8B, CLIP-L, SigLIP, HunyuanVideo VAE) with random weights, built directly in
bf16/fp16 on the GPU (no float32 copy, nothing downloaded; for `low` and
`offload` the built weights then move to the host, one model at a time). One
section at the 640x608 bucket (latent window 9), `--steps` steps, in the order
high, low, offload, then diffusers' HunyuanVideoFramepackPipeline, each in a
process of its own with its own timeout (clean counters, no hooks left over, and a
crash or a hang costs one row, never the run). Each row is printed and appended
to `--results` (one JSON line) as soon as it is measured, so a killed run keeps
what it measured; a mode that crashes or times out is a row that says so.

Per row: seconds per step (between the first and the last step: the first pays
for warm-up), the job's seconds, peak `torch.cuda.max_memory_allocated`, the peak
of device memory in use by `mem_get_info` above what was in use before the
process started (so the CUDA context and the allocator's cache count, as they
do on a 6 GB card), and the process's peak host RSS.

Step caches: in each of `--cache-modes` (default high), after the uncached job the
same job with each of `--caches`, on the same engine: its s/step and block-stack
passes, printed under the mode's row as "+teacache" and so on (kept in the row's
"caches"). MagCache's skips follow FramePack-Studio's ratio table, so its s/step
on random weights is what the real model gets; TeaCache's depend on the weights.

Targets (one H100-class GPU): high <= 1.2 s/step at the 640 bucket; low <= 6 GiB
by mem_get_info. Each is printed met/MISSED; the exit status is 1 when a judged
target is missed or a mode crashed or timed out. The whole run stays within
`--budget` seconds (8 minutes by default).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # run as a script from anywhere

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

MODES = ("high", "low", "offload", "pipeline")
TIMEOUT_S = {"high": 100, "low": 160, "offload": 100, "pipeline": 100}
BUDGET_S = 470  # under 8 minutes in all
GIB = 1 << 30
PROMPT = "A cat walks through tall grass, the camera follows it slowly."
HEIGHT, WIDTH = 608, 640  # a 640 bucket
NO_CUDA = (
    "benchmarks/gpu.py needs a CUDA GPU and PyTorch sees none; run it on the GPU host, "
    "or with --dry-run to check its code path on this CPU"
)


@dataclass(frozen=True)
class Target:
    mode: str
    key: str
    limit: float
    what: str

    def judge(self, rows: dict[str, dict[str, Any]]) -> str:
        row = rows.get(self.mode)
        if row is None:
            return "not run"
        if row["status"] != "ok":
            return f"MISSED ({row['status']})"
        value = row.get(self.key)
        if value is None:
            return "not judged (not measured here)"
        return f"{'met' if value <= self.limit else 'MISSED'} ({value:.2f})"


TARGETS = (
    Target("high", "s_per_step", 1.2, "high mode s/step at the 640 bucket <= 1.2"),
    Target("low", "mem_delta_gib", 6.0, "low mode GiB by mem_get_info <= 6"),
)


# --- one mode, in its own process -------------------------------------------------------------


def peak_rss_gib() -> float:
    """Peak resident memory of this process (Linux VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / GIB
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB


class DeviceMemory:
    """The peak of device memory in use (`mem_get_info`), sampled in the background."""

    def __init__(self, device: torch.device, interval: float = 0.02) -> None:
        self.device, self.interval = device, interval
        self.peak_used = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.read()
            self._stop.wait(self.interval)

    def read(self) -> None:
        free, total = torch.cuda.mem_get_info(self.device)
        self.peak_used = max(self.peak_used, total - free)

    def __enter__(self) -> DeviceMemory:
        self.read()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.read()


def sample_picture(height: int, width: int) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    rgb = np.stack([np.sin(7 * x) * 0.5 + 0.5, np.cos(5 * y) * 0.5 + 0.5, x * y], axis=-1)
    return Image.fromarray((rgb * 255).astype(np.uint8))


def build(mode: str, device: torch.device, dry_run: bool) -> Any:
    """The components for `mode`: on the GPU for high and the pipeline, on the host for
    the modes that place them themselves."""
    if dry_run:
        from framepack.models.tiny import build_tiny_components

        return build_tiny_components()
    from framepack.models.full_size import build_full_size

    components = build_full_size("framepack", device=device)
    if mode in ("low", "offload"):
        for model in components.models().values():
            model.to("cpu")
        torch.cuda.empty_cache()
    return components


def run_engine(
    components: Any,
    mode: str,
    device: torch.device,
    steps: int,
    resolution: int,
    caches: tuple[str, ...] = ("off",),
) -> dict[str, tuple[list[float], int]]:
    """Per cache, in order, on one engine: the stamps of the job's steps and the block
    stack's passes."""
    from framepack.engine.engine import FramePackEngine
    from framepack.engine.events import Step
    from framepack.engine.params import GenerationParams

    engine = FramePackEngine(components, device=device, memory=mode)
    out: dict[str, tuple[list[float], int]] = {}
    for cache in caches:
        params = GenerationParams(
            prompt=PROMPT, seconds=1.0, steps=steps, resolution=resolution, cache=cache
        )
        stamps = []
        before = engine.block_passes.count
        with tempfile.TemporaryDirectory() as workdir:
            picture = sample_picture(HEIGHT, WIDTH)
            for event in engine.generate(params, picture, workdir=Path(workdir)):
                if isinstance(event, Step):
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    stamps.append(time.perf_counter())
        out[cache] = (stamps, engine.block_passes.count - before)
    return out


def per_step(stamps: list[float]) -> float | None:
    """Seconds per step between the first and the last step (the first pays for warm-up)."""
    return (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else None


def run_pipeline(components: Any, device: torch.device, steps: int, resolution: int) -> list[float]:
    from diffusers import HunyuanVideoFramepackPipeline

    from framepack.engine.buckets import find_nearest_bucket, resize_and_center_crop

    pipe = HunyuanVideoFramepackPipeline(**components.pipeline_parts()).to(device)
    pipe.set_progress_bar_config(disable=True)
    rgb = np.asarray(sample_picture(HEIGHT, WIDTH))
    height, width = find_nearest_bucket(*rgb.shape[:2], resolution=resolution)
    stamps = []

    def on_step(_pipe: Any, _i: int, _t: Any, kwargs: dict) -> dict:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        stamps.append(time.perf_counter())
        return kwargs

    pipe(
        image=Image.fromarray(resize_and_center_crop(rgb, width, height)), prompt=PROMPT,
        height=height, width=width, num_frames=33, num_inference_steps=steps,
        guidance_scale=10.0, generator=torch.Generator().manual_seed(0), output_type="np",
        prompt_template=components.prompt_template, callback_on_step_end=on_step,
    )  # fmt: skip
    return stamps


def measure(
    mode: str,
    *,
    steps: int,
    dry_run: bool,
    baseline_used: int | None,
    fail: str,
    caches: tuple[str, ...] = ("off",),
) -> dict:
    device = torch.device("cpu" if dry_run else "cuda")
    resolution = 128 if dry_run else 640
    start = time.perf_counter()
    components = build(mode, device, dry_run)
    built = time.perf_counter()
    if fail == mode:
        raise RuntimeError(f"failure injected in {mode} by --fail")
    memory = DeviceMemory(device) if device.type == "cuda" else None
    if memory is not None:
        torch.cuda.reset_peak_memory_stats(device)
    cached: dict[str, tuple[list[float], int]] = {}
    with memory if memory is not None else contextlib.nullcontext():
        if mode == "pipeline":
            stamps = run_pipeline(components, device, steps, resolution)
        else:
            jobs = run_engine(
                components,
                mode,
                device,
                steps,
                resolution,
                ("off", *(c for c in caches if c != "off")),
            )
            stamps, _passes = jobs.pop("off")
            cached = jobs
    done = time.perf_counter()
    row: dict[str, Any] = {
        "mode": mode, "status": "ok", "steps": len(stamps), "s_per_step": per_step(stamps),
        "job_s": done - built, "build_s": built - start, "peak_rss_gib": peak_rss_gib(),
        "peak_allocated_gib": None, "mem_delta_gib": None, "device": "cpu (dry run)",
    }  # fmt: skip
    if cached:  # the uncached job's memory peaks above; these add their pace
        row["caches"] = {
            cache: {"s_per_step": per_step(s), "passes": passes}
            for cache, (s, passes) in cached.items()
        }
    if memory is not None:
        row["peak_allocated_gib"] = torch.cuda.max_memory_allocated(device) / GIB
        row["mem_delta_gib"] = (memory.peak_used - (baseline_used or 0)) / GIB
        row["device"] = torch.cuda.get_device_name(device)
        if baseline_used is None:
            row["note"] = "no nvidia-smi: the delta includes other processes' memory"
    return row


# --- the whole run ----------------------------------------------------------------------------


def device_memory_used() -> int | None:
    """Bytes in use on GPU 0 before a mode's process starts, without a CUDA context here."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
            capture_output=True, text=True, timeout=20, check=True,
        )  # fmt: skip
        return int(out.stdout.strip().splitlines()[0]) * (1 << 20)
    except (subprocess.SubprocessError, ValueError, IndexError):
        return None


def run_mode(mode: str, args: argparse.Namespace, timeout: float) -> dict[str, Any]:
    baseline = None if args.dry_run else device_memory_used()
    command = [sys.executable, __file__, "--one", mode, "--steps", str(args.steps)]
    command += ["--dry-run"] if args.dry_run else []
    command += ["--baseline-used", str(baseline)] if baseline is not None else []
    command += ["--fail", args.fail] if args.fail else []
    command += ["--caches", args.caches if mode in args.cache_modes.split(",") else "off"]
    started = time.perf_counter()
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"mode": mode, "status": f"timed out after {timeout:.0f} s"}
    seconds = time.perf_counter() - started
    lines = out.stdout.strip().splitlines()
    if out.returncode == 0 and lines:
        try:
            return json.loads(lines[-1]) | {"process_s": seconds}
        except json.JSONDecodeError:
            pass
    last = (out.stderr.strip().splitlines() or ["no output"])[-1]
    return {"mode": mode, "status": f"crashed (exit {out.returncode}): {last[-300:]}"}


def describe(row: dict[str, Any]) -> str:
    def number(key: str, fmt: str) -> str:
        value = row.get(key)
        return "-" if value is None else format(value, fmt)

    if row["status"] != "ok":
        return f"{row['mode']:9} {row['status']}"
    line = (
        f"{row['mode']:9} {number('s_per_step', '.3f'):>8} {number('job_s', '.1f'):>8} "
        f"{number('peak_allocated_gib', '.2f'):>10} {number('mem_delta_gib', '.2f'):>10} "
        f"{number('peak_rss_gib', '.2f'):>9}"
    )
    for cache, measured in row.get("caches", {}).items():
        pace = measured["s_per_step"]
        speedup = row["s_per_step"] / pace if pace and row.get("s_per_step") else None
        line += (
            f"\n  +{cache:8} {'-' if pace is None else format(pace, '.3f'):>7} s/step, "
            f"{measured['passes']} of {row['steps']} block-stack passes"
            + ("" if speedup is None else f", {speedup:.2f}x off")
        )
    return line


HEADER = f"{'mode':9} {'s/step':>8} {'job s':>8} {'alloc GiB':>10} {'used GiB':>10} {'RSS GiB':>9}"


def run_all(args: argparse.Namespace) -> int:
    modes = [m for m in MODES if m in args.modes.split(",")]
    unknown = set(args.modes.split(",")) - set(MODES)
    if unknown:
        print(f"unknown mode(s) {', '.join(sorted(unknown))}; choose from {', '.join(MODES)}")
        return 2
    results = Path(args.results)
    deadline = time.perf_counter() + args.budget
    what = "tiny model on the CPU (dry run)" if args.dry_run else "full-size random model"
    print(
        f"{what}, {HEIGHT}x{WIDTH} picture, latent window 9, {args.steps} steps; rows -> {results}"
    )
    print(HEADER, flush=True)
    rows: dict[str, dict[str, Any]] = {}
    for mode in modes:
        remaining = deadline - time.perf_counter()
        if remaining < 20:
            row = {"mode": mode, "status": "skipped: the run's time budget is spent"}
        else:
            row = run_mode(mode, args, min(TIMEOUT_S[mode] * args.timeout_scale, remaining))
        rows[mode] = row
        with results.open("a") as file:
            file.write(json.dumps(row | {"time": time.time()}) + "\n")
        print(describe(row), flush=True)
    if "pipeline" in rows and "high" in rows and rows["high"].get("s_per_step"):
        pipeline = rows["pipeline"].get("s_per_step")
        if pipeline:
            print(f"engine high / pipeline s/step: {rows['high']['s_per_step'] / pipeline:.3f}")
    missed = False
    for target in TARGETS:
        verdict = target.judge(rows) if not args.dry_run else "not judged (dry run)"
        missed |= verdict.startswith("MISSED")
        print(f"target: {target.what}: {verdict}")
    print("rerun: python benchmarks/gpu.py " + " ".join(sys.argv[1:]))
    crashed = any(r["status"] != "ok" for r in rows.values())
    return 1 if missed or crashed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--modes", default=",".join(MODES), help="a subset, run in this order")
    parser.add_argument("--results", default="gpu_benchmark.jsonl", help="rows appended here")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for the run")
    parser.add_argument(
        "--timeout-scale", type=float, default=1.0, help="multiplies each mode's timeout"
    )
    parser.add_argument(
        "--caches", default="off,teacache,magcache", help="step caches timed after each job"
    )
    parser.add_argument(
        "--cache-modes", default="high", help="the memory modes whose rows time the caches"
    )
    parser.add_argument("--dry-run", action="store_true", help="tiny model on the CPU")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # a mode's process
    parser.add_argument("--baseline-used", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--fail", default="", help=argparse.SUPPRESS)  # tests: crash a mode
    args = parser.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print(NO_CUDA, file=sys.stderr)
        return 2
    if args.one:
        caches = tuple(c for c in args.caches.split(",") if c)
        row = measure(
            args.one, steps=args.steps, dry_run=args.dry_run, baseline_used=args.baseline_used,
            fail=args.fail, caches=caches,
        )  # fmt: skip
        print(json.dumps(row))
        return 0
    return run_all(args)


if __name__ == "__main__":
    sys.exit(main())
