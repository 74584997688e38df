"""benchmarks/engine.py runs: its CPU comparison end to end (the engine with UniPC, with
Euler, and the pipeline, as ratios with a verdict per target), and its --full, which
is benchmarks/gpu.py (tests/test_gpu_benchmark.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "engine.py"
    spec = importlib.util.spec_from_file_location("benchmark_engine", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_full_is_the_gpu_benchmark(bench: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the full benchmark would really run")
    assert bench.main(["--full", "--steps", "2"]) == 2
    assert "benchmarks/gpu.py needs a CUDA GPU" in capsys.readouterr().err


def test_targets_are_ratios_of_best_times(bench: ModuleType) -> None:
    best = {
        "engine unipc": 1.02,
        "engine euler": 1.0,
        "pipeline + mp4": 1.0,
        "engine teacache": 0.6,
        "engine magcache": 0.5,
    }
    assert all(met for met, _ in (t.verdict(best) for t in bench.TARGETS))
    met, line = bench.MAGCACHE_PASSES.verdict({"off": 25.0, "magcache": 17.0})
    assert not met and "MISSED (0.680)" in line
    met, line = bench.TARGETS[1].verdict(best | {"engine unipc": 1.2})
    assert not met and "MISSED (1.200)" in line


@pytest.mark.slow
def test_cpu_comparison_prints_its_ratios_and_verdicts(
    bench: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    code = bench.main(["--seconds", "1", "--steps", "1", "--repeats", "1"])
    out = capsys.readouterr().out
    for line in (
        "engine unipc / engine euler:",
        "engine unipc / pipeline + mp4:",
        "engine euler / pipeline + mp4:",
        "target: engine (unipc) / (pipeline + mp4), best wall <= 1.05:",
        "target: engine unipc / engine euler, best wall <= 1.05:",
        "target: engine teacache / engine off, best wall <= 1.0:",
        "target: engine magcache / engine off, best wall <= 1.0:",
        "  off       block-stack passes per section   1.00",
        "  magcache  block-stack passes per section",
        "target: magcache / off block-stack passes <= 0.6:",
        "rerun: python benchmarks/engine.py",
    ):
        assert line in out, line
    assert code == (1 if "MISSED" in out else 0)  # timing on a shared machine may miss
