"""What the page changes (POST), each through `BotService` as the host (an admin
of platform "web"), exactly as a chat command would: the same checks, the same
refusals, the same log lines. The guards of bot/web/app.py ran first (a logged-in
session, its CSRF token). After an action the browser is sent back to the page it
came from, with the service's answer as a flash message."""

from __future__ import annotations

import logging
import math
import re

from aiohttp import web
from aiohttp.web_request import FileField
from multidict import MultiDictProxy

from bot.requests import AnimateOptions, UserError, parse_lora_specs
from bot.web import pages
from bot.web.context import HOST, context_of, flash, session_of, set_session

log = logging.getLogger("framepack_bot.web")

# Where an action may send the browser back to: the page's own screens only.
_BACK = re.compile(r"^/(queue|videos|users|animate|jobs/[0-9]{1,18})?$")


def _back(form: MultiDictProxy, default: str = "/") -> web.HTTPFound:
    target = form.get("next")
    return web.HTTPFound(target if isinstance(target, str) and _BACK.match(target) else default)


def _text(form: MultiDictProxy, name: str) -> str:
    value = form.get(name, "")
    return value if isinstance(value, str) else ""


async def _done(request: web.Request, answer: str, default: str = "/") -> web.HTTPFound:
    flash(request, answer)
    context_of(request).changed()
    return _back(await request.post(), default)


async def _refused(request: web.Request, error: UserError, default: str = "/") -> web.HTTPFound:
    flash(request, error.message, "error")
    return _back(await request.post(), default)


# ---- login -------------------------------------------------------------------------


def _client(request: web.Request) -> str:
    return request.remote or "unknown"


async def login(request: web.Request) -> web.StreamResponse:
    """The password form: five wrong ones in a row, and each further try has to wait."""
    ctx = context_of(request)
    limiter, client = ctx.auth.limiter, _client(request)
    wait = limiter.wait(client)
    if wait > 0:
        log.warning("web: login from %s refused for %.0f s (wrong passwords)", client, wait)
        raise web.HTTPTooManyRequests(
            text=f"Too many wrong passwords: try again in {math.ceil(wait)} s.",
            headers={"Retry-After": str(math.ceil(wait))},
        )
    form = await request.post()
    if not ctx.auth.check_password(_text(form, "password")):
        limiter.failed(client)
        log.warning("web: a wrong password from %s", client)
        flash(request, "That is not the password.", "error")
        raise web.HTTPFound("/login")
    limiter.succeeded(client)
    set_session(request, ctx.auth.sessions.login(session_of(request)))
    log.info("web: the host logged in from %s", client)
    raise web.HTTPFound("/")


async def redeem_link(request: web.Request) -> web.StreamResponse:
    """The one-time login link: good once; a spent or wrong token counts as a wrong
    password. The token leaves the address bar at once (a redirect to /)."""
    ctx = context_of(request)
    limiter, client = ctx.auth.limiter, _client(request)
    wait = limiter.wait(client)
    if wait > 0:
        raise web.HTTPTooManyRequests(
            text=f"Too many wrong login links: try again in {math.ceil(wait)} s.",
            headers={"Retry-After": str(math.ceil(wait))},
        )
    link = ctx.auth.link
    if link is None or not link.redeem(request.query.get("token", "")):
        limiter.failed(client)
        log.warning("web: a spent or wrong login link from %s", client)
        flash(
            request,
            "That login link is spent or wrong: use the newest one the bot printed.",
            "error",
        )
        raise web.HTTPFound("/login")
    limiter.succeeded(client)
    set_session(request, ctx.auth.sessions.login(session_of(request)))
    log.info("web: the host logged in with the login link from %s", client)
    raise web.HTTPFound("/")


async def logout(request: web.Request) -> web.StreamResponse:
    ctx = context_of(request)
    ctx.auth.sessions.end(session_of(request))
    set_session(request, ctx.auth.sessions.new())
    raise web.HTTPFound("/login")


# ---- the queue -----------------------------------------------------------------------


def _job_id(request: web.Request) -> int:
    return int(request.match_info["job_id"])


async def cancel(request: web.Request) -> web.StreamResponse:
    """Cancel any job: a waiting one at once, a rendering one at its next step."""
    service = context_of(request).service
    try:
        answer = await service.cancel(HOST, _job_id(request))
    except UserError as error:
        raise await _refused(request, error) from None
    raise await _done(request, answer)


