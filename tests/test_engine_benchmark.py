"""benchmarks/engine.py runs: its CPU comparison end to end, and its full-size model
builder at small sizes (the full-size run itself needs a GPU)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from framepack.engine.engine import FramePackEngine
from framepack.engine.events import Done
from framepack.engine.params import GenerationParams
from tests.engine_fixtures import picture

SMALL = {
    "transformer": {
        "num_attention_heads": 2, "attention_head_dim": 16, "num_layers": 1,
        "num_single_layers": 1, "num_refiner_layers": 1, "text_embed_dim": 32,
        "pooled_projection_dim": 16, "rope_axes_dim": (4, 6, 6), "has_image_proj": True,
        "image_proj_dim": 24, "has_clean_x_embedder": True,
    },
    "vae": {
        "block_out_channels": (4, 4, 4, 4), "layers_per_block": 0, "norm_num_groups": 2,
        "mid_block_add_attention": False,
    },
    "text_encoder": {
        "vocab_size": 300, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 1024,
    },
    "text_encoder_2": {
        "vocab_size": 300, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
        "num_attention_heads": 2,
    },
    "image_encoder": {
        "hidden_size": 24, "intermediate_size": 48, "num_hidden_layers": 1,
        "num_attention_heads": 2, "image_size": 28, "patch_size": 14,
    },
}  # fmt: skip


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "engine.py"
    spec = importlib.util.spec_from_file_location("benchmark_engine", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_random_model_builder_makes_a_model_that_renders(
    bench: ModuleType, tmp_path: Path
) -> None:
    components = bench.random_components(
        SMALL, transformer_dtype=torch.float32, dtype=torch.float32
    )
    llama = components.text_encoder
    assert all(torch.isfinite(p).all() for p in llama.parameters())
    assert torch.equal(llama.rotary_emb.inv_freq, type(llama.rotary_emb)(llama.config).inv_freq)
    engine = FramePackEngine(components, device="cpu")
    params = GenerationParams(prompt="x", seconds=1.0, steps=1, resolution=128)
    events = list(engine.generate(params, picture(), workdir=tmp_path))
    assert isinstance(events[-1], Done) and events[-1].frames == 37


def test_full_size_architecture_matches_the_released_checkpoints(bench: ModuleType) -> None:
    from diffusers import HunyuanVideoFramepackTransformer3DModel

    with torch.device("meta"):
        transformer = HunyuanVideoFramepackTransformer3DModel(**bench.FULL_SIZE["transformer"])
    assert 12.5e9 < sum(p.numel() for p in transformer.parameters()) < 13.5e9  # "13B"


def test_full_benchmark_skips_cleanly_without_cuda(
    bench: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the full benchmark would really run")
    assert bench.main(["--full"]) == 0
    assert "needs a CUDA GPU" in capsys.readouterr().out


@pytest.mark.slow
def test_cpu_comparison_prints_its_figures(
    bench: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bench.main(["--seconds", "1", "--steps", "1", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert (
        "engine / pipeline + mp4: best wall" in out and "rerun: python benchmarks/engine.py" in out
    )
