"""The Bot API benchmarks run and print their figures (at a size that proves they
work, not one that measures anything)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run(script: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, f"benchmarks/{script}", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_the_http_client_benchmark_compares_the_three_clients() -> None:
    out = run("http_client.py", "--calls", "40", "--rounds", "1")
    for name in ("ours", "aiohttp", "httpx (PTB's)"):
        assert f"\n{name} " in out, out
    assert "rerun: python benchmarks/http_client.py --calls 40 --rounds 1" in out


@pytest.mark.slow
def test_the_telegram_benchmark_serves_every_user_and_reports_the_targets() -> None:
    out = run("telegram.py", "--users", "4", "--rounds", "1")
    assert "per-chat       ours         4" in out, out
    assert "30/s overall" in out and "targets (issue 5)" in out, out
