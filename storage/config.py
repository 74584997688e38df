"""Typed settings loaded from one TOML file, validated once at start.

Every key of `config.example.toml` has a default here. A key we do not know, a
value of the wrong type or out of range stops the start with the key's full
name (``queue.max_waiting``) and what would be valid. Secrets (bot tokens) are
never in the TOML: it names an environment variable or a file that holds them,
and the loaded value is a `Secret` whose repr and str hide it.

Lives in `storage/` because both processes (the bot and the worker) read it and
`storage` is the one package both may import.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from storage.files import DataDir


class ConfigError(ValueError):
    """A config file that cannot run; the message names the key and what is valid."""


class Secret:
    """A token that must never reach a log line, an error message or a repr."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('********')" if self._value else "Secret('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def _spec(
    default: Any,
    *,
    help: str = "",
    choices: tuple[Any, ...] = (),
    min: float | None = None,
    max: float | None = None,
) -> Any:
    """A field with its validation declared as data (choices, bounds)."""
    meta = {"help": help, "choices": choices, "min": min, "max": max}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class StorageSettings:
    data_dir: Path = _spec(Path("data"), help="the SQLite database and every file of every job")
    retention_days: float = _spec(
        7.0, min=0, help="files of delivered jobs older than this are removed; 0 keeps them"
    )
    # A full disk fails nothing: jobs wait (and a rendering one resumes where it
    # stopped) while the data dir's disk has less than this free.
    min_free_mb: float = _spec(500.0, min=0, help="jobs wait while less is free on the disk")


MODEL_COMPONENTS = (
    "transformer",
    "text_encoder",
    "tokenizer",
    "text_encoder_2",
    "tokenizer_2",
    "vae",
    "image_encoder",
    "feature_extractor",
)


LORA_MODELS = ("framepack", "f1")
_LORA_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
NO_LORA = "none"  # `--lora none`: a remix without the LoRAs of the job it remixes


@dataclass(frozen=True)
class LoraSettings:
    """One LoRA of the host's catalogue (`[[model.loras]]`): members pick it by name."""

    name: str = _spec("", help="what members type: lowercase letters, digits, - and _")
    # a local file (relative to the config file) or a Hub file "owner/repo/path.safetensors"
    source: str = _spec("", help="a .safetensors file, local or owner/repo/file on the Hub")
    scale: float = _spec(1.0, help="the scale when a member gives none")
    triggers: str = _spec("", help="words added to the prompt when it is used")
    models: list[str] = _spec(list(LORA_MODELS), help="the models it was trained for")
    description: str = _spec("", help="one line shown by /loras")
    # computed: the local file (resolved against the config's folder), or the Hub's
    # (repo, file); exactly one is set
    path: Path | None = field(default=None, metadata={"computed": True})
    hub: tuple[str, str] | None = field(default=None, metadata={"computed": True})

    def for_model(self, model: str) -> bool:
        return model in self.models


@dataclass(frozen=True)
class ModelSettings:
    preset: str = _spec("framepack", choices=("framepack", "f1", "tiny"))
    memory: str = _spec("auto", choices=("auto", "high", "offload", "low"))
    device: str = _spec("auto", help="auto | cpu | cuda | cuda:N")
    cache_dir: str = _spec("", help="Hugging Face cache folder; empty: its default")
    # component name -> Hub repo id or local folder, overriding the preset's
    sources: dict[str, str] = _spec({})
    # The LoRA catalogue, curated by the host; members pick by name per job
    loras: list[LoraSettings] = _spec([])
    max_loras: int = _spec(2, min=0, max=8, help="LoRAs a member may combine in one job")
    lora_min_scale: float = _spec(0.0, min=-4.0, max=4.0, help="least scale a member may ask")
    lora_max_scale: float = _spec(2.0, min=-4.0, max=4.0, help="greatest scale a member may ask")

    def lora(self, name: str) -> LoraSettings | None:
        """The catalogue's LoRA called `name` (case-insensitive), if any."""
        return next((lora for lora in self.loras if lora.name == name.lower()), None)

    def loras_for(self, model: str) -> list[LoraSettings]:
        return [lora for lora in self.loras if lora.for_model(model)]


