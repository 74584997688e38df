"""encode_mp4 against the plain ffmpeg command line on the same frames, and fit_to_size.

    python benchmarks/video.py [--frames 61] [--height 480] [--width 832] [--repeats 2]

The baselines read the same frames from disk (a PNG sequence, and one raw RGB
file) with the same x264 settings (CRF 16, preset medium, yuv420p, faststart);
writing those files is not timed. Each figure is the median of --repeats runs:
wall seconds, and CPU seconds of this process and its ffmpeg children together
(steadier than wall time on a machine that other work shares).
"""

from __future__ import annotations

import argparse
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from framepack.video.encode import encode_mp4
from framepack.video.ffmpeg import ffmpeg_exe
from framepack.video.fit import fit_to_size
from framepack.video.probe import probe, read_frames


def make_clip(frames: int, height: int, width: int) -> np.ndarray:
    """A moving gradient with grain: compresses like a generated video, not like flat colour."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    clip = np.empty((frames, height, width, 3), np.uint8)
    for t in range(frames):
        r = 128 + 100 * np.sin((x + 4 * t) / 37)
        g = 128 + 100 * np.cos((y - 3 * t) / 23)
        b = 128 + 60 * np.sin((x + y + 5 * t) / 51)
        grain = rng.normal(0, 2, (height, width, 1))
        clip[t] = np.clip(np.stack([r, g, b], -1) + grain, 0, 255).astype(np.uint8)
    return clip


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median (wall seconds, CPU seconds) of `repeats` calls of `fn`."""
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), _cpu_seconds()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(_cpu_seconds() - cpu)
    return statistics.median(walls), statistics.median(cpus)


# encode_mp4's settings, so that the only difference is where the frames come from.
X264 = ["-c:v", "libx264", "-preset", "medium", "-crf", "16",
        "-vf", "scale=out_color_matrix=bt709:out_range=tv,format=yuv420p",
        "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709",
        "-color_range", "tv", "-movflags", "+faststart"]  # fmt: skip


def row(name: str, wall: float, cpu: float, extra: str = "") -> None:
    print(f"{name:<36} {wall:7.2f} s wall {cpu:7.2f} s CPU  {extra}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=61)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    clip = make_clip(args.frames, args.height, args.width)
    ffmpeg = ffmpeg_exe()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for i, frame in enumerate(clip):
            Image.fromarray(frame).save(tmp / f"{i:05d}.png", compress_level=1)
        (tmp / "frames.rgb").write_bytes(clip.tobytes())
        ours_path, png_path, raw_path = tmp / "ours.mp4", tmp / "png.mp4", tmp / "raw.mp4"

        ours = timed(lambda: encode_mp4(clip, ours_path), args.repeats)
        fast_path = tmp / "veryfast.mp4"
        fast = timed(lambda: encode_mp4(clip, fast_path, preset="veryfast"), args.repeats)
        png_cmd = [ffmpeg, "-v", "error", "-nostdin", "-y", "-framerate", "30",
                   "-i", str(tmp / "%05d.png"), *X264, str(png_path)]  # fmt: skip
        raw_cmd = [ffmpeg, "-v", "error", "-nostdin", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
                   "-s", f"{args.width}x{args.height}", "-r", "30",
                   "-i", str(tmp / "frames.rgb"), *X264, str(raw_path)]  # fmt: skip
        png = timed(lambda: subprocess.run(png_cmd, check=True), args.repeats)
        raw = timed(lambda: subprocess.run(raw_cmd, check=True), args.repeats)
        probed = timed(lambda: probe(ours_path), args.repeats)
        decoded = timed(lambda: read_frames(ours_path), args.repeats)

        size = ours_path.stat().st_size
        limit = size // 3
        fitted_path = tmp / "fitted.mp4"
        fit = timed(lambda: fit_to_size(ours_path, fitted_path, limit), args.repeats)
        info, fitted = probe(ours_path), probe(fitted_path)
        assert fitted_path.stat().st_size <= limit and fitted.frames == info.frames

        same = ours_path.read_bytes() == raw_path.read_bytes()
        print(f"clip: {info.frames} frames {info.width}x{info.height} at {info.fps:g} fps, "
              f"{info.duration:.2f} s; median of {args.repeats}")  # fmt: skip
        row("encode_mp4 (numpy frames piped)", *ours, f"{size / 1e6:.2f} MB")
        row("ffmpeg CLI, PNG sequence on disk", *png,
            f"{png_path.stat().st_size / 1e6:.2f} MB  ours/png wall {ours[0] / png[0]:.2f} "
            f"CPU {ours[1] / png[1]:.2f}")  # fmt: skip
        row("ffmpeg CLI, raw RGB file on disk", *raw,
            f"{raw_path.stat().st_size / 1e6:.2f} MB  ours/raw wall {ours[0] / raw[0]:.2f} "
            f"CPU {ours[1] / raw[1]:.2f}  same bytes as ours: {same}")  # fmt: skip
        row("encode_mp4 preset=veryfast", *fast,
            f"{fast_path.stat().st_size / 1e6:.2f} MB  veryfast/medium CPU {fast[1] / ours[1]:.2f}"
            " (for partial videos)")  # fmt: skip
        row("probe", *probed)
        row("read_frames", *decoded)
        row(f"fit_to_size to 1/3 ({limit} B)", *fit,
            f"-> {fitted_path.stat().st_size} B ({fitted_path.stat().st_size / limit:.0%} of "
            f"the limit), {fitted.frames}/{info.frames} frames, {fitted.width}x{fitted.height}, "
            f"{fitted.duration:.3f} s")  # fmt: skip
    print("rerun: python benchmarks/video.py " + shlex.join(sys.argv[1:]))


if __name__ == "__main__":
    main()
