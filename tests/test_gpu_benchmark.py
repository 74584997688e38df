"""benchmarks/gpu.py cannot run here (no GPU): its refusal without CUDA, its judging of
targets, and its whole code path in --dry-run (the tiny model on the CPU), crashes
and timeouts included, so that it cannot rot."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gpu() -> ModuleType:
    spec = importlib.util.spec_from_file_location("benchmark_gpu", ROOT / "benchmarks" / "gpu.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_without_cuda_it_fails_fast_with_a_sentence(
    gpu: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the benchmark would really run")
    assert gpu.main([]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err


def test_targets_are_judged_from_the_rows(gpu: ModuleType) -> None:
    high, low = gpu.TARGETS
    assert high.judge({"high": {"status": "ok", "s_per_step": 1.1}}).startswith("met")
    assert high.judge({"high": {"status": "ok", "s_per_step": 1.3}}).startswith("MISSED")
    assert low.judge({"low": {"status": "ok", "mem_delta_gib": 5.5}}).startswith("met")
    assert low.judge({"low": {"status": "timed out after 160 s"}}) == (
        "MISSED (timed out after 160 s)"
    )
    assert low.judge({}) == "not run"


def test_a_mode_that_times_out_is_a_row_that_says_so(
    gpu: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "rows.jsonl"
    args = [
        "--dry-run",
        "--modes",
        "high,low",
        "--timeout-scale",
        "0.0002",
        "--results",
        str(results),
    ]
    assert gpu.main(args) == 1
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert [r["mode"] for r in rows] == ["high", "low"]
    assert all(r["status"].startswith("timed out after") for r in rows)
    assert "timed out after" in capsys.readouterr().out


@pytest.mark.slow
def test_the_dry_run_measures_each_mode_in_order_and_keeps_every_row(
    gpu: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "rows.jsonl"
    args = ["--dry-run", "--steps", "2", "--modes", "pipeline,low,high", "--results", str(results)]
    assert gpu.main([*args, "--fail", "low"]) == 1  # a crash is a row and a failed run
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert [r["mode"] for r in rows] == ["high", "low", "pipeline"]  # always in this order
    assert rows[1]["status"].startswith("crashed") and "injected" in rows[1]["status"]
    for row in (rows[0], rows[2]):
        assert row["status"] == "ok" and row["steps"] == 2 and row["s_per_step"] > 0
        assert row["peak_rss_gib"] > 0
    out = capsys.readouterr().out
    assert "target: high mode s/step at the 640 bucket <= 1.2: not judged (dry run)" in out
    assert "rerun: python benchmarks/gpu.py" in out


def test_the_dry_run_times_each_step_cache_in_the_cache_modes(
    gpu: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "rows.jsonl"
    args = ["--dry-run", "--steps", "5", "--modes", "high", "--results", str(results)]
    assert gpu.main(args) == 0
    (row,) = [json.loads(line) for line in results.read_text().splitlines()]
    assert row["status"] == "ok" and row["steps"] == 5  # the uncached job's row
    assert set(row["caches"]) == {"teacache", "magcache"}
    for measured in row["caches"].values():
        assert measured["s_per_step"] > 0 and 2 <= measured["passes"] <= 5
    assert row["caches"]["magcache"]["passes"] < 5
    out = capsys.readouterr().out
    assert "  +magcache " in out and "of 5 block-stack passes" in out
