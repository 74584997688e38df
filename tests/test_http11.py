"""bot/http11.py, the Bot API's HTTP/1.1 client, against real sockets on loopback.

Each server here writes the bytes a test needs (a real HTTP server would not let
us close at the worst moment, drip a response, or never read), except where a
real one checks us: aiohttp's server parses our multipart bodies, and TLS is
real TLS with a certificate authority made for the test (trustme).
"""

from __future__ import annotations

import asyncio
import io
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trustme
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.http11 import (
    ConnectFailed,
    ConnectionLost,
    ConnectionPool,
    HttpError,
    HttpTimeout,
    ProtocolError,
    ResponseParser,
    Timeouts,
)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


# ---- the parser --------------------------------------------------------------------------


def _framed(body: bytes, framing: str, chunk_sizes: list[int], keep_alive: bool) -> bytes:
    head = "HTTP/1.1 200 OK\r\nServer: test\r\ncontent-type: application/json\r\n"
    if not keep_alive:
        head += "Connection: close\r\n"
    if framing == "length":
        return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    if framing == "eof":
        return (head + "\r\n").encode() + body
    out = (head + "Transfer-Encoding: chunked\r\n\r\n").encode()
    at = 0
    for size in chunk_sizes:
        piece = body[at : at + size]
        if not piece:
            break
        out += f"{len(piece):x};ext=1\r\n".encode() + piece + b"\r\n"
        at += len(piece)
    if at < len(body):
        out += f"{len(body) - at:X}\r\n".encode() + body[at:] + b"\r\n"
    return out + b"0\r\nX-Trailer: yes\r\n\r\n"


@settings(max_examples=300, deadline=None)
@given(
    body=st.binary(max_size=3000),
    framing=st.sampled_from(["length", "chunked", "eof"]),
    chunk_sizes=st.lists(st.integers(1, 700), max_size=8),
    cuts=st.lists(st.integers(0, 4000), max_size=12),
    keep_alive=st.booleans(),
    interim=st.booleans(),
)
def test_a_response_cut_anywhere_reads_the_same(
    body: bytes,
    framing: str,
    chunk_sizes: list[int],
    cuts: list[int],
    keep_alive: bool,
    interim: bool,
) -> None:
    wire = _framed(body, framing, chunk_sizes, keep_alive)
    if interim:
        wire = b"HTTP/1.1 100 Continue\r\n\r\n" + wire
    parser = ResponseParser()
    done = False
    at = 0
    for cut in [*sorted(c for c in cuts if c < len(wire)), len(wire)]:
        assert not done, "complete before the last byte"
        done = parser.feed(wire[at:cut])
        at = max(at, cut)
    if framing == "eof":
        assert not done
        done = parser.feed_eof()
    assert done and parser.done
    assert parser.status == 200 and parser.headers["content-type"] == "application/json"
    assert bytes(parser.body) == body
    assert parser.keep_alive == (keep_alive and framing != "eof")


@pytest.mark.parametrize(
    ("wire", "problem"),
    [
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "not an HTTP/1.x status line"),
        (b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n", "bad header line"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "unsupported transfer coding"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nabc", "after the end"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "conflicting"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 20_000, "too long"),
    ],
)
def test_what_is_not_http_is_a_protocol_error(wire: bytes, problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem):
        ResponseParser().feed(wire)


def test_a_response_cut_short_by_the_server_is_not_complete() -> None:
    parser = ResponseParser()
    assert not parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    assert not parser.feed_eof()
    http10 = ResponseParser()
    assert http10.feed(b"HTTP/1.0 204 No Content\r\n\r\n") and not http10.keep_alive


# ---- servers -----------------------------------------------------------------------------


