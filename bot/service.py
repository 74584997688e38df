"""The platform-neutral service behind every chat command and every action of the
host's web page.

Adapters translate their platform's updates into calls here and render what
comes back; nothing in this module knows Telegram, Discord or the web page.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.formatting import format_duration
from bot.images import check_image, save_input
from bot.requests import (
    LIMIT_USAGE,
    USAGE,
    AnimateOptions,
    UserError,
    build_params,
    check_loras,
    clean_prompt,
    new_seed,
)
from bot.videos import check_video, is_video, save_video
from storage.config import NO_LORA, Settings
from storage.files import DataDir, DiskFull, is_disk_full
from storage.records import EventKind, Job, JobParams, JobStatus
from storage.retention import remove_job_files
from storage.store import IllegalTransition, JobStore, QueueRefused

log = logging.getLogger("framepack_bot.bot")


@dataclass(frozen=True)
class Requester:
    """Who asks, where, with which rights (the adapter decides `is_admin`)."""

    platform: str
    user_id: str
    name: str
    chat_id: str
    is_admin: bool = False


# Where users come from: the chat platforms, and the host's own web page.
PLATFORMS = ("telegram", "discord", "web")

# Discord shows options as fields of the slash command, not as --flags in the text.
DISCORD_USAGE = (
    "/animate image:<picture> prompt:<text> [seconds seed steps guidance model cache lora …]"
)


def loras_text(settings: Settings, platform: str) -> str:
    """/loras: the catalogue, each LoRA with its models, default scale and description."""
    model = settings.model
    if not model.loras or model.max_loras == 0:
        return "This bot has no LoRAs (styles) to choose from."
    lines = [f"🎨 LoRAs (styles), up to {model.max_loras} per video:"]
    for lora in model.loras:
        line = f"• {lora.name} ({', '.join(lora.models)}; scale {lora.scale:g})"
        if lora.description:
            line += f" — {lora.description}"
        lines.append(line)
    example = model.loras[0]
    use = (
        f"--lora {example.name} or --lora {example.name}:{example.scale:g}"
        if platform == "telegram"
        else f"lora:{example.name} or lora:{example.name}:{example.scale:g}"
    )
    lines.append(
        f"Use: {use} (scale {model.lora_min_scale:g} to {model.lora_max_scale:g}); "
        f"several: a,b:0.5; {NO_LORA}: no LoRA (a remix then drops those it had)."
    )
    return "\n".join(lines)


def help_text(settings: Settings, platform: str) -> str:
    gen = settings.generation
    how = (
        "Send a picture with the caption /animate <prompt>, or reply /animate <prompt> to a "
        "message with a picture."
        if platform == "telegram"
        else "Use /animate with an image attachment and a prompt."
    )
    flag, usage = ("--", USAGE) if platform == "telegram" else ("", DISCORD_USAGE)
    lines = [
        "🎞 I animate pictures with FramePack.",
        how,
        "",
        f"Usage: {usage}",
        f"  {flag}seconds  video length, 0.5 to {gen.max_seconds:g} (default {gen.seconds:g})",
        f"  {flag}seed     a number, to get the same video again (default: random)",
        f"  {flag}steps    1 to {gen.max_steps} (default {gen.steps}); more is slower and finer",
        f"  {flag}guidance 1 to 32 (default {gen.guidance:g})",
        f"  {flag}model    framepack (default) or f1",
        *(
            [f"  {flag}lora     name[:scale], a style of /loras (up to {settings.model.max_loras})"]
            if settings.model.loras and settings.model.max_loras
            else []
        ),
        f"  {flag}cache    off, teacache or magcache (default {gen.cache}): skips steps, about "
        "2x faster, not lossless (hands and fingers first); off is exact",
        *(["  end_image a picture to end on (framepack only)"] if not flag else []),
        *(
            [
                "An end picture (framepack only): send two pictures together, the caption on "
                "the first; or send the end picture as a reply to the start one with --end.",
            ]
            if flag
            else []
        ),
        "A video instead of a picture is continued. Per-section prompts: "
        "[0s: a man walks] [3s: he turns around]",
        "A finished video's buttons: ⏩ Extend (more of it), 🎨 Remix (edit the prompt)"
        + (", or reply /extend [prompt] [--seconds S] to it." if flag else "."),
        "",
        "/queue — what is waiting · /status — your jobs · /cancel [job] — stop one"
        + (" · /loras — the styles" if settings.model.loras else ""),
    ]
    if settings.model.preset == "tiny":
        lines.append("Note: this bot runs the test model; its videos are random noise.")
    return "\n".join(lines)


ADMIN_HELP = (
    "Admin: /pause · /resume · /cancel <job> (any job) · /ban <user id> [reason] · "
    "/unban <user id> · /limit <user id> <jobs waiting> <seconds a day> (or /limit <user id> "
    "default)"
)


DISK_FULL = (
    "The server's disk is full, so I cannot take new videos right now. The admins are "
    "told; please try again later."
)


def refusal_message(refused: QueueRefused) -> str:
    """Why the queue did not take a job, and what the user can do about it."""
    if refused.reason == "banned":
        why = f" ({refused.ban_reason})" if refused.ban_reason else ""
        return f"You are not allowed to queue jobs here{why}."
    if refused.reason == "queue_full":
        return f"The queue is full ({refused.count} jobs waiting). Please try again later."
    if refused.reason == "user_limit":
        return (
            f"You already have {refused.count} jobs waiting or rendering, the most allowed "
            f"({refused.limit:g}). Wait for one to finish, or /cancel one."
        )
    if refused.reason == "cooldown":
        return (
            f"Please wait {format_duration(math.ceil(refused.wait_seconds))} before your next job."
        )
    if refused.reason == "daily_limit":
        return (
            f"You have {refused.left_seconds:g} of your {refused.limit:g} seconds of video left "
            f"for the last 24 hours and this job asks for {refused.asked_seconds:g}. Ask for "
            f"fewer seconds, or try again in {format_duration(refused.wait_seconds)}."
        )
    return "The queue cannot take this job now. Please try again later."


class BotService:
    def __init__(self, store: JobStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.data = DataDir(settings.storage.data_dir)

    @property
    def tiny(self) -> bool:
        return self.settings.model.preset == "tiny"

    async def animate(
        self,
        who: Requester,
        image: bytes,
        options: AnimateOptions,
        *,
        end_image: bytes | None = None,
        upload_limit: int | None = None,
        origin: dict[str, Any] | None = None,
    ) -> Job:
        """Validate and queue one `/animate`; raise `UserError` with the reason."""
        gen = self.settings.generation
        params = build_params(
            options, gen, has_end_image=end_image is not None, catalogue=self.settings.model
        )
        _, removed = clean_prompt(options.prompt)
        if removed:  # said in the job's message
            origin = {**(origin or {}), "prompt_cleaned": removed}
        # Checking and writing the pictures off the event loop, in one thread hop, so
        # that other chats are served meanwhile (Pillow releases the GIL while it
        # decodes). A ban is refused by enqueue, which removes the pictures again.
        try:
            input_path, end_path = await asyncio.to_thread(self._store_pictures, image, end_image)
        except OSError as exc:
            if is_disk_full(exc):
                raise UserError(DISK_FULL) from None
            raise
        try:
            job = await self._enqueue(
                who,
                params,
                input_path=str(input_path),
                end_image_path=str(end_path) if end_path else None,
                upload_limit=upload_limit,
                origin=origin,
            )
        except UserError:
            input_path.unlink(missing_ok=True)
            if end_path:
                end_path.unlink(missing_ok=True)
            raise
        log.info(
            "job %d queued by %s:%s (%gs, %d steps, %s)",
            job.id,
            who.platform,
            who.user_id,
            params.seconds,
            params.steps,
            params.model,
        )
        return job

    async def _enqueue(
        self,
        who: Requester,
        params: JobParams,
        *,
        input_path: str,
        end_image_path: str | None,
        upload_limit: int | None,
        origin: dict[str, Any] | None,
    ) -> Job:
        """Queue a job for `who`; a refusal of the queue becomes a `UserError`."""
        try:
            return await self.store.enqueue(
                platform=who.platform,
                user_id=who.user_id,
                user_name=who.name,
                chat_id=who.chat_id,
                params=params,
                input_path=input_path,
                end_image_path=end_image_path,
                upload_limit=upload_limit,
                origin=origin,
                exempt=who.is_admin,
            )
        except QueueRefused as refused:
            log.info("refused %s:%s: %s", who.platform, who.user_id, refused.reason)
            raise UserError(refusal_message(refused)) from None
        except DiskFull:
            log.error("the disk is full: a job of %s:%s was refused", who.platform, who.user_id)
            raise UserError(DISK_FULL) from None

    def _store_pictures(self, image: bytes, end_image: bytes | None) -> tuple[Path, Path | None]:
        """Check the picture (or the video to continue) and the end picture, then write
        them to the data dir (a refusal writes nothing)."""
        gen = self.settings.generation
        if is_video(image):
            if end_image is not None:
                raise UserError("A video is continued as it goes: send it without an end image.")
            video = check_video(
                image,
                max_bytes=gen.max_video_bytes,
                max_seconds=gen.max_video_seconds,
                max_pixels=gen.max_video_pixels,
            )
            return save_video(video, self.data), None
        limits = {"max_bytes": gen.max_image_bytes, "max_pixels": gen.max_image_pixels}
        checked = check_image(image, **limits)
        checked_end = (
            check_image(end_image, **limits, what="end image") if end_image is not None else None
        )
        return (
            save_input(checked, self.data),
            save_input(checked_end, self.data) if checked_end is not None else None,
        )

    async def reroll(
        self,
        who: Requester,
        job_id: int,
        *,
        origin: dict[str, Any] | None = None,
        upload_limit: int | None = None,
    ) -> Job:
        """Queue the same picture and prompt again with a new seed."""
        old = await self.owned_job(who, job_id)
        if not Path(old.input_path).exists():
            raise UserError(
                "The picture of that job is gone (old files are removed). Please send it again."
            )
        # the same LoRAs, if the catalogue still has them for its model
        check_loras(tuple(old.params.loras), old.params.model, self.settings.model)
        params = dataclasses.replace(old.params, seed=new_seed())
        job = await self._enqueue(
            who,
            params,
            input_path=old.input_path,
            end_image_path=old.end_image_path,
            upload_limit=upload_limit if upload_limit is not None else old.upload_limit,
            origin={**(origin or {}), "reroll_of": old.id},
        )
        log.info(
            "job %d queued by %s:%s (re-roll of %d)", job.id, who.platform, who.user_id, old.id
        )
        return job

    async def extend(
        self,
        who: Requester,
        job_id: int,
        *,
        prompt: str | None = None,
        seconds: float | None = None,
        origin: dict[str, Any] | None = None,
        upload_limit: int | None = None,
    ) -> Job:
        """Queue a continuation of a finished video: `seconds` more (default: the configured
        length), with its prompt or a new one. The new video is the whole clip."""
        old = await self.owned_job(who, job_id)
        if old.status is not JobStatus.DONE:
            raise UserError(f"Job #{old.id} has no video to extend (it {old.status.value}).")
        if not self.data.checkpoint(old.id).exists():
            raise UserError(
                f"The video of job #{old.id} cannot be extended any more (old files are removed). "
                "Send it as a video with /animate to continue it."
            )
        # The worker holds the whole clip in memory to deliver it: as long as a video sent
        # to continue may be, and no longer.
        longest = self.settings.generation.max_video_seconds
        clip = await self._video_seconds(old)
        if clip > longest:
            raise UserError(
                f"The video of job #{old.id} is {clip:.0f} s long; the most I continue is "
                f"{longest:g} s."
            )
        options = AnimateOptions(
            prompt=prompt if prompt and prompt.strip() else old.params.prompt,
            seconds=seconds,
            steps=old.params.steps,
            guidance=old.params.guidance,
            model=old.params.model,
            loras=tuple(old.params.loras),
            cache=old.params.cache,
        )
        params = dataclasses.replace(
            build_params(options, self.settings.generation, catalogue=self.settings.model),
            extend_of=old.id,
        )
        job = await self._enqueue(
            who,
            params,
            input_path=old.input_path,
            end_image_path=None,  # the continuation ends where it goes
            upload_limit=upload_limit if upload_limit is not None else old.upload_limit,
            origin={**(origin or {}), "extend_of": old.id},
        )
        log.info("job %d queued by %s:%s (extends %d)", job.id, who.platform, who.user_id, old.id)
        return job

    async def _video_seconds(self, job: Job) -> float:
        """How long the finished video of `job` is (its done event says)."""
        events = await self.store.events_since(0, job_id=job.id, limit=100_000)
        done = [e for e in events if e.kind is EventKind.DONE]
        return float(done[-1].data.get("seconds", 0.0)) if done else 0.0

    async def remix(
        self,
        who: Requester,
        job_id: int,
        options: AnimateOptions,
        *,
        origin: dict[str, Any] | None = None,
        upload_limit: int | None = None,
    ) -> Job:
        """Queue the same picture again with an edited prompt (and options): what is not
        given stays as it was, the seed included, so only the change shows."""
        old = await self.owned_job(who, job_id)
        if not Path(old.input_path).exists():
            raise UserError(
                "The picture of that job is gone (old files are removed). Please send it again."
            )
        p = old.params
        merged = AnimateOptions(
            prompt=options.prompt,
            seconds=p.seconds if options.seconds is None else options.seconds,
            seed=p.seed if options.seed is None else options.seed,
            steps=p.steps if options.steps is None else options.steps,
            guidance=p.guidance if options.guidance is None else options.guidance,
            model=p.model if options.model is None else options.model,
            loras=tuple(p.loras) if options.loras is None else options.loras,
            cache=p.cache if options.cache is None else options.cache,
        )
        params = build_params(
            merged,
            self.settings.generation,
            has_end_image=old.end_image_path is not None,
            catalogue=self.settings.model,
        )
        params = dataclasses.replace(params, extend_of=p.extend_of)
        job = await self._enqueue(
            who,
            params,
            input_path=old.input_path,
            end_image_path=old.end_image_path,
            upload_limit=upload_limit if upload_limit is not None else old.upload_limit,
            origin={**(origin or {}), "remix_of": old.id},
        )
        log.info("job %d queued by %s:%s (remix of %d)", job.id, who.platform, who.user_id, old.id)
        return job

    async def owned_job(self, who: Requester, job_id: int) -> Job:
        """The job, if `who` may act on it (its owner, or an admin)."""
        job = await self.store.find(job_id)
        if job is None or (job.platform != who.platform and not who.is_admin):
            raise UserError(f"There is no job #{job_id}.")
        if (job.user_id != who.user_id or job.platform != who.platform) and not who.is_admin:
            raise UserError("Only the person who asked for that video (or an admin) can do that.")
        return job

    async def cancel(self, who: Requester, job_id: int | None = None) -> str:
        """Cancel a job (default: the requester's latest unfinished one)."""
        if job_id is None:
            mine = await self.store.jobs_of(
                who.platform, who.user_id, [JobStatus.QUEUED, JobStatus.RUNNING], limit=1
            )
            if not mine:
                return "You have no job waiting or rendering."
            job = mine[0]
        else:
            job = await self.owned_job(who, job_id)
        try:
            job = await self.store.cancel(job.id)
        except IllegalTransition:
            return f"Job #{job.id} has already {job.status.value}."
        log.info("job %d cancel asked by %s:%s", job.id, who.platform, who.user_id)
        if job.status is JobStatus.CANCELLED:
            return f"Job #{job.id} is cancelled."
        return f"Job #{job.id} is stopping; it ends at the next step."

    async def queue_text(self, who: Requester) -> str:
        running = await self.store.running()
        positions = await self.store.positions()
        waiting = await self.store.waiting()
        paused = await self.store.paused()
        lines = []
        if paused:
            lines.append("⏸ The queue is paused by an admin.")
        if not running and not waiting:
            lines.append("The queue is empty: a new job starts at once.")
            return "\n".join(lines)
        for job in running:
            mark = " (you)" if self._is_mine(who, job) else ""
            lines.append(f"🎞 #{job.id} rendering{mark}")
        for job in waiting[:15]:
            pos = positions[job.id]
            mark = " (you)" if self._is_mine(who, job) else ""
            lines.append(
                f"{pos.position}. #{job.id}{mark} · starts in about "
                f"{format_duration(pos.estimated_start)}"
            )
        if len(waiting) > 15:
            lines.append(f"… and {len(waiting) - 15} more")
        return "\n".join(lines)

    @staticmethod
    def _is_mine(who: Requester, job: Job) -> bool:
        return job.platform == who.platform and job.user_id == who.user_id

    async def status_text(self, who: Requester) -> str:
        jobs = await self.store.jobs_of(who.platform, who.user_id, limit=5)
        if not jobs:
            return "You have no jobs yet. " + USAGE
        positions = await self.store.positions()
        lines = []
        for job in jobs:
            state = job.status.value
            if job.id in positions:
                pos = positions[job.id]
                state = (
                    f"queued, position {pos.position}, starts in about "
                    f"{format_duration(pos.estimated_start)}"
                )
            prompt = (
                job.params.prompt
                if len(job.params.prompt) <= 40
                else (job.params.prompt[:39] + "…")
            )
            lines.append(f"#{job.id} {state} — {prompt}")
        return "\n".join(lines)

    # ---- admin -------------------------------------------------------------

    def _admin(self, who: Requester) -> None:
        if not who.is_admin:
            raise UserError("That command is for the bot's admins.")

    async def pause(self, who: Requester) -> str:
        self._admin(who)
        await self.store.set_paused(True)
        log.info("queue paused by %s:%s", who.platform, who.user_id)
        return "⏸ Queue paused: running jobs finish, no new job starts. /resume to go on."

    async def resume(self, who: Requester) -> str:
        self._admin(who)
        await self.store.set_paused(False)
        log.info("queue resumed by %s:%s", who.platform, who.user_id)
        return "▶️ Queue resumed."

    async def ban(
        self, who: Requester, user_id: str, reason: str = "", *, platform: str | None = None
    ) -> str:
        """Ban a user of `platform` (default: the admin's own; the web page names one)."""
        self._admin(who)
        if not user_id.strip():
            raise UserError("Usage: /ban <user id> [reason]")
        where = self._target_platform(who, platform)
        await self.store.set_banned(where, user_id.strip(), True, reason.strip())
        log.info("user %s:%s banned by %s:%s", where, user_id, who.platform, who.user_id)
        return f"User {user_id} is banned; their waiting jobs are cancelled."

    async def unban(self, who: Requester, user_id: str, *, platform: str | None = None) -> str:
        self._admin(who)
        if not user_id.strip():
            raise UserError("Usage: /unban <user id>")
        where = self._target_platform(who, platform)
        await self.store.set_banned(where, user_id.strip(), False)
        log.info("user %s:%s unbanned by %s:%s", where, user_id, who.platform, who.user_id)
        return f"User {user_id} may queue jobs again."

    @staticmethod
    def _target_platform(who: Requester, platform: str | None) -> str:
        """The platform of the user an admin names: their own, unless they name one."""
        if platform is None:
            return who.platform
        if platform not in PLATFORMS:
            raise UserError(f"There is no platform {platform!r}; choose {', '.join(PLATFORMS)}.")
        return platform

    async def set_limits(
        self,
        who: Requester,
        user_id: str,
        waiting: int | None,
        seconds_per_day: float | None,
        *,
        platform: str | None = None,
    ) -> str:
        """Give one user their own queue limits (None for both: the configured ones)."""
        self._admin(who)
        user_id = user_id.strip()
        if not user_id:
            raise UserError(LIMIT_USAGE)
        where = self._target_platform(who, platform)
        if waiting is None and seconds_per_day is None:
            await self.store.set_overrides(where, user_id, {})
            log.info("limits of %s:%s reset by %s:%s", where, user_id, who.platform, who.user_id)
            return f"User {user_id} has the bot's usual limits again."
        if waiting is None or not 1 <= waiting <= 1000:
            raise UserError(
                "The jobs waiting must be a whole number from 1 to 1000. " + LIMIT_USAGE
            )
        if seconds_per_day is None or not 0 <= seconds_per_day <= 86_400:
            raise UserError(
                "The seconds a day must be a number from 0 (no limit) to 86400. " + LIMIT_USAGE
            )
        await self.store.set_overrides(
            where,
            user_id,
            {"max_waiting_per_user": waiting, "max_video_seconds_per_day": seconds_per_day},
        )
        log.info("limits of %s:%s set by %s:%s", where, user_id, who.platform, who.user_id)
        per_day = (
            "no daily limit" if seconds_per_day == 0 else f"{seconds_per_day:g} s of video a day"
        )
        return f"User {user_id} may now have {waiting} jobs waiting and {per_day}."

    async def delete_video(self, who: Requester, job_id: int) -> str:
        """Remove a finished job's video and working files (its owner or an admin)."""
        job = await self.owned_job(who, job_id)
        if not job.status.finished:
            raise UserError(f"Job #{job.id} is still {job.status.value}; cancel it first.")
        if job.status is JobStatus.DONE and job.delivered_at is None:
            raise UserError(f"The video of job #{job.id} is still being delivered; try again soon.")
        await remove_job_files(self.store, self.data, job)
        log.info("job %d: files deleted by %s:%s", job.id, who.platform, who.user_id)
        return f"The video of job #{job.id} is deleted."
