"""`framepack-bot calibrate-cache`: without a GPU it says so in one sentence; its
calibration (diffusers' MagCache in calibration mode over one section) runs on
the tiny model on the CPU."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from framepack_bot.calibrate import calibrate
from framepack_bot.cli import main
from tests.engine_fixtures import FAST, picture, tiny_engine


@pytest.mark.skipif(torch.cuda.is_available(), reason="this host has a GPU")
def test_without_a_gpu_it_says_so_in_one_sentence(
    tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["calibrate-cache", "--config", str(tmp_path / "none.toml")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("framepack-bot calibrate-cache: no CUDA GPU is visible")
    assert err.count("\n") == 0 and err.endswith(".")


def test_calibration_records_a_ratio_per_step_and_takes_its_hooks_off() -> None:
    engine = tiny_engine()
    ratios = calibrate(engine, replace(FAST, steps=5), picture())
    assert len(ratios) == 5 and ratios[0] == 1.0
    assert all(r > 0 for r in ratios)
    blocks = engine.components.transformer.transformer_blocks
    assert not blocks[0]._diffusers_hook.hooks  # MagCache's calibration hooks are gone
