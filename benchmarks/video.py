"""Delivered copies: fit_to_size against a plain two-pass x264 encode at the same limit.

For clips of --seconds at a 640-bucket size (832x480), encoded as the engine
encodes its videos (CRF 16), fitted to each of --limits MiB: the share of the
limit used, SSIM to the source over the whole clip and over its first second,
beside the same figures of a two-pass encode made with ffmpeg's command line at
the bitrate the limit allows, and the CPU time of both. The footage is real
where Debian's opencv-doc is installed (its sample videos, looped to length,
`apt-get install opencv-doc`), else a synthetic moving pattern (said so).

Targets: >= 95 % of the limit used; SSIM, whole and first second, within 0.002
of the two-pass encode (or better); CPU <= 1.2x the two-pass encode. Exits 1
when a target is missed.

    python benchmarks/video.py [--seconds 5 10 30 60] [--limits 10 5 2 1]
"""

from __future__ import annotations

import argparse
import functools
import re
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from framepack.video.encode import encode_mp4
from framepack.video.ffmpeg import COLOUR_FRAMES, COLOUR_TAGS, ffmpeg_exe
from framepack.video.fit import fit_to_size
from framepack.video.probe import packets

MIB = 1 << 20
WIDTH, HEIGHT, FPS = 832, 480, 30
FOOTAGE = Path("/usr/share/doc/opencv-doc/examples/data")
FOOTAGE_FILES = ("vtest.avi", "Megamind.avi", "tree.avi")
USE, SSIM_SLACK, CPU_RATIO = 0.95, 0.002, 1.2


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def source_clip(seconds: float, out: Path) -> str:
    """The clip the engine would have written: real footage where installed, looped."""
    found = [FOOTAGE / name for name in FOOTAGE_FILES if (FOOTAGE / name).is_file()]
    vf = (
        f"fps={FPS},scale={WIDTH}:{HEIGHT}:force_original_aspect_ratio=increase,"
        f"crop={WIDTH}:{HEIGHT}"
    )
    if found:
        inputs = []
        for path in found:
            inputs += ["-stream_loop", "-1", "-i", str(path)]
        chains = ";".join(f"[{i}:v]{vf},setsar=1[v{i}]" for i in range(len(found)))
        joined = "".join(f"[v{i}]" for i in range(len(found)))
        graph = f"{chains};{joined}concat=n={len(found)}:v=1:a=0[c]"
        raw = subprocess.run(
            [ffmpeg_exe(), "-v", "error", *inputs, "-filter_complex",
             f"{graph};[c]trim=duration={seconds}[o]", "-map", "[o]", "-t", str(seconds),
             "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"],
            capture_output=True, check=True,
        ).stdout  # fmt: skip
        frames = np.frombuffer(raw, np.uint8).reshape(-1, HEIGHT, WIDTH, 3)
        what = "real footage (" + ", ".join(p.name for p in found) + ")"
    else:
        frames = synthetic(int(seconds * FPS))
        what = "synthetic pattern (install opencv-doc for real footage)"
    encode_mp4(np.ascontiguousarray(frames[: int(seconds * FPS)]), out, crf=16)
    return what


