"""A small HTTP/1.1 client: a pool of keep-alive connections to a few origins.

It exists for one purpose, the Bot API (see bot/telegram_http.py for why), and
does only what that needs, in full: GET and POST; bodies of bytes and of files
streamed from disk with a known length; responses framed by Content-Length, by
chunked transfer coding or by the end of the connection; HTTPS; an HTTP proxy
(CONNECT for HTTPS, the absolute URL for HTTP); connect, write, read and pool
timeouts. No redirects, cookies, compression, HTTP/2 or upgrades: the Bot API
uses none of them.

A connection is reused only when its last response was read whole, the server
did not ask to close it, it has been idle for less than `keepalive_expiry`
(the expiry httpx uses, which python-telegram-bot has run against Telegram for
years), and it saw no end of file while idle. A GET that fails on a reused
connection before any byte of its answer is tried once more on a new one (the
server closed it as we sent); a POST is never sent twice.
"""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
import stat
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_HEAD = 64 * 1024  # bytes of status line and headers before we call it garbage
CHUNK = 1024 * 1024  # bytes of a file read at once when it cannot go by sendfile

Part = bytes | BinaryIO  # a body is a sequence of these: bytes, or files sent from where they are


class HttpError(Exception):
    """Any failure to get a whole response."""


class ConnectFailed(HttpError):
    """No connection to the server (or the proxy) could be made."""


class ConnectionLost(HttpError):
    """The server closed the connection before the response was complete."""


class ProtocolError(HttpError):
    """The server answered with something that is not HTTP/1.x."""


class HttpTimeout(HttpError, TimeoutError):
    """A phase of the request took longer than its timeout; `phase` says which."""

    def __init__(self, phase: str, seconds: float) -> None:
        super().__init__(f"{phase} timeout ({seconds:g} s)")
        self.phase = phase


@dataclass(frozen=True)
class Timeouts:
    """Seconds for each phase; None waits forever. `read` is the longest silence
    while waiting for the response (a long poll sets it above its own timeout),
    `write` bounds sending the request, `pool` waiting for a free connection."""

    connect: float | None = 5.0
    read: float | None = 5.0
    write: float | None = 5.0
    pool: float | None = 1.0


# ---- parsing a response ------------------------------------------------------------------


