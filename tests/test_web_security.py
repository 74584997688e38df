"""The web page's guards, over real HTTP on loopback: every admin action without a
session, or with one but without its CSRF token, is refused (403) and changes
nothing; the login link works once; five wrong passwords slow the next attempts;
an upload is checked like a chat picture; security headers on every response; no
page shows a password or a token; the page listens on its configured address only.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from bot.images import check_image
from bot.requests import UserError
from storage.config import ConfigError, parse_settings
from storage.records import JobParams, JobStatus
from tests.conftest import ManualClock
from tests.web_harness import (
    PASSWORD,
    Page,
    WebClient,
    bomb_png,
    noise_png,
    png,
    serving,
    web_settings,
)


async def queue_job(page: Page, user: str = "1001", platform: str = "telegram") -> int:
    picture = page.data.new_input_path(".png")
    picture.parent.mkdir(parents=True, exist_ok=True)
    picture.write_bytes(png())
    job = await page.store.enqueue(
        platform=platform, user_id=user, user_name=f"user {user}", chat_id=user,
        params=JobParams(prompt="a cat", seconds=1.0, steps=2), input_path=str(picture),
    )  # fmt: skip
    return job.id


async def finished_video(page: Page) -> int:
    """A done and delivered job with a video file in its folder."""
    await page.store.set_paused(False)
    job_id = await queue_job(page, "2002")
    job = await page.store.claim("w")
    assert job is not None and job.id == job_id
    video = page.data.videos_dir(job_id) / "final.mp4"
    video.parent.mkdir(parents=True)
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(500))
    await page.store.complete(job_id, "w", result_path=str(video))
    await page.store.mark_delivered(job_id)
    return job_id


async def state(page: Page) -> tuple[Any, ...]:
    """Everything an action could change."""
    store = page.store
    jobs = await store.find_many(range(1, 50))
    users = sorted(
        (u.platform, u.user_id, u.banned, u.ban_reason, repr(u.overrides))
        for u in await store.usage()
    )
    videos = sorted(p.name for p in page.data.root.glob("videos/*/*"))
    inputs = sorted(p.name for p in page.data.inputs.iterdir())
    return (
        sorted((j.id, j.status, j.cancel_requested) for j in jobs.values()),
        await store.paused(),
        users,
        videos,
        inputs,
    )


def actions(waiting: int, video: int) -> list[tuple[str, Any]]:
    """Every POST the page offers, with a form that would do something."""
    upload = aiohttp.FormData()
    upload.add_field("image", png(), filename="a.png", content_type="image/png")
    upload.add_field("prompt", "a dog runs")
    return [
        (f"/jobs/{waiting}/cancel", {}),
        (f"/videos/{video}/delete", {}),
        ("/queue/pause", {}),
        ("/queue/resume", {}),
        ("/users/ban", {"platform": "telegram", "user_id": "1001", "reason": "spam"}),
        ("/users/unban", {"platform": "telegram", "user_id": "3003"}),
        (
            "/users/limits",
            {"platform": "telegram", "user_id": "1001", "waiting": "9", "seconds_per_day": "30"},
        ),
        ("/animate", upload),
        ("/logout", {}),
    ]


async def test_every_action_without_a_session_or_its_csrf_token_is_refused(
    tmp_path: Path,
) -> None:
    async with serving(web_settings(tmp_path)) as page:
        video = await finished_video(page)
        waiting = await queue_job(page)
        await page.store.set_banned("telegram", "3003", True, "old ban")
        await page.store.set_paused(True)
        before = await state(page)

        async with WebClient(page.url) as anonymous:
            await anonymous.get("/login")  # an anonymous session, with its own CSRF token
            for path, form in actions(waiting, video):
                status, _, _ = await anonymous.post(path, form)
                assert status == 403, path
            for path in ("/", "/queue", "/videos", "/users", "/animate", f"/jobs/{waiting}"):
                status, text, _ = await anonymous.get(path)
                assert status == 200 and 'data-view="login"' in text, path  # sent to log in
            for path in ("/live?view=now", f"/media/{video}/video", f"/media/{waiting}/input"):
                status, _, _ = await anonymous.get(path)
                assert status == 403, path
        assert await state(page) == before

        async with WebClient(page.url) as host, WebClient(page.url) as other:
            await host.login()
            await other.login()
            for path, form in actions(waiting, video):
                status, _, _ = await host.post(path, form, csrf=False)
                assert status == 403, f"{path} without a token"
                stolen = {**form, "csrf": other.csrf} if isinstance(form, dict) else None
                if stolen is not None:  # another session's token is no token
                    status, _, _ = await host.post(path, stolen, csrf=False)
                    assert status == 403, f"{path} with another session's token"
            status, _, _ = await host.post(
                "/queue/resume", headers={"X-CSRF-Token": "forged"}, csrf=False
            )
            assert status == 403
            assert await state(page) == before

            # the same actions with the token all go through
            for path, form in actions(waiting, video)[:-1]:
                status, text, _ = await host.post(path, form)
                assert status == 200, f"{path}: {text[:300]}"
            after = await state(page)
        jobs = {job_id: status for job_id, status, _ in after[0]}
        assert jobs[waiting] is JobStatus.CANCELLED
        assert after[1] is False  # paused, then resumed
        users = {(p, u): (banned, reason, over) for p, u, banned, reason, over in after[2]}
        assert users[("telegram", "1001")][:2] == (True, "spam")
        assert "max_waiting_per_user" in users[("telegram", "1001")][2]
        assert not (await page.store.user("telegram", "3003")).banned
        assert after[3] == []  # the video is deleted
        web_jobs = await page.store.jobs_of("web", "host")
        assert [j.params.prompt for j in web_jobs] == ["a dog runs"]


async def test_the_login_link_works_once_and_a_new_one_is_printed(tmp_path: Path) -> None:
    async with serving(web_settings(tmp_path, password=None)) as page:
        (link,) = page.links
        token = link.split("token=")[1]
        async with WebClient(page.url) as first:
            status, text, _ = await first.get(link.removeprefix(page.url.rstrip("/")))
            assert status == 200 and 'data-view="now"' in text
            assert token not in text
        assert len(page.links) == 2 and page.links[1] != link  # for the next login
        async with WebClient(page.url) as second:
            status, text, _ = await second.get(link.removeprefix(page.url.rstrip("/")))
            assert 'data-view="login"' in text and "spent or wrong" in text
            status, text, _ = await second.get("/")
            assert 'data-view="login"' in text
            status, text, _ = await second.get(page.links[1].removeprefix(page.url.rstrip("/")))
            assert 'data-view="now"' in text
        async with WebClient(page.url) as third:  # no password login without a password
            await third.get("/login")
            status, text, _ = await third.post("/login", {"password": ""})
            status, text, _ = await third.get("/")
            assert 'data-view="login"' in text


async def test_five_wrong_passwords_slow_the_next_attempts(tmp_path: Path) -> None:
    async with serving(web_settings(tmp_path)) as page:
        clock = ManualClock(1000.0)
        page.surface.auth.limiter.clock = clock
        async with WebClient(page.url) as client:
            await client.get("/login")
            for _ in range(5):
                status, text, _ = await client.post("/login", {"password": "guess"})
                assert status == 200 and "That is not the password" in text
            # locked: even the right password is not looked at for 2 s
            status, text, headers = await client.post("/login", {"password": PASSWORD})
            assert status == 429 and headers["Retry-After"] == "2"
            clock.advance(2.1)
            status, _, _ = await client.post("/login", {"password": "guess again"})
            assert status == 200
            status, _, headers = await client.post("/login", {"password": PASSWORD})
            assert status == 429 and headers["Retry-After"] == "4"  # doubling
            clock.advance(4.1)
            await client.login()  # and it resets the count
        async with WebClient(page.url):  # counted per client address
            assert page.surface.auth.limiter.wait("127.0.0.1") == 0


async def test_an_upload_is_checked_exactly_like_a_chat_picture(tmp_path: Path) -> None:
    limit = 200_000
    settings = web_settings(tmp_path, generation={"resolution": 64, "max_image_bytes": limit})
    gen = settings.generation

    def chat_answer(data: bytes) -> str:
        with pytest.raises(UserError) as refused:
            check_image(data, max_bytes=gen.max_image_bytes, max_pixels=gen.max_image_pixels)
        return refused.value.message

    cases = {
        "a decompression bomb": bomb_png(),
        "not a picture": b"%PDF-1.4 just a document",
        "too many bytes": noise_png(300),
    }
    assert len(cases["too many bytes"]) > limit
    async with serving(settings) as page, WebClient(page.url) as client:
        await client.login()
        for what, data in cases.items():
            await client.get("/animate")
            form = aiohttp.FormData()
            form.add_field("image", data, filename="x.png", content_type="image/png")
            form.add_field("prompt", "a cat")
            status, text, _ = await client.post("/animate", form)
            expected = chat_answer(data).replace("×", "&#215;")
            assert status == 400, what
            assert chat_answer(data) in text or expected in text, (what, text[:2000])
        # a body larger than two pictures at their largest is refused before it is read
        await client.get("/animate")
        form = aiohttp.FormData()
        form.add_field("image", bytes(3 * limit + (2 << 20)), filename="x.png")
        status, _, _ = await client.post("/animate", form)
        assert status == 413
        assert await page.store.jobs_of("web", "host") == []
        assert list(page.data.inputs.iterdir()) == []  # nothing written for a refusal


async def test_every_response_has_the_security_headers_and_no_secret(tmp_path: Path) -> None:
    async with serving(web_settings(tmp_path)) as page, WebClient(page.url) as client:
        job_id = await queue_job(page)
        pages = ["/login", "/", "/queue", "/videos", "/users", "/animate", f"/jobs/{job_id}"]
        seen = []
        _, text, headers = await client.get("/login")
        seen.append((headers, text))
        await client.login()
        others = ["/static/app.js", f"/media/{job_id}/input", "/nowhere", "/metrics", "/healthz"]
        for path in [*pages, *others]:
            _status, text, headers = await client.get(path)
            seen.append((headers, text))
        for headers, text in seen:
            csp = headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "unsafe-inline" not in csp
            assert "frame-ancestors 'none'" in csp and headers["X-Frame-Options"] == "DENY"
            assert headers["X-Content-Type-Options"] == "nosniff"
            assert headers["Referrer-Policy"] == "no-referrer"
            assert PASSWORD not in text
        for headers, _ in seen:
            for cookie in headers.getall("Set-Cookie", []):
                assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
        # no inline script anywhere: the CSP would block it
        for _, text in seen[:8]:
            assert "<script>" not in text and "onclick" not in text


async def test_a_forged_expired_or_logged_out_session_is_no_session(tmp_path: Path) -> None:
    async with serving(web_settings(tmp_path)) as page, WebClient(page.url) as client:
        await client.login()
        cookie = client.http.cookie_jar.filter_cookies(URL(page.url))["fpb_session"].value
        sessions = page.surface.auth.sessions
        assert sessions.read(cookie) is not None and sessions.read(cookie + "x") is None
        payload, _, signature = cookie.rpartition(".")
        assert sessions.read(payload + "." + signature[::-1]) is None
        clock = ManualClock(sessions.clock())
        sessions.clock = clock
        clock.advance(sessions.max_age + 1)
        assert sessions.read(cookie) is None  # expired
        clock.advance(-(sessions.max_age + 1))
        _, text, _ = await client.post("/logout", {})
        assert 'data-view="login"' in text
        assert sessions.read(cookie) is None  # logged out for good, even if replayed
        async with WebClient(page.url) as replay:
            replay.http.cookie_jar.update_cookies({"fpb_session": cookie})
            _status, text, _ = await replay.get("/")
            assert 'data-view="login"' in text


async def test_media_serves_a_jobs_own_files_only(tmp_path: Path) -> None:
    async with serving(web_settings(tmp_path)) as page, WebClient(page.url) as client:
        await client.login()
        job_id = await queue_job(page)
        secret = page.data.root / "framepack-bot.sqlite3"
        preview = page.data.previews_dir(job_id) / "1-000-001.png"
        preview.parent.mkdir(parents=True)
        preview.write_bytes(png())
        status, _, headers = await client.get(f"/media/{job_id}/previews/1-000-001.png")
        assert status == 200 and headers["Content-Type"] == "image/png"
        for path in (
            f"/media/{job_id}/previews/..%2F..%2Fframepack-bot.sqlite3",
            f"/media/{job_id}/previews/../../framepack-bot.sqlite3",
            f"/media/{job_id}/work/.hidden",
            f"/media/{job_id}/video",  # not rendered yet
            f"/media/{job_id + 1}/input",
            "/media/x/input",
        ):
            status, _text, _ = await client.get(path)
            assert status == 404, path
        assert secret.exists()
        # a job that continues a video shows the video's last frame, from inputs/
        video = page.data.new_input_path(".mp4")
        video.write_bytes(b"\x00\x00\x00\x18ftypmp42")
        poster = Path(f"{video}.poster.jpg")
        poster.write_bytes(png())
        continued = await page.store.enqueue(
            platform="web", user_id="host", chat_id="web",
            params=JobParams(prompt="on and on"), input_path=str(video),
        )  # fmt: skip
        status, text, _ = await client.get(f"/jobs/{continued.id}")
        assert f'src="/media/{continued.id}/poster"' in text
        status, _, _ = await client.get(f"/media/{continued.id}/poster")
        assert status == 200


async def test_the_page_listens_on_the_configured_address_only(tmp_path: Path) -> None:
    settings = web_settings(tmp_path)
    host, port = settings.web.address
    assert host == "127.0.0.1"
    async with serving(settings) as page:
        assert page.url == f"http://127.0.0.1:{port}/"
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        others = {"127.0.0.2", "127.1.2.3"}  # loopback too, but not the address asked for
        with contextlib.suppress(OSError):
            others.add(socket.gethostbyname(socket.gethostname()))
        others.discard("127.0.0.1")
        for address in sorted(others):
            with pytest.raises(OSError):
                await asyncio.open_connection(address, port)
        with pytest.raises(OSError):
            await asyncio.open_connection("::1", port)


def test_the_default_address_is_this_machine_only_and_listen_is_checked() -> None:
    web = parse_settings({}).web
    assert web.enabled and web.listen == "127.0.0.1:8765" and web.address == ("127.0.0.1", 8765)
    assert parse_settings({"web": {"listen": "[::1]:9000"}}).web.address == ("::1", 9000)
    for bad in ("8765", "localhost", "127.0.0.1:port", "127.0.0.1:70000", ":8765"):
        with pytest.raises(ConfigError, match=r"web\.listen"):
            parse_settings({"web": {"listen": bad}})
    with pytest.raises(ConfigError, match=r"web\.password_file: cannot read"):
        parse_settings({"web": {"password_file": "/nonexistent/password"}})


async def test_the_password_comes_from_its_variable_and_is_never_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FPB_TEST_WEB_PW", "from-the-environment")
    settings = parse_settings(
        {"storage": {"data_dir": str(tmp_path)}, "web": {"password_env": "FPB_TEST_WEB_PW"}}
    )
    assert settings.web.password.reveal() == "from-the-environment"
    assert "from-the-environment" not in repr(settings) + str(settings.web)


async def test_the_animate_form_offers_the_step_cache_and_checks_it(tmp_path: Path) -> None:
    async with serving(web_settings(tmp_path)) as page, WebClient(page.url) as client:
        await client.login()
        _, text, _ = await client.get("/animate")
        assert '<select name="cache">' in text and "<option selected>magcache</option>" in text
        for cache in ("fastest", "teacache"):
            await client.get("/animate")
            form = aiohttp.FormData()
            form.add_field("image", png(), filename="x.png", content_type="image/png")
            form.add_field("prompt", "a cat")
            form.add_field("cache", cache)
            status, text, _ = await client.post("/animate", form)
            if cache == "fastest":  # refused with the chat's sentence, nothing queued
                assert status == 400 and "--cache must be off, teacache or magcache" in text
                assert await page.store.jobs_of("web", "host") == []
        (job,) = await page.store.jobs_of("web", "host")
        assert job.params.cache == "teacache"


async def test_the_animate_form_offers_the_catalogues_loras_and_checks_them(
    tmp_path: Path,
) -> None:
    from tests.web_harness import web_config
    from tests.worker_fixtures import settings_of

    (tmp_path / "paint.safetensors").write_bytes(b"")
    config = web_config(tmp_path)
    config.write_text(
        config.read_text() + '[[model.loras]]\nname = "paint"\nsource = "paint.safetensors"\n'
        'description = "thick brush strokes"\n'
    )
    async with serving(settings_of(config)) as page, WebClient(page.url) as client:
        await client.login()
        _, text, _ = await client.get("/animate")
        assert '<input name="lora" list="loras"' in text
        assert "paint (framepack, f1; scale 1) — thick brush strokes" in text
        for lora in ("ghibli", "paint:0.5"):
            await client.get("/animate")
            form = aiohttp.FormData()
            form.add_field("image", png(), filename="x.png", content_type="image/png")
            form.add_field("prompt", "a cat")
            form.add_field("lora", lora)
            status, text, _ = await client.post("/animate", form)
            if lora == "ghibli":  # refused with the chats' sentence and the list, nothing queued
                assert status == 400 and "There is no LoRA called &#39;ghibli&#39;" in text
                assert "The LoRAs for framepack are: paint" in text
                assert 'value="ghibli"' in text  # the form keeps what was typed
                assert await page.store.jobs_of("web", "host") == []
        (job,) = await page.store.jobs_of("web", "host")
        assert job.params.loras == (("paint", 0.5),)