class Server:
    """A loopback TCP server running `handler` per connection; counts connections."""

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.connections = 0
        self.requests: list[bytes] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()

    async def __aenter__(self) -> Server:
        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            task = asyncio.current_task()
            assert task is not None
            self._tasks.add(task)
            try:
                await self.handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
                pass
            finally:
                writer.close()

        self._server = await asyncio.start_server(on_connect, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        """One request: its head and the body its Content-Length announces."""
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        request = head + await reader.readexactly(length)
        self.requests.append(request)
        return request


def answer(body: bytes = b'{"ok":true}', *, close: bool = False) -> bytes:
    extra = "Connection: close\r\n" if close else ""
    return f"HTTP/1.1 200 OK\r\n{extra}Content-Length: {len(body)}\r\n\r\n".encode() + body


def keep_answering(server_ref: list[Server], **kwargs: bool) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await server_ref[0].read_request(reader)
            writer.write(answer(**kwargs))
            await writer.drain()

    return handler


async def serving(handler_of: Callable[[list[Server]], Handler], **kwargs: object) -> Server:
    ref: list[Server] = []
    server = Server(handler_of(ref), **kwargs)  # type: ignore[arg-type]
    ref.append(server)
    return server


# ---- the pool ----------------------------------------------------------------------------


async def test_connections_are_kept_alive_and_reused() -> None:
    async with await serving(keep_answering) as server:
        pool = ConnectionPool(4)
        for n in range(5):
            status, body = await pool.request(
                "POST", f"{server.url}/botT/sendMessage?x={n}", body=[b"text=hi"]
            )
            assert (status, body) == (200, b'{"ok":true}')
        await pool.close()
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /botT/sendMessage?x=0 HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{server.port}\r\n".encode() in first
    assert first.endswith(b"Content-Length: 7\r\n\r\ntext=hi")


async def test_connection_close_chunked_and_to_the_end_responses() -> None:
    replies = [
        answer(close=True),
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n",
        b"HTTP/1.0 200 OK\r\n\r\nuntil the end",
    ]

    def handler_of(ref: list[Server]) -> Handler:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while replies:
                await ref[0].read_request(reader)
                reply = replies.pop(0)
                writer.write(reply)
                await writer.drain()
                if b"close" in reply or b"HTTP/1.0" in reply:
                    return  # closes the connection

        return handler

    async with await serving(handler_of) as server:
        pool = ConnectionPool(4)
        assert await pool.request("GET", f"{server.url}/a") == (200, b'{"ok":true}')
        assert await pool.request("GET", f"{server.url}/b") == (200, b"abcd")
        assert await pool.request("GET", f"{server.url}/c") == (200, b"until the end")
        await pool.close()
    assert server.connections == 2  # closed after the first and the third


async def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    def handler_of(ref: list[Server]) -> Handler:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await ref[0].read_request(reader)
            writer.write(answer())  # keep-alive announced, then closed anyway
            await writer.drain()

        return handler

    async with await serving(handler_of) as server:
        pool = ConnectionPool(4)
        assert (await pool.request("POST", f"{server.url}/x", body=[b"a=1"]))[0] == 200
        await asyncio.sleep(0.05)  # the server's FIN arrives while the connection idles
        assert (await pool.request("POST", f"{server.url}/x", body=[b"a=2"]))[0] == 200
        await pool.close()
    assert server.connections == 2 and len(server.requests) == 2


async def test_an_idle_connection_expires() -> None:
    async with await serving(keep_answering) as server:
        pool = ConnectionPool(4, keepalive_expiry=0.05)
        await pool.request("GET", f"{server.url}/x")
        await asyncio.sleep(0.1)
        await pool.request("GET", f"{server.url}/x")
        await pool.close()
    assert server.connections == 2


async def test_a_close_racing_a_request_retries_a_get_once_but_never_a_post() -> None:
    """The server takes the second request on a kept connection and hangs up without
    a word (it had decided to close as it arrived): a GET goes again on a new
    connection; a POST is an error, sent once (Telegram might have done it)."""

    def handler_of(ref: list[Server]) -> Handler:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await ref[0].read_request(reader)
            writer.write(answer())
            await writer.drain()
            await ref[0].read_request(reader)  # then close without answering

        return handler

    async with await serving(handler_of) as server:
        pool = ConnectionPool(4)
        await pool.request("GET", f"{server.url}/file")
        assert await pool.request("GET", f"{server.url}/file") == (200, b'{"ok":true}')
        assert server.connections == 2 and len(server.requests) == 3
        with pytest.raises(ConnectionLost):
            await pool.request("POST", f"{server.url}/botT/sendMessage", body=[b"text=once"])
        await pool.close()
    assert sum(b"text=once" in r for r in server.requests) == 1


async def test_a_response_cut_short_is_an_error_and_the_connection_is_dropped() -> None:
    def handler_of(ref: list[Server]) -> Handler:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await ref[0].read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
            await writer.drain()

        return handler

    async with await serving(handler_of) as server:
        pool = ConnectionPool(4)
        with pytest.raises(ConnectionLost, match="mid-response"):
            await pool.request("GET", f"{server.url}/x")
        await pool.close()


async def test_read_timeout_bounds_silence_not_a_slow_steady_answer() -> None:
    def handler_of(ref: list[Server]) -> Handler:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            request = await ref[0].read_request(reader)
            if b"/silent" in request:
                await asyncio.sleep(5)
                return
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n")
            for byte in b"dripping":  # 8 x 0.1 s: longer than the read timeout in all
                await asyncio.sleep(0.1)
                writer.write(bytes([byte]))
                await writer.drain()

        return handler

    async with await serving(handler_of) as server:
        pool = ConnectionPool(4)
        timeouts = Timeouts(read=0.4)
        assert await pool.request("GET", f"{server.url}/drip", timeouts=timeouts) == (
            200,
            b"dripping",
        )
        with pytest.raises(HttpTimeout, match="read timeout") as silent:
            await pool.request("GET", f"{server.url}/silent", timeouts=timeouts)
        assert silent.value.phase == "read" and isinstance(silent.value, TimeoutError)
        await pool.close()


async def test_a_full_pool_waits_for_the_pool_timeout_then_gives_up() -> None:
    release = asyncio.Event()

    def handler_of(ref: list[Server]) -> Handler:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                await ref[0].read_request(reader)
                await release.wait()
                writer.write(answer())
                await writer.drain()

        return handler

    async with await serving(handler_of) as server:
        pool = ConnectionPool(1)
        busy = asyncio.create_task(pool.request("GET", f"{server.url}/long-poll"))
        await asyncio.sleep(0.05)
        with pytest.raises(HttpTimeout, match="pool timeout"):
            await pool.request("GET", f"{server.url}/x", timeouts=Timeouts(pool=0.1))
        waiting = asyncio.create_task(
            pool.request("GET", f"{server.url}/y", timeouts=Timeouts(pool=5))
        )
        await asyncio.sleep(0.05)
        release.set()
        assert (await busy)[0] == 200 and (await waiting)[0] == 200
        await pool.close()


async def test_a_refused_connection_fails_at_once() -> None:
    async with await serving(keep_answering) as server:
        url = server.url
    pool = ConnectionPool(2)
    with pytest.raises(ConnectFailed, match="cannot connect"):
        await pool.request("GET", f"{url}/x")


async def test_files_go_from_disk_and_from_memory_with_their_exact_length(
    tmp_path: Path,
) -> None:
    video = tmp_path / "video.mp4"
    video.write_bytes(bytes(range(256)) * 40_000)  # 10 MB: more than a socket buffer
    async with await serving(keep_answering) as server:
        pool = ConnectionPool(2)
        with video.open("rb") as handle:
            handle.seek(100)  # a file is sent from where it stands
            status, _ = await pool.request(
                "POST",
                f"{server.url}/upload",
                body=[b"--head--", handle, io.BytesIO(b"memory"), b"--tail--"],
            )
        await pool.close()
    assert status == 200
    sent = server.requests[0].split(b"\r\n\r\n", 1)[1]
    assert sent == b"--head--" + video.read_bytes()[100:] + b"memory" + b"--tail--"
    assert f"Content-Length: {len(sent)}".encode() in server.requests[0]


async def test_a_server_that_stops_reading_is_a_write_timeout(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * (64 << 20))  # more than loopback's buffers hold

    async def never_reads(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(10)

    async with Server(never_reads) as server:
        pool = ConnectionPool(2)
        with big.open("rb") as handle, pytest.raises(HttpTimeout, match="write timeout"):
            await pool.request(
                "POST", f"{server.url}/upload", body=[handle], timeouts=Timeouts(write=0.5)
            )
        await pool.close()


async def test_an_answer_before_the_whole_upload_is_the_answer(tmp_path: Path) -> None:
    """As nginx does with a body over its limit: 413 at once, then the rest of the
    upload read and thrown away before the connection closes."""
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * (16 << 20))

    async def too_large(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 413 Request Entity Too Large\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.write_eof()
        while await reader.read(1 << 20):
            pass

    async with Server(too_large) as server:
        pool = ConnectionPool(2)
        with big.open("rb") as handle:
            status, _ = await pool.request("POST", f"{server.url}/upload", body=[handle])
        await pool.close()
    assert status == 413


# ---- TLS and proxies ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


def tls_pair(ca: trustme.CA) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


async def test_https_checks_the_certificate(authority: trustme.CA) -> None:
    server_tls, client_tls = tls_pair(authority)
    async with await serving(keep_answering, tls=server_tls) as server:
        pool = ConnectionPool(2, ssl_context=client_tls)
        assert await pool.request("GET", f"{server.url}/x") == (200, b'{"ok":true}')
        assert await pool.request("GET", f"{server.url}/y") == (200, b'{"ok":true}')
        await pool.close()
        stranger = ConnectionPool(2)  # the system's authorities do not know this one
        with pytest.raises(ConnectFailed, match="CERTIFICATE_VERIFY_FAILED"):
            await stranger.request("GET", f"{server.url}/x")
    # the first pool's two requests shared one (the refused handshake never gets here)
    assert server.connections == 1


class Proxy:
    """An HTTP proxy: CONNECT tunnels, and plain requests in absolute form."""

    def __init__(self, *, refuse: bool = False) -> None:
        self.refuse = refuse
        self.heads: list[bytes] = []
        self.server = Server(self.handle)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.heads.append(head)
        if self.refuse:
            writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            return
        method, target, _ = head.split(b"\r\n", 1)[0].split(b" ")
        if method == b"CONNECT":
            host, port = target.decode().rsplit(":", 1)
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            rest = target.decode().removeprefix("http://")
            authority_, path = rest.split("/", 1)
            host, port = authority_.rsplit(":", 1)
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            up_writer.write(head.replace(target, b"/" + path.encode(), 1))

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def test_https_through_a_proxy_tunnel_with_credentials(authority: trustme.CA) -> None:
    server_tls, client_tls = tls_pair(authority)
    proxy = Proxy()
    async with await serving(keep_answering, tls=server_tls) as server, proxy.server:
        pool = ConnectionPool(
            2,
            proxies={"https": f"http://bot:s%3Acret@127.0.0.1:{proxy.server.port}"},
            ssl_context=client_tls,
        )
        assert await pool.request("GET", f"{server.url}/x") == (200, b'{"ok":true}')
        await pool.close()
    connect = proxy.heads[0]
    assert connect.startswith(f"CONNECT 127.0.0.1:{server.port} HTTP/1.1".encode())
    assert b"Proxy-Authorization: Basic Ym90OnM6Y3JldA==" in connect  # bot:s:cret
    assert server.requests[0].startswith(b"GET /x HTTP/1.1")


async def test_http_through_a_proxy_and_the_hosts_that_bypass_it() -> None:
    proxy = Proxy()
    async with await serving(keep_answering) as server, proxy.server:
        proxies = {"http": f"http://127.0.0.1:{proxy.server.port}"}
        pool = ConnectionPool(2, proxies=proxies)
        assert (await pool.request("GET", f"{server.url}/via"))[0] == 200
        direct = ConnectionPool(2, proxies=proxies, bypass=lambda host: host == "127.0.0.1")
        assert (await direct.request("GET", f"{server.url}/direct"))[0] == 200
        await pool.close()
        await direct.close()
    assert proxy.heads == [
        f"GET http://127.0.0.1:{server.port}/via HTTP/1.1\r\n".encode()
        + proxy.heads[0].split(b"\r\n", 1)[1]
    ]
    assert [r.split(b" ")[1] for r in server.requests] == [b"/via", b"/direct"]


async def test_a_proxy_that_refuses_the_tunnel_or_never_answers(authority: trustme.CA) -> None:
    _, client_tls = tls_pair(authority)
    refusing = Proxy(refuse=True)
    async with refusing.server:
        pool = ConnectionPool(2, proxies={"https": refusing.server.url}, ssl_context=client_tls)
        with pytest.raises(ConnectFailed, match="407"):
            await pool.request("GET", "https://api.telegram.org/botT/getMe")

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    async with Server(silent) as mute:
        pool = ConnectionPool(2, proxies={"https": mute.url}, ssl_context=client_tls)
        with pytest.raises(HttpTimeout, match="connect timeout"):
            await pool.request(
                "GET", "https://api.telegram.org/botT/getMe", timeouts=Timeouts(connect=0.2)
            )


async def test_errors_never_repeat_the_url_which_holds_the_token() -> None:
    pool = ConnectionPool(1)
    for url in ("http://127.0.0.1:8081123456:SECRET/getMe", "ftp://h/bot123456:SECRET/x"):
        with pytest.raises(HttpError) as error:
            await pool.request("GET", url)
        assert "SECRET" not in str(error.value)


def test_without_system_authorities_certifi_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slim image without ca-certificates still reaches api.telegram.org."""
    from bot.http11 import default_ssl_context

    assert default_ssl_context().cert_store_stats()["x509_ca"] > 0
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "none.pem"))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "none"))
    assert ssl.create_default_context().cert_store_stats()["x509_ca"] == 0
    assert default_ssl_context().cert_store_stats()["x509_ca"] > 100  # certifi's


def test_a_socks_proxy_is_refused_with_what_is_supported() -> None:
    with pytest.raises(HttpError, match="unsupported proxy socks5://h: only http:// proxies"):
        ConnectionPool(1, proxies={"https": "socks5://user:pw@h:1080"})
