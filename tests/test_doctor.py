"""`framepack-bot doctor` says what is missing and how to fix it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def doctor(tmp_path: Path, toml: str, **env: str) -> subprocess.CompletedProcess:
    (tmp_path / "config.toml").write_text(toml)
    full_env = {k: v for k, v in os.environ.items() if not k.endswith("_BOT_TOKEN")}
    full_env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])  # this checkout's code
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "framepack_bot.cli", "doctor", "--config", "config.toml"],
        cwd=tmp_path,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_tiny_preset_with_a_token_can_run(tmp_path: Path) -> None:
    result = doctor(
        tmp_path,
        '[model]\npreset = "tiny"\n[telegram]\nenabled = true\n',
        TELEGRAM_BOT_TOKEN="123:secret-token-value",
    )
    assert result.returncode == 0, result.stdout
    assert "The bot can run." in result.stdout
    assert "ffmpeg" in result.stdout and "(created at the first start)" in result.stdout
    assert "secret-token-value" not in result.stdout + result.stderr


def test_an_existing_database_is_read_not_written(tmp_path: Path) -> None:
    import sqlite3

    from storage.db import SCHEMA_VERSION, open_database

    data = tmp_path / "data"
    open_database(data / "framepack-bot.sqlite3").close()
    config = '[model]\npreset = "tiny"\n[telegram]\nenabled = true\ntoken_file = "token"\n'
    (tmp_path / "token").write_text("123:from-a-file")
    result = doctor(tmp_path, config)
    assert f"database schema {SCHEMA_VERSION}/{SCHEMA_VERSION}, 0 jobs waiting" in result.stdout
    assert "telegram: token set (from token)" in result.stdout  # not "from TELEGRAM_BOT_TOKEN"
    newer = data / "framepack-bot.sqlite3"
    conn = sqlite3.connect(newer)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    result = doctor(tmp_path, config)
    assert result.returncode == 1 and "upgrade framepack-bot" in result.stdout


def test_missing_gpu_token_and_models_are_explained(tmp_path: Path) -> None:
    result = doctor(
        tmp_path, '[model]\npreset = "framepack"\ndevice = "cpu"\n[discord]\nenabled = true\n'
    )
    assert result.returncode == 1
    out = result.stdout
    assert "✗ no CUDA GPU" in out and 'preset = "tiny"' in out
    assert "✗ discord: enabled but no token" in out and "export DISCORD_BOT_TOKEN" in out
    assert "model files not downloaded yet" in out and "lllyasviel/FramePackI2V_HY" in out


def test_bad_config_names_the_key(tmp_path: Path) -> None:
    result = doctor(tmp_path, "[queue]\nmax_waiting = -1\n")
    assert result.returncode == 1
    assert "queue.max_waiting" in result.stdout


def test_the_web_page_alone_needs_no_chat_token(tmp_path: Path) -> None:
    result = doctor(tmp_path, '[model]\npreset = "tiny"\n')
    assert result.returncode == 0, result.stdout
    assert "no chat platform is enabled: `run` serves the web page on 127.0.0.1:8765" in (
        result.stdout
    )
    result = doctor(tmp_path, '[model]\npreset = "tiny"\n[web]\nenabled = false\n')
    assert result.returncode == 1 and "the web page is off" in result.stdout
