"""The benchmarks run and print their verdicts (at a size that proves they work,
not one that measures anything)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, f"benchmarks/{script}", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.mark.slow
def test_the_telegram_benchmark_serves_every_user_and_judges_its_targets() -> None:
    proc = run("telegram.py", "--users", "4", "--rounds", "1")
    out = proc.stdout
    assert "target p99 <= 633 ms (30/s pace + 0.5 s): met" in out, out + proc.stderr
    assert "target 0 429s: met" in out, out
    assert "rerun: python benchmarks/telegram.py --users 4 --side 640 --rounds 1" in out
    assert proc.returncode == 0


def test_the_queue_benchmark_judges_its_targets() -> None:
    proc = run("queue.py", "--jobs", "300", "--users", "10", "--waiting", "50")
    out = proc.stdout
    assert "target p99 claim < 5 ms:" in out, out + proc.stderr
    assert "rerun: python benchmarks/queue.py --jobs 300 --users 10 --waiting 50" in out
    assert proc.returncode in (0, 1)  # at this size a verdict is printed, not earned


@pytest.mark.slow
def test_the_video_benchmark_judges_the_fitted_copies() -> None:
    proc = run("video.py", "--seconds", "4", "--limits", "0.25")
    out = proc.stdout
    assert "4 s  0.25 MiB" in out and "targets (used >= 95 %" in out, out + proc.stderr
    assert "rerun: python benchmarks/video.py --seconds 4 --limits 0.25" in out


@pytest.mark.slow
def test_the_worker_benchmark_judges_its_overhead() -> None:
    proc = run("worker.py", "--jobs", "2", "--steps", "1", "--upload-limit", "20000")
    assert "target < 0.5 s each: " in proc.stdout, proc.stdout + proc.stderr
    assert "rerun: python benchmarks/worker.py --jobs 2 --steps 1" in proc.stdout


@pytest.mark.slow
def test_the_sampler_benchmark_judges_its_targets() -> None:
    proc = run("sampler.py", "--points", "16")
    out = proc.stdout
    assert "target: UniPC bh1 at 64 graded steps <= 1e-4" in out, out + proc.stderr
    assert "target: bh1 vs bh2 on the demo's schedule <= 1e-5" in out, out
    assert "diffusers vs ours:" in out
    assert "rerun: python benchmarks/sampler.py --points 16" in out
    assert proc.returncode == (1 if "MISSED" in out else 0)


def test_the_web_benchmark_judges_its_targets() -> None:
    proc = run("web.py", "--waiting", "10", "--users", "5", "--done", "20", "--pages", "2",
               "--loads", "3", "--changes", "2")  # fmt: skip
    out = proc.stdout
    assert "GET /queue" in out and "target p99 < 250 ms:" in out, out + proc.stderr
    assert "a queued job on 2 open pages" in out, out
    assert "rerun: python benchmarks/web.py --waiting 10 --users 5 --done 20 --pages 2" in out
    assert proc.returncode in (0, 1)  # at this size a verdict is printed, not earned


@pytest.mark.slow
def test_the_engine_benchmark_times_a_lora_switch_next_to_a_section() -> None:
    proc = run("engine.py", "--lora", "--seconds", "1", "--steps", "1", "--repeats", "1")
    out = proc.stdout
    assert "switch adapters between two jobs:" in out, out + proc.stderr
    assert "one section with a LoRA:" in out and "target: switch <= 1% of a section:" in out
    assert "rerun: python benchmarks/engine.py --lora --seconds 1 --steps 1 --repeats 1" in out
    assert proc.returncode == (1 if "MISSED" in out else 0)
