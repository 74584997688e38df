"""`/animate` requests, the same on every platform: parsing the text form and
validating the options into `JobParams`.

Every refusal is a `UserError` whose message says what is wrong and how to fix
it; nothing is queued for it.
"""

from __future__ import annotations

import math
import random
import re
import unicodedata
from dataclasses import dataclass

from storage.config import NO_LORA, GenerationSettings, ModelSettings
from storage.records import JobParams

MODELS = ("framepack", "f1")
CACHES = ("off", "teacache", "magcache")  # framepack.engine.caches
JOB_ID_DIGITS = 18  # a job number longer than this is nobody's (SQLite's ids are 64-bit)
SEED_MAX = 2**31 - 1
OPTION_NAMES = ("seconds", "seed", "steps", "guidance", "model", "cache", "end", "lora")
FLAGS = ("end",)  # options without a value
REPEATABLE = ("lora",)  # one LoRA per --lora; several combine
USAGE = (
    "/animate <prompt> [--seconds S] [--seed N] [--steps N] [--guidance G] [--model framepack|f1]"
    " [--cache off|teacache|magcache] [--lora name[:scale]]"
)

LIMIT_USAGE = "Usage: /limit <user id> <jobs waiting> <seconds a day>, or /limit <user id> default"

# Random seeds need no secrecy: one generator, seeded from the OS at start.
_SEEDS = random.Random()


