"""`framepack-bot animate --lora`: a LoRA of the config's catalogue by name (its trigger
words added) or a file by path, as a user runs it (a subprocess on the CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest

from framepack.models.tiny import build_tiny_components
from framepack.video.probe import probe
from tests.engine_fixtures import picture
from tests.lora_fixtures import random_lora, write_lora
from tests.test_animate_cli import animate


@pytest.mark.slow  # two fresh Pythons that import torch and render
def test_animate_with_a_catalogue_lora_and_a_lora_file(tmp_path: Path) -> None:
    transformer = build_tiny_components().transformer
    write_lora(tmp_path / "paint.safetensors", random_lora(transformer), "original", transformer)
    # a dotted file name: the adapter is named "musubi_v1" (PEFT refuses dots)
    write_lora(tmp_path / "Musubi.v1.safetensors", random_lora(transformer, seed=4),
               "musubi-framepack", transformer)  # fmt: skip
    (tmp_path / "config.toml").write_text(
        '[model]\npreset = "tiny"\n[[model.loras]]\nname = "paint"\n'
        'source = "paint.safetensors"\nscale = 0.6\ntriggers = "oil painting"\n'
    )
    picture(96, 128).save(tmp_path / "cat.png")
    base = ["cat.png", "--prompt", "a cat", "--seconds", "1", "--steps", "2", "--seed", "1",
            "--resolution", "64", "--config", "config.toml"]  # fmt: skip
    result = animate(*base, "--lora", "paint", "--lora", "Musubi.v1.safetensors:0.5",
                     "--output", "out.mp4", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    metadata = probe(tmp_path / "out.mp4").metadata
    assert metadata["loras"] == "paint 0.6, musubi_v1 0.5"
    assert metadata["prompt"] == "a cat, oil painting"

    refused = animate(*base, "--lora", "ghibli", "--output", "x.mp4", cwd=tmp_path)
    assert refused.returncode == 2
    assert "--lora ghibli: no such LoRA in the catalogue (paint) and no such file" in refused.stderr
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    broken = animate(*base, "--lora", "bad.safetensors", "--output", "x.mp4", cwd=tmp_path)
    assert broken.returncode != 0 and "could not be loaded" in broken.stderr, broken.stderr
    assert "Traceback" not in broken.stderr
