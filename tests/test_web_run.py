"""A newcomer's first start: `python -m framepack_bot.cli run` with the README's
config (config.example.toml as `cp` makes it) and no chat token serves the web
page; the one-time login link it prints logs the browser in, once; the Now page
shows the worker's state live (here: the real model cannot load offline, so it
is restarted after each crash). The README says so in its first lines."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.web_harness import browser, free_port, wait_for

REPO = Path(__file__).resolve().parents[1]
LINK = re.compile(r"framepack-bot: open (http://127\.0\.0\.1:\d+/login\?token=[\w-]+) ")
DEFAULT_LISTEN = 'listen = "127.0.0.1:8765"'


def test_the_readme_says_in_its_first_lines_that_run_serves_the_page() -> None:
    head = "\n".join((REPO / "README.md").read_text().splitlines()[:20])
    assert "framepack-bot run" in head and "http://127.0.0.1:8765" in head
    assert "no chat token" in head.lower() or "without a chat token" in head.lower()


@contextlib.asynccontextmanager
async def framepack_bot_run(
    tmp_path: Path,
) -> AsyncIterator[tuple[asyncio.subprocess.Process, Path]]:
    example = (REPO / "config.example.toml").read_text()
    assert DEFAULT_LISTEN in example
    # the README's `cp -n config.example.toml config.toml`, on a port of this test's own
    config = tmp_path / "config.toml"
    config.write_text(example.replace(DEFAULT_LISTEN, f'listen = "127.0.0.1:{free_port()}"'))
    secrets = ("TELEGRAM_BOT_TOKEN", "DISCORD_BOT_TOKEN", "FRAMEPACK_WEB_PASSWORD")
    env = {k: v for k, v in os.environ.items() if k not in secrets}
    env.update(PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")  # the machine may be offline
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "framepack_bot.cli", "run", "--config", "config.toml",
            cwd=tmp_path, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out,
        )  # fmt: skip
    try:
        yield proc, log
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 60)
            except TimeoutError:
                proc.kill()
                await proc.wait()


@pytest.mark.slow
async def test_run_without_a_chat_token_serves_the_page_behind_a_one_time_link(
    tmp_path: Path,
) -> None:
    async with framepack_bot_run(tmp_path) as (proc, log):

        def printed_link() -> str | None:
            assert proc.returncode is None, log.read_text()
            found = LINK.search(log.read_text())
            return found.group(1) if found else None

        link = await wait_for(printed_link, 60, "the login link")
        token = link.split("token=")[1]
        async with browser() as chromium:
            page = await chromium.new_page()
            await page.goto(link)
            await page.wait_for_selector("body[data-view=now]")
            assert token not in page.url and token not in await page.content()
            # the worker of `run` cannot load the real model offline: each crash shows
            restarting = await page.wait_for_selector(
                "#r-workers .worker[data-state=restarting]", timeout=90_000
            )
            assert "restarting after a crash (exit code 1)" in await restarting.inner_text()

            stranger = await (await chromium.new_context()).new_page()  # no cookie of ours
            await stranger.goto(link)  # the same link a second time
            await stranger.wait_for_selector("body[data-view=login]")
            assert "spent or wrong" in await stranger.inner_text(".flash")
        text = log.read_text()
    assert proc.returncode == 0, text
    assert "web: serving http://127.0.0.1:" in text
    assert "Traceback" not in text.split("worker started")[0]  # the bot's own start is clean
    for line in text.splitlines():  # the token is in the printed link only, never in a log line
        if token in line:
            assert line.startswith("framepack-bot: open http://"), line