class ResponseParser:
    """Reads one response from the bytes fed to it, in whatever pieces they come.

    `feed` returns True once the response is complete; bytes past its end (there
    should be none: we never pipeline) are an error. Interim 1xx answers are
    skipped. `head_only` is for answers that have no body whatever their headers
    say (HEAD, and CONNECT's 2xx)."""

    def __init__(self, *, head_only: bool = False) -> None:
        self.head_only = head_only
        self.status = 0
        self.reason = ""
        self.headers: dict[str, str] = {}
        self.keep_alive = True
        self.body = bytearray()
        self.started = False  # a byte of the response arrived
        self.done = False
        self._buffer = bytearray()
        self._state = "head"  # head, length, chunk-size, chunk-data, chunk-end, trailers, eof
        self._left = 0

    def feed(self, data: bytes) -> bool:
        if not data:
            return self.done
        self.started = True
        if self.done:
            raise ProtocolError("the server sent bytes after the end of its response")
        if self._state == "length" and not self._buffer:  # the common case: body bytes
            take = data[: self._left]
            self.body += take
            self._left -= len(take)
            if self._left == 0:
                self.done = True
                if len(take) < len(data):
                    raise ProtocolError("the server sent bytes after the end of its response")
            return self.done
        self._buffer += data
        self._advance()
        return self.done

    def feed_eof(self) -> bool:
        """The server closed the connection: complete when the body runs to the end."""
        if self._state == "eof":
            self.done = True
            self.keep_alive = False
        return self.done

    def _advance(self) -> None:
        buf = self._buffer
        while not self.done:
            state = self._state
            if state == "head":
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > MAX_HEAD:
                        raise ProtocolError("the response's headers are too long")
                    return
                head = bytes(buf[:end])
                del buf[: end + 4]
                self._read_head(head)
            elif state == "length":
                if not self._take_body():
                    return
                self._finish()
            elif state == "chunk-size":
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > 1024:
                        raise ProtocolError("a chunk size line is too long")
                    return
                line = bytes(buf[:end]).split(b";", 1)[0].strip()
                del buf[: end + 2]
                try:
                    self._left = int(line, 16)
                except ValueError:
                    raise ProtocolError(f"bad chunk size {line[:20]!r}") from None
                if self._left < 0:
                    raise ProtocolError("negative chunk size")
                self._state = "chunk-data" if self._left else "trailers"
            elif state == "chunk-data":
                if not self._take_body():
                    return
                self._state = "chunk-end"
            elif state == "chunk-end":
                if len(buf) < 2:
                    return
                if buf[:2] != b"\r\n":
                    raise ProtocolError("a chunk does not end with CRLF")
                del buf[:2]
                self._state = "chunk-size"
            elif state == "trailers":  # trailer fields, then an empty line; ignored
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > MAX_HEAD:
                        raise ProtocolError("the response's trailers are too long")
                    return
                del buf[: end + 2]
                if end == 0:
                    self._finish()
            else:  # eof: everything until the server closes
                self.body += buf
                buf.clear()
                return

    def _take_body(self) -> bool:
        """Move up to `_left` buffered bytes into the body; True once none are left."""
        take = self._buffer[: self._left]
        self.body += take
        del self._buffer[: len(take)]
        self._left -= len(take)
        return not self._left

    def _finish(self) -> None:
        if self._buffer:
            raise ProtocolError("the server sent bytes after the end of its response")
        self.done = True

    def _read_head(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:60]!r}")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise ProtocolError(f"bad header line {line[:60]!r}")
            key = name.lower()
            value = value.strip()
            # a repeated field is one list (RFC 9110 5.3); Content-Length must agree
            if key in headers:
                if key == "content-length" and headers[key] != value:
                    raise ProtocolError("conflicting Content-Length headers")
                if key != "content-length":
                    value = f"{headers[key]}, {value}"
            headers[key] = value
        status = int(code)
        if 100 <= status < 200 and status != 101:
            return  # interim answer (100 Continue, 103 Early Hints): the real one follows
        self.status, self.reason, self.headers = status, reason, headers
        connection = {t.strip().lower() for t in headers.get("connection", "").split(",")}
        if version == "HTTP/1.0":
            self.keep_alive = "keep-alive" in connection
        else:
            self.keep_alive = "close" not in connection
        if self.head_only or status in (101, 204, 304):
            self._finish()
            return
        coding = headers.get("transfer-encoding", "").lower()
        if coding:
            if coding.rsplit(",", 1)[-1].strip() != "chunked":
                raise ProtocolError(f"unsupported transfer coding {coding!r}")
            self._state = "chunk-size"
            return
        if "content-length" in headers:
            length = headers["content-length"]
            if not length.isdigit():
                raise ProtocolError(f"bad Content-Length {length[:20]!r}")
            self._left = int(length)
            self._state = "length"
            if self._left == 0:
                self._finish()
            return
        self._state = "eof"
        self.keep_alive = False


# ---- one connection ----------------------------------------------------------------------


