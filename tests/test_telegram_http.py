"""Our aiohttp client for python-telegram-bot keeps PTB's meaning of each failure."""

from __future__ import annotations

import asyncio
import socket

import pytest
from aiohttp import web
from telegram import InputFile
from telegram.error import NetworkError, RetryAfter, TimedOut
from telegram.request import RequestData
from telegram.request._requestparameter import RequestParameter  # how PTB builds a call

from bot.telegram_http import AiohttpRequest


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
        async with AiohttpRequest(read_timeout=0.2) as request:
            with pytest.raises(TimedOut):
                await request.post(f"{url}/botT/getMe")
    finally:
        await runner.cleanup()
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    async with AiohttpRequest() as request:
        with pytest.raises(NetworkError, match="aiohttp"):
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
        async with AiohttpRequest() as request:
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