class UserError(Exception):
    """Bad input; `message` is shown to the user as is."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class AnimateOptions:
    """What the user typed, before validation (None: the configured default)."""

    prompt: str
    seconds: float | None = None
    seed: int | None = None
    steps: int | None = None
    guidance: float | None = None
    model: str | None = None
    cache: str | None = None
    # Telegram: this message's picture is the end image, the one it replies to the start
    end: bool = False
    # catalogue LoRAs as typed, (name, scale or None: its default); None: none asked
    loras: tuple[tuple[str, float | None], ...] | None = None


_COMMAND = re.compile(r"^/(?P<name>[A-Za-z0-9_]+)(?:@(?P<bot>[A-Za-z0-9_]+))?(?:\s+|$)")


def split_command(text: str) -> tuple[str, str | None, str] | None:
    """`/animate@bot rest` → ("animate", "bot", "rest"); None when it is no command."""
    match = _COMMAND.match(text.strip())
    if match is None:
        return None
    return match["name"].lower(), match["bot"], text.strip()[match.end() :]


# Phones turn a typed "--" into an em or en dash: before a known option name it is "--".
_PHONE_DASHES = ("\u2014", "\u2013")


def _option_token(token: str) -> str | None:
    """The text after `--` of an option token, or None for a word of the prompt."""
    if token.startswith("--") and len(token) > 2:
        return token[2:]
    for dash in _PHONE_DASHES:
        if token.startswith(dash) and len(token) > 1:
            rest = token[1:]
            name = rest.partition("=")[0].lower().replace("-", "_")
            return rest if name in OPTION_NAMES else None  # else prose with a dash in it
    return None


def parse_animate_text(rest: str) -> AnimateOptions:
    """Parse `<prompt> [--name value | --name=value …]` (options anywhere after the prompt).

    An option given twice is refused (which one did the user mean?)."""
    # Whitespace only, no shell quoting: apostrophes and quotes are part of prompts.
    tokens = rest.split()
    prompt_words: list[str] = []
    values: dict[str, str] = {}
    loras: list[tuple[str, float | None]] = []
    lora_given = False  # `--lora none` is an empty list, not "none asked"
    i = 0
    while i < len(tokens):
        option = _option_token(tokens[i])
        if option is None:
            prompt_words.append(tokens[i])
            i += 1
            continue
        name, eq, value = option.partition("=")
        name = name.lower().replace("-", "_")
        if name not in OPTION_NAMES:
            raise UserError(
                f"Unknown option --{name}. The options are "
                + ", ".join(f"--{n}" for n in OPTION_NAMES)
                + f".\nUsage: {USAGE}"
            )
        if name in FLAGS:
            if eq:
                raise UserError(f"--{name} takes no value; write it alone.")
            value = "yes"
        elif not eq:
            if i + 1 >= len(tokens):
                raise UserError(f"--{name} needs a value, e.g. --{name} {_example(name)}.")
            i += 1
            value = tokens[i]
        if name in REPEATABLE:
            loras.extend(parse_lora_specs(value))
            lora_given = True
            i += 1
            continue
        if name in values:
            raise UserError(
                f"--{name} is given twice ({values[name]} and {value}). Give it once, "
                f"e.g. --{name} {_example(name)}."
            )
        values[name] = value
        i += 1
    return AnimateOptions(
        prompt=" ".join(prompt_words),
        seconds=_number(values, "seconds", float),
        seed=_number(values, "seed", int),
        steps=_number(values, "steps", int),
        guidance=_number(values, "guidance", float),
        model=values.get("model"),
        cache=values.get("cache"),
        end="end" in values,
        loras=tuple(loras) if lora_given else None,
    )


def parse_lora_specs(text: str) -> list[tuple[str, float | None]]:
    """`name[:scale]`, or several of them separated by commas, as (name, scale or None);
    ``none``: no LoRA (a remix then drops the ones of the job it remixes)."""
    if text.strip().lower() == NO_LORA:
        return []
    specs: list[tuple[str, float | None]] = []
    for part in text.split(","):
        name, colon, scale_text = part.strip().partition(":")
        name = name.strip().lower()
        if not name:
            raise UserError("--lora needs a name, e.g. --lora ghibli or --lora ghibli:0.8.")
        scale: float | None = None
        if colon:
            try:
                scale = float(scale_text)
            except ValueError:
                scale = math.nan
            if not math.isfinite(scale):
                raise UserError(
                    f"--lora {name}: the scale must be a number, not {scale_text!r}; "
                    f"e.g. --lora {name}:0.8."
                )
        specs.append((name, scale))
    return specs


def clean_prompt(text: str) -> tuple[str, int]:
    """The prompt without control characters (a NUL, an escape sequence, bidi overrides
    that make a caption read backwards), whitespace runs as one space; and how many
    characters were removed. Emoji joiners and other format characters stay."""
    removed = 0
    kept = []
    for char in text:
        if char.isspace():
            kept.append(" ")
        elif unicodedata.category(char) == "Cc" or char in _BIDI_CONTROLS:
            removed += 1
        else:
            kept.append(char)
    return " ".join("".join(kept).split()), removed


_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _example(name: str) -> str:
    examples = {
        "seconds": "5",
        "seed": "42",
        "steps": "25",
        "guidance": "10",
        "model": "f1",
        "lora": "name:0.8",
        "cache": "off",
    }
    return examples.get(name, "")


def _number(values: dict[str, str], name: str, kind: type) -> float | int | None:
    if name not in values:
        return None
    text = values[name]
    try:
        value = kind(text)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise UserError(
            f"--{name} must be {what}, not {text!r}; e.g. --{name} {_example(name)}."
        ) from None
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"--{name} must be a finite number, e.g. --{name} {_example(name)}.")
    return value


def build_params(
    options: AnimateOptions,
    settings: GenerationSettings,
    *,
    has_end_image: bool = False,
    rng: random.Random | None = None,
    catalogue: ModelSettings | None = None,
) -> JobParams:
    """Check every option against the configured bounds; fill the defaults."""
    prompt, _ = clean_prompt(options.prompt)
    if not prompt:
        raise UserError(f"Say what should happen in the picture.\nUsage: {USAGE}")
    if len(prompt) > settings.max_prompt_chars:
        raise UserError(
            f"The prompt is {len(prompt)} characters long; the most is "
            f"{settings.max_prompt_chars}. Please shorten it."
        )
    seconds = settings.seconds if options.seconds is None else float(options.seconds)
    if not 0.5 <= seconds <= settings.max_seconds:
        raise UserError(
            f"--seconds must be between 0.5 and {settings.max_seconds:g}, not {seconds:g}."
        )
    steps = settings.steps if options.steps is None else int(options.steps)
    if not 1 <= steps <= settings.max_steps:
        raise UserError(f"--steps must be between 1 and {settings.max_steps}, not {steps}.")
    guidance = settings.guidance if options.guidance is None else float(options.guidance)
    if not 1.0 <= guidance <= 32.0:
        raise UserError(f"--guidance must be between 1 and 32, not {guidance:g}.")
    model = (options.model or "framepack").lower()
    if model not in MODELS:
        raise UserError(f"--model must be framepack or f1, not {options.model!r}.")
    if has_end_image and model != "framepack":
        raise UserError("An end image works with --model framepack only (F1 renders forwards).")
    cache = (options.cache or settings.cache).lower()
    if cache not in CACHES:
        raise UserError(
            f"--cache must be off, teacache or magcache, not {options.cache!r} "
            "(off: every step computed, slower and exact)."
        )
    seed = options.seed
    if seed is None:
        seed = (rng or _SEEDS).randint(0, SEED_MAX)
    if not 0 <= seed <= SEED_MAX:
        raise UserError(f"--seed must be between 0 and {SEED_MAX}, not {seed}.")
    loras = check_loras(options.loras or (), model, catalogue or ModelSettings())
    return JobParams(
        prompt=prompt,
        seconds=seconds,
        seed=seed,
        steps=steps,
        guidance=guidance,
        model=model,
        loras=loras,
        cache=cache,
        cache_threshold=settings.cache_threshold(cache),
    )


def check_loras(
    asked: tuple[tuple[str, float | None], ...], model: str, catalogue: ModelSettings
) -> tuple[tuple[str, float], ...]:
    """The LoRAs asked for `model`, each with its scale (the catalogue's default where none
    is given); an unknown one, a scale out of range, one for the other model or too many
    are refused with the valid choices."""
    if not asked:
        return ()
    choices = [lora.name for lora in catalogue.loras_for(model)]
    if not choices or catalogue.max_loras == 0:
        raise UserError(f"This bot has no LoRAs for the {model} model.")
    valid = f"The LoRAs for {model} are: {', '.join(choices)} (see /loras)."
    if len(asked) > catalogue.max_loras:
        raise UserError(
            f"At most {catalogue.max_loras} LoRA{'s' if catalogue.max_loras > 1 else ''} "
            f"per video; you gave {len(asked)}."
        )
    low, high = catalogue.lora_min_scale, catalogue.lora_max_scale
    chosen: list[tuple[str, float]] = []
    for name, scale in asked:
        lora = catalogue.lora(name)
        if lora is None:
            raise UserError(f"There is no LoRA called {name!r}. {valid}")
        if not lora.for_model(model):
            raise UserError(
                f"The LoRA {name!r} is for the {' and '.join(lora.models)} model, not {model}: "
                f"choose the {lora.models[0]} model or another LoRA. {valid}"
            )
        if any(name == other for other, _ in chosen):
            raise UserError(f"The LoRA {name!r} is given twice; give it once, with one scale.")
        scale = lora.scale if scale is None else scale
        if not low <= scale <= high:
            raise UserError(
                f"The scale of the LoRA {name!r} must be between {low:g} and {high:g}, "
                f"not {scale:g}; e.g. {name}:{lora.scale:g}."
            )
        chosen.append((lora.name, float(scale)))
    return tuple(chosen)


def new_seed(rng: random.Random | None = None) -> int:
    return (rng or _SEEDS).randint(0, SEED_MAX)


def parse_job_id(text: str) -> int | None:
    """A job number as a user or a button gives it (`12`, `#12`); None for anything else
    (digits other than 0-9, a number no job can have)."""
    text = text.removeprefix("#")
    if not text.isascii() or not text.isdigit() or len(text) > JOB_ID_DIGITS:
        return None
    return int(text)


def parse_limit_args(args: list[str]) -> tuple[int | None, float | None]:
    """`<jobs waiting> <seconds a day>` of /limit, or `default` (None, None)."""
    if [a.lower() for a in args] == ["default"]:
        return None, None
    if len(args) != 2:
        raise UserError(LIMIT_USAGE)
    try:
        return int(args[0]), float(args[1])
    except ValueError:
        raise UserError(LIMIT_USAGE) from None
