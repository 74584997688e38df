"""python-telegram-bot's own networking (`HTTPXRequest`, on httpx), with the proxy
the environment names.

PTB's httpx client reads HTTP proxies from the environment but not SOCKS ones,
which users in regions that block Telegram rely on; so the bot picks the proxy
for the Bot API's address from HTTPS_PROXY / HTTP_PROXY / ALL_PROXY and NO_PROXY
(as curl and httpx read them) and hands it to the client, `socks5://` included
(httpx's SOCKS support, from python-telegram-bot[socks]).
"""

from __future__ import annotations

import urllib.parse
import urllib.request

from telegram.request import HTTPXRequest

CONNECTIONS = 32  # edits and uploads of many jobs at once, and a burst of /animate replies
MEDIA_WRITE_TIMEOUT = 600.0  # seconds to upload one video (up to 2000 MB to a local server)
TELEGRAM_API = "https://api.telegram.org"


def proxy_for(url: str) -> str | None:
    """The proxy the environment names for `url`, or None (none, or NO_PROXY says so)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if urllib.request.proxy_bypass(host):
        return None
    proxies = urllib.request.getproxies()
    return proxies.get(parts.scheme) or proxies.get("all") or None


def bot_api_requests(base_url: str) -> tuple[HTTPXRequest, HTTPXRequest]:
    """The client of the bot's calls and the one of its long polling (kept apart so a
    slow upload never holds up getUpdates)."""
    proxy = proxy_for(base_url or TELEGRAM_API)
    calls = HTTPXRequest(
        connection_pool_size=CONNECTIONS, media_write_timeout=MEDIA_WRITE_TIMEOUT, proxy=proxy
    )
    polling = HTTPXRequest(connection_pool_size=1, proxy=proxy)
    return calls, polling