@dataclass(frozen=True)
class GenerationSettings:
    seconds: float = _spec(5.0, min=0.5, max=120.0)
    max_seconds: float = _spec(60.0, min=0.5, max=120.0)
    steps: int = _spec(25, min=1, max=100)
    max_steps: int = _spec(50, min=1, max=100)
    guidance: float = _spec(10.0, min=1.0, max=32.0)
    # real CFG: above 1, each step adds a pass on the negative prompt ("" included) and
    # takes about twice as long; 1 is the demo's default and turns it off
    cfg: float = _spec(1.0, min=1.0, max=32.0)
    negative_prompt: str = _spec("", help="what real CFG steers away from (cfg > 1)")
    # base of the resolution buckets; None: 640, or 128 for the tiny preset
    resolution: int | None = _spec(None, min=64, max=1024)
    scheduler: str = _spec("unipc", choices=("unipc", "euler"))
    # The step cache of a job that names none (`--cache`): skipped block-stack passes
    # reuse the last residual. magcache: FramePack-Studio's measurements (2.07-2.45x,
    # fewer visible misses than TeaCache's 1.92-2.25x); off renders the demo's frames.
    cache: str = _spec("magcache", choices=("off", "teacache", "magcache"))
    teacache_threshold: float = _spec(
        0.15, min=0.01, max=1.0, help="TeaCache's rel_l1_thresh: 0.15 about 2.1x, 0.1 about 1.6x"
    )
    magcache_threshold: float = _spec(
        0.1, min=0.01, max=0.5, help="MagCache's accumulated error allowed before a step computes"
    )
    max_prompt_chars: int = _spec(1000, min=1, max=10000)
    max_image_bytes: int = _spec(20_000_000, min=1)
    max_image_pixels: int = _spec(40_000_000, min=1)
    # A video sent with /animate is continued: these bound what is taken
    max_video_seconds: float = _spec(60.0, min=1.0, help="longest video taken as an input")
    max_video_bytes: int = _spec(20_000_000, min=1, help="largest video file taken as an input")
    max_video_pixels: int = _spec(2_100_000, min=1, help="most pixels a frame of an input")

    def cache_threshold(self, cache: str) -> float | None:
        """The host's threshold of the step cache `cache` (None for off)."""
        return {"teacache": self.teacache_threshold, "magcache": self.magcache_threshold}.get(cache)


@dataclass(frozen=True)
class QueueSettings:
    max_waiting_per_user: int = _spec(3, min=1, help="jobs a user may have waiting or rendering")
    max_waiting: int = _spec(100, min=1, help="jobs waiting in all")
    max_video_seconds_per_day: float = _spec(
        600.0, min=0, help="seconds of video a user may ask for in 24 hours; 0: no limit"
    )
    cooldown_seconds: float = _spec(0.0, min=0, help="least time between two jobs of one user")
    max_attempts: int = _spec(3, min=1, help="a job whose worker died this often fails")
    heartbeat_timeout: float = _spec(
        60.0, min=5, help="a running job silent this long goes back to the queue"
    )


@dataclass(frozen=True)
class WorkerSettings:
    heartbeat_seconds: float = _spec(5.0, min=0.5)
    step_event_interval: float = _spec(1.0, min=0.0, help="least seconds between two step events")
    restart_backoff_max: float = _spec(60.0, min=1.0)
    stall_seconds: float = _spec(
        900.0, min=60.0, help="an engine silent this long is hung: the worker exits"
    )
    # `framepack-bot run` starts a worker beside the bots: "auto" when this install has
    # the worker's packages (`framepack-bot[worker]`), so a bot-only host leaves the GPU
    # to `framepack-bot worker` elsewhere.
    run_here: str = _spec("auto", choices=("auto", "yes", "no"))


