"""`framepack-bot doctor`: what is missing to run the bot, and how to fix it.

Each check prints one line: ✓ fine, ! worth knowing, ✗ the bot cannot run
(then the exit status is 1).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bot.adapters import token_source
from storage.config import ConfigError, Settings, load_settings
from storage.db import SCHEMA_VERSION, SchemaTooNew, schema_version
from storage.files import DataDir

MIN_VRAM_GB = 6.0
WEIGHTS_GB = 40.0
CONFIG_FILES = ("config.json", "tokenizer_config.json", "preprocessor_config.json")


@dataclass(frozen=True)
class Finding:
    level: str  # ok | warn | fail
    what: str
    fix: str = ""

    def line(self) -> str:
        mark = {"ok": "✓", "warn": "!", "fail": "✗"}[self.level]
        return f"{mark} {self.what}" + (f"\n    fix: {self.fix}" if self.fix else "")


def check_python() -> Finding:
    v = sys.version_info
    if v < (3, 11):
        return Finding("fail", f"Python {v.major}.{v.minor}", "install Python 3.11 or newer")
    return Finding("ok", f"Python {v.major}.{v.minor}.{v.micro}")


def check_gpu(settings: Settings) -> list[Finding]:
    needs_gpu = settings.model.preset != "tiny"
    if importlib.util.find_spec("torch") is None:
        return [
            Finding("fail", "PyTorch is not installed", "pip install torch (see README: Set up)")
        ]
    import torch

    findings = [Finding("ok", f"PyTorch {torch.__version__}")]
    if settings.model.device == "cpu" or not torch.cuda.is_available():
        level = "fail" if needs_gpu else "ok"
        fix = (
            "install an NVIDIA driver and a CUDA build of PyTorch, or set [model] preset = "
            '"tiny" to try the chat flow without a GPU (its videos are noise)'
            if needs_gpu
            else ""
        )
        what = "no CUDA GPU" + ("" if needs_gpu else " (fine: the tiny preset runs on the CPU)")
        return [*findings, Finding(level, what, fix)]
    index = torch.cuda.current_device()
    free, total = torch.cuda.mem_get_info(index)
    name = torch.cuda.get_device_name(index)
    findings.append(
        Finding("ok", f"GPU {name}: {free / 2**30:.1f} of {total / 2**30:.1f} GiB free")
    )
    if needs_gpu and total / 2**30 < MIN_VRAM_GB:
        findings.append(
            Finding(
                "fail",
                f"{total / 2**30:.1f} GiB of VRAM; FramePack needs {MIN_VRAM_GB:g} GiB",
                "use a GPU with more memory",
            )
        )
    elif needs_gpu and free / 2**30 < MIN_VRAM_GB:
        findings.append(
            Finding(
                "warn",
                "other programs use the GPU's memory",
                'close them, or set [model] memory = "low"',
            )
        )
    return findings


def check_ffmpeg() -> Finding:
    try:
        import imageio_ffmpeg

        exe = imageio_ffmpeg.get_ffmpeg_exe()
        out = subprocess.run(
            [exe, "-hide_banner", "-version"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        return Finding("ok", f"ffmpeg: {out.split(chr(10))[0]}")
    except Exception as exc:
        return Finding(
            "fail", f"ffmpeg does not run ({exc})", "pip install --force-reinstall imageio-ffmpeg"
        )


def check_storage(settings: Settings) -> list[Finding]:
    root = settings.storage.data_dir
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / ".doctor-write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        return [
            Finding(
                "fail",
                f"data dir {root} is not writable ({exc.strerror})",
                "create it and give this user write access, or set [storage] data_dir",
            )
        ]
    findings = [Finding("ok", f"data dir {root}")]
    findings.append(check_database(DataDir(root).database))
    free_gb = shutil.disk_usage(root).free / 1e9
    if settings.model.preset != "tiny" and free_gb < WEIGHTS_GB + 10:
        findings.append(
            Finding(
                "warn",
                f"{free_gb:.0f} GB free on the data dir's disk",
                f"the model weights take about {WEIGHTS_GB:.0f} GB on first run",
            )
        )
    return findings


def check_database(path: Path) -> Finding:
    """The database as it is: read only (the bot and the worker migrate it at start)."""
    if not path.exists():
        return Finding("ok", f"database {path} (created at the first start)")
    try:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
        try:
            version = schema_version(conn)
            waiting = (
                conn.execute("SELECT COUNT(*) FROM jobs WHERE status = 'queued'").fetchone()[0]
                if version
                else 0
            )
        finally:
            conn.close()
    except SchemaTooNew as exc:
        return Finding("fail", str(exc), "upgrade framepack-bot")
    except sqlite3.Error as exc:
        return Finding(
            "fail",
            f"database cannot be opened ({exc})",
            "move the damaged file away; the bot creates a new one",
        )
    return Finding("ok", f"database schema {version}/{SCHEMA_VERSION}, {waiting} jobs waiting")


def check_models(settings: Settings) -> list[Finding]:
    if settings.model.preset == "tiny":
        return [Finding("ok", "model: tiny preset (built in code, nothing to download)")]
    from framepack.models.loading import parse_source
    from framepack.models.presets import get_preset

    sources = {**get_preset(settings.model.preset).sources, **settings.model.sources}
    missing = []
    for component, value in sources.items():
        try:
            source = parse_source(value, component)
        except ValueError as exc:
            return [Finding("fail", str(exc), "fix [model.sources] in the config")]
        if Path(source.location).is_dir():
            continue
        if not _cached(source.location, source.subfolder, settings.model.cache_dir or None):
            missing.append(str(source))
    if missing:
        return [
            Finding(
                "warn",
                f"model files not downloaded yet: {', '.join(sorted(missing))}",
                f"the worker downloads them on first start (about {WEIGHTS_GB:.0f} GB); "
                "or run `framepack-bot animate` once to fetch them",
            )
        ]
    return [Finding("ok", f"model files for preset {settings.model.preset} are cached")]


def _cached(repo: str, subfolder: str | None, cache_dir: str | None) -> bool:
    from huggingface_hub import try_to_load_from_cache

    for name in CONFIG_FILES:
        filename = f"{subfolder}/{name}" if subfolder else name
        found = try_to_load_from_cache(repo, filename, cache_dir=cache_dir)
        if isinstance(found, str):
            return True
    return False


def check_loras(settings: Settings) -> list[Finding]:
    """Each catalogue LoRA: its file is there (a Hub one in the cache: nothing is
    downloaded), it reads as a LoRA in one of the namings, and every module it adapts is
    one of its model's transformer with its sizes. One line each."""
    loras = settings.model.loras
    if not loras:
        return []
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("peft") is None:
        return [
            Finding(
                "warn",
                f"{len(loras)} LoRA(s) not checked: the worker's packages are not installed",
                "pip install 'framepack-bot[worker]'",
            )
        ]
    from framepack.models.lora import LoraError, check_against, convert_lora, read_lora_file
    from framepack.worker.engines import lora_path

    transformer = _transformer_skeleton(settings.model.preset)
    findings = []
    for lora in loras:
        where = f"{lora.hub[0]}/{lora.hub[1]}" if lora.hub else str(lora.path)
        try:
            path = lora_path(lora, settings.model.cache_dir, download=False)
        except LoraError as exc:
            fix = (
                f"{lora.source!r} is read as a Hugging Face Hub file, which the worker "
                "downloads at its start; fetch it now with "
                f"`huggingface-cli download {lora.hub[0]} {lora.hub[1]}`, or, for a local "
                f"file, write the source as './{lora.source}'"
                if lora.hub
                else "put the file there, or fix source under [[model.loras]]"
            )
            findings.append(Finding("warn", f"LoRA {lora.name}: {exc}", fix))
            continue
        try:
            converted, naming = convert_lora(read_lora_file(path))
            check_against(converted, transformer)
        except LoraError as exc:
            findings.append(
                Finding(
                    "warn",
                    f"LoRA {lora.name} ({where}): {exc}",
                    "its jobs fail until it is replaced by a FramePack/HunyuanVideo LoRA "
                    "or taken out of [[model.loras]]",
                )
            )
            continue
        findings.append(
            Finding(
                "ok",
                f"LoRA {lora.name}: {naming} naming, {len(converted) // 2} modules matched "
                f"({', '.join(lora.models)}; {where})",
            )
        )
    return findings


