"""Parsing and validating `/animate`: every bad option is refused with a fix."""

from __future__ import annotations

import random

import pytest

from bot.requests import (
    USAGE,
    AnimateOptions,
    UserError,
    build_params,
    clean_prompt,
    parse_animate_text,
    split_command,
)
from storage.config import GenerationSettings

GEN = GenerationSettings()


def test_split_command_in_groups() -> None:
    assert split_command("/animate@fp_bot a cat") == ("animate", "fp_bot", "a cat")
    assert split_command("/Animate a cat") == ("animate", None, "a cat")
    assert split_command("/queue") == ("queue", None, "")
    assert split_command("hello") is None


def test_options_anywhere_and_prompt_kept_verbatim() -> None:
    opts = parse_animate_text(
        '[0s: a man\'s dog walks] --seconds 7.5 [3s: it turns "around"] --seed=42 --model f1'
    )
    assert opts.prompt == '[0s: a man\'s dog walks] [3s: it turns "around"]'
    assert (opts.seconds, opts.seed, opts.model) == (7.5, 42, "f1")
    params = build_params(opts, GEN)
    assert params.seconds == 7.5 and params.seed == 42 and params.model == "f1"
    assert params.steps == GEN.steps and params.guidance == GEN.guidance


def test_defaults_and_random_seed() -> None:
    params = build_params(AnimateOptions(prompt="a cat"), GEN, rng=random.Random(1))
    assert params.seconds == GEN.seconds and 0 <= params.seed < 2**31


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a cat --fps 60", "Unknown option --fps"),
        ("a cat --seconds", "--seconds needs a value"),
        ("a cat --seconds five", "--seconds must be a number, not 'five'"),
        ("a cat --seed 1.5", "--seed must be a whole number"),
        ("a cat --seconds nan", "finite number"),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        parse_animate_text(text)


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        (AnimateOptions(prompt="  "), "Say what should happen"),
        (AnimateOptions(prompt="x" * 1001), "1001 characters long; the most is 1000"),
        (AnimateOptions(prompt="a", seconds=61), "--seconds must be between 0.5 and 60"),
        (AnimateOptions(prompt="a", seconds=0.1), "--seconds must be between"),
        (AnimateOptions(prompt="a", steps=0), "--steps must be between 1 and 50"),
        (AnimateOptions(prompt="a", steps=51), "--steps must be between 1 and 50"),
        (AnimateOptions(prompt="a", guidance=40), "--guidance must be between 1 and 32"),
        (AnimateOptions(prompt="a", model="sdxl"), "--model must be framepack or f1"),
        (
            AnimateOptions(prompt="a", cache="fastest"),
            "--cache must be off, teacache or magcache, not 'fastest'",
        ),
        (AnimateOptions(prompt="a", seed=-1), "--seed must be between 0"),
    ],
)
def test_out_of_range_values(opts: AnimateOptions, message: str) -> None:
    with pytest.raises(UserError, match=message):
        build_params(opts, GEN)


def test_end_image_needs_the_framepack_model() -> None:
    with pytest.raises(UserError, match="end image works with --model framepack only"):
        build_params(AnimateOptions(prompt="a", model="f1"), GEN, has_end_image=True)


def test_an_option_given_twice_is_refused() -> None:
    with pytest.raises(UserError, match=r"--seconds is given twice \(1 and 2\)"):
        parse_animate_text("a cat --seconds 1 --seconds 2")
    with pytest.raises(UserError, match="--seed is given twice"):
        parse_animate_text("a cat --seed=1 --seed 1")


@pytest.mark.parametrize("dash", ["\u2014", "\u2013"], ids=["em dash", "en dash"])
def test_a_phone_dash_before_an_option_name_is_read_as_two_hyphens(dash: str) -> None:
    opts = parse_animate_text(f"a cat {dash}seconds 3 {dash}model=f1 and a dog {dash} a bird")
    assert (opts.seconds, opts.model) == (3.0, "f1")
    assert opts.prompt == f"a cat and a dog {dash} a bird"  # prose keeps its dashes
    assert parse_animate_text(f"one {dash}then two").prompt == f"one {dash}then two"


def test_control_characters_leave_the_prompt_and_are_counted() -> None:
    raw = "a cat\x00 walks\x1b[31m red\u202e sdrawkcab\x07 👩\u200d💻"
    cleaned, removed = clean_prompt(raw)
    assert cleaned == "a cat walks[31m red sdrawkcab 👩\u200d💻"  # emoji joiners stay
    assert removed == 4
    assert build_params(AnimateOptions(prompt=raw), GEN).prompt == cleaned
    with pytest.raises(UserError, match="Say what should happen"):
        build_params(AnimateOptions(prompt="\x00\x01\u202e"), GEN)


def test_the_cache_option_and_the_hosts_default() -> None:
    opts = parse_animate_text("a cat --cache TeaCache")
    assert opts.cache == "TeaCache"
    params = build_params(opts, GEN)
    assert (params.cache, params.cache_threshold) == ("teacache", GEN.teacache_threshold)
    off = build_params(parse_animate_text("a cat --cache=off"), GEN)
    assert (off.cache, off.cache_threshold) == ("off", None)
    default = build_params(AnimateOptions(prompt="a cat"), GEN)
    assert (default.cache, default.cache_threshold) == (GEN.cache, GEN.magcache_threshold)
    assert "--cache off|teacache|magcache" in USAGE
    with pytest.raises(UserError, match=r"--cache needs a value, e\.g\. --cache off"):
        parse_animate_text("a cat --cache")
