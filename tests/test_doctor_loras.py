"""`framepack-bot doctor` checks each catalogue LoRA in one line: the file is there (a
Hub one in the cache, nothing downloaded), it reads as a LoRA, its keys match the
transformer of its model (the tiny one here, the full-size one on the meta device)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from framepack.models.tiny import build_tiny_components
from tests.lora_fixtures import random_lora, write_lora
from tests.test_doctor import doctor

CATALOGUE = """
[[model.loras]]
name = "{name}"
source = "{source}"
"""


def catalogue(*entries: tuple[str, str]) -> str:
    return "".join(CATALOGUE.format(name=name, source=source) for name, source in entries)


def test_each_lora_of_the_catalogue_gets_a_line(tmp_path: Path) -> None:
    transformer = build_tiny_components().transformer
    write_lora(tmp_path / "good.safetensors", random_lora(transformer), "kohya", transformer)
    (tmp_path / "broken.safetensors").write_bytes(b"garbage")
    save_file(
        {
            "diffusion_model.double_blocks.0.img_attn_proj.lora_A.weight": torch.ones(4, 3072),
            "diffusion_model.double_blocks.0.img_attn_proj.lora_B.weight": torch.ones(3072, 4),
        },
        str(tmp_path / "big.safetensors"),
    )
    save_file({"some.other.weight": torch.ones(2, 2)}, str(tmp_path / "other.safetensors"))
    toml = '[model]\npreset = "tiny"\n[web]\nenabled = true\n' + catalogue(
        ("good", "good.safetensors"),
        ("broken", "broken.safetensors"),
        ("big", "big.safetensors"),
        ("other", "other.safetensors"),
        ("missing", "./missing.safetensors"),
        ("hub", "nobody/loras/hub.safetensors"),
    )
    result = doctor(tmp_path, toml, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    out = result.stdout
    assert result.returncode == 0, out  # a bad LoRA fails its jobs only: the bot can run
    assert "✓ LoRA good: kohya naming, 14 modules matched (framepack, f1;" in out
    assert "! LoRA broken (" in out and "is not a readable safetensors file" in out
    assert "! LoRA big (" in out and "made for another model size" in out
    assert "! LoRA other (" in out and "follow no LoRA naming" in out
    assert "! LoRA missing: no such file" in out and "put the file there" in out
    assert "! LoRA hub: nobody/loras/hub.safetensors is not in the Hugging Face cache yet" in out
    assert "huggingface-cli download nobody/loras hub.safetensors" in out
    assert "for a local file, write the source as './nobody/loras/hub.safetensors'" in out


def test_a_real_models_lora_is_matched_against_the_full_size_transformer(tmp_path: Path) -> None:
    full = {  # the real model's sizes: hidden 3072, 7 x 3072 rows in linear1
        "lora_unet_single_blocks_39_linear1.lora_down.weight": torch.zeros(4, 3072),
        "lora_unet_single_blocks_39_linear1.lora_up.weight": torch.zeros(7 * 3072, 4),
        "lora_unet_single_blocks_39_linear1.alpha": torch.tensor(4.0),
        "lora_unet_double_blocks_19_img_attn_qkv.lora_down.weight": torch.zeros(4, 3072),
        "lora_unet_double_blocks_19_img_attn_qkv.lora_up.weight": torch.zeros(3 * 3072, 4),
    }
    save_file(full, str(tmp_path / "full.safetensors"))
    save_file(  # block 40 does not exist (40 single blocks: 0-39)
        {
            "lora_unet_single_blocks_40_linear2.lora_down.weight": torch.zeros(4, 3072 * 5),
            "lora_unet_single_blocks_40_linear2.lora_up.weight": torch.zeros(3072, 4),
        },
        str(tmp_path / "past.safetensors"),
    )
    toml = "[web]\nenabled = true\n" + catalogue(
        ("full", "full.safetensors"), ("past", "past.safetensors")
    )
    out = doctor(tmp_path, toml, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf")).stdout
    assert "✓ LoRA full: kohya naming, 7 modules matched" in out, out
    assert "! LoRA past (" in out and "single_transformer_blocks.40.proj_out" in out, out