def _transformer_skeleton(preset: str) -> object:
    """The transformer's modules with their sizes, without weights: the tiny one, or the
    published FramePack architecture on the meta device (F1 has the same shapes)."""
    if preset == "tiny":
        from framepack.models.tiny import build_tiny_components

        return build_tiny_components().transformer
    import torch
    from diffusers import HunyuanVideoFramepackTransformer3DModel

    from framepack.models.configs import TRANSFORMER

    with torch.device("meta"):
        return HunyuanVideoFramepackTransformer3DModel(**TRANSFORMER)


def check_tokens(settings: Settings) -> list[Finding]:
    findings = []
    for name, section in (("telegram", settings.telegram), ("discord", settings.discord)):
        if not section.enabled:
            continue
        if section.token:
            findings.append(Finding("ok", f"{name}: token set ({token_source(section)})"))
        else:
            findings.append(
                Finding(
                    "fail",
                    f"{name}: enabled but no token",
                    f"export {section.token_env}=<your bot token>",
                )
            )
    if not findings and settings.web.enabled:
        findings.append(
            Finding(
                "ok",
                f"no chat platform is enabled: `run` serves the web page on {settings.web.listen}",
            )
        )
    elif not findings:
        findings.append(
            Finding(
                "fail",
                "no chat platform is enabled and the web page is off",
                "set enabled = true under [web], [telegram] or [discord] in the config",
            )
        )
    return findings


def run_checks(settings: Settings) -> list[Finding]:
    return [
        check_python(),
        *check_gpu(settings),
        check_ffmpeg(),
        *check_storage(settings),
        *check_models(settings),
        *check_loras(settings),
        *check_tokens(settings),
    ]


def main(args: argparse.Namespace) -> int:
    config = Path(args.config)
    try:
        settings = load_settings(config if config.exists() else None)
    except ConfigError as exc:
        print(f"✗ config: {exc}")
        return 1
    where = (
        f"config {config}"
        if config.exists()
        else (f"no {config}: checking the defaults (cp config.example.toml {config})")
    )
    print(f"framepack-bot doctor — {where}")
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        print("! HF_HUB_OFFLINE=1: model files will not be downloaded")
    findings = run_checks(settings)
    for finding in findings:
        print(finding.line())
    failed = [f for f in findings if f.level == "fail"]
    print("\nThe bot can run." if not failed else f"\n{len(failed)} problem(s) stop the bot.")
    return 1 if failed else 0
