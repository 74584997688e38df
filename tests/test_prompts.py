"""Per-section prompts: '[0s: a man walks] [3s: he turns around]'."""

from __future__ import annotations

import pytest

from framepack.engine.params import GenerationParams
from framepack.engine.prompts import TimedPrompt, parse_prompt, prompt_at, section_prompts


def test_a_plain_prompt_covers_the_whole_video() -> None:
    assert parse_prompt("  a man walks  ") == [TimedPrompt(0.0, "a man walks")]
    assert parse_prompt("a [bracketed] word") == [TimedPrompt(0.0, "a [bracketed] word")]


def test_timed_prompts_are_read_in_time_order() -> None:
    assert parse_prompt("[3s: he turns around] [0s: a man walks]") == [
        TimedPrompt(0.0, "a man walks"),
        TimedPrompt(3.0, "he turns around"),
    ]
    assert parse_prompt("[0s:a][1.5 s : b ]") == [TimedPrompt(0.0, "a"), TimedPrompt(1.5, "b")]


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("a man [0s: walks]", "text outside the timed prompts"),
        ("[0s: walks] [3s: ]", "prompt at 3s is empty"),
        ("[0s: walks] [0s: runs]", "same second"),
    ],
)
def test_malformed_timed_prompts_say_what_is_wrong(prompt: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_prompt(prompt)


def test_before_the_first_timed_prompt_the_first_one_applies() -> None:
    timed = parse_prompt("[2s: b] [4s: c]")
    at = [prompt_at(timed, s) for s in (0, 1.9, 2, 3.99, 4, 100)]
    assert at == ["b", "b", "b", "b", "c", "c"]


def test_sections_take_the_prompt_of_the_time_they_start() -> None:
    # 5 s at 30 fps: 4 sections of 1.2 s, starting at 0, 1.2, 2.4 and 3.6 s.
    params = GenerationParams(prompt="[0s: a man walks] [3s: he turns around]", seconds=5.0)
    assert params.sections() == 4 and params.section_seconds() == pytest.approx(1.2)
    in_video_order = ["a man walks"] * 3 + ["he turns around"]
    forward = section_prompts(
        params.prompt, sections=4, section_seconds=params.section_seconds(), inverted=False
    )
    assert forward == in_video_order
    # The inverted sampler renders the video's end first.
    inverted = section_prompts(
        params.prompt, sections=4, section_seconds=params.section_seconds(), inverted=True
    )
    assert inverted == in_video_order[::-1]


def test_a_section_starting_exactly_at_a_prompt_time_takes_it() -> None:
    # 3.6 s is 3 * 1.2 s, computed in floats as 3.5999999999999996
    prompts = section_prompts("[0s: a] [3.6s: b]", sections=4, section_seconds=1.2, inverted=False)
    assert prompts == ["a", "a", "a", "b"]
