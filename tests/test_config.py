"""Config: defaults for every key, refusals that name the key, secrets kept secret."""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path

import pytest

from storage.config import ConfigError, Settings, load_settings, parse_settings

ROOT = Path(__file__).resolve().parents[1]


def test_example_config_is_exactly_the_defaults(tmp_path: Path) -> None:
    example = load_settings(ROOT / "config.example.toml")
    defaults = parse_settings({}, base_dir=ROOT)
    assert example.storage == defaults.storage
    for section in (
        "model",
        "generation",
        "queue",
        "worker",
        "telegram",
        "discord",
        "web",
        "logging",
    ):
        assert getattr(example, section) == getattr(defaults, section), section


def test_example_documents_every_key() -> None:
    text = (ROOT / "config.example.toml").read_text()
    data = tomllib.loads(text)
    import dataclasses

    for section in dataclasses.fields(Settings):
        if section.metadata.get("computed"):
            continue
        for key in dataclasses.fields(section.default_factory()):
            if key.metadata.get("computed"):
                continue
            name = f"{section.name}.{key.name}"
            documented = key.name in data.get(section.name, {}) or f"# {key.name} =" in text
            assert documented, f"{name} is not in config.example.toml"


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[queue]\nmax_wating = 3", r"queue\.max_wating: unknown key; valid keys .*max_waiting"),
        ("[queu]\nmax_waiting = 3", r"queu: unknown section"),
        ("[queue]\nmax_waiting = 'ten'", r"queue\.max_waiting: expected an integer, got 'ten'"),
        ("[queue]\nmax_waiting = 0", r"queue\.max_waiting: 0 is below the least valid value 1"),
        (
            "[model]\npreset = 'sdxl'",
            r"model\.preset: 'sdxl' is not one of framepack \| f1 \| tiny",
        ),
        ("[model]\nmemory = 'tiny'", r"model\.memory: 'tiny' is not one of auto"),
        ("[generation]\nsteps = 200", r"generation\.steps: 200 is above the greatest valid value"),
        ("[generation]\ncfg = 0.5", r"generation\.cfg: 0\.5 is below the least valid value 1"),
        (
            "[generation]\ncache = 'fastcache'",
            r"generation\.cache: 'fastcache' is not one of off \| teacache \| magcache",
        ),
        ("[generation]\ncache = 0", r"generation\.cache: expected a string"),
        (
            "[generation]\nteacache_threshold = 0",
            r"generation\.teacache_threshold: 0\.0 is below the least valid value 0\.01",
        ),
        (
            "[generation]\nmagcache_threshold = 2.0",
            r"generation\.magcache_threshold: 2\.0 is above the greatest valid value 0\.5",
        ),
        ("[generation]\nnegative_prompt = 3", r"generation\.negative_prompt: expected a string"),
        ("[generation]\nseconds = 90.0\nmax_seconds = 60.0", r"generation\.seconds: the default"),
        ("[telegram]\nenabled = 'yes'", r"telegram\.enabled: expected true or false"),
        ("[telegram]\nadmins = ['bob']", r"telegram\.admins\[0\]: expected an integer"),
        ("[model.sources]\nunet = 'x/y'", r"model\.sources\.unet: unknown component"),
        ("[queue\n", r"not valid TOML"),
    ],
)
def test_bad_values_are_refused_with_the_key(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=message):
        load_settings(path)


def test_missing_file_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"copy config\.example\.toml"):
        load_settings(tmp_path / "nope.toml")


def test_relative_data_dir_is_relative_to_the_config(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "config.toml"
    path.parent.mkdir()
    path.write_text('[storage]\ndata_dir = "d"\n[model]\npreset = "tiny"\n')
    settings = load_settings(path)
    assert settings.storage.data_dir == tmp_path / "conf" / "d"
    assert settings.resolution == 128  # the tiny preset's bucket base
    assert load_settings(None).resolution == 640


def test_tokens_come_from_env_or_file_and_never_show(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "123456:ABC-very-secret"
    monkeypatch.setenv("MY_TG", secret)
    (tmp_path / "discord.token").write_text("discord-secret-xyz\n")
    path = tmp_path / "config.toml"
    path.write_text(
        '[telegram]\nenabled = true\ntoken_env = "MY_TG"\n'
        '[discord]\nenabled = true\ntoken_env = "UNSET_VAR_X"\ntoken_file = "discord.token"\n'
    )
    settings = load_settings(path)
    assert settings.telegram.token.reveal() == secret
    assert settings.discord.token.reveal() == "discord-secret-xyz"
    with caplog.at_level(logging.INFO):
        logging.getLogger("t").info("settings: %s %r", settings, settings)
    shown = repr(settings) + str(settings) + caplog.text
    assert secret not in shown and "discord-secret-xyz" not in shown
    assert "********" in shown


def test_token_in_toml_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[telegram]\ntoken = "123:abc"\n')
    with pytest.raises(ConfigError, match=r"telegram\.token: unknown key") as err:
        load_settings(path)
    assert "123:abc" not in str(err.value)


def test_a_local_bot_api_server_address_gets_the_bot_api_paths() -> None:
    """PTB appends the token to base_url, so "http://localhost:8081" alone would
    make ".../8081123456:ABC" out of it: a bare address gets /bot and /file/bot."""
    telegram = parse_settings(
        {"telegram": {"base_url": "http://localhost:8081/", "base_file_url": "http://x:1"}}
    ).telegram
    assert telegram.base_url == "http://localhost:8081/bot"
    assert telegram.base_file_url == "http://x:1/file/bot"
    kept = parse_settings({"telegram": {"base_url": "https://tg.example/custom/bot"}}).telegram
    assert kept.base_url == "https://tg.example/custom/bot"
    for bad in ("localhost:8081", "ftp://x/bot", "http://x:port/bot"):
        with pytest.raises(ConfigError, match=r"telegram.base_url: .* is not an http\(s\) URL"):
            parse_settings({"telegram": {"base_url": bad}})