@dataclass(frozen=True)
class TelegramSettings:
    enabled: bool = _spec(False)
    token_env: str = _spec("TELEGRAM_BOT_TOKEN")
    token_file: str = _spec("", help="a file holding the token, read when token_env is unset")
    base_url: str = _spec("")
    base_file_url: str = _spec("")
    allowed_chats: list[int] = _spec([])
    admins: list[int] = _spec([])
    edit_interval: float = _spec(3.0, min=1.0, help="least seconds between two edits of a message")
    upload_limit_mb: int = _spec(0, min=0, help="0: 50, or 2000 with a local Bot API server")
    token: Secret = field(default_factory=lambda: Secret(""), metadata={"computed": True})


@dataclass(frozen=True)
class DiscordSettings:
    enabled: bool = _spec(False)
    token_env: str = _spec("DISCORD_BOT_TOKEN")
    token_file: str = _spec("")
    allowed_guilds: list[int] = _spec([])
    admins: list[int] = _spec([])
    allow_dms: bool = _spec(False)
    threads: bool = _spec(False, help="each job's message starts a thread of its own")
    edit_interval: float = _spec(3.0, min=1.0)
    api_base: str = _spec("", help="empty: Discord's REST API; else its base URL (a test double)")
    gateway_url: str = _spec("", help="empty: Discord's gateway; else its websocket URL")
    token: Secret = field(default_factory=lambda: Secret(""), metadata={"computed": True})


@dataclass(frozen=True)
class WebSettings:
    """The host's web page, served by `framepack-bot run` (bot/web/)."""

    enabled: bool = _spec(True, help="serve the page; `run` needs no chat platform then")
    # Loopback by default: the page steers the whole bot, so reaching it from another
    # machine must be the host's decision (and then best behind a TLS reverse proxy).
    listen: str = _spec("127.0.0.1:8765", help="host:port, [v6]:port; port 0: any free one")
    password_env: str = _spec("FRAMEPACK_WEB_PASSWORD")
    password_file: str = _spec(
        "", help="a file holding the password, read when password_env is unset"
    )
    session_hours: float = _spec(168.0, min=0.1, max=8760.0, help="a login lasts this long")
    password: Secret = field(default_factory=lambda: Secret(""), metadata={"computed": True})

    @property
    def address(self) -> tuple[str, int]:
        """The host and port of `listen` (checked when the config was loaded)."""
        return parse_listen("web.listen", self.listen)


def parse_listen(key: str, value: str) -> tuple[str, int]:
    """`host:port` or `[v6 address]:port` as (host, port); a `ConfigError` names the key."""
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isascii() or not port.isdigit() or int(port) > 65535:
        raise ConfigError(
            f"{key}: {value!r} is not host:port, e.g. 127.0.0.1:8765 (this machine only), "
            "0.0.0.0:8765 (every address) or [::1]:8765"
        )
    return host, int(port)


