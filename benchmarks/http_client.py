"""What one Bot API call costs the bot's event loop, by HTTP client.

The same sendMessage-like call (a small urlencoded POST, a small JSON answer)
through python-telegram-bot's `BaseRequest.post`, 16 at a time over kept-alive
connections, to a server in another process (so only the client's CPU is
counted here): our client (bot/telegram_http.py on bot/http11.py), the same
`BaseRequest` on aiohttp (what the bot used before), and PTB's own httpx client.
CPU is this process's user + system time per call.

    python benchmarks/http_client.py [--calls 3000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # not this folder: it has telegram.py

from telegram.request import BaseRequest, HTTPXRequest, RequestData  # noqa: E402
from telegram.request._requestparameter import RequestParameter  # noqa: E402

from bot.telegram_http import BotApiRequest, encode_body  # noqa: E402

SERVER = r"""
import asyncio, sys
ANSWER = b'{"ok":true,"result":{"message_id":1,"date":0,"chat":{"id":1,"type":"private"}}}'
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            writer.write(HEAD % len(ANSWER) + ANSWER)
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()
async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()
asyncio.run(main())
"""


class AiohttpRequest(BotApiRequest):
    """The same `BaseRequest` on an aiohttp session (the bot's client before ours)."""

    async def initialize(self) -> None:
        import aiohttp

        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32))

    async def shutdown(self) -> None:
        await self._session.close()

    async def do_request(self, url, method, request_data=None, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        headers, body = encode_body(request_data)
        async with self._session.request(
            method, url, data=b"".join(body), headers=dict(headers)
        ) as response:
            return response.status, await response.read()


def _data() -> RequestData:
    return RequestData(
        [
            RequestParameter.from_input("chat_id", 12345),
            RequestParameter.from_input("text", "job 42 is queued: position 7 of 9"),
            RequestParameter.from_input(
                "reply_markup", '{"inline_keyboard":[[{"text":"Cancel","callback_data":"x"}]]}'
            ),
        ]
    )


async def cpu_per_call(request: BaseRequest, url: str, calls: int) -> float:
    await request.initialize()
    try:
        for _ in range(50):  # connections open, code paths warm
            await request.post(url, request_data=_data())
        pending = iter(range(calls))

        async def caller() -> None:
            for _ in pending:
                await request.post(url, request_data=_data())

        start = time.process_time()
        await asyncio.gather(*(caller() for _ in range(16)))
        return (time.process_time() - start) / calls
    finally:
        await request.shutdown()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True
    )  # fmt: skip
    try:
        assert server.stdout is not None
        url = f"http://127.0.0.1:{server.stdout.readline().strip()}/bot123:ABC/sendMessage"
        clients = {
            "ours": lambda: BotApiRequest(connection_pool_size=32),
            "aiohttp": lambda: AiohttpRequest(connection_pool_size=32),
            "httpx (PTB's)": lambda: HTTPXRequest(connection_pool_size=32),
        }
        results: dict[str, list[float]] = {name: [] for name in clients}
        for _ in range(args.rounds):  # clients take turns: the machine's drift falls on all
            for name, make in clients.items():
                results[name].append(await cpu_per_call(make(), url, args.calls))
    finally:
        server.terminate()
    print(f"{args.calls} calls, 16 at a time, {args.rounds} rounds; CPU of this process per call")
    ours = statistics.median(results["ours"])
    for name, values in results.items():
        median = statistics.median(values)
        rounds = ", ".join(f"{1000 * v:.3f}" for v in values)
        print(f"{name:<14} {1000 * median:6.3f} ms  (rounds {rounds})  {median / ours:5.1f}x ours")
    print(f"\nrerun: python benchmarks/http_client.py --calls {args.calls} --rounds {args.rounds}")


if __name__ == "__main__":
    asyncio.run(main())
