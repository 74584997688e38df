"""HunyuanVideo's prompt template, and where the prompt starts in its tokens.

The Llama encoder reads the prompt inside a fixed instruction; the hidden states
of the instruction's tokens (``crop_start`` of them, 95 with Llama 3's tokenizer)
are cut off again. The count is taken from the tokenizer at hand, never assumed,
and the tokenizer is checked first: transformers releases differ in how they
load Llama 3's byte-level tokenizer, and one that splits text into the wrong
tokens would give the model a prompt it was never trained on, without an error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# As diffusers' DEFAULT_PROMPT_TEMPLATE (pipeline_hunyuan_video.py), which the demo uses.
PROMPT_TEMPLATE = (
    "<|start_header_id|>system<|end_header_id|>\n\n"
    "Describe the video by detailing the following aspects: "
    "1. The main content and theme of the video."
    "2. The color, shape, size, texture, quantity, text, and spatial relationships of the objects."
    "3. Actions, events, behaviors temporal relationships, "
    "physical movement changes of the objects."
    "4. background environment, light, style and atmosphere."
    "5. camera angles, movements, and transitions used in the video:<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|>"
)
# A prompt with what real prompts hold: capitals, digits, punctuation, a non-ASCII word.
PROBE_PROMPT = "A girl dances gracefully, 2 cats watch; the camera pans left. Café at dusk!"

FIX = (
    "load it with transformers.AutoTokenizer from the checkpoint's tokenizer folder "
    "(hunyuanvideo-community/HunyuanVideo/tokenizer), not LlamaTokenizer(Fast), "
    "or install a transformers release that reads its tokenizer.json as it is"
)


class TokenizerError(ValueError):
    """A Llama tokenizer that would feed the model wrong tokens."""


def _ids(tokenizer: PreTrainedTokenizerBase, text: str, **kwargs: Any) -> list[int]:
    return list(tokenizer(text, **kwargs)["input_ids"])


def _text(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> str:
    return tokenizer.decode(ids, clean_up_tokenization_spaces=False)


def check_llama_tokenizer(tokenizer: PreTrainedTokenizerBase) -> None:
    """Refuse a tokenizer that does not give text back as it was, or pads on the left."""
    text = PROMPT_TEMPLATE.format(PROBE_PROMPT)
    decoded = _text(tokenizer, _ids(tokenizer, text, add_special_tokens=False))
    if decoded != text:
        at = next((i for i, (a, b) in enumerate(zip(decoded, text, strict=False)) if a != b), None)
        at = min(len(decoded), len(text)) if at is None else at
        raise TokenizerError(
            "the Llama tokenizer does not give a prompt back as it was (at character "
            f"{at}: {text[at : at + 20]!r} came back as {decoded[at : at + 20]!r}), so the "
            f"text encoder would read other tokens than HunyuanVideo was trained on; {FIX}"
        )
    if getattr(tokenizer, "padding_side", "right") != "right":
        raise TokenizerError(
            f"the Llama tokenizer pads on the {tokenizer.padding_side}; HunyuanVideo's "
            "prompt is cut at fixed token positions, which needs padding on the right "
            "(padding_side='right')"
        )


def llama_prompt_template(tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    """The template and its `crop_start`, counted with `tokenizer` (after checking it).

    In the format of diffusers' ``prompt_template`` argument.
    """
    check_llama_tokenizer(tokenizer)
    prefix = _ids(tokenizer, PROMPT_TEMPLATE.split("{}")[0])
    whole = _ids(tokenizer, PROMPT_TEMPLATE.format(PROBE_PROMPT))
    crop_start = len(prefix)
    # The instruction must tokenize the same alone and with a prompt after it, or the
    # cut would fall inside a token.
    if whole[:crop_start] != prefix or not _text(tokenizer, whole[crop_start:]).startswith(
        PROBE_PROMPT
    ):
        raise TokenizerError(
            "the Llama tokenizer merges the end of HunyuanVideo's instruction with the "
            f"prompt, so the prompt's tokens cannot be cut out; {FIX}"
        )
    return {"template": PROMPT_TEMPLATE, "crop_start": crop_start}
