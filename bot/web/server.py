"""The host's page on the bot process's loop: started and stopped by `run_bots`
beside the chat adapters, and the `JobNotifier` of platform "web" for the
tracker (a job queued from the page is followed live there, not in a chat).

It listens on `[web] listen` only (127.0.0.1:8765 unless the host chose another
address). Without a password it prints a one-time login link at start, and a new
one each time one is used, on standard error where the host reads the bot's
log; no log line ever holds the token or the password.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import sys
from collections.abc import Callable, Mapping

from aiohttp import web

from bot.adapters import AdapterStartFailed
from bot.progress import JobView
from bot.service import BotService
from bot.web.app import build_app
from bot.web.auth import Auth, Sessions, session_key
from bot.web.context import WebContext, templates
from bot.web.live import LiveFeed
from storage.records import Job

log = logging.getLogger("framepack_bot.web")

PLATFORM = "web"
SHUTDOWN_TIMEOUT = 2.0  # seconds the open event streams get to end at a stop


def print_login_link(url: str) -> None:
    """Tell the host how to log in: on standard error, beside the log, never in it."""
    print(
        f"framepack-bot: open {url} in your browser to log in to the web page "
        "(the link works once; a new one is printed after it is used)",
        file=sys.stderr,
        flush=True,
    )


class WebSurface:
    """The page: its server, its live feed, and the tracker's notifier for "web" jobs."""

    platform = PLATFORM
    edit_interval = 0.5  # the page is on this machine: no platform pace to keep

    def __init__(
        self,
        service: BotService,
        on_change: Callable[[], None],
        *,
        rate_limited: Callable[[], Mapping[str, int]] = dict,
        show_link: Callable[[str], None] = print_login_link,
    ) -> None:
        web_settings = service.settings.web
        self.service = service
        self.host, self.port = web_settings.address
        self.show_link = show_link
        self.url = ""  # known once it listens
        self.live = LiveFeed(service.store)
        sessions = Sessions(
            session_key(service.data.root, web_settings.password),
            max_age=web_settings.session_hours * 3600,
        )
        self.auth = Auth(web_settings.password, sessions, on_link=self._link_issued)
        self.context = WebContext(
            service=service,
            auth=self.auth,
            live=self.live,
            templates=templates(),
            on_change=on_change,
            rate_limited=rate_limited,
        )
        self.app = build_app(self.context)
        self._runner: web.AppRunner | None = None
        self._stop = asyncio.Event()
        self._feed: asyncio.Task[None] | None = None

    # ---- the tracker's notifier --------------------------------------------------------

    async def show(self, job: Job, view: JobView) -> None:
        """The page renders every job from the store itself; look now."""
        self.live.wake()

    async def deliver(self, job: Job, view: JobView) -> None:
        """The video of a job queued from the page is on the page: nothing to send."""
        self.live.wake()

    async def notify_admins(self, text: str) -> None:
        """The page shows the disk's state itself (the worker panel): look now."""
        self.live.wake()

    # ---- life cycle --------------------------------------------------------------------

    async def start(self) -> None:
        runner = web.AppRunner(
            self.app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT, handle_signals=False
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise AdapterStartFailed(
                f"web: cannot listen on {self.host}:{self.port}: {exc.strerror or exc}. "
                "Another program (or another framepack-bot) uses it: set [web] listen to "
                "another port, or [web] enabled = false."
            ) from None
        self._runner = runner
        self.port = _bound_port(runner, self.port)
        self.url = f"http://{_url_host(self.host)}:{self.port}/"
        self._feed = asyncio.create_task(self.live.run(self._stop), name="web-live")
        how = "password" if self.auth.password else "login link"
        log.info("web: serving %s (log in with the %s)", self.url, how)
        if not _loopback(self.host):
            log.warning(
                "web: listening on %s, reachable from other machines over plain HTTP; "
                "put it behind an HTTPS reverse proxy",
                self.host,
            )
        if self.auth.link is not None:
            self._link_issued(self.auth.link.token)

    async def stop(self) -> None:
        self._stop.set()
        if self._feed is not None:
            await asyncio.gather(self._feed, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def login_link(self) -> str:
        """The current one-time link ("" with a password, or before the start)."""
        if self.auth.link is None or not self.url:
            return ""
        return f"{self.url}login?token={self.auth.link.token}"

    def _link_issued(self, token: str) -> None:
        if self.url:  # the first token is issued before the port is known
            self.show_link(f"{self.url}login?token={token}")


def _bound_port(runner: web.AppRunner, asked: int) -> int:
    """The port listened on (the one asked, or the free one port 0 found)."""
    for server in runner.sites:
        sock = getattr(getattr(server, "_server", None), "sockets", None)
        if sock:
            return int(sock[0].getsockname()[1])
    return asked


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return socket.gethostname()
    return f"[{host}]" if ":" in host else host
