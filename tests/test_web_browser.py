"""The host's page in real headless Chromium (Debian's `chromium`, driven by
Playwright), served by `run_bots` beside the real Telegram adapter (on the fake
Bot API), every change through the page's own buttons and forms:

- log in; pause and resume the queue; a Telegram user's job appears in the queue
  live (no reload) and is cancelled from it, which its chat message shows; a ban
  with a reason refuses that user's next /animate in the chat, an unban lets it
  through, per-user limits are set;
- with the real tiny worker (a `framepack-bot worker` process): the worker's state
  goes to ready; a picture animated from the page goes queued → rendering (the
  preview picture changes) → done, and the video element plays (readyState 4, a
  frame that is not black); a Telegram user's video, delivered to the fake chat,
  shows in the gallery and plays; the host deletes a video from the gallery.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from storage.records import JobStatus
from storage.store import JobStore
from tests.fakes.telegram_api import FakeTelegram
from tests.telegram_harness import (
    USER,
    config_data,
    job_messages,
    make_settings,
    png,
    replies,
    running_bot,
    write_config,
)
from tests.web_harness import PASSWORD, browser, free_port, wait_for
from tests.worker_fixtures import WorkerProcess

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:.*retry_after.*:DeprecationWarning"),
]

# What a video element shows now: ready state, size, and the mean brightness of the
# frame drawn to a canvas (0: black).
FRAME = """(selector) => {
    const video = document.querySelector(selector);
    if (!video || video.readyState < 4 || !video.videoWidth) return null;
    const canvas = document.createElement("canvas");
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    const context = canvas.getContext("2d");
    context.drawImage(video, 0, 0);
    const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
    let sum = 0;
    for (let i = 0; i < pixels.length; i += 4) sum += pixels[i] + pixels[i + 1] + pixels[i + 2];
    return {ready: video.readyState, width: video.videoWidth, mean: sum / (pixels.length / 4) / 3};
}"""


def web_section(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "web-password").write_text(PASSWORD)
    return {
        "enabled": True,
        "listen": f"127.0.0.1:{free_port()}",
        "password_file": str(tmp_path / "web-password"),
        "password_env": "FPB_TEST_WEB_PASSWORD_UNSET",
    }


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as tg:
        yield tg


async def log_in(page: Any, url: str) -> None:
    await page.goto(url)
    assert page.url.endswith("/login")  # sent to the login first
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[data-action=login]")
    await page.wait_for_selector("body[data-view=now]")
    await page.wait_for_selector("#live-state[data-on=yes]")  # the event stream is open


async def test_log_in_pause_resume_cancel_ban_and_limits_in_the_browser(
    tmp_path: Path, fake: FakeTelegram
) -> None:
    web = web_section(tmp_path)
    url = f"http://{web['listen']}/"
    settings = make_settings(tmp_path, fake, web=web)
    async with (
        running_bot(settings, fake),
        await JobStore.open(settings.database_path) as store,
        browser() as chromium,
    ):
        page = await chromium.new_page()
        await log_in(page, url)

        # ---- pause and resume ---------------------------------------------------------
        await page.goto(url + "queue")
        await page.click("button[data-action=pause]")
        await page.wait_for_selector("[data-paused=yes]")
        assert await store.paused()
        await page.evaluate("window.sameDocument = true")  # gone if the page reloads

        # ---- a chat user's job shows up live, and is cancelled from the page ------------
        fake.user_sends_photo(user_id=USER, image=png(), caption="/animate a cat --seconds 1")
        (message,) = await fake.wait_for(lambda: job_messages(fake, USER), 10)
        row = await page.wait_for_selector("#r-queue [data-job]", timeout=10_000)
        assert await page.evaluate("window.sameDocument === true")  # pushed, not reloaded
        job_id = int(await row.get_attribute("data-job"))
        assert "a cat" in await row.inner_text() and "when the queue is resumed" in (
            await row.inner_text()
        )
        await page.click(f"#r-queue [data-job='{job_id}'] button[data-action=cancel]")
        await page.wait_for_selector("#r-queue [data-key=none]")
        assert (await store.get(job_id)).status is JobStatus.CANCELLED
        await fake.wait_for(lambda: message.text.startswith("✖ Cancelled"), 10)
        assert "cancelled" in (await page.inner_text(".flash")).lower()

        await page.click("button[data-action=resume]")
        await page.wait_for_selector("[data-paused=no]")
        assert not await store.paused()

        # ---- ban: the user's next /animate is refused in the chat ----------------------
        await page.goto(url + "users")
        user_row = f"[data-user='telegram:{USER}']"
        await page.fill(f"{user_row} input[name=reason]", "spam")
        await page.click(f"{user_row} button[data-action=ban]")
        await page.wait_for_selector(f"{user_row}.banned")
        assert "spam" in await page.inner_text(user_row)
        fake.user_sends_photo(user_id=USER, image=png(), caption="/animate a dog")
        refusal = await fake.wait_for(
            lambda: [r for r in replies(fake, USER) if "not allowed" in r], 10
        )
        assert "(spam)" in refusal[0]
        assert len(job_messages(fake, USER)) == 1  # nothing queued

        # ---- unban and limits -----------------------------------------------------------
        await page.click(f"{user_row} button[data-action=unban]")
        await page.wait_for_selector(f"{user_row}:not(.banned)")
        await page.fill(f"{user_row} input[name=waiting]", "7")
        await page.fill(f"{user_row} input[name=seconds_per_day]", "45")
        await page.click(f"{user_row} button[data-action=limits]")
        await page.wait_for_selector(f"{user_row} >> text=7 waiting · 45 s a day")
        user = await store.user("telegram", str(USER))
        assert not user.banned
        assert user.overrides == {"max_waiting_per_user": 7, "max_video_seconds_per_day": 45.0}
        fake.user_sends_photo(user_id=USER, image=png(), caption="/animate a bird --seconds 1")
        await fake.wait_for(lambda: len(job_messages(fake, USER)) == 2, 10)


async def job_state(page: Any) -> dict[str, Any]:
    return await page.evaluate(
        """() => {
            const text = document.querySelector("#r-job .job-text");
            const img = document.querySelector("#r-job img.preview");
            const video = document.querySelector("#r-job video");
            return {status: text && text.dataset.status,
                    headline: text && text.querySelector(".headline").textContent,
                    picture: img && img.getAttribute("src"),
                    video: video && video.getAttribute("src"),
                    same: window.sameDocument === true};
        }"""
    )


async def test_animate_with_the_tiny_worker_and_the_gallery_of_a_telegram_video(
    tmp_path: Path, fake: FakeTelegram
) -> None:
    web = web_section(tmp_path)
    url = f"http://{web['listen']}/"
    document = config_data(
        tmp_path / "data",
        fake,
        model={"device": "cpu"},
        generation={"resolution": 64, "max_steps": 100},
        queue={"max_waiting_per_user": 10, "max_video_seconds_per_day": 0.0,
               "heartbeat_timeout": 5.0},
        worker={"heartbeat_seconds": 0.5, "step_event_interval": 0.0},
        web=web,
    )  # fmt: skip
    config = write_config(tmp_path / "config.toml", document)
    worker = WorkerProcess.start(config, burst=False)
    try:
        async with (
            running_bot(make_bot_settings(config, fake), fake),
            await JobStore.open(tmp_path / "data" / "framepack-bot.sqlite3") as store,
            browser() as chromium,
        ):
            context = await chromium.new_context()
            page = await context.new_page()
            await log_in(page, url)
            # the worker's state on the Now page: loading, then ready with its device
            ready = await page.wait_for_selector(
                "#r-workers .worker[data-state=ready]", timeout=120_000
            )
            assert "device cpu" in await ready.inner_text()

            # ---- animate from the page, the queue paused so that "queued" shows --------
            await page.goto(url + "animate")
            await page.click("button[data-action=pause]")
            await page.wait_for_selector("[data-paused=yes]")
            await page.set_input_files(
                "input[name=image]",
                files=[{"name": "square.png", "mimeType": "image/png",
                        "buffer": png(160, 120, "orange")}],
            )  # fmt: skip
            await page.fill("textarea[name=prompt]", "an orange square turns")
            await page.fill("input[name=seconds]", "3.6")
            await page.fill("input[name=steps]", "40")
            await page.fill("input[name=seed]", "5")
            await page.click("button[data-action=animate]")
            await page.wait_for_url("**/jobs/*")
            job_id = int(page.url.rsplit("/", 1)[1])
            await page.evaluate("window.sameDocument = true")
            first = await job_state(page)
            assert first["status"] == "queued" and "Queued · position 1" in first["headline"]

            other = await context.new_page()  # resume from the queue, in a second tab
            await other.goto(url + "queue")
            await other.click("button[data-action=resume]")
            await other.wait_for_selector("[data-paused=no]")

            seen: list[dict[str, Any]] = [first]
            deadline = asyncio.get_running_loop().time() + 120
            while seen[-1]["status"] != "done":
                assert asyncio.get_running_loop().time() < deadline, seen[-5:]
                await asyncio.sleep(0.05)
                seen.append(await job_state(page))
            final = await wait_for(
                lambda: page.evaluate(FRAME, "#r-job video.final"), 30, "the video to play"
            )
            job = await store.get(job_id)

            # ---- a Telegram user's video, delivered to the chat, in the gallery -------
            fake.user_sends_photo(
                user_id=USER,
                image=png(160, 120, "purple"),
                caption="/animate a purple square grows --seconds 1 --steps 4",
            )
            (message,) = await fake.wait_for(lambda: job_messages(fake, USER), 10)
            await fake.wait_for(
                lambda: message.kind == "video" and message.text.startswith("✅ Done"), 120
            )
            await page.goto(url + "videos")
            card = await page.wait_for_selector("article.video[data-platform=telegram]")
            text = await card.inner_text()
            assert "a purple square grows" in text and "(telegram)" in text
            telegram_job = int(await card.get_attribute("data-job"))
            selector = f"article.video[data-job='{telegram_job}'] video"
            await page.evaluate(f"document.querySelector({selector!r}).play()")
            gallery = await wait_for(lambda: page.evaluate(FRAME, selector), 30, "it to play")
            assert gallery["ready"] == 4 and gallery["mean"] > 10, gallery
            assert await page.query_selector(f"article.video[data-job='{job_id}']")

            # ---- the host deletes their own video from the gallery ---------------------
            await page.click(f"article.video[data-job='{job_id}'] button[data-action=delete]")
            await page.wait_for_selector(f"article.video[data-job='{job_id}']", state="detached")
            assert "deleted" in await page.inner_text(".flash")
            assert await page.query_selector(f"article.video[data-job='{telegram_job}']")
            deleted = await store.get(job_id)

        # ---- what the page showed, in order --------------------------------------------
        statuses = [s["status"] for s in seen]
        assert statuses[0] == "queued" and statuses[-1] == "done"
        assert "running" in statuses
        assert statuses.index("running") < statuses.index("done")
        rendering = [s for s in seen if s["status"] == "running"]
        previews = {
            s["picture"] for s in rendering if s["picture"] and "/previews/" in s["picture"]
        }
        assert len(previews) >= 2, rendering  # the preview changed while it rendered
        assert any("Rendering" in s["headline"] for s in rendering)
        assert all(s["same"] for s in seen)  # pushed by the server, never reloaded
        assert final["ready"] == 4 and final["width"] > 0 and final["mean"] > 10, final
        assert job.platform == "web" and job.status is JobStatus.DONE
        assert job.delivered_at is not None  # the page is the notifier of "web"
        videos = tmp_path / "data" / "videos"
        assert not (videos / str(job_id)).exists() and (videos / str(telegram_job)).exists()
        assert deleted.status is JobStatus.DONE  # the job stays in the history
    finally:
        worker.kill()


def make_bot_settings(config: Path, fake: FakeTelegram) -> Any:
    import dataclasses

    from storage.config import Secret, load_settings

    settings = load_settings(config)
    return dataclasses.replace(
        settings, telegram=dataclasses.replace(settings.telegram, token=Secret(fake.token))
    )