@dataclass(frozen=True)
class LoggingSettings:
    level: str = _spec("INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))


@dataclass(frozen=True)
class Settings:
    storage: StorageSettings = field(default_factory=StorageSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    queue: QueueSettings = field(default_factory=QueueSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    telegram: TelegramSettings = field(default_factory=TelegramSettings)
    discord: DiscordSettings = field(default_factory=DiscordSettings)
    web: WebSettings = field(default_factory=WebSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    source: Path | None = field(default=None, metadata={"computed": True})

    @property
    def resolution(self) -> int:
        """The bucket base in force: the configured one, else the preset's."""
        if self.generation.resolution is not None:
            return self.generation.resolution
        return 128 if self.model.preset == "tiny" else 640

    @property
    def database_path(self) -> Path:
        return DataDir(self.storage.data_dir).database


def _type_name(tp: Any) -> str:
    return {
        bool: "true or false",
        int: "an integer",
        float: "a number",
        str: "a string",
        Path: "a path (string)",
    }.get(tp, str(tp))


def _coerce(key: str, tp: Any, value: Any) -> Any:
    """Check one value against its declared type; return it converted."""
    origin = getattr(tp, "__origin__", None)
    args = getattr(tp, "__args__", ())
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is Path:
        if isinstance(value, str) and value:
            return Path(value)
    elif dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, dict):
            return _build_section(key, tp, value)
        raise ConfigError(f"{key}: expected a table, got {value!r}")
    elif origin is list:
        if isinstance(value, list):
            return [_coerce(f"{key}[{i}]", args[0], v) for i, v in enumerate(value)]
        raise ConfigError(f"{key}: expected a list of {_type_name(args[0])}s, got {value!r}")
    elif origin is dict:
        if isinstance(value, dict):
            return {str(k): _coerce(f"{key}.{k}", args[1], v) for k, v in value.items()}
        raise ConfigError(f"{key}: expected a table, got {value!r}")
    elif type(None) in args:  # Optional[X]
        inner = next(a for a in args if a is not type(None))
        return _coerce(key, inner, value)
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")


def _check(key: str, meta: Mapping[str, Any], value: Any) -> None:
    choices = meta.get("choices") or ()
    if choices and value not in choices:
        valid = " | ".join(str(c) for c in choices)
        raise ConfigError(f"{key}: {value!r} is not one of {valid}")
    lo, hi = meta.get("min"), meta.get("max")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if lo is not None and value < lo:
            raise ConfigError(f"{key}: {value!r} is below the least valid value {lo}")
        if hi is not None and value > hi:
            raise ConfigError(f"{key}: {value!r} is above the greatest valid value {hi}")


def _build_section(name: str, cls: type, table: Any) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"{name}: expected a table [{name}], got {table!r}")
    hints = get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("computed")}
    values: dict[str, Any] = {}
    for key, raw in table.items():
        full = f"{name}.{key}"
        if key not in known:
            valid = ", ".join(sorted(known))
            raise ConfigError(f"{full}: unknown key; valid keys of [{name}] are {valid}")
        value = _coerce(full, hints[key], raw)
        _check(full, known[key].metadata, value)
        values[key] = value
    return cls(**values)


def _read_secret(
    section: str, env_name: str, file_name: str, base: Path, key: str = "token_file"
) -> Secret:
    value = os.environ.get(env_name, "") if env_name else ""
    if not value and file_name:
        path = Path(file_name)
        if not path.is_absolute():
            path = base / path
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{section}.{key}: cannot read {path}: {exc.strerror}") from None
    return Secret(value)


def parse_settings(
    data: Mapping[str, Any], *, base_dir: Path | None = None, source: Path | None = None
) -> Settings:
    """Validate a parsed TOML document into `Settings` (relative paths from base_dir)."""
    base = base_dir or Path.cwd()
    sections = {f.name: f for f in dataclasses.fields(Settings) if not f.metadata.get("computed")}
    hints = get_type_hints(Settings)
    built: dict[str, Any] = {}
    for name, table in data.items():
        if name not in sections:
            valid = ", ".join(f"[{s}]" for s in sections)
            raise ConfigError(f"{name}: unknown section; valid sections are {valid}")
        built[name] = _build_section(name, hints[name], table)
    settings = Settings(**built, source=source)

    storage = settings.storage
    if not storage.data_dir.is_absolute():
        storage = dataclasses.replace(storage, data_dir=base / storage.data_dir)
    unknown = set(settings.model.sources) - set(MODEL_COMPONENTS)
    if unknown:
        raise ConfigError(
            f"model.sources.{sorted(unknown)[0]}: unknown component; "
            f"valid: {', '.join(MODEL_COMPONENTS)}"
        )
    model = dataclasses.replace(settings.model, loras=_check_loras(settings.model, base))
    gen = settings.generation
    if gen.seconds > gen.max_seconds:
        raise ConfigError(
            f"generation.seconds: the default {gen.seconds} is above generation.max_seconds "
            f"{gen.max_seconds}"
        )
    if gen.steps > gen.max_steps:
        raise ConfigError(
            f"generation.steps: the default {gen.steps} is above generation.max_steps "
            f"{gen.max_steps}"
        )
    telegram = dataclasses.replace(
        settings.telegram,
        base_url=_bot_api_url("telegram.base_url", settings.telegram.base_url, "/bot"),
        base_file_url=_bot_api_url(
            "telegram.base_file_url", settings.telegram.base_file_url, "/file/bot"
        ),
        token=_read_secret(
            "telegram", settings.telegram.token_env, settings.telegram.token_file, base
        ),
    )
    discord = dataclasses.replace(
        settings.discord,
        token=_read_secret(
            "discord", settings.discord.token_env, settings.discord.token_file, base
        ),
    )
    web = settings.web
    parse_listen("web.listen", web.listen)
    web = dataclasses.replace(
        web,
        password=_read_secret("web", web.password_env, web.password_file, base, "password_file"),
    )
    return dataclasses.replace(
        settings, storage=storage, model=model, telegram=telegram, discord=discord, web=web
    )


def _check_loras(model: ModelSettings, base: Path) -> list[LoraSettings]:
    """The catalogue checked (names unique and typeable, scales in range, models known),
    each source resolved: a local file, or a Hub repo's file."""
    if model.lora_min_scale > model.lora_max_scale:
        raise ConfigError(
            f"model.lora_min_scale: {model.lora_min_scale:g} is above model.lora_max_scale "
            f"{model.lora_max_scale:g}"
        )
    checked: list[LoraSettings] = []
    for i, lora in enumerate(model.loras):
        key = f"model.loras[{i}]"
        if not _LORA_NAME.match(lora.name):
            raise ConfigError(
                f"{key}.name: {lora.name!r} is not a name members can type; use 1-32 "
                'lowercase letters, digits, - and _ (e.g. "ghibli")'
            )
        if lora.name == NO_LORA:
            raise ConfigError(
                f'{key}.name: "{NO_LORA}" is what members type for no LoRA; choose another name'
            )
        if any(other.name == lora.name for other in checked):
            raise ConfigError(f"{key}.name: {lora.name!r} is in the catalogue twice")
        if not lora.source:
            raise ConfigError(
                f"{key}.source: missing; a .safetensors file (relative to the config file) "
                "or a Hub file owner/repo/file.safetensors"
            )
        if not model.lora_min_scale <= lora.scale <= model.lora_max_scale:
            raise ConfigError(
                f"{key}.scale: {lora.scale:g} is outside model.lora_min_scale "
                f"{model.lora_min_scale:g} .. model.lora_max_scale {model.lora_max_scale:g}"
            )
        unknown = [m for m in lora.models if m not in LORA_MODELS]
        if unknown or not lora.models:
            raise ConfigError(
                f"{key}.models: {unknown[0] if unknown else '[]'!r} is not a model; "
                f"valid: {', '.join(LORA_MODELS)} (one or both)"
            )
        checked.append(dataclasses.replace(lora, **_lora_location(lora.source, base)))
    return checked


def _lora_location(source: str, base: Path) -> dict[str, Any]:
    """A local path (absolute, ./ or ../, ~, an existing file, or fewer than three parts),
    else the Hub: the first two parts are the repo, the rest the file in it."""
    expanded = Path(source).expanduser()
    local = expanded if expanded.is_absolute() else base / expanded
    parts = source.split("/")
    if (
        source.startswith(("/", "./", "../", "~"))
        or len(parts) < 3
        or local.exists()
        or "" in parts
    ):
        return {"path": local, "hub": None}
    return {"path": None, "hub": ("/".join(parts[:2]), "/".join(parts[2:]))}


def _bot_api_url(key: str, value: str, path: str) -> str:
    """A Bot API server's URL as python-telegram-bot takes it (the token is appended
    to it): a bare server address gets the Bot API's own path, as its docs name it."""
    if not value:
        return value
    parts = urllib.parse.urlsplit(value)
    try:
        usable = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError:
        usable = False
    if not usable:
        raise ConfigError(
            f"{key}: {value!r} is not an http(s) URL; a local Bot API server's is "
            f"e.g. http://localhost:8081{path}"
        )
    if parts.path in ("", "/"):
        return value.rstrip("/") + path
    return value


def load_settings(path: str | Path | None = None) -> Settings:
    """Load and validate the TOML file at `path`; None gives the defaults."""
    if path is None:
        return parse_settings({})
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such config file; copy config.example.toml to {path} and edit it"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_settings(data, base_dir=path.resolve().parent, source=path)
