"""The LoRA catalogue (`[[model.loras]]`) as the config validates it, and `--lora` as
members give it: parsed, checked against the catalogue and refused with the valid
choices, kept in the job's parameters, listed by /loras and named in captions."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.progress import _facts
from bot.requests import AnimateOptions, UserError, build_params, parse_animate_text
from bot.service import help_text, loras_text
from storage.config import ConfigError, GenerationSettings, ModelSettings, parse_settings
from storage.records import JobParams
from tests.test_worker import job_record

GEN = GenerationSettings()
LORAS = [
    {"name": "paint", "source": "paint.safetensors", "scale": 0.8, "description": "brushes"},
    {"name": "anime", "source": "owner/repo/anime/v2.safetensors", "triggers": "anime style"},
    {"name": "fast", "source": "/abs/fast.safetensors", "models": ["f1"]},
]


def catalogue(tmp_path: Path, **model: object) -> ModelSettings:
    (tmp_path / "paint.safetensors").write_bytes(b"")
    return parse_settings({"model": {"loras": LORAS, **model}}, base_dir=tmp_path).model


def test_the_catalogue_is_read_with_each_source_resolved(tmp_path: Path) -> None:
    model = catalogue(tmp_path)
    paint, anime, fast = model.loras
    assert (paint.path, paint.hub, paint.scale, paint.models) == (
        tmp_path / "paint.safetensors",
        None,
        0.8,
        ["framepack", "f1"],
    )
    assert (anime.path, anime.hub, anime.scale) == (
        None,
        ("owner/repo", "anime/v2.safetensors"),
        1.0,
    )
    assert fast.path == Path("/abs/fast.safetensors") and fast.models == ["f1"]
    assert [lora.name for lora in model.loras_for("framepack")] == ["paint", "anime"]
    assert model.lora("PAINT") is paint and model.lora("none") is None
    assert (model.max_loras, model.lora_min_scale, model.lora_max_scale) == (2, 0.0, 2.0)


@pytest.mark.parametrize(
    ("lora", "message"),
    [
        ({"name": "Has Space", "source": "x.safetensors"}, r"model\.loras\[0\]\.name: .*lowercase"),
        ({"name": "x"}, r"model\.loras\[0\]\.source: missing"),
        ({"name": "x", "source": "a.st", "scale": 3.0}, r"model\.loras\[0\]\.scale: 3 is outside"),
        ({"name": "x", "source": "a.st", "models": ["sd"]}, r"models: 'sd' is not a model"),
        ({"name": "x", "source": "a.st", "models": []}, r"models: .* is not a model"),
        (
            {"name": "x", "source": "a.st", "trigger": "y"},
            r"model\.loras\[0\]\.trigger: unknown key",
        ),
        ({"name": "x", "source": "a.st", "scale": "big"}, r"scale: expected a number"),
        ({"name": "none", "source": "a.st"}, r'name: "none" is what members type for no LoRA'),
    ],
)
def test_a_bad_catalogue_entry_is_refused_with_its_key(lora: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_settings({"model": {"loras": [lora]}})


def test_catalogue_wide_checks() -> None:
    twice = [{"name": "x", "source": "a.st"}, {"name": "x", "source": "b.st"}]
    with pytest.raises(
        ConfigError, match=r"model\.loras\[1\]\.name: 'x' is in the catalogue twice"
    ):
        parse_settings({"model": {"loras": twice}})
    with pytest.raises(ConfigError, match=r"lora_min_scale: 1 is above model\.lora_max_scale 0\.5"):
        parse_settings({"model": {"lora_min_scale": 1.0, "lora_max_scale": 0.5}})
    with pytest.raises(ConfigError, match=r"model\.max_loras: 9 is above"):
        parse_settings({"model": {"max_loras": 9}})
    with pytest.raises(ConfigError, match=r"model\.loras\[0\]: expected a table"):
        parse_settings({"model": {"loras": ["paint"]}})


def test_lora_options_parse_repeated_or_comma_separated() -> None:
    opts = parse_animate_text("a cat --lora paint --seed 3 --lora=anime:0.5")
    assert opts.loras == (("paint", None), ("anime", 0.5)) and opts.prompt == "a cat"
    assert parse_animate_text("a cat --lora Paint:1.2,anime").loras == (
        ("paint", 1.2),
        ("anime", None),
    )
    assert parse_animate_text("a cat").loras is None
    assert parse_animate_text("a cat --lora none").loras == ()  # a remix without LoRAs
    with pytest.raises(UserError, match="scale must be a number, not 'lots'"):
        parse_animate_text("a cat --lora paint:lots")
    with pytest.raises(UserError, match="--lora needs a name"):
        parse_animate_text("a cat --lora :0.5")
    with pytest.raises(UserError, match="--seed is given twice"):  # the others still once
        parse_animate_text("a cat --seed 1 --seed 2")


def test_the_loras_asked_are_checked_against_the_catalogue(tmp_path: Path) -> None:
    model = catalogue(tmp_path)

    def params(text: str) -> JobParams:
        return build_params(parse_animate_text(text), GEN, catalogue=model)

    assert params("a cat --lora paint").loras == (("paint", 0.8),)  # its default scale
    assert params("a cat --lora paint:1.5 --lora anime").loras == (("paint", 1.5), ("anime", 1.0))
    assert params("a cat --model f1 --lora fast:0.3").loras == (("fast", 0.3),)
    assert params("a cat").loras == ()
    refusals = {
        "a cat --lora ghibli": "There is no LoRA called 'ghibli'. The LoRAs for framepack are: "
        "paint, anime (see /loras).",
        "a cat --lora paint:2.5": "The scale of the LoRA 'paint' must be between 0 and 2, not 2.5",
        "a cat --lora fast": "The LoRA 'fast' is for the f1 model, not framepack: choose the f1 "
        "model or another LoRA. The LoRAs for framepack are: paint, anime",
        "a cat --lora paint,anime,paint": "At most 2 LoRAs per video; you gave 3.",
        "a cat --lora paint --lora paint:1": "The LoRA 'paint' is given twice",
    }
    for text, message in refusals.items():
        with pytest.raises(UserError) as refused:
            params(text)
        assert message in refused.value.message, text
    with pytest.raises(UserError, match="This bot has no LoRAs for the framepack model"):
        build_params(parse_animate_text("a cat --lora paint"), GEN)


def test_a_jobs_loras_survive_the_store_s_json() -> None:
    params = JobParams(prompt="a cat", loras=(("paint", 0.8), ("anime", 1.0)))
    assert JobParams.from_json(params.to_json()) == params
    assert JobParams.from_json(JobParams(prompt="old").to_json()).loras == ()
    assert JobParams.from_json('{"prompt": "made before LoRAs"}').loras == ()


def test_loras_lists_the_catalogue_and_help_mentions_it(tmp_path: Path) -> None:
    settings = parse_settings({"model": {"loras": LORAS}}, base_dir=tmp_path)
    text = loras_text(settings, "telegram")
    assert "• paint (framepack, f1; scale 0.8) — brushes" in text
    assert "• fast (f1; scale 1)" in text and "--lora paint:0.8" in text
    assert "lora:paint" in loras_text(settings, "discord")
    assert "/loras" in help_text(settings, "telegram") and "--lora" in help_text(
        settings, "telegram"
    )
    assert "no LoRAs" in loras_text(parse_settings({}), "telegram")
    assert "/loras" not in help_text(parse_settings({}), "telegram")


def test_the_caption_names_the_loras() -> None:
    assert _facts(job_record(loras=(("paint", 0.8),))).endswith("· LoRA paint 0.8")
    assert "LoRA" not in _facts(job_record())
    assert AnimateOptions(prompt="x").loras is None
    from bot.web.views import params_text  # the host's page says it of every job too

    assert params_text(job_record(loras=(("paint", 0.8),))).endswith("· LoRA paint 0.8")


async def test_reroll_remix_and_extend_keep_the_loras(tmp_path: Path) -> None:
    import dataclasses

    from bot.service import BotService, Requester
    from storage.records import JobStatus
    from tests.worker_fixtures import open_store, settings_of, write_config, write_picture

    (tmp_path / "paint.safetensors").write_bytes(b"")
    extra = '[[model.loras]]\nname = "paint"\nsource = "paint.safetensors"\nscale = 0.8\n'
    settings = settings_of(write_config(tmp_path, extra))
    store = await open_store(settings)
    try:
        service = BotService(store, settings)
        who = Requester("telegram", "alice", "Alice", "chat")
        job = await store.enqueue(
            platform="telegram", user_id="alice", chat_id="chat",
            params=JobParams(prompt="a cat", seconds=1.0, loras=(("paint", 0.5),)),
            input_path=write_picture(service.data),
        )  # fmt: skip
        rerolled = await service.reroll(who, job.id)
        assert rerolled.params.loras == (("paint", 0.5),)
        remixed = await service.remix(who, job.id, AnimateOptions(prompt="a dog"))
        assert remixed.params.loras == (("paint", 0.5),) and remixed.params.prompt == "a dog"
        plain = await service.remix(who, job.id, AnimateOptions(prompt="a dog", loras=()))
        assert plain.params.loras == ()
        # a LoRA the host took out of the catalogue since: the re-roll is refused, with the list
        gone = dataclasses.replace(settings, model=dataclasses.replace(settings.model, loras=[]))
        with pytest.raises(UserError, match="This bot has no LoRAs"):
            await BotService(store, gone).reroll(who, job.id)
        assert (await store.claim("w")).id == job.id  # it renders and ends: it can be extended
        await store.complete(job.id, "w", result_path="x.mp4", metadata={})
        service.data.checkpoint(job.id).parent.mkdir(parents=True, exist_ok=True)
        service.data.checkpoint(job.id).write_bytes(b"checkpoint")
        extended = await service.extend(who, job.id)
        assert extended.params.loras == (("paint", 0.5),) and extended.params.extend_of == job.id
        assert (await store.get(job.id)).status is JobStatus.DONE
    finally:
        await store.close()
