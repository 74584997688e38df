"""Telegram through a proxy, as users in regions that block it run the bot: the
proxy the environment names (HTTP or SOCKS5, NO_PROXY honoured) carries every
Bot API call. The proxies are real ones (pproxy) on loopback."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bot.telegram.network import proxy_for
from tests.fakes.telegram_api import FakeTelegram
from tests.telegram_harness import USER, make_settings, replies, running_bot


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def proxy(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[str, Path]]:
    """A pproxy server of the scheme the test names; yields its URL and its log."""
    scheme = request.param
    port = free_port()
    log = tmp_path / "proxy.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pproxy", "-l", f"{scheme}://127.0.0.1:{port}", "-v"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
        yield f"{scheme}://127.0.0.1:{port}", log
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as tg:
        yield tg


def clean_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.mark.parametrize("proxy", ["socks5", "http"], indirect=True)
async def test_every_bot_api_call_goes_through_the_proxy_of_the_environment(
    proxy: tuple[str, Path],
    tmp_path: Path,
    fake: FakeTelegram,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, log = proxy
    clean_proxy_env(monkeypatch)
    monkeypatch.setenv("HTTP_PROXY", url)  # the fake Bot API is served on http://
    settings = make_settings(tmp_path, fake)
    async with running_bot(settings, fake):
        fake.user_sends_text(user_id=USER, text="/help")
        (answer,) = await fake.wait_for(lambda: replies(fake, USER), timeout=15)
    assert "animate" in answer
    await asyncio.sleep(0.2)  # pproxy writes its log line as the connection closes
    assert f"127.0.0.1:{fake.port}" in log.read_text(), log.read_text()


def test_no_proxy_and_the_scheme_pick_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    clean_proxy_env(monkeypatch)
    assert proxy_for("https://api.telegram.org") is None
    monkeypatch.setenv("HTTPS_PROXY", "socks5://user:pw@10.0.0.1:1080")
    assert proxy_for("https://api.telegram.org") == "socks5://user:pw@10.0.0.1:1080"
    assert proxy_for("http://localhost:8081/bot") is None  # HTTP_PROXY is not set
    monkeypatch.setenv("ALL_PROXY", "http://10.0.0.2:3128")
    assert proxy_for("http://localhost:8081/bot") == "http://10.0.0.2:3128"
    monkeypatch.setenv("NO_PROXY", "localhost,api.telegram.org")
    assert proxy_for("https://api.telegram.org") is None
    assert proxy_for("http://localhost:8081/bot") is None
