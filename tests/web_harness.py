"""What the web page's tests share: settings with the page on a free loopback port,
the page served on the test's loop (alone, or by `run_bots` with the chat
adapters), an HTTP client that logs in and posts forms as a browser does, and
real headless Chromium (Debian's `chromium`, driven by Playwright)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import shutil
import socket
import struct
import zlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from bot.service import BotService
from bot.web.server import WebSurface
from storage.config import Settings
from storage.files import DataDir
from storage.store import JobStore, QueueLimits
from tests.worker_fixtures import settings_of, write_config

PASSWORD = "correct horse battery staple"
CHROMIUM = "/usr/bin/chromium"
# As root Chromium needs --no-sandbox; the machine's network is closed, so nothing in
# the background may try to reach Google's services.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--autoplay-policy=no-user-gesture-required",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def web_config(tmp_path: Path, *, password: str | None = PASSWORD, **sections: Any) -> Path:
    """config.toml with the tiny preset and the page on a free loopback port; the
    password in a file (None: the one-time login link)."""
    web: dict[str, Any] = {"enabled": True, "listen": f"127.0.0.1:{free_port()}"}
    if password is not None:
        (tmp_path / "web-password").write_text(password + "\n")
        web["password_file"] = str(tmp_path / "web-password")
    web["password_env"] = "FPB_TEST_WEB_PASSWORD_UNSET"
    web.update(sections.pop("web", {}))
    return write_config(tmp_path, web=web, **sections)


def web_settings(tmp_path: Path, **kw: Any) -> Settings:
    return settings_of(web_config(tmp_path, **kw))


@dataclass
class Page:
    """The page served alone on the test's loop, and what it printed."""

    surface: WebSurface
    store: JobStore
    links: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.surface.url

    @property
    def data(self) -> DataDir:
        return self.surface.service.data


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[Page]:
    """The page (no chat adapter, no tracker) on `settings`' address until the block ends."""
    data = DataDir(settings.storage.data_dir)
    data.ensure()
    store = await JobStore.open(data.database, QueueLimits.from_settings(settings.queue))
    links: list[str] = []
    surface = WebSurface(BotService(store, settings), lambda: None, show_link=links.append)
    await surface.start()
    try:
        yield Page(surface, store, links)
    finally:
        await surface.stop()
        await store.close()


_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class WebClient:
    """A browser without JavaScript: cookies (for a loopback address), forms, redirects."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.csrf = ""

    async def __aenter__(self) -> WebClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.close()

    async def get(self, path: str, **kw: Any) -> tuple[int, str, Mapping[str, str]]:
        async with self.http.get(self.url + path, **kw) as response:
            text = await response.text(errors="replace")
            if found := _CSRF.search(text):
                self.csrf = found.group(1)
            return response.status, text, response.headers

    async def post(
        self, path: str, data: Any = None, *, csrf: bool = True, **kw: Any
    ) -> tuple[int, str, Mapping[str, str]]:
        if csrf and isinstance(data, aiohttp.FormData):
            data.add_field("csrf", self.csrf)
        elif csrf:
            data = {**(data or {}), "csrf": self.csrf}
        async with self.http.post(self.url + path, data=data, **kw) as response:
            text = await response.text(errors="replace")
            if found := _CSRF.search(text):
                self.csrf = found.group(1)
            return response.status, text, response.headers

    async def login(self, password: str = PASSWORD) -> None:
        await self.get("/login")
        status, text, _ = await self.post("/login", {"password": password})
        assert status == 200 and 'data-view="now"' in text, (status, text[:500])


def png(size: tuple[int, int] = (160, 120), colour: tuple[int, int, int] = (30, 120, 200)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="PNG")
    return out.getvalue()


def noise_png(side: int) -> bytes:
    """A PNG that does not compress: `side`² pixels of noise, about 3 bytes each."""
    out = io.BytesIO()
    Image.effect_noise((side, side), 80).convert("RGB").save(out, format="PNG")
    return out.getvalue()


def bomb_png(width: int = 50_000, height: int = 50_000) -> bytes:
    """A tiny file whose header claims billions of pixels: a decompression bomb."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


def chromium() -> str:
    """Debian's chromium (`.ci/run` installs it). Missing, the browser tests fail with
    how to install it rather than pass unseen as skipped."""
    if shutil.which(CHROMIUM) is None:
        pytest.fail("no /usr/bin/chromium for the browser tests: apt-get install -y chromium")
    return CHROMIUM


@contextlib.asynccontextmanager
async def browser() -> AsyncIterator[Any]:
    """A new headless Chromium, closed at the end."""
    from playwright.async_api import async_playwright

    executable = chromium()
    async with async_playwright() as playwright:
        instance = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            await instance.close()


async def wait_for(predicate: Any, timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll an async or plain predicate until it is truthy; returns its value."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)
