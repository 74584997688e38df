"""Our Bot API client (bot/telegram_http.py) as python-telegram-bot's networking: PTB's
meaning of each failure, and bodies that a real HTTP server (aiohttp's) reads back."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from aiohttp import web
from telegram import InputFile
from telegram.error import NetworkError, RetryAfter, TimedOut
from telegram.request import RequestData
from telegram.request._requestparameter import RequestParameter  # how PTB builds a call

from bot.telegram_http import BotApiRequest


async def serve(handler) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


async def test_a_silent_server_is_a_timeout_and_a_closed_port_a_network_error() -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1)
        return web.json_response({"ok": True, "result": True})

    runner, url = await serve(slow)
    try:
        async with BotApiRequest(read_timeout=0.2) as request:
            with pytest.raises(TimedOut):
                await request.post(f"{url}/botT/getMe")
    finally:
        await runner.cleanup()
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    async with BotApiRequest() as request:
        with pytest.raises(NetworkError, match="cannot connect"):
            await request.post(f"http://127.0.0.1:{port}/botT/getMe")


async def test_parameters_and_files_reach_the_server_and_429_becomes_retry_after() -> None:
    seen: list[dict] = []

    async def api(request: web.Request) -> web.Response:
        form = await request.post()
        seen.append(
            {
                k: (v.filename, v.file.read()) if isinstance(v, web.FileField) else v
                for k, v in form.items()
            }
        )
        if request.path.endswith("sendMessage"):
            return web.json_response(
                {"ok": False, "error_code": 429, "parameters": {"retry_after": 3}}, status=429
            )
        return web.json_response({"ok": True, "result": True})

    runner, url = await serve(api)
    try:
        async with BotApiRequest() as request:
            data = RequestData(
                [
                    RequestParameter.from_input("chat_id", 42),
                    RequestParameter.from_input(
                        "photo", InputFile(b"\x89PNG-bytes", filename="p.png")
                    ),
                ]
            )
            assert await request.post(f"{url}/botT/sendPhoto", request_data=data) is True
            plain = RequestData([RequestParameter.from_input("text", "héllo")])
            with pytest.raises(RetryAfter) as flood:
                await request.post(f"{url}/botT/sendMessage", request_data=plain)
    finally:
        await runner.cleanup()
    assert flood.value.retry_after == 3
    assert seen[0]["chat_id"] == "42" and seen[0]["photo"] == ("p.png", b"\x89PNG-bytes")
    assert seen[1] == {"text": "héllo"}


async def test_a_video_from_disk_and_odd_file_names_reach_the_server(tmp_path: Path) -> None:
    """What sendVideo sends: the file read from disk as it goes (bot/telegram_messages.py
    opens it per attempt), with a name that needs quoting in the multipart header."""
    video = tmp_path / "clip.mp4"
    video.write_bytes(bytes(range(256)) * 3_000)  # under aiohttp's 1 MB body limit
    seen: dict = {}

    async def api(request: web.Request) -> web.Response:
        form = await request.post()
        seen.update(
            {
                k: (v.filename, v.content_type, v.file.read())
                if isinstance(v, web.FileField)
                else v
                for k, v in form.items()
            }
        )
        return web.json_response({"ok": True, "result": True})

    runner, url = await serve(api)
    try:
        async with BotApiRequest() as request, asyncio.timeout(10):
            with video.open("rb") as handle:
                data = RequestData(
                    [
                        RequestParameter.from_input("chat_id", 7),
                        RequestParameter.from_input("caption", 'a "quoted"\nline ✨'),
                        RequestParameter.from_input(
                            "video",
                            InputFile(handle, filename='my "clip" ✨.mp4', read_file_handle=False),
                        ),
                    ]
                )
                assert await request.post(f"{url}/botT/sendVideo", request_data=data) is True
    finally:
        await runner.cleanup()
    assert seen["chat_id"] == "7" and seen["caption"] == 'a "quoted"\nline ✨'
    # the name's quotes escaped as httpx (PTB's own client) escapes them
    assert seen["video"] == ("my %22clip%22 ✨.mp4", "video/mp4", video.read_bytes())


async def test_the_proxy_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTPS_PROXY as httpx reads it: a proxy that is down is a NetworkError naming it."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    async with BotApiRequest() as request:
        with pytest.raises(NetworkError, match=f"proxy 127.0.0.1:{port}"):
            await request.post("https://api.telegram.org/botT/getMe")
    monkeypatch.setenv("NO_PROXY", "api.telegram.org")
    async with BotApiRequest() as request:
        assert request._pool is not None
        assert request._pool._bypass is not None and request._pool._bypass("api.telegram.org")