def synthetic(count: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    clip = np.empty((count, HEIGHT, WIDTH, 3), np.uint8)
    for t in range(count):
        rgb = np.stack(
            [128 + 100 * np.sin((x + 4 * t) / 37), 128 + 100 * np.cos((y - 3 * t) / 23),
             128 + 60 * np.sin((x + y + 5 * t) / 51)],
            axis=-1,
        )  # fmt: skip
        clip[t] = np.clip(rgb + rng.normal(0, 6, (HEIGHT, WIDTH, 1)), 0, 255).astype(np.uint8)
    return clip


def two_pass(src: Path, dst: Path, limit: int, scratch: Path) -> None:
    """The reference: ffmpeg's own two-pass at the average rate the limit allows."""
    stream = packets(src)
    container = src.stat().st_size - sum(stream.sizes)
    kbps = int((limit - container) * 8 * 0.975 / float(stream.seconds) / 1000)
    common = [
        "-map", "0:v:0", "-an", "-c:v", "libx264", "-preset", "medium", "-b:v", f"{kbps}k",
        "-vf", f"format=yuv420p,{COLOUR_FRAMES}", *COLOUR_TAGS,
        "-passlogfile", str(scratch / "ref"),
    ]  # fmt: skip
    base = [ffmpeg_exe(), "-v", "error", "-nostdin", "-y", "-i", str(src)]
    subprocess.run([*base, *common, "-pass", "1", "-f", "null", "-"], check=True)
    subprocess.run([*base, *common, "-pass", "2", "-movflags", "+faststart", str(dst)], check=True)


def ssim(reference: Path, copy: Path, seconds: float | None = None) -> float:
    trim = f"trim=duration={seconds}," if seconds else ""
    graph = (
        f"[0:v]{trim}scale={WIDTH}:{HEIGHT},format=yuv420p[a];"
        f"[1:v]{trim}format=yuv420p[b];[a][b]ssim"
    )
    proc = subprocess.run(
        [ffmpeg_exe(), "-v", "info", "-nostdin", "-i", str(copy), "-i", str(reference),
         "-lavfi", graph, "-f", "null", "-"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return float(re.findall(r"All:([0-9.]+)", proc.stderr)[-1])


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    before = children_cpu()
    fn()
    return children_cpu() - before


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[5, 10, 30, 60])
    parser.add_argument("--limits", type=float, nargs="+", default=[10, 5, 2, 1], help="MiB")
    args = parser.parse_args()
    missed: list[str] = []
    print(
        f"{'clip':>6} {'limit':>8} {'used':>6} {'SSIM':>7} {'ref':>7} {'1st s':>7} {'ref':>7} "
        f"{'CPU s':>7} {'ref s':>7}"
    )
    with tempfile.TemporaryDirectory(prefix="fpb-video-bench-") as tmp_name:
        tmp = Path(tmp_name)
        for seconds in args.seconds:
            src = tmp / f"src-{seconds:g}.mp4"
            what = source_clip(seconds, src)
            for mib in args.limits:
                limit = int(mib * MIB)
                label = f"{seconds:g} s"
                if src.stat().st_size <= limit:
                    print(f"{label:>6} {mib:>5g} MiB  fits as it is ({src.stat().st_size} B)")
                    continue
                ours, ref = tmp / "ours.mp4", tmp / "ref.mp4"
                started = time.perf_counter()
                cpu_ours = timed(functools.partial(fit_to_size, src, ours, limit))
                cpu_ref = timed(functools.partial(two_pass, src, ref, limit, tmp))
                used = ours.stat().st_size / limit
                s_ours, s_ref = ssim(src, ours), ssim(src, ref)
                f_ours, f_ref = ssim(src, ours, 1.0), ssim(src, ref, 1.0)
                print(
                    f"{label:>6} {mib:>5g} MiB {used:>6.1%} {s_ours:>7.4f} {s_ref:>7.4f} "
                    f"{f_ours:>7.4f} {f_ref:>7.4f} {cpu_ours:>7.1f} {cpu_ref:>7.1f}"
                    f"   ({time.perf_counter() - started:.0f} s)"
                )
                checks = {
                    f"{label} at {mib:g} MiB: >= {USE:.0%} of the limit used": used >= USE,
                    f"{label} at {mib:g} MiB: SSIM within {SSIM_SLACK} of two-pass": (
                        s_ours >= s_ref - SSIM_SLACK
                    ),
                    f"{label} at {mib:g} MiB: first second within {SSIM_SLACK}": (
                        f_ours >= f_ref - SSIM_SLACK
                    ),
                    f"{label} at {mib:g} MiB: CPU <= {CPU_RATIO}x two-pass": (
                        cpu_ours <= CPU_RATIO * cpu_ref
                    ),
                    f"{label} at {mib:g} MiB: within the limit": used <= 1.0,
                }
                missed += [name for name, ok in checks.items() if not ok]
        print(f"\nfootage: {what}")
    targets = ("used >= 95 %", "SSIM and first-second SSIM within 0.002", "CPU <= 1.2x")
    print(f"targets ({'; '.join(targets)}): {'met' if not missed else 'MISSED'}")
    for name in missed:
        print(f"  MISSED {name}")
    print("rerun: python benchmarks/video.py " + shlex.join(sys.argv[1:]))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
