"""Loading real checkpoints: the same code reads the tiny model saved to disk, in the
HunyuanVideo repo layout, as it reads the real model from the Hub."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from framepack.engine.engine import FramePackEngine
from framepack.engine.params import GenerationParams
from framepack.models.components import load_components
from framepack.models.loading import Source, parse_source
from storage.config import ModelSettings
from tests.engine_fixtures import picture, tiny_components

PARTS = ("transformer", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model as two snapshots: HunyuanVideo-like (subfolders) and Redux-like."""
    root = tmp_path_factory.mktemp("models")
    tiny = tiny_components()
    for name in PARTS:
        getattr(tiny, name).save_pretrained(root / "hunyuan" / name)
    tiny.image_encoder.save_pretrained(root / "redux" / "image_encoder")
    tiny.feature_extractor.save_pretrained(root / "redux" / "feature_extractor")
    return root


def test_components_load_from_local_folders(saved: Path) -> None:
    hunyuan, redux = saved / "hunyuan", saved / "redux"
    sources = {name: str(hunyuan) for name in PARTS}  # whole snapshots: subfolders found
    sources["transformer"] = str(hunyuan / "transformer")  # or the component's own folder
    sources |= {"image_encoder": str(redux), "feature_extractor": str(redux / "feature_extractor")}
    model = ModelSettings(preset="framepack", device="cpu", sources=sources)

    loaded = load_components(model)
    tiny = tiny_components()
    assert loaded.preset == "framepack" and not loaded.is_random
    assert loaded.transformer.dtype == torch.bfloat16  # as the original runs it
    assert {loaded.vae.dtype, loaded.text_encoder.dtype} == {torch.float32}  # fp16 on a GPU only
    for name in ("vae", "text_encoder", "text_encoder_2", "image_encoder"):
        for (key, a), b in zip(
            getattr(loaded, name).state_dict().items(),
            getattr(tiny, name).state_dict().values(),
            strict=True,
        ):
            assert torch.equal(a, b.to(a.dtype)), f"{name}.{key}"
    prompt = "a cat walks"
    assert loaded.tokenizer(prompt).input_ids == tiny.tokenizer(prompt).input_ids
    assert loaded.tokenizer_2(prompt).input_ids == tiny.tokenizer_2(prompt).input_ids
    assert loaded.prompt_template == tiny.prompt_template  # crop_start counted by the tokenizer
    # the PIL processor of the demo, whatever AutoImageProcessor would pick
    assert type(loaded.feature_extractor).__name__ == "SiglipImageProcessorPil"
    assert loaded.feature_extractor.to_dict() == tiny.feature_extractor.to_dict()

    # And it renders.
    engine = FramePackEngine(loaded, device="cpu")
    params = GenerationParams(prompt=prompt, seconds=1.0, steps=1, resolution=128)
    events = list(engine.generate(params, picture(), workdir=saved / "job"))
    assert events[-1].frames == 37


def test_a_tokenizer_that_splits_prompts_wrongly_is_refused_at_load(
    saved: Path, tmp_path: Path
) -> None:
    from tokenizers import decoders, pre_tokenizers

    broken = tiny_components().tokenizer.__class__(
        tokenizer_object=tiny_components().tokenizer.backend_tokenizer
    )
    broken.backend_tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    broken.backend_tokenizer.decoder = decoders.Metaspace()
    broken.save_pretrained(tmp_path / "tokenizer")
    sources = {name: str(saved / "hunyuan") for name in PARTS}
    sources |= {"tokenizer": str(tmp_path / "tokenizer"), "image_encoder": str(saved / "redux")}
    sources["feature_extractor"] = str(saved / "redux")
    model = ModelSettings(preset="framepack", device="cpu", sources=sources)
    with pytest.raises(ValueError, match="AutoTokenizer"):
        load_components(model)


def test_the_tiny_model_is_the_same_on_every_build() -> None:
    from framepack.models.tiny import build_tiny_components

    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    again = build_tiny_components()
    assert torch.equal(torch.rand(1), before)  # the caller's random state is left alone
    for name, model in tiny_components().models().items():
        other = again.models()[name].state_dict()
        assert all(torch.equal(t, other[k]) for k, t in model.state_dict().items()), name


def test_the_tiny_preset_loads_nothing() -> None:
    components = load_components(ModelSettings(preset="tiny", sources={"vae": "/nowhere"}))
    assert components.is_random and components.preset == "tiny"


@pytest.mark.parametrize(
    ("value", "component", "source"),
    [
        ("lllyasviel/FramePackI2V_HY", "transformer", Source("lllyasviel/FramePackI2V_HY")),
        (
            "hunyuanvideo-community/HunyuanVideo/text_encoder_2",
            "text_encoder_2",
            Source("hunyuanvideo-community/HunyuanVideo", "text_encoder_2"),
        ),
        ("org/repo/deep/sub/", "vae", Source("org/repo", "deep/sub")),
    ],
)
def test_hub_sources(value: str, component: str, source: Source) -> None:
    assert parse_source(value, component) == source


@pytest.mark.parametrize("value", ["justaname", "/no/such/folder"])
def test_bad_sources_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="model source for vae"):
        parse_source(value, "vae")


def test_unknown_components_are_refused(saved: Path) -> None:
    model = ModelSettings(preset="framepack", device="cpu", sources={"unet": str(saved)})
    with pytest.raises(ValueError, match="unknown model component"):
        load_components(model)