class Connection(asyncio.Protocol):
    """One TCP (or TLS) connection; one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.reusable = False  # set after a response read whole that allows it
        self.idle_since = 0.0
        self._loop = asyncio.get_running_loop()
        self._parser: ResponseParser | None = None
        self._done: asyncio.Future[None] | None = None
        self._closed = False
        self._lost: Exception | None = None
        self._paused = False
        self._drained: asyncio.Future[None] | None = None
        self._last_data = 0.0
        self._read_timeout = 0.0
        self._timer: asyncio.TimerHandle | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:  # bytes nobody asked for: this connection cannot be trusted
            self.close()
            return
        self._last_data = self._loop.time()
        try:
            complete = parser.feed(data)
        except ProtocolError as error:
            self._fail(error)
            return
        if complete and self._done is not None and not self._done.done():
            self._done.set_result(None)

    def eof_received(self) -> bool:
        self._end()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.reusable = False
        self._lost = exc
        self._end()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)  # _drain sees _closed

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # the rest

    @property
    def alive(self) -> bool:
        return not self._closed and self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.close()

    async def exchange(
        self,
        head: bytes,
        body: Sequence[bytes | FileSlice],
        *,
        timeouts: Timeouts,
        head_only: bool = False,
    ) -> ResponseParser:
        """Send one request and read its response. The connection is left `reusable`
        only when the response allows it and was read whole after the request went
        out whole."""
        transport = self.transport
        if transport is None or not self.alive:
            raise _ClosedBeforeAnswer("the connection is closed")
        self.reusable = False
        parser = self._parser = ResponseParser(head_only=head_only)
        done = self._done = self._loop.create_future()
        try:
            try:
                await self._send(transport, head, body, timeouts.write)
            except (ConnectionLost, HttpTimeout):
                if not (done.done() and done.exception() is None):
                    raise
                # answered before it had all of the request (a 413, say): keep the answer
                self.close()
            else:
                if not done.done():
                    await self._wait_response(done, timeouts.read)
            done.result()
        except ConnectionLost as error:
            self.close()
            if parser.started or isinstance(error, _ClosedBeforeAnswer):
                raise
            raise _ClosedBeforeAnswer(str(error)) from None
        except BaseException:
            self.close()
            raise
        finally:
            self._parser = self._done = None
        if parser.keep_alive and self.alive:
            self.reusable = True
            self.idle_since = self._loop.time()
        return parser

    async def _send(
        self,
        transport: asyncio.Transport,
        head: bytes,
        body: Sequence[bytes | FileSlice],
        write: float | None,
    ) -> None:
        """Write the request. Bytes go to the transport's buffer at once; the write
        timeout bounds the waits for the server to take them, and the files."""
        deadline = None if write is None else self._loop.time() + write
        pending = [head]
        for part in body:
            if isinstance(part, bytes):
                pending.append(part)
                continue
            transport.writelines(pending)
            pending = []
            await self._within(deadline, write, self._send_file(transport, part))
        transport.writelines(pending)
        if self._paused or self._closed:
            await self._within(deadline, write, self._drain())

    async def _within(self, deadline: float | None, write: float | None, step: Any) -> None:
        if deadline is None:
            await step
            return
        try:
            async with asyncio.timeout_at(deadline):
                await step
        except TimeoutError:
            raise HttpTimeout("write", write or 0) from None

    async def _send_file(self, transport: asyncio.Transport, part: FileSlice) -> None:
        """Exactly the bytes the request's length counted: by sendfile (asyncio copies
        in a thread when the transport is TLS), or a megabyte at a time for a file in
        memory. A file that shrank meanwhile fails the request (Content-Length is
        sent); one that grew is sent as it was."""
        await self._drain()
        file, left = part.file, part.length
        if _has_fd(file):
            try:
                sent = await self._loop.sendfile(transport, file, part.offset, left)  # type: ignore[arg-type]
            except (ConnectionError, BrokenPipeError) as error:
                raise ConnectionLost(f"the connection closed while sending: {error}") from None
            except RuntimeError:  # asyncio: the transport closed during the copy
                raise ConnectionLost("the connection closed while sending") from None
            if self._closed:
                raise ConnectionLost("the connection closed while sending")
            if sent != left:
                raise HttpError("a file to send is shorter than it was")
            return
        file.seek(part.offset)
        while left > 0:
            chunk = file.read(min(CHUNK, left))
            if not chunk:
                raise HttpError("a file to send is shorter than it was")
            left -= len(chunk)
            transport.write(chunk)
            await self._drain()

    async def _drain(self) -> None:
        while self._paused and not self._closed:
            self._drained = self._loop.create_future()
            try:
                await self._drained
            finally:
                self._drained = None
        if self._closed:
            raise ConnectionLost("the connection closed while sending")

    async def _wait_response(self, done: asyncio.Future[None], read: float | None) -> None:
        """Wait for the whole response; `read` bounds each silence, not the total
        (a 20 MB download that keeps coming is not a timeout). One timer, moved
        only when it fires: resetting it on every piece of data would cost more."""
        if read is None:
            await done
            return
        self._last_data = self._loop.time()
        self._read_timeout = read
        self._timer = self._loop.call_at(self._last_data + read, self._read_timer)
        try:
            await done
        finally:
            self._timer.cancel()
            self._timer = None

    def _read_timer(self) -> None:
        done = self._done
        if done is None or done.done():
            return
        fire_at = self._last_data + self._read_timeout
        if fire_at > self._loop.time():
            self._timer = self._loop.call_at(fire_at, self._read_timer)
            return
        self._fail(HttpTimeout("read", self._read_timeout))

    def _fail(self, error: Exception) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_exception(error)
        self.close()

    def _end(self) -> None:
        """The server closed its side: the end of a body that runs to it, else a loss."""
        parser = self._parser
        done = self._done
        if parser is None or done is None or done.done():
            return
        if parser.feed_eof():
            done.set_result(None)
            return
        detail = f": {self._lost}" if self._lost else ""
        if parser.started:
            self._fail(ConnectionLost(f"the server closed the connection mid-response{detail}"))
        else:
            self._fail(_ClosedBeforeAnswer(f"the server closed the connection{detail}"))


class _ClosedBeforeAnswer(ConnectionLost):
    """No byte of the response came: on a reused connection, a GET may be retried."""


# ---- the pool ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: urllib.parse.SplitResult) -> Origin:
        # never the whole URL in a message: the Bot API's carry the bot's token
        try:
            port = url.port
        except ValueError:
            raise HttpError(f"the URL of {url.hostname} has a port that is not a number") from None
        if url.scheme not in ("http", "https") or not url.hostname:
            raise HttpError(f"not an http(s) URL (scheme {url.scheme!r})")
        return cls(url.scheme, url.hostname, port or DEFAULT_PORTS[url.scheme])

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"


class ConnectionPool:
    """At most `size` connections at once, over all origins; idle ones are reused."""

    def __init__(
        self,
        size: int,
        *,
        proxies: Mapping[str, str] | None = None,
        bypass: Callable[[str], bool] | None = None,
        keepalive_expiry: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
        user_agent: str = "framepack-bot",
    ) -> None:
        self.keepalive_expiry = keepalive_expiry
        self.user_agent = user_agent
        self._slots = asyncio.Semaphore(size)
        self._idle: dict[Origin, list[Connection]] = {}
        self._ssl = ssl_context
        # scheme -> proxy URL (HTTPS_PROXY for https://...), and the hosts that go direct
        self._proxies = {scheme: _Proxy.parse(url) for scheme, url in (proxies or {}).items()}
        self._bypass = bypass
        # (scheme, host:port) of a URL -> its origin and the proxy it goes through
        self._routes: dict[tuple[str, str], tuple[Origin, _Proxy | None]] = {}
        self._closed = False

    @property
    def ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:  # made on first use: loading the CA store takes ~20 ms
            self._ssl = default_ssl_context()
        return self._ssl

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Sequence[tuple[str, str]] = (),
        body: Sequence[Part] = (),
        timeouts: Timeouts = Timeouts(),
    ) -> tuple[int, bytes]:
        """Send a request and return its status and whole body. A file in `body` is
        sent from its position to its end as it is now."""
        if self._closed:
            raise HttpError("the connection pool is closed")
        target = urllib.parse.urlsplit(url)
        origin, proxy = self._route(target)
        parts = [
            bytes(p) if isinstance(p, bytes | bytearray | memoryview) else FileSlice.of(p)
            for p in body
        ]
        body_length = sum(len(p) if isinstance(p, bytes) else p.length for p in parts)
        path = target.path or "/"
        if target.query:
            path += "?" + target.query
        if proxy is not None and origin.scheme == "http":
            path = f"http://{origin.authority}{path}"  # absolute form, to a proxy
        lines = [f"{method} {path} HTTP/1.1"]
        lines.append(f"Host: {origin.authority}")
        lines.append(f"User-Agent: {self.user_agent}")
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {body_length}")
        if proxy is not None and origin.scheme == "http" and proxy.authorization:
            lines.append(f"Proxy-Authorization: {proxy.authorization}")
        for name, value in headers:
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                raise HttpError(f"a line break in the header {name!r}")
            lines.append(f"{name}: {value}")
        head = _head(lines)

        if self._slots.locked():  # all connections busy: wait for one, not forever
            try:
                async with asyncio.timeout(timeouts.pool):
                    await self._slots.acquire()
            except TimeoutError:
                raise HttpTimeout("pool", timeouts.pool or 0) from None
        else:
            await self._slots.acquire()
        try:
            retry = method == "GET" and not body
            while True:
                connection, reused = await self._checkout(origin, proxy, timeouts.connect)
                try:
                    response = await connection.exchange(
                        head, parts, timeouts=timeouts, head_only=method == "HEAD"
                    )
                except _ClosedBeforeAnswer:
                    if reused and retry:
                        # its idle siblings are likely stale too (a restarted server)
                        for stale in self._idle.pop(origin, []):
                            stale.close()
                        retry = False
                        continue
                    raise
                if connection.reusable and not self._closed:
                    self._idle.setdefault(origin, []).append(connection)
                else:
                    connection.close()
                return response.status, bytes(response.body)
        finally:
            self._slots.release()

    def _route(self, target: urllib.parse.SplitResult) -> tuple[Origin, _Proxy | None]:
        key = (target.scheme, target.netloc)
        route = self._routes.get(key)
        if route is None:
            origin = Origin.of(target)
            proxy = self._proxies.get(origin.scheme)
            if proxy is not None and self._bypass is not None and self._bypass(origin.host):
                proxy = None
            route = self._routes[key] = (origin, proxy)
        return route

    async def close(self) -> None:
        """Close the idle connections; those in use close when their request ends."""
        self._closed = True
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports' connection_lost run

    async def _checkout(
        self, origin: Origin, proxy: _Proxy | None, connect: float | None
    ) -> tuple[Connection, bool]:
        idle = self._idle.get(origin)
        now = asyncio.get_running_loop().time()
        while idle:
            connection = idle.pop()
            if connection.alive and now - connection.idle_since < self.keepalive_expiry:
                return connection, True
            connection.close()
        try:
            async with asyncio.timeout(connect):
                return await self._connect(origin, proxy), False
        except TimeoutError:
            raise HttpTimeout("connect", connect or 0) from None

    async def _connect(self, origin: Origin, proxy: _Proxy | None) -> Connection:
        loop = asyncio.get_running_loop()
        tls = self.ssl_context if origin.scheme == "https" else None
        try:
            if proxy is None:
                _, connection = await loop.create_connection(
                    Connection, origin.host, origin.port, ssl=tls
                )
                return connection
            _, connection = await loop.create_connection(Connection, proxy.host, proxy.port)
            if tls is None:
                return connection  # plain HTTP goes to the proxy with absolute URLs
            return await self._tunnel(connection, origin, proxy, tls)
        except (OSError, ssl.SSLError) as error:
            where = f"proxy {proxy.host}:{proxy.port}" if proxy else origin.authority
            raise ConnectFailed(f"cannot connect to {where}: {error}") from None

    async def _tunnel(
        self, connection: Connection, origin: Origin, proxy: _Proxy, tls: ssl.SSLContext
    ) -> Connection:
        """CONNECT through the proxy, then TLS with the origin inside the tunnel."""
        where = f"{origin.host}:{origin.port}"
        lines = [f"CONNECT {where} HTTP/1.1", f"Host: {where}"]
        if proxy.authorization:
            lines.append(f"Proxy-Authorization: {proxy.authorization}")
        head = _head(lines)
        try:
            answer = await connection.exchange(
                head, (), timeouts=Timeouts(write=None, read=None), head_only=True
            )
        except ConnectionLost as error:
            raise ConnectFailed(f"the proxy closed the tunnel: {error}") from None
        if not 200 <= answer.status < 300:
            connection.close()
            raise ConnectFailed(f"the proxy refused the tunnel: {answer.status} {answer.reason}")
        assert connection.transport is not None
        loop = asyncio.get_running_loop()
        try:
            secure = await loop.start_tls(
                connection.transport, connection, tls, server_hostname=origin.host
            )
        except BaseException:
            connection.close()
            raise
        assert isinstance(secure, asyncio.Transport)
        connection.transport = secure
        return connection


def default_ssl_context() -> ssl.SSLContext:
    """The system's certificate authorities (SSL_CERT_FILE and SSL_CERT_DIR honoured,
    so a company's own CA works), and certifi's when the system has none loaded: a
    slim container image often lacks ca-certificates, and httpx, PTB's own client,
    would have worked there with certifi."""
    context = ssl.create_default_context()
    if context.cert_store_stats()["x509_ca"] == 0:
        try:
            import certifi  # installed with python-telegram-bot (through httpx)
        except ImportError:
            return context
        context.load_verify_locations(cafile=certifi.where())
    return context


@dataclass(frozen=True)
class _Proxy:
    host: str
    port: int
    authorization: str | None

    @classmethod
    def parse(cls, url: str) -> _Proxy:
        parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme != "http" or not parts.hostname:
            raise HttpError(
                f"unsupported proxy {parts.scheme}://{parts.hostname}: "
                "only http:// proxies are supported"
            )
        authorization = None
        if parts.username is not None:
            user = urllib.parse.unquote(parts.username)
            password = urllib.parse.unquote(parts.password or "")
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            authorization = f"Basic {token}"
        return cls(parts.hostname, parts.port or 80, authorization)


def _head(lines: list[str]) -> bytes:
    """A request's head: its lines, then the empty line that ends it."""
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _has_fd(file: BinaryIO) -> bool:
    """A regular file of the OS (sendfile can copy it), not one in memory."""
    try:
        return stat.S_ISREG(os.fstat(file.fileno()).st_mode)
    except (OSError, ValueError):  # io.UnsupportedOperation is both
        return False


@dataclass(frozen=True)
class FileSlice:
    """The part of a file a request sends, fixed when its Content-Length is taken."""

    file: BinaryIO
    offset: int
    length: int

    @classmethod
    def of(cls, file: BinaryIO) -> FileSlice:
        """From the file's position to its end."""
        position = file.tell()
        end = file.seek(0, os.SEEK_END)
        file.seek(position)
        return cls(file, position, end - position)
