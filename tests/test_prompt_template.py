"""Where the prompt starts in HunyuanVideo's template, counted by the tokenizer at
hand, and the refusal of a tokenizer that would feed the model wrong tokens."""

from __future__ import annotations

import pytest
from tokenizers import decoders, pre_tokenizers

from framepack.models.prompt_template import (
    PROMPT_TEMPLATE,
    TokenizerError,
    llama_prompt_template,
)
from framepack.models.tiny import llama_tokenizer


def test_crop_start_is_counted_by_the_tokenizer() -> None:
    tokenizer = llama_tokenizer()
    template = llama_prompt_template(tokenizer)
    assert template["template"] == PROMPT_TEMPLATE
    prefix = PROMPT_TEMPLATE.split("{}")[0]
    # the tiny tokenizer: BOS, one token per special token, one per byte of the rest
    specials = ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
    plain = prefix
    for special in specials:
        plain = plain.replace(special, "")
    expected = 1 + sum(prefix.count(special) for special in specials) + len(plain.encode())
    assert template["crop_start"] == expected == 424
    ids = tokenizer(PROMPT_TEMPLATE.format("a cat walks")).input_ids
    crop = template["crop_start"]
    assert tokenizer.decode(ids[crop:]) == "a cat walks<|eot_id|>"


def test_a_tokenizer_that_loses_spaces_is_refused_with_the_fix() -> None:
    # what a Llama 2 (sentencepiece) pipeline over Llama 3's byte-level vocabulary does
    tokenizer = llama_tokenizer()
    tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.backend_tokenizer.decoder = decoders.Metaspace()
    with pytest.raises(TokenizerError, match="does not give a prompt back") as refused:
        llama_prompt_template(tokenizer)
    assert "transformers.AutoTokenizer" in str(refused.value)


def test_a_tokenizer_that_pads_on_the_left_is_refused() -> None:
    tokenizer = llama_tokenizer()
    tokenizer.padding_side = "left"
    with pytest.raises(TokenizerError, match="padding_side='right'"):
        llama_prompt_template(tokenizer)