async def delete_video(request: web.Request) -> web.StreamResponse:
    service = context_of(request).service
    try:
        answer = await service.delete_video(HOST, _job_id(request))
    except UserError as error:
        raise await _refused(request, error, "/videos") from None
    raise await _done(request, answer, "/videos")


async def pause(request: web.Request) -> web.StreamResponse:
    answer = await context_of(request).service.pause(HOST)
    raise await _done(request, answer)


async def resume(request: web.Request) -> web.StreamResponse:
    answer = await context_of(request).service.resume(HOST)
    raise await _done(request, answer)


# ---- users ---------------------------------------------------------------------------


async def ban(request: web.Request) -> web.StreamResponse:
    """Ban a user of any platform, with a reason; their waiting jobs are cancelled."""
    form = await request.post()
    service = context_of(request).service
    try:
        answer = await service.ban(
            HOST, _text(form, "user_id"), _text(form, "reason"), platform=_text(form, "platform")
        )
    except UserError as error:
        raise await _refused(request, error, "/users") from None
    raise await _done(request, answer, "/users")


async def unban(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    service = context_of(request).service
    try:
        answer = await service.unban(HOST, _text(form, "user_id"), platform=_text(form, "platform"))
    except UserError as error:
        raise await _refused(request, error, "/users") from None
    raise await _done(request, answer, "/users")


async def limits(request: web.Request) -> web.StreamResponse:
    """One user's own limits (jobs waiting, seconds a day), or back to the usual ones."""
    form = await request.post()
    service = context_of(request).service
    try:
        if _text(form, "reset"):
            waiting, per_day = None, None
        else:
            waiting = _number(form, "waiting", int, "The jobs waiting")
            per_day = _number(form, "seconds_per_day", float, "The seconds a day")
            if waiting is None or per_day is None:
                raise UserError("Give both the jobs waiting and the seconds a day (0: no limit).")
        answer = await service.set_limits(
            HOST, _text(form, "user_id"), waiting, per_day, platform=_text(form, "platform")
        )
    except UserError as error:
        raise await _refused(request, error, "/users") from None
    raise await _done(request, answer, "/users")


def _number(form: MultiDictProxy, name: str, kind: type, label: str) -> int | float | None:
    text = _text(form, name).strip()
    if not text:
        return None
    try:
        value = kind(text)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise UserError(f"{label} must be {what}, not {text!r}.") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{label} must be a finite number.")
    return value


# ---- animate -------------------------------------------------------------------------

FORM_FIELDS = ("prompt", "seconds", "seed", "steps", "guidance", "model", "cache", "lora")


async def animate(request: web.Request) -> web.StreamResponse:
    """The host's /animate: pictures checked exactly as a chat's (bot/images.py, in
    `BotService.animate`), a job of platform "web" in the same fair queue."""
    ctx = context_of(request)
    form = await request.post()
    try:
        options = AnimateOptions(
            prompt=_text(form, "prompt"),
            seconds=_number(form, "seconds", float, "Seconds"),
            seed=_number(form, "seed", int, "The seed"),  # type: ignore[arg-type]
            steps=_number(form, "steps", int, "Steps"),  # type: ignore[arg-type]
            guidance=_number(form, "guidance", float, "Guidance"),
            model=_text(form, "model") or None,
            cache=_text(form, "cache") or None,
            # as Discord's lora option: name[:scale], several separated by commas
            loras=tuple(parse_lora_specs(lora)) if (lora := _text(form, "lora")) else None,
        )
        image = _upload(form, "image")
        if image is None:
            raise UserError("Choose a picture to animate.")
        job = await ctx.service.animate(HOST, image, options, end_image=_upload(form, "end_image"))
    except UserError as error:
        flash(request, error.message, "error")
        kept = {name: _text(form, name) for name in FORM_FIELDS}
        response = await pages.screen(
            request,
            "animate",
            "animate.html",
            gen=ctx.settings.generation,
            form=kept,
            loras=ctx.settings.model.loras,
        )
        response.set_status(400)
        return response
    ctx.changed()
    flash(request, f"Job #{job.id} is queued.")
    raise web.HTTPFound(f"/jobs/{job.id}")


def _upload(form: MultiDictProxy, name: str) -> bytes | None:
    """The bytes of an uploaded file field (None when none was chosen: a browser sends
    an empty part without a file name for a file input left empty)."""
    field = form.get(name)
    if isinstance(field, FileField):
        data = field.file.read()
    elif isinstance(field, bytes | bytearray):
        data = bytes(field)
    else:
        return None
    return data or None
