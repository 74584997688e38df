"""python-telegram-bot's networking on our own HTTP/1.1 client (bot/http11.py).

PTB sends every Bot API call through a `BaseRequest`; its default is httpx, and
PTB documents this class as the place to plug in another client. What one
loopback Bot API call costs the event loop in CPU, PTB's own work included, on
the 2-core machine CI runs on (`python benchmarks/http_client.py`): 3.2 ms
through httpx, 0.35 ms through aiohttp (which this module used before), 0.19 ms
through bot/http11.py. A hundred users who send `/animate` at once make three
hundred calls on the bot's one event loop, so the client decides whether the
last of them hears back in half a second or in two (`python
benchmarks/telegram.py` compares ours with httpx end to end).

Errors keep PTB's meaning: a timeout is `TimedOut`, any other failure to talk
to the server `NetworkError`; the status code and body go back to PTB, which
turns them into `RetryAfter`, `BadRequest` and the rest. An HTTP proxy is taken
from HTTPS_PROXY / HTTP_PROXY (and NO_PROXY), as httpx takes them.
"""

from __future__ import annotations

import urllib.parse
import urllib.request
import uuid
from collections.abc import Sequence

from telegram._utils.defaultvalue import DefaultValue
from telegram._utils.types import ODVInput
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, RequestData

from bot.http11 import ConnectionPool, HttpError, HttpTimeout, Part, Timeouts

FORM = (("Content-Type", "application/x-www-form-urlencoded"),)


class BotApiRequest(BaseRequest):
    """A pool of keep-alive connections to the Bot API, shared by every call."""

    __slots__ = ("_defaults", "_media_write_timeout", "_pool", "_pool_size")

    def __init__(
        self,
        *,
        connection_pool_size: int = 8,
        read_timeout: float | None = 5.0,
        write_timeout: float | None = 5.0,
        connect_timeout: float | None = 5.0,
        pool_timeout: float | None = 1.0,
        media_write_timeout: float | None = 20.0,
    ) -> None:
        self._pool_size = connection_pool_size
        self._defaults = Timeouts(
            connect=connect_timeout, read=read_timeout, write=write_timeout, pool=pool_timeout
        )
        self._media_write_timeout = media_write_timeout
        self._pool: ConnectionPool | None = None

    @property
    def read_timeout(self) -> float | None:
        return self._defaults.read

    async def initialize(self) -> None:
        if self._pool is None:
            try:
                self._pool = ConnectionPool(
                    self._pool_size,
                    proxies=_proxies(),
                    bypass=urllib.request.proxy_bypass,  # NO_PROXY
                    user_agent=self.USER_AGENT,
                )
            except HttpError as err:  # a proxy we cannot use: the bot's start says so
                raise NetworkError(str(err)) from None

    async def shutdown(self) -> None:
        if self._pool is not None:
            await self._pool.close()
        self._pool = None

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        write_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        connect_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        pool_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        if self._pool is None:
            raise RuntimeError("This BotApiRequest is not initialized!")
        has_files = request_data is not None and request_data.contains_files
        defaults = self._defaults
        timeouts = Timeouts(
            connect=defaults.connect
            if isinstance(connect_timeout, DefaultValue)
            else connect_timeout,
            read=defaults.read if isinstance(read_timeout, DefaultValue) else read_timeout,
            write=(self._media_write_timeout if has_files else defaults.write)
            if isinstance(write_timeout, DefaultValue)
            else write_timeout,
            pool=defaults.pool if isinstance(pool_timeout, DefaultValue) else pool_timeout,
        )
        headers, body = encode_body(request_data)
        try:
            return await self._pool.request(
                method, url, headers=headers, body=body, timeouts=timeouts
            )
        except HttpTimeout as err:
            raise TimedOut(f"Timed out ({err})") from err
        except HttpError as err:
            raise NetworkError(f"{err.__class__.__name__}: {err}") from err


def encode_body(
    request_data: RequestData | None,
) -> tuple[Sequence[tuple[str, str]], list[Part]]:
    """The call's parameters as a form, or as multipart/form-data when it has files
    (which are sent from where they are: bytes, or a file read as it goes out)."""
    if request_data is None:
        return (), []
    fields = request_data.json_parameters
    if not request_data.contains_files:
        return FORM, [urllib.parse.urlencode(fields).encode()]
    boundary = uuid.uuid4().hex
    parts: list[Part] = []
    for name, value in fields.items():
        parts.append(_part_head(boundary, name) + value.encode() + b"\r\n")
    for name, (filename, content, mime_type) in request_data.multipart_data.items():
        parts.append(_part_head(boundary, name, filename, mime_type))
        parts.append(content)
        parts.append(b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return (("Content-Type", f"multipart/form-data; boundary={boundary}"),), parts


def _part_head(
    boundary: str, name: str, filename: str | None = None, mime_type: str | None = None
) -> bytes:
    disposition = f'form-data; name="{_quoted(name)}"'
    if filename is not None:
        disposition += f'; filename="{_quoted(filename)}"'
    head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
    if mime_type is not None:
        head += f"Content-Type: {mime_type}\r\n"
    return (head + "\r\n").encode()


# A name inside a quoted multipart parameter is escaped as browsers do (WHATWG), and
# as httpx, PTB's own client, does.
_ESCAPES = {ord('"'): "%22", ord("\\"): "\\\\"} | {c: f"%{c:02X}" for c in range(0x20) if c != 0x1B}


def _quoted(value: str) -> str:
    return value.translate(_ESCAPES)


def _proxies() -> dict[str, str]:
    """The environment's proxies by scheme (HTTPS_PROXY for the Bot API, HTTP_PROXY
    for a local http:// server), read once: urllib reads them as httpx does."""
    return {k: v for k, v in urllib.request.getproxies().items() if k in ("http", "https")}
